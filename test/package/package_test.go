// Package packagetest checks what make package builds: the .deb and .rpm
// for amd64 and arm64 (packaging/build.sh, once, into a temporary
// directory), their files, modes, owners and conffile, that the packaged
// binaries run and that bastiond carries its browser client, the copyright
// file against the binaries' modules and the web client's npm packages,
// lintian, and, as root, the maintainer scripts' first install, upgrade,
// removal and purge with the real dpkg in a throwaway root (an overlay of
// this machine's own file system, in a mount namespace of its own). The
// paths that need a running systemd (the hand-over on upgrade, stopping the
// units) are the systemd container tier's.
package packagetest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
)

// root is the repository's top directory.
var root = filepath.Join("..", "..")

var arches = []struct {
	deb, rpm string
	machine  elf.Machine
}{
	{"amd64", "x86_64", elf.EM_X86_64},
	{"arm64", "aarch64", elf.EM_AARCH64},
}

// built is make package's output, built once for all the tests.
var built struct {
	once    sync.Once
	dir     string // DIST
	version string // the binaries' (git describe)
	pkgVer  string // the packages' (packaging/version.sh)
	err     error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// need skips the test when tool is missing.
func need(t *testing.T, tool, why string) {
	t.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("%s is not installed (%s): sudo make deps-test installs it", tool, why)
	}
}

