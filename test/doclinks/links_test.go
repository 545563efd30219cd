// Package doclinks checks the repository's documentation: every relative
// link in a Markdown file names a file (and, with a #fragment, a heading)
// inside the repository, so that the docs read the same in any clone.
// It holds tests only.
package doclinks

import (
	"bufio"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

var (
	// inlineLink matches [text](target) and [text](target "title"); images too.
	inlineLink = regexp.MustCompile(`\]\(\s*(?:<([^>\n]+)>|([^)\s]+))(?:\s+"[^"]*")?\s*\)`)
	// refLink matches a reference definition: [name]: target.
	refLink = regexp.MustCompile(`^\s{0,3}\[[^\]]+\]:\s*<?([^\s>]+)>?`)
	// codeSpan is inline code, whose brackets are not links.
	codeSpan = regexp.MustCompile("`+[^`]*`+")
	scheme   = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)
)

// link is one link target in a Markdown file.
type link struct {
	line   int
	target string
}

// findLinks returns the link targets of a Markdown text, outside fenced code
// blocks and code spans.
func findLinks(text string) []link {
	var links []link
	fence := ""
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if m := refLink.FindStringSubmatch(line); m != nil {
			links = append(links, link{n, m[1]})
			continue
		}
		for _, m := range inlineLink.FindAllStringSubmatch(codeSpan.ReplaceAllString(line, ""), -1) {
			links = append(links, link{n, m[1] + m[2]}) // <with spaces> or bare
		}
	}
	return links
}

// slug is the anchor a GitHub-rendered heading gets: lower case, spaces to
// hyphens, punctuation other than hyphens and underscores dropped.
func slug(heading string) string {
	heading = codeSpan.ReplaceAllStringFunc(heading, func(s string) string { return strings.Trim(s, "`") })
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(heading)) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 127:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// anchors returns the heading anchors of a Markdown text, numbered as GitHub
// numbers repeated headings (x, x-1, x-2, ...).
func anchors(text string) map[string]bool {
	seen := map[string]int{}
	out := map[string]bool{}
	fence := ""
	for line := range strings.SplitSeq(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if fence != "" {
			if strings.HasPrefix(trimmed, fence) {
				fence = ""
			}
			continue
		}
		if strings.HasPrefix(trimmed, "```") || strings.HasPrefix(trimmed, "~~~") {
			fence = trimmed[:3]
			continue
		}
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimLeft(line, "#")
		if h == "" || h[0] != ' ' {
			continue
		}
		s := slug(h)
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}

// checkLink returns why target, a link in the file rel (a slash path
// relative to root), is broken, or "" when it resolves inside root.
func checkLink(root, rel, target string) string {
	if scheme.MatchString(target) || strings.HasPrefix(target, "//") {
		return "" // another site: not this test's business
	}
	file, frag, _ := strings.Cut(target, "#")
	file, err := url.PathUnescape(file)
	if err != nil {
		return fmt.Sprintf("bad escape: %v", err)
	}
	dest := rel
	if file != "" {
		if strings.HasPrefix(file, "/") {
			return "absolute path: write it relative to the file"
		}
		dest = path.Join(path.Dir(rel), file)
		if dest == ".." || strings.HasPrefix(dest, "../") {
			return "points outside the repository"
		}
	}
	st, err := os.Stat(filepath.Join(root, filepath.FromSlash(dest)))
	if err != nil {
		return fmt.Sprintf("%s does not exist", dest)
	}
	if frag == "" || st.IsDir() || !strings.HasSuffix(dest, ".md") {
		return ""
	}
	data, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(dest)))
	if err != nil {
		return err.Error()
	}
	if !anchors(string(data))[frag] {
		return fmt.Sprintf("%s has no heading #%s", dest, frag)
	}
	return ""
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root %s: %v", root, err)
	}
	return root
}

