package netpolicy

import (
	"bufio"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestNoUpwardImports holds the design's dependency rule: netpolicy takes
// its own Input, so neither it, its sub-packages nor their tests import
// daemon, proxy or cmd, directly or through another package of the module.
// It reads the import clauses of every Go file, whatever its build tags,
// so a file built only on another system cannot slip past it.
func TestNoUpwardImports(t *testing.T) {
	module := modulePath(t, "../go.mod")
	var forbidden []string
	for _, p := range []string{"daemon", "proxy", "cmd"} {
		forbidden = append(forbidden, module+"/"+p)
	}
	// via[pkg] is the package that led to pkg: the chain an error prints.
	via := map[string]string{}
	var queue []string
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "testdata" {
			return filepath.SkipDir
		}
		if d.IsDir() {
			pkg := module + "/netpolicy"
			if path != "." {
				pkg += "/" + filepath.ToSlash(path)
			}
			via[pkg] = ""
			queue = append(queue, pkg)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	chain := func(pkg string) string {
		links := []string{pkg}
		for p := via[pkg]; p != ""; p = via[p] {
			links = append([]string{p}, links...)
		}
		return strings.Join(links, " -> ")
	}
	checked := 0
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		// Tests are part of the rule only in netpolicy's own tree: a
		// dependency's tests are not linked into anything of ours.
		own := pkg == module+"/netpolicy" || strings.HasPrefix(pkg, module+"/netpolicy/")
		dir := filepath.Join("..", filepath.FromSlash(strings.TrimPrefix(pkg, module+"/")))
	next:
		for _, imp := range packageImports(t, dir, own) {
			checked++
			if imp != module && !strings.HasPrefix(imp, module+"/") {
				continue
			}
			for _, f := range forbidden {
				if imp == f || strings.HasPrefix(imp, f+"/") {
					t.Errorf("%s imports %s: netpolicy must not depend on daemon, proxy or cmd (DESIGN.md, dependency rules)", chain(pkg), imp)
					continue next
				}
			}
			if _, seen := via[imp]; !seen {
				via[imp] = pkg
				queue = append(queue, imp)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no imports found: the test reads nothing")
	}
}

// modulePath reads the module line of a go.mod file.
func modulePath(t *testing.T, gomod string) string {
	t.Helper()
	f, err := os.Open(gomod)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.TrimSpace(m)
		}
	}
	t.Fatalf("%s: no module line", gomod)
	return ""
}

// packageImports lists, once each, the import paths of the Go files in
// dir, test files included when tests is set.
func packageImports(t *testing.T, dir string, tests bool) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	seen := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || (!tests && strings.HasSuffix(name, "_test.go")) {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range f.Imports {
			p, err := strconv.Unquote(is.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
		}
	}
	return out
}
