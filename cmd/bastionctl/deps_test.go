package main

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"
)

// The systems bastionctl is built for, each for amd64 and arm64.
var clientSystems = []string{"linux", "darwin", "windows"}

// serverPackages are what the client must not link: the daemon's and the
// gateway's implementation, and the libraries only they need.
var serverPackages = []string{
	"github.com/bastiond/bastiond/proxy",
	"github.com/bastiond/bastiond/daemon",
	"github.com/bastiond/bastiond/netpolicy",
	"github.com/bastiond/bastiond/web",
	"go.etcd.io/bbolt",
	"github.com/jackc/pgx",
	"github.com/prometheus",
	"golang.org/x/crypto/argon2",
}

// goTool runs the go command on this package for goos/goarch, offline.
func goTool(t *testing.T, goos, goarch string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("this test runs the go command: %v", err)
	}
	cmd := exec.Command(bin, args...)
	// The user's cache directory, not the tests' (TestMain), holds the
	// build cache that makes a build of a few seconds.
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool { return strings.HasPrefix(kv, "XDG_CACHE_HOME=") })
	if userCacheHome.ok {
		env = append(env, "XDG_CACHE_HOME="+userCacheHome.dir)
	}
	cmd.Env = append(env, "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOPROXY=off", "GOFLAGS=-mod=readonly")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("GOOS=%s GOARCH=%s go %s: %v\n%s", goos, goarch, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestClientLinksNoServer: for every system it is built for, bastionctl
// (without its tests, which may start real servers) depends on no server
// package: the wire types and the tunnel client only.
func TestClientLinksNoServer(t *testing.T) {
	for _, goos := range clientSystems {
		t.Run(goos, func(t *testing.T) {
			deps := strings.Fields(goTool(t, goos, "amd64", "list", "-deps", "."))
			for _, want := range []string{"github.com/bastiond/bastiond/api", "github.com/bastiond/bastiond/tunnel"} {
				if !slices.Contains(deps, want) {
					t.Errorf("go list -deps names no %s: %q", want, deps)
				}
			}
			for _, d := range deps {
				for _, s := range serverPackages {
					if d == s || strings.HasPrefix(d, s+"/") {
						t.Errorf("bastionctl for %s links %s", goos, d)
					}
				}
			}
		})
	}
}

// TestCrossCompile builds bastionctl for Linux, macOS and Windows, amd64
// and arm64. With a warm build cache each build takes a second or two
// (about 6 s in all here); the first, cold, compiles the standard library
// for each system (up to a minute each on two busy cores).
func TestCrossCompile(t *testing.T) {
	for _, goos := range clientSystems {
		for _, goarch := range []string{"amd64", "arm64"} {
			t.Run(goos+"/"+goarch, func(t *testing.T) {
				start := time.Now()
				goTool(t, goos, goarch, "build", "-o", os.DevNull, ".")
				t.Logf("built in %s", time.Since(start).Round(time.Millisecond))
			})
		}
	}
}
