package packagetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestVersion: packaging/version.sh in a repository of its own, through
// its life: no tag, on a tag, commits after it, uncommitted changes. Each
// version must sort after the one before for dpkg (dpkg --compare-versions).
func TestVersion(t *testing.T) {
	need(t, "git", "makes the repository")
	need(t, "dpkg", "compares the versions")
	script, err := filepath.Abs(filepath.Join(root, "packaging", "version.sh"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t",
			"GIT_COMMITTER_EMAIL=t@example.org", "GIT_COMMITTER_DATE=2026-12-06T10:00:00Z", "GIT_AUTHOR_DATE=2026-12-06T10:00:00Z")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	commit := func(content string) string {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "f"), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		git("add", "f")
		git("commit", "-q", "-m", content)
		return git("rev-parse", "--short=7", "HEAD")
	}
	version := func() string {
		t.Helper()
		return strings.TrimSpace(must(t, dir, "sh", script))
	}
	git("init", "-q")
	var steps []string
	h := commit("one")
	steps = append(steps, version())
	if want := "0~git20261206." + h; steps[0] != want {
		t.Errorf("without a tag: %q, want %q", steps[0], want)
	}
	git("tag", "v0.19.0")
	steps = append(steps, version())
	if steps[1] != "0.19.0" {
		t.Errorf("on v0.19.0: %q", steps[1])
	}
	h = commit("two")
	steps = append(steps, version())
	if want := "0.19.1~git20261206." + h; steps[2] != want {
		t.Errorf("a commit after v0.19.0: %q, want %q", steps[2], want)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("changed"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps = append(steps, version())
	if want := steps[2] + "+dirty"; steps[3] != want {
		t.Errorf("with a change: %q, want %q", steps[3], want)
	}
	git("checkout", "-q", "f")
	git("tag", "v0.19.1")
	steps = append(steps, version())
	valid := regexp.MustCompile(`^[0-9][A-Za-z0-9.+~]*$`)
	for i, v := range steps {
		if !valid.MatchString(v) {
			t.Errorf("%q is not a Debian upstream version", v)
		}
		if i > 0 {
			if out, err := exec.Command("dpkg", "--compare-versions", v, "gt", steps[i-1]).CombinedOutput(); err != nil {
				t.Errorf("%q does not sort after %q: %v %s", v, steps[i-1], err, out)
			}
		}
	}
}
