package realsystemd

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// The versions of the two packages the tests install, the second an
// upgrade of the first (dpkg orders ~ before anything).
const (
	versionOld = "0.0.0~systemdtest1"
	versionNew = "0.0.0~systemdtest2"
)

// built holds the two packages once made: every test of the package
// installs the same files.
var built struct {
	once           sync.Once
	dir            string // removed by TestMain
	oldDeb, newDeb string
	skip           string // why the packages cannot be built here
}

// sharedPackages is packages made once, in a directory every user of the
// container can read (the tests bind it into their containers), whose two
// packages are alone in their own subdirectories old/ and new/. A test
// after one whose build failed fails too.
func sharedPackages(t testing.TB, repoRoot string) (oldDeb, newDeb string) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "bastiond-packages-")
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(dir, 0o755)
		built.dir = dir
		if _, err := os.Stat(filepath.Join(repoRoot, "web", "dist", "connect.js")); err != nil && os.Getenv("BASTIOND_DEB") == "" {
			built.skip = "web/dist is not built, and the package needs the browser client: run make web"
			return
		}
		built.oldDeb, built.newDeb = packages(t, repoRoot, dir)
	})
	if built.skip != "" {
		t.Skip(built.skip)
	}
	if built.oldDeb == "" {
		t.Fatal("the packages were not built (see the first test's failure)")
	}
	return built.oldDeb, built.newDeb
}

// packages builds the .deb (make package's build) and makes of it the two
// packages the tests install: versionOld, and versionNew, whose bastiond
// is built anew with that version stamped in, as a real upgrade's binary
// differs from the one it replaces. It returns their paths in dir.
func packages(t testing.TB, repoRoot, dir string) (oldDeb, newDeb string) {
	t.Helper()
	built := os.Getenv("BASTIOND_DEB")
	if built == "" {
		// make package's build, without its `make web`: rebuilding
		// web/dist here would empty it under the other test packages,
		// which build bastiond at the same time (make test built it).
		dist := filepath.Join(dir, "dist")
		build := exec.Command("bash", "packaging/build.sh")
		build.Dir = repoRoot
		build.Env = append(os.Environ(), "PKG_ARCHES=amd64", "PKG_FORMATS=deb", "DIST="+dist)
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("packaging/build.sh: %v\n%s", err, tail(out, 40))
		}
		debs, _ := filepath.Glob(filepath.Join(dist, "bastiond_*_amd64.deb"))
		if len(debs) != 1 {
			t.Fatalf("the package build made %d amd64 .deb files in %s, want 1", len(debs), dist)
		}
		built = debs[0]
	}
	oldDeb = repack(t, built, filepath.Join(dir, "old"), versionOld, "")
	bastiond := filepath.Join(dir, "bastiond-"+versionNew)
	build := exec.Command("go", "build", "-trimpath", "-ldflags",
		"-X github.com/bastiond/bastiond/internal/version.Version="+versionNew, "-o", bastiond, "./cmd/bastiond")
	build.Dir = repoRoot
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build bastiond %s: %v\n%s", versionNew, err, out)
	}
	newDeb = repack(t, built, filepath.Join(dir, "new"), versionNew, bastiond)
	return oldDeb, newDeb
}

// repack unpacks deb into work, sets its version, puts bastiond (if not
// empty) in place of the packaged daemon, and builds the package again.
func repack(t testing.TB, deb, work, version, bastiond string) string {
	t.Helper()
	tree := filepath.Join(work, "tree")
	if err := os.MkdirAll(work, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R %s: %v\n%s", deb, err, out)
	}
	control := filepath.Join(tree, "DEBIAN", "control")
	b, err := os.ReadFile(control)
	if err != nil {
		t.Fatal(err)
	}
	b = regexp.MustCompile(`(?m)^Version: .*$`).ReplaceAll(b, []byte("Version: "+version))
	if err := os.WriteFile(control, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if bastiond != "" {
		target := filepath.Join(tree, daemonPath)
		data, err := os.ReadFile(bastiond)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, data, 0o755); err != nil {
			t.Fatal(err)
		}
		fixMD5(t, tree, strings.TrimPrefix(daemonPath, "/"), data)
	}
	out := filepath.Join(work, fmt.Sprintf("bastiond_%s_amd64.deb", version))
	if b, err := exec.Command("dpkg-deb", "--root-owner-group", "-b", tree, out).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v\n%s", err, b)
	}
	return out
}

// daemonPath is where the package installs bastiond.
const daemonPath = "/usr/sbin/bastiond"

// fixMD5 sets the md5sums line of rel in the unpacked package tree to
// data's.
func fixMD5(t testing.TB, tree, rel string, data []byte) {
	t.Helper()
	path := filepath.Join(tree, "DEBIAN", "md5sums")
	b, err := os.ReadFile(path)
	if err != nil {
		return // a package without md5sums: nothing to keep right
	}
	sum := md5.Sum(data)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	for i, l := range lines {
		if strings.HasSuffix(l, "  "+rel) {
			lines[i] = hex.EncodeToString(sum[:]) + "  " + rel
		}
	}
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}
