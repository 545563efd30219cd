// Package layers checks the dependency rules of docs/architecture.md on
// the module's packages, for every system bastionctl is built for, so that
// the picture the document draws cannot drift from the code. It holds
// tests only.
package layers

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/bastiond/bastiond"

// ranks orders the module's top-level directories: a package imports only
// packages of a lower rank, or of its own directory. netpolicy and proxy
// share a rank, so neither imports the other.
var ranks = map[string]int{
	"cmd":       4,
	"daemon":    3,
	"netpolicy": 2,
	"proxy":     2,
	"tunnel":    1, // the tunnel's protocol and client, shared by proxy and bastionctl
	"web":       1, // the browser client, embedded by proxy
	"api":       0, // wire types, shared by server and client; the standard library only
	"internal":  0, // small helpers
}

// clientMay is all of the module that bastionctl's code may link.
var clientMay = []string{"api", "tunnel", "internal"}

// pkg is what `go list -json` says of a package.
type pkg struct {
	ImportPath   string
	Imports      []string
	TestImports  []string
	XTestImports []string
}

// list runs `go list -json` over the module for goos.
func list(t *testing.T, goos string) []pkg {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Imports,TestImports,XTestImports", module+"/...")
	cmd.Dir = filepath.Join("..", "..")
	cmd.Env = append(os.Environ(), "GOOS="+goos, "CGO_ENABLED=0")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list for %s: %v", goos, err)
	}
	var pkgs []pkg
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list for %s: %v", goos, err)
		}
		pkgs = append(pkgs, p)
	}
	return pkgs
}

// top is the module's top-level directory of path, or "" outside it.
func top(path string) string {
	rest, ok := strings.CutPrefix(path, module+"/")
	if !ok {
		return ""
	}
	dir, _, _ := strings.Cut(rest, "/")
	return dir
}

// stdlib reports whether imp is a package of the standard library: its
// first path element has no dot (golang.org/x/... has one).
func stdlib(imp string) bool {
	first, _, _ := strings.Cut(imp, "/")
	return !strings.Contains(first, ".")
}

// violations lists the imports of p that break the rules.
func violations(p pkg) []string {
	from := top(p.ImportPath)
	if from == "test" {
		return nil // the tests use everything
	}
	var bad []string
	check := func(imp string, test bool) {
		to := top(imp)
		if from == "api" && !test && to == "" && !stdlib(imp) {
			bad = append(bad, fmt.Sprintf("%s imports %s: the wire types import only the standard library", p.ImportPath, imp))
		}
		if to == "" || to == from {
			return
		}
		rf, okf := ranks[from]
		rt, okt := ranks[to]
		switch {
		case !okf || !okt:
			bad = append(bad, fmt.Sprintf("%s imports %s: a top-level directory with no place in the layers (add it to ranks and to docs/architecture.md)", p.ImportPath, imp))
		case rt >= rf:
			bad = append(bad, fmt.Sprintf("%s imports %s: %s must not import %s", p.ImportPath, imp, from, to))
		case !test && strings.HasPrefix(p.ImportPath, module+"/cmd/bastionctl") && !slices.Contains(clientMay, to):
			bad = append(bad, fmt.Sprintf("%s imports %s: bastionctl links only %v", p.ImportPath, imp, clientMay))
		}
	}
	for _, imp := range p.Imports {
		check(imp, false)
	}
	for _, imp := range slices.Concat(p.TestImports, p.XTestImports) {
		// A package's own tests may start the parts it talks to (cmd's
		// tests run real servers); they may not import upward either.
		check(imp, true)
	}
	return bad
}

// TestLayers: the module's imports follow the layers, on each system.
func TestLayers(t *testing.T) {
	for _, goos := range []string{"linux", "darwin", "windows"} {
		t.Run(goos, func(t *testing.T) {
			pkgs := list(t, goos)
			if len(pkgs) < 20 {
				t.Fatalf("go list found %d packages: not the module", len(pkgs))
			}
			for _, p := range pkgs {
				for _, v := range violations(p) {
					t.Error(v)
				}
			}
		})
	}
}

// TestRulesCatch: the checker itself finds each kind of break.
func TestRulesCatch(t *testing.T) {
	m := func(s string) string { return module + "/" + s }
	for _, c := range []struct {
		name string
		p    pkg
		want string
	}{
		{"upward", pkg{ImportPath: m("netpolicy"), Imports: []string{m("daemon/config")}}, "netpolicy must not import daemon"},
		{"sideways", pkg{ImportPath: m("proxy/broker"), Imports: []string{m("netpolicy")}}, "proxy must not import netpolicy"},
		{"sideways back", pkg{ImportPath: m("netpolicy"), XTestImports: []string{m("proxy/access")}}, "netpolicy must not import proxy"},
		{"client links the server", pkg{ImportPath: m("cmd/bastionctl"), Imports: []string{m("daemon/adminapi")}}, "bastionctl links only"},
		{"client links the proxy", pkg{ImportPath: m("cmd/bastionctl"), Imports: []string{m("proxy/broker")}}, "bastionctl links only"},
		{"unknown directory", pkg{ImportPath: m("proxy"), Imports: []string{m("newthing")}}, "no place in the layers"},
		{"wire types import the server", pkg{ImportPath: m("api/admin"), Imports: []string{m("proxy/broker")}}, "api must not import proxy"},
		{"wire types import a library", pkg{ImportPath: m("api/tunnelwire"), Imports: []string{"io", "github.com/quic-go/quic-go"}}, "only the standard library"},
	} {
		v := violations(c.p)
		if len(v) != 1 || !strings.Contains(v[0], c.want) {
			t.Errorf("%s: %q, want one saying %q", c.name, v, c.want)
		}
	}
	for _, ok := range []pkg{
		{ImportPath: m("cmd/bastiond"), Imports: []string{m("daemon"), m("internal/version")}},
		{ImportPath: m("proxy/webssh"), Imports: []string{m("proxy/broker"), m("internal/neterr"), "golang.org/x/crypto/ssh"}},
		{ImportPath: m("cmd/bastionctl"), Imports: []string{m("api/adminclient"), m("tunnel")}, TestImports: []string{m("daemon/adminapi")}},
		{ImportPath: m("test/e2e"), Imports: []string{m("daemon"), m("proxy")}},
	} {
		if v := violations(ok); len(v) != 0 {
			t.Errorf("%s: %q, want none", ok.ImportPath, v)
		}
	}
}
