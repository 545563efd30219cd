// Package testhooks checks that the product carries no test hooks: tests
// get what they need through construction (a Config field, an option, an
// unexported field that only the package's own tests fill), never by
// assigning a package-level variable of production code, and no name in
// production code ends in ForTest. It holds tests only.
package testhooks

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// goFile is one parsed Go file of a directory.
type goFile struct {
	name string // relative to the root, slash-separated
	test bool   // a _test.go file
	ast  *ast.File
}

// findHooks returns the test hooks in the Go code under root, whose module
// path is module: one line per hook, "file:line: what". Directories named
// testdata or node_modules or starting with a dot, the test/ tree and test
// support packages (named testfoo or footest) hold no production code.
func findHooks(root, module string) ([]string, error) {
	fset := token.NewFileSet()
	dirs := map[string][]goFile{} // by import path
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			name := d.Name()
			if rel != "." && (name == "testdata" || name == "node_modules" || strings.HasPrefix(name, ".") || rel == "test") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			return err
		}
		imp := path.Join(module, path.Dir(rel))
		dirs[imp] = append(dirs[imp], goFile{name: rel, test: strings.HasSuffix(p, "_test.go"), ast: f})
		return nil
	})
	if err != nil {
		return nil, err
	}

	// The package-level variables of production code, by import path, and
	// the names in it that say they are for tests.
	vars := map[string]map[string]bool{}
	var hooks []string
	for imp, files := range dirs {
		for _, f := range files {
			pkg := f.ast.Name.Name
			if f.test || strings.HasPrefix(pkg, "test") || strings.HasSuffix(pkg, "test") {
				continue
			}
			ast.Inspect(f.ast, func(n ast.Node) bool {
				if id, ok := n.(*ast.Ident); ok && (strings.HasSuffix(id.Name, "ForTest") || strings.HasSuffix(id.Name, "ForTesting")) {
					hooks = append(hooks, fmt.Sprintf("%s: %s is named for tests in production code", fset.Position(id.Pos()), id.Name))
				}
				return true
			})
			for _, decl := range f.ast.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.VAR {
					continue
				}
				for _, spec := range gd.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						if id.Name == "_" {
							continue
						}
						if vars[imp] == nil {
							vars[imp] = map[string]bool{}
						}
						vars[imp][id.Name] = true
					}
				}
			}
		}
	}

	// Test files that change those variables: assigned, incremented or
	// their address taken, by name in the package's own tests and as
	// pkg.Name in any test.
	for imp, files := range dirs {
		own := ""
		for _, f := range files {
			if !f.test {
				own = f.ast.Name.Name
			}
		}
		for _, f := range files {
			if !f.test {
				continue
			}
			imports := map[string]string{} // local name -> import path
			for _, is := range f.ast.Imports {
				p, _ := strconv.Unquote(is.Path.Value)
				name := path.Base(p)
				if is.Name != nil {
					name = is.Name.Name
				}
				imports[name] = p
			}
			changed := func(e ast.Expr) {
				// The variable is the innermost operand: v, v.f, v[i], pkg.V.f.
				for {
					switch x := e.(type) {
					case *ast.SelectorExpr:
						if pkg, ok := x.X.(*ast.Ident); ok && pkg.Obj == nil && vars[imports[pkg.Name]][x.Sel.Name] {
							hooks = append(hooks, fmt.Sprintf("%s: a test changes %s.%s, a package variable of production code",
								fset.Position(x.Pos()), pkg.Name, x.Sel.Name))
							return
						}
						e = x.X
						continue
					case *ast.IndexExpr:
						e = x.X
						continue
					case *ast.ParenExpr:
						e = x.X
						continue
					case *ast.StarExpr:
						e = x.X
						continue
					case *ast.Ident:
						if x.Obj == nil && f.ast.Name.Name == own && vars[imp][x.Name] {
							hooks = append(hooks, fmt.Sprintf("%s: a test changes %s, a package variable of production code",
								fset.Position(x.Pos()), x.Name))
						}
					}
					return
				}
			}
			ast.Inspect(f.ast, func(n ast.Node) bool {
				switch s := n.(type) {
				case *ast.AssignStmt:
					if s.Tok != token.DEFINE {
						for _, e := range s.Lhs {
							changed(e)
						}
					}
				case *ast.IncDecStmt:
					changed(s.X)
				case *ast.UnaryExpr:
					if s.Op == token.AND {
						changed(s.X)
					}
				}
				return true
			})
		}
	}
	slices.Sort(hooks)
	return hooks, nil
}

// TestNoTestHooks: the repository's production code carries no test hooks.
func TestNoTestHooks(t *testing.T) {
	root := filepath.Join("..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatal(err)
	}
	hooks, err := findHooks(root, "github.com/bastiond/bastiond")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks {
		t.Errorf("%s; give tests what they need through construction instead (see docs/style.md)", h)
	}
}

// TestFindHooks: the checker finds every kind of hook in testdata/hooked,
// and nothing that is not one.
func TestFindHooks(t *testing.T) {
	hooks, err := findHooks(filepath.Join("testdata", "hooked"), "example.com/hooked")
	if err != nil {
		t.Fatal(err)
	}
	for i, h := range hooks {
		hooks[i] = filepath.Base(h)
	}
	want := []string{
		"hooked.go:8:5: retryForTest is named for tests in production code",
		"hooked_test.go:11:2: a test changes retry, a package variable of production code",
		"hooked_test.go:12:2: a test changes limits, a package variable of production code",
		"hooked_test.go:13:2: a test changes count, a package variable of production code",
		"hooked_test.go:14:8: a test changes open, a package variable of production code",
		"user_test.go:11:2: a test changes hooked.Period, a package variable of production code",
	}
	if !slices.Equal(hooks, want) {
		t.Errorf("found\n%s\nwant\n%s", strings.Join(hooks, "\n"), strings.Join(want, "\n"))
	}
}
