package packagetest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPackageNeedsWebClient: the package build refuses a tree whose
// web/dist holds no browser client (a clone before make web), rather than
// ship a daemon that refuses browser sessions, and builds nothing.
func TestPackageNeedsWebClient(t *testing.T) {
	need(t, "git", "exports the committed tree")
	need(t, "tar", "unpacks it")
	dir := t.TempDir()
	export := exec.Command("sh", "-c", `git archive HEAD | tar -x -C "$0"`, dir)
	export.Dir = root
	if out, err := export.CombinedOutput(); err != nil {
		t.Fatalf("git archive: %v\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dir, "web", "dist", "connect.js")); err == nil {
		t.Fatal("the committed tree holds a built browser client: nothing to check")
	}
	dist := filepath.Join(dir, "dist")
	build := exec.Command("bash", "packaging/build.sh")
	build.Dir = dir
	// The tree has no .git: what build.sh would ask git for is given.
	build.Env = append(os.Environ(), "VERSION=0.0.0-test", "PKG_VERSION=0.0.0~test", "SOURCE_DATE_EPOCH=1765000000", "DIST="+dist)
	out, err := build.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "web/dist holds no browser client") {
		t.Errorf("packaging/build.sh without web/dist: %v\n%s", err, out)
	}
	if debs, _ := filepath.Glob(filepath.Join(dist, "*.deb")); len(debs) != 0 {
		t.Errorf("it built %v anyway", debs)
	}
}