// dist builds the packages once and returns the directory that holds them.
func dist(t *testing.T) string {
	t.Helper()
	need(t, "dpkg-deb", "reads the .deb")
	if _, err := os.Stat(filepath.Join(root, "web", "dist", "connect.js")); err != nil {
		t.Skip("web/dist is not built, and make package refuses to package without the browser client: run make web")
	}
	built.once.Do(func() {
		built.dir, built.err = os.MkdirTemp("", "bastiond-package-")
		if built.err != nil {
			return
		}
		var out []byte
		if out, built.err = run(root, nil, "git", "describe", "--tags", "--always", "--dirty"); built.err != nil {
			built.err = fmt.Errorf("git describe: %v: %s", built.err, out)
			return
		}
		built.version = strings.TrimSpace(string(out))
		if out, built.err = run(root, nil, "sh", "packaging/version.sh"); built.err != nil {
			built.err = fmt.Errorf("version.sh: %v: %s", built.err, out)
			return
		}
		built.pkgVer = strings.TrimSpace(string(out))
		out, built.err = run(root, []string{"DIST=" + built.dir, "VERSION=" + built.version, "PKG_ARCHES=amd64 arm64"},
			"bash", "packaging/build.sh")
		if built.err != nil {
			built.err = fmt.Errorf("packaging/build.sh: %v\n%s", built.err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return built.dir
}

func run(dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func must(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	out, err := run(dir, nil, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func debFile(t *testing.T, arch string) string {
	t.Helper()
	d := dist(t)
	return filepath.Join(d, "bastiond_"+built.pkgVer+"_"+arch+".deb")
}

func rpmFile(t *testing.T, arch string) string {
	t.Helper()
	d := dist(t)
	return filepath.Join(d, "bastiond-"+built.pkgVer+"-1."+arch+".rpm")
}

// entry is a file of a package as its lister shows it.
type entry struct{ mode, owner string }

// want is every file the package must hold, its mode and owner. Paths
// that differ between .deb and .rpm are set apart by a prefix.
var want = map[string]entry{
	"/usr/sbin/bastiond":                                   {"-rwxr-xr-x", "root/root"},
	"/usr/bin/bastionctl":                                  {"-rwxr-xr-x", "root/root"},
	"/usr/lib/systemd/system/bastiond.service":             {"-rw-r--r--", "root/root"},
	"/usr/lib/systemd/system/bastiond.socket":              {"-rw-r--r--", "root/root"},
	"/usr/lib/sysusers.d/bastiond.conf":                    {"-rw-r--r--", "root/root"},
	"/usr/lib/tmpfiles.d/bastiond.conf":                    {"-rw-r--r--", "root/root"},
	"/etc/bastiond/bastiond.yaml":                          {"-rw-r-----", "root/root"},
	"/usr/share/doc/bastiond/bastiond.example.yaml":        {"-rw-r--r--", "root/root"},
	"/usr/share/doc/bastiond/copyright":                    {"-rw-r--r--", "root/root"},
	"/usr/share/man/man8/bastiond.8.gz":                    {"-rw-r--r--", "root/root"},
	"/usr/share/man/man1/bastionctl.1.gz":                  {"-rw-r--r--", "root/root"},
	"/usr/share/man/man1/bastionctl-upgrade.1.gz":          {"-rw-r--r--", "root/root"},
	"/usr/share/man/man1/bastionctl-tunnel.1.gz":           {"-rw-r--r--", "root/root"},
	"/usr/share/bash-completion/completions/bastionctl":    {"-rw-r--r--", "root/root"},
	"/usr/share/fish/vendor_completions.d/bastionctl.fish": {"-rw-r--r--", "root/root"},
	"deb:/usr/share/zsh/vendor-completions/_bastionctl":    {"-rw-r--r--", "root/root"},
	"deb:/usr/share/doc/bastiond/changelog.gz":             {"-rw-r--r--", "root/root"},
	"rpm:/usr/share/zsh/site-functions/_bastionctl":        {"-rw-r--r--", "root/root"},
}

// checkFiles compares a package's listing with want for format.
func checkFiles(t *testing.T, format string, got map[string]entry) {
	t.Helper()
	for p, w := range want {
		if f, rest, ok := strings.Cut(p, ":"); ok {
			if f != format {
				continue
			}
			p = rest
		}
		g, ok := got[p]
		switch {
		case !ok:
			t.Errorf("%s: no %s", format, p)
		case g != w:
			t.Errorf("%s: %s is %s %s, want %s %s", format, p, g.mode, g.owner, w.mode, w.owner)
		}
	}
	var man1 int
	for p := range got {
		if strings.HasPrefix(p, "/usr/share/man/man1/bastionctl") {
			man1++
		}
	}
	if man1 < 20 { // one page per command: bastionctl has more than 40
		t.Errorf("%s: %d bastionctl man pages", format, man1)
	}
}

// TestDeb: each .deb holds every file with its mode and owner, the
// configuration as a conffile, and control fields that say what it is.
func TestDeb(t *testing.T) {
	for _, a := range arches {
		t.Run(a.deb, func(t *testing.T) {
			deb := debFile(t, a.deb)
			got := map[string]entry{}
			for _, line := range strings.Split(must(t, ".", "dpkg-deb", "-c", deb), "\n") {
				f := strings.Fields(line)
				if len(f) < 6 {
					continue
				}
				got[strings.TrimPrefix(f[len(f)-1], ".")] = entry{f[0], f[1]}
			}
			checkFiles(t, "deb", got)

			tmp := t.TempDir()
			must(t, ".", "dpkg-deb", "-e", deb, tmp)
			conffiles, err := os.ReadFile(filepath.Join(tmp, "conffiles"))
			if err != nil || strings.TrimSpace(string(conffiles)) != "/etc/bastiond/bastiond.yaml" {
				t.Errorf("conffiles is %q (%v), want /etc/bastiond/bastiond.yaml", conffiles, err)
			}
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				b, err := os.ReadFile(filepath.Join(tmp, s))
				src, _ := os.ReadFile(filepath.Join(root, "packaging", "scripts", s))
				if err != nil || !bytes.Equal(b, src) || len(src) == 0 {
					t.Errorf("the .deb's %s is not packaging/scripts/%s (%v)", s, s, err)
				}
			}
			for field, w := range map[string]string{"Package": "bastiond", "Version": built.pkgVer,
				"Architecture": a.deb, "Depends": "systemd", "Section": "net"} {
				if g := strings.TrimSpace(must(t, ".", "dpkg-deb", "-f", deb, field)); g != w {
					t.Errorf("%s is %q, want %q", field, g, w)
				}
			}
		})
	}
}

// TestRPM: each .rpm holds the same files, the configuration as
// %config(noreplace), and the same scripts as its scriptlets.
func TestRPM(t *testing.T) {
	need(t, "rpm", "reads the .rpm")
	for _, a := range arches {
		t.Run(a.rpm, func(t *testing.T) {
			rpm := rpmFile(t, a.rpm)
			got := map[string]entry{}
			for _, line := range strings.Split(must(t, ".", "rpm", "-qp", "--qf", "[%{FILENAMES}\t%{FILEMODES:perms}\t%{FILEUSERNAME}/%{FILEGROUPNAME}\t%{FILEFLAGS:fflags}\n]", rpm), "\n") {
				f := strings.Split(line, "\t")
				if len(f) != 4 {
					continue
				}
				got[f[0]] = entry{f[1], f[2]}
				if f[0] == "/etc/bastiond/bastiond.yaml" && f[3] != "cn" {
					t.Errorf("%s has flags %q, want cn (%%config(noreplace))", f[0], f[3])
				}
			}
			checkFiles(t, "rpm", got)
			if _, ok := got["/etc/bastiond/bastiond.yaml"]; !ok {
				t.Error("no configuration file")
			}
			if arch := strings.TrimSpace(must(t, ".", "rpm", "-qp", "--qf", "%{ARCH}", rpm)); arch != a.rpm {
				t.Errorf("arch %q, want %q", arch, a.rpm)
			}
			scripts := must(t, ".", "rpm", "-qp", "--scripts", rpm)
			for _, s := range []string{"postinst", "prerm", "postrm"} {
				src, err := os.ReadFile(filepath.Join(root, "packaging", "scripts", s))
				if err != nil || !strings.Contains(scripts, strings.TrimSpace(string(src))) {
					t.Errorf("the .rpm's scriptlets lack packaging/scripts/%s (%v)", s, err)
				}
			}
		})
	}
}

// extract unpacks a .deb's files into a temporary directory.
func extract(t *testing.T, arch string) string {
	t.Helper()
	dir := t.TempDir()
	must(t, ".", "dpkg-deb", "-x", debFile(t, arch), dir)
	return dir
}

// TestBinaries: the packaged binaries are static Linux builds for their
// architecture; on this machine's they run, with the version git gives,
// and bastiond has its browser client: the example configuration grants
// browser sessions, which a daemon without the client refuses before it
// checks this host (daemon.CheckConfig). The unit runs the packaged path.
func TestBinaries(t *testing.T) {
	for _, a := range arches {
		t.Run(a.deb, func(t *testing.T) {
			dir := extract(t, a.deb)
			for _, bin := range []string{"usr/sbin/bastiond", "usr/bin/bastionctl"} {
				f, err := elf.Open(filepath.Join(dir, bin))
				if err != nil {
					t.Fatal(err)
				}
				if f.Machine != a.machine {
					t.Errorf("%s is for %v, want %v", bin, f.Machine, a.machine)
				}
				if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
					t.Errorf("%s is dynamically linked; the release build is static (CGO off)", bin)
				}
				f.Close()
			}
			unit, err := os.ReadFile(filepath.Join(dir, "usr/lib/systemd/system/bastiond.service"))
			if err != nil || !bytes.Contains(unit, []byte("\nExecStart=/usr/sbin/bastiond -config /etc/bastiond/bastiond.yaml\n")) ||
				bytes.Contains(unit, []byte("/usr/local/")) {
				t.Errorf("the packaged unit does not start /usr/sbin/bastiond (%v)", err)
			}
			if a.machine != hostMachine(t) {
				return
			}
			bastiond := filepath.Join(dir, "usr/sbin/bastiond")
			if out := must(t, dir, bastiond, "-version"); out != "bastiond "+built.version+"\n" {
				t.Errorf("bastiond -version says %q, want %q", out, "bastiond "+built.version)
			}
			if out := must(t, dir, filepath.Join(dir, "usr/bin/bastionctl"), "--help"); !strings.Contains(out, "upgrade") {
				t.Errorf("bastionctl --help names no upgrade command:\n%s", out)
			}
			out, _ := run(dir, nil, bastiond, "-check-config", "-config", filepath.Join(dir, "etc/bastiond/bastiond.yaml"))
			switch {
			case bytes.Contains(out, []byte("without its browser client")):
				t.Errorf("the packaged bastiond has no browser client: %s", out)
			case !bytes.Contains(out, []byte("host check")) && !bytes.Contains(out, []byte("configuration is valid")):
				t.Errorf("bastiond -check-config with the example did not reach the host check: %s", out)
			}
		})
	}
}

func hostMachine(t *testing.T) elf.Machine {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	return f.Machine
}

// gunzip reads a gzip file.
func gunzip(t *testing.T, file string) string {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(z)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDocs: the man pages name every flag of bastiond and every
// subcommand's options of bastionctl, and the completions complete
// bastionctl.
func TestDocs(t *testing.T) {
	dir := extract(t, "amd64")
	page := gunzip(t, filepath.Join(dir, "usr/share/man/man8/bastiond.8.gz"))
	// bastiond's flags as the binary itself lists them (-h).
	out, _ := run(dir, nil, filepath.Join(dir, "usr/sbin/bastiond"), "-h")
	flags := regexp.MustCompile(`(?m)^  -([a-z-]+)`).FindAllStringSubmatch(string(out), -1)
	if len(flags) < 4 {
		t.Fatalf("bastiond -h lists %d flags:\n%s", len(flags), out)
	}
	for _, f := range flags {
		if !strings.Contains(page, `\fB-`+f[1]+`\fP`) && !strings.Contains(page, `\fB\-`+strings.ReplaceAll(f[1], "-", `\-`)+`\fP`) {
			t.Errorf("bastiond.8 does not document -%s", f[1])
		}
	}
	upgrade := gunzip(t, filepath.Join(dir, "usr/share/man/man1/bastionctl-upgrade.1.gz"))
	if !strings.Contains(upgrade, "json") || !strings.Contains(upgrade, ".TH \"BASTIONCTL\" \"1\"") {
		t.Errorf("bastionctl-upgrade.1 is not the command's page:\n%s", upgrade)
	}
	for file, want := range map[string]string{
		"usr/share/bash-completion/completions/bastionctl":    "__start_bastionctl",
		"usr/share/zsh/vendor-completions/_bastionctl":        "#compdef bastionctl",
		"usr/share/fish/vendor_completions.d/bastionctl.fish": "complete -c bastionctl",
	} {
		b, err := os.ReadFile(filepath.Join(dir, file))
		if err != nil || !bytes.Contains(b, []byte(want)) {
			t.Errorf("%s lacks %q (%v)", file, want, err)
		}
	}
}

// paragraphs splits a Debian control-style file into its paragraphs'
// first lines of each field.
func paragraphs(text string) []map[string]string {
	var ps []map[string]string
	for _, block := range strings.Split(text, "\n\n") {
		p := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(block))
		for sc.Scan() {
			line := sc.Text()
			if k, v, ok := strings.Cut(line, ":"); ok && line != "" && line[0] != ' ' {
				p[k] = strings.TrimSpace(v)
			}
		}
		if len(p) > 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

// TestCopyright: the copyright file is in Debian's format, has a Files
// paragraph for every module linked into each packaged binary and for
// every npm package the browser client bundles, and a License paragraph
// for every licence those name.
func TestCopyright(t *testing.T) {
	for _, a := range arches {
		t.Run(a.deb, func(t *testing.T) {
			dir := extract(t, a.deb)
			b, err := os.ReadFile(filepath.Join(dir, "usr/share/doc/bastiond/copyright"))
			if err != nil {
				t.Fatal(err)
			}
			ps := paragraphs(string(b))
			if len(ps) == 0 || ps[0]["Format"] != "https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/" {
				t.Fatalf("no Format header: %q", b[:min(len(b), 200)])
			}
			files, licences := map[string]string{}, map[string]bool{}
			for _, p := range ps[1:] {
				if f, ok := p["Files"]; ok {
					if p["Copyright"] == "" || p["License"] == "" {
						t.Errorf("Files %s without Copyright or License", f)
					}
					files[f] = p["License"]
				} else if l, ok := p["License"]; ok {
					licences[l] = true
				}
			}
			for f, l := range files {
				if !licences[l] {
					t.Errorf("Files %s names licence %q, which has no License paragraph", f, l)
				}
			}
			for _, bin := range []string{"usr/sbin/bastiond", "usr/bin/bastionctl"} {
				info, err := buildinfo.ReadFile(filepath.Join(dir, bin))
				if err != nil {
					t.Fatal(err)
				}
				if len(info.Deps) < 5 {
					t.Fatalf("%s links %d modules", bin, len(info.Deps))
				}
				for _, d := range info.Deps {
					if d.Replace != nil {
						d = d.Replace
					}
					if _, ok := files[d.Path+"@"+d.Version+"/*"]; !ok {
						t.Errorf("no Files paragraph for %s@%s, linked into %s", d.Path, d.Version, bin)
					}
				}
			}
			lock, err := os.ReadFile(filepath.Join(root, "web", "package-lock.json"))
			if err != nil {
				t.Fatal(err)
			}
			var l struct {
				Packages map[string]struct{ Dev bool }
			}
			if err := json.Unmarshal(lock, &l); err != nil {
				t.Fatal(err)
			}
			var npm int
			for k, p := range l.Packages {
				if strings.HasPrefix(k, "node_modules/") && !p.Dev {
					npm++
					if _, ok := files["web/"+k+"/*"]; !ok {
						t.Errorf("no Files paragraph for the npm package %s", k)
					}
				}
			}
			if npm < 3 || files["web/node_modules/@xterm/xterm/*"] == "" {
				t.Errorf("%d npm packages, @xterm/xterm's licence %q", npm, files["web/node_modules/@xterm/xterm/*"])
			}
		})
	}
}

// TestLintian: lintian finds no error and no warning in the .deb that
// packaging/lintian-overrides does not explain.
func TestLintian(t *testing.T) {
	need(t, "lintian", "checks the .deb")
	deb := debFile(t, "amd64")
	out, err := run(".", nil, "lintian", "--pedantic", "--fail-on", "none", deb)
	if err != nil {
		t.Fatalf("lintian: %v\n%s", err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "E:") || strings.HasPrefix(line, "W:") {
			t.Errorf("lintian: %s", line)
		}
	}
}