// walk calls fn for every file of the repository except version control,
// dependencies and build output.
func walk(t *testing.T, root string, fn func(rel string)) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); p != root && (strings.HasPrefix(name, ".") || name == "node_modules" || name == "artifacts") {
				return filepath.SkipDir
			}
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		fn(filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRelativeLinks: every relative link in every Markdown file of the
// repository resolves to a file inside it, and a #fragment to a heading.
func TestRelativeLinks(t *testing.T) {
	root := repoRoot(t)
	files, links := 0, 0
	walk(t, root, func(rel string) {
		if !strings.HasSuffix(rel, ".md") {
			return
		}
		files++
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range findLinks(string(data)) {
			links++
			if why := checkLink(root, rel, l.target); why != "" {
				t.Errorf("%s:%d: link %q: %s", rel, l.line, l.target, why)
			}
		}
	})
	if files < 5 || links < 10 {
		t.Fatalf("found only %d Markdown files with %d links under %s: is the walk wrong?", files, links, root)
	}
}

// TestNoReferencesOutside: no source, script or document cites files that
// live outside the repository (a sibling checkout's shared notes).
func TestNoReferencesOutside(t *testing.T) {
	root := repoRoot(t)
	exts := []string{".go", ".md", ".sh", ".ts", ".mjs", ".yaml", ".service", ".socket", ".conf", "Makefile"}
	bad := regexp.MustCompile(`\.\./shared/|/work/shared\b`)
	walk(t, root, func(rel string) {
		if rel == "test/doclinks/links_test.go" { // its own examples
			return
		}
		if !slices.ContainsFunc(exts, func(e string) bool { return strings.HasSuffix(rel, e) }) {
			return
		}
		data, err := os.ReadFile(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		for n, line := range strings.Split(string(data), "\n") {
			if bad.MatchString(line) {
				t.Errorf("%s:%d: cites a file outside the repository: %s", rel, n+1, strings.TrimSpace(line))
			}
		}
	})
}

// TestCheckLink: the checker itself, on a small tree of its own.
func TestCheckLink(t *testing.T) {
	root := t.TempDir()
	for name, text := range map[string]string{
		"README.md":    "# Top\n\n## Security invariants\n\n## Security invariants\n\n## `make demo` and you\n",
		"docs/a.md":    "# A page\n",
		"docs/img.png": "",
	} {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name, from, target string
		ok                 bool
	}{
		{"sibling", "docs/a.md", "img.png", true},
		{"up to the root", "docs/a.md", "../README.md", true},
		{"a directory", "README.md", "docs/", true},
		{"anchor", "docs/a.md", "../README.md#security-invariants", true},
		{"repeated heading", "docs/a.md", "../README.md#security-invariants-1", true},
		{"code in a heading", "README.md", "#make-demo-and-you", true},
		{"same-file anchor", "docs/a.md", "#a-page", true},
		{"escaped", "README.md", "docs/a%2Emd", true},
		{"web", "README.md", "https://example.org/x.md", true},
		{"missing file", "README.md", "docs/b.md", false},
		{"missing anchor", "docs/a.md", "../README.md#design", false},
		{"outside the repository", "README.md", "../shared/DESIGN.md", false},
		{"outside from below", "docs/a.md", "../../x/README.md", false},
		{"absolute", "README.md", "/etc/passwd", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			why := checkLink(root, c.from, c.target)
			if (why == "") != c.ok {
				t.Errorf("checkLink(%s, %q) = %q, want ok=%v", c.from, c.target, why, c.ok)
			}
		})
	}
}

// TestFindLinks: which brackets are links.
func TestFindLinks(t *testing.T) {
	text := "see [a](docs/a.md) and [b](b.md \"title\") and ![img](x.png)\n" +
		"`[not](code.md)` but [c](<c d.md>)\n" +
		"```\n[fenced](no.md)\n```\n" +
		"[ref]: ref.md\n"
	var got []string
	for _, l := range findLinks(text) {
		got = append(got, fmt.Sprintf("%d:%s", l.line, l.target))
	}
	want := []string{"1:docs/a.md", "1:b.md", "1:x.png", "2:c d.md", "6:ref.md"}
	if !slices.Equal(got, want) {
		t.Errorf("findLinks = %q, want %q", got, want)
	}
}
