package packagetest

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// throwaway is a root file system to install packages into: an overlay of
// this machine's own, whose changes land in a temporary directory and
// never on the machine. Each command runs in a mount namespace of its own
// that mounts the overlay and chroots into it, with empty /run and /tmp:
// no systemd runs there, as in an image build.
type throwaway struct{ upper, work, merged string }

func newThrowaway(t *testing.T) *throwaway {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the maintainer scripts run under dpkg in a throwaway root (an overlay in a mount namespace): needs root (sudo make test)")
	}
	need(t, "unshare", "makes the throwaway root's mount namespace")
	dir := t.TempDir()
	r := &throwaway{filepath.Join(dir, "upper"), filepath.Join(dir, "work"), filepath.Join(dir, "merged")}
	for _, d := range []string{r.upper, r.work, r.merged} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// man-db's trigger would rebuild the whole index on every install.
	r.must(t, "rm -f /var/lib/man-db/auto-update")
	return r
}

// put copies file into the throwaway root's /var/cache/bastiond-test.
func (r *throwaway) put(t *testing.T, file string) string {
	t.Helper()
	dir := filepath.Join(r.upper, "var", "cache", "bastiond-test")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, filepath.Base(file)), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "/var/cache/bastiond-test/" + filepath.Base(file)
}

// sh runs script with sh -e inside the throwaway root.
func (r *throwaway) sh(script string) (string, error) {
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-ec", `
mount -t overlay overlay -o lowerdir=/,upperdir="$1",workdir="$2" "$3"
mount --bind /dev "$3/dev"
mount -t proc proc "$3/proc"
mount -t tmpfs tmpfs "$3/run"
mount -t tmpfs tmpfs "$3/tmp"
exec chroot "$3" sh -ec "$4"`, "sh", r.upper, r.work, r.merged, script)
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C", "HOME=/root"}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func (r *throwaway) must(t *testing.T, script string) string {
	t.Helper()
	out, err := r.sh(script)
	if err != nil {
		t.Fatalf("in the throwaway root: %s: %v\n%s", script, err, out)
	}
	return out
}

// next builds the amd64 .deb or .rpm again as a later version, from the
// same files: the version an upgrade goes to.
func next(t *testing.T, format string) string {
	t.Helper()
	d := dist(t)
	out := filepath.Join(d, "next")
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	ver := built.pkgVer + "+next"
	b, err := run(root, []string{"PKG_ARCH=amd64", "PKG_VERSION=" + ver, "PKG_STAGE=" + filepath.Join(d, "pkgroot", "amd64")},
		"go", "tool", "nfpm", "package", "-f", "packaging/nfpm.yaml", "-p", format, "-t", out+"/")
	if err != nil {
		t.Fatalf("nfpm %s %s: %v\n%s", format, ver, err, b)
	}
	if format == "deb" {
		return filepath.Join(out, "bastiond_"+ver+"_amd64.deb")
	}
	return filepath.Join(out, "bastiond-"+ver+"-1.x86_64.rpm")
}

// state is what the tests look at after each step, one line per fact.
const state = `
if u=$(getent passwd bastiond); then echo "$u" | cut -d: -f1,6,7; else echo "no user bastiond"; fi
getent group bastion-admin >/dev/null && echo "group bastion-admin" || echo "no group bastion-admin"
for f in /var/lib/bastiond /var/lib/bastiond/recordings /var/log/bastiond /etc/bastiond /etc/bastiond/bastiond.yaml /usr/sbin/bastiond; do
	if [ -e $f ]; then stat -c '%n %a %U:%G' $f; else echo "$f absent"; fi
done
[ -L /etc/systemd/system/sockets.target.wants/bastiond.socket ] && echo "socket enabled" || echo "socket not enabled"
grep -q 'edited by the admin' /etc/bastiond/bastiond.yaml 2>/dev/null && echo "config edited" || echo "config not edited"
dpkg-query -W -f '${Version} ${db:Status-Abbrev}\n' bastiond 2>/dev/null || echo "not known to dpkg"
`

func lines(s string) []string { return strings.Split(strings.TrimSpace(s), "\n") }

// expect fails for each line of want that the state does not hold.
func expect(t *testing.T, step, got string, want ...string) {
	t.Helper()
	have := map[string]bool{}
	for _, l := range lines(got) {
		have[strings.TrimSpace(l)] = true
	}
	for _, w := range want {
		if !have[strings.TrimSpace(w)] {
			t.Errorf("after %s: no %q in\n%s", step, w, got)
		}
	}
}

// TestDebScripts: first install, upgrade, removal and purge with dpkg, in
// a root where systemd does not run: the user and directories are made,
// the socket enabled and the admin told to write the configuration; an
// upgrade keeps the edited configuration and says nothing of a first
// install; removal stops nothing it cannot and says the firewall stays
// closed; purge takes the state, the logs, the user and the groups.
func TestDebScripts(t *testing.T) {
	deb, nextDeb := debFile(t, "amd64"), next(t, "deb")
	r := newThrowaway(t)
	if out, _ := r.sh("dpkg-query -W bastiond"); strings.Contains(out, "bastiond\t") {
		t.Skip("bastiond is installed on this machine: the throwaway root starts from it")
	}
	deb, nextDeb = r.put(t, deb), r.put(t, nextDeb)
	v, nv := built.pkgVer, built.pkgVer+"+next"

	out := r.must(t, "dpkg -i "+deb)
	for _, w := range []string{"bastiond.socket is enabled but not started", "Write the configuration first", "bastiond -check-config", "enable --now bastiond.socket bastiond.service"} {
		if !strings.Contains(out, w) {
			t.Errorf("first install does not say %q:\n%s", w, out)
		}
	}
	installed := []string{"bastiond:/var/lib/bastiond:/usr/sbin/nologin", "group bastion-admin",
		"/var/lib/bastiond 750 bastiond:bastiond", "/var/lib/bastiond/recordings 750 bastiond:bastiond",
		"/var/log/bastiond 750 bastiond:bastiond", "/etc/bastiond 750 root:bastiond",
		"/etc/bastiond/bastiond.yaml 640 root:bastiond", "/usr/sbin/bastiond 755 root:root", "socket enabled"}
	expect(t, "first install", r.must(t, state), append(installed, "config not edited", v+" ii ")...)

	r.must(t, "echo '# edited by the admin' >> /etc/bastiond/bastiond.yaml")
	out = r.must(t, "dpkg -i "+nextDeb)
	if strings.Contains(out, "Write the configuration first") {
		t.Errorf("an upgrade speaks as a first install:\n%s", out)
	}
	expect(t, "upgrade", r.must(t, state), append(installed, "config edited", nv+" ii ")...)

	out = r.must(t, "dpkg -r bastiond")
	if !strings.Contains(out, "stay in force") || !strings.Contains(out, "bastiond -cleanup") {
		t.Errorf("removal does not say that the firewall stays closed and how to open it:\n%s", out)
	}
	expect(t, "remove", r.must(t, state), "bastiond:/var/lib/bastiond:/usr/sbin/nologin", "group bastion-admin",
		"/var/lib/bastiond 750 bastiond:bastiond", "/etc/bastiond/bastiond.yaml 640 root:bastiond",
		"/usr/sbin/bastiond absent", "config edited", nv+" rc ")

	out = r.must(t, "dpkg -P bastiond")
	for _, w := range []string{"WARNING: removing the user bastiond", "WARNING: removing the group bastion-admin", "removed /var/lib/bastiond"} {
		if !strings.Contains(out, w) {
			t.Errorf("purge does not say %q:\n%s", w, out)
		}
	}
	expect(t, "purge", r.must(t, state), "no user bastiond", "no group bastion-admin", "/var/lib/bastiond absent",
		"/var/log/bastiond absent", "/etc/bastiond absent", "socket not enabled", "not known to dpkg")
}

// TestRPMScripts: the same scripts as rpm scriptlets, which rpm calls with
// the number of versions installed: 1 a first install, 2 an upgrade (then
// the old version's %preun and %postun with 1), 0 an erase. rpm has no
// purge: an erase stops and disables the units and keeps the state and the
// user. (Debian's rpm: --force-debian; --nodeps, as systemd is dpkg's.)
func TestRPMScripts(t *testing.T) {
	need(t, "rpm", "installs the .rpm")
	rpm, nextRPM := rpmFile(t, "x86_64"), next(t, "rpm")
	r := newThrowaway(t)
	rpm, nextRPM = r.put(t, rpm), r.put(t, nextRPM)
	r.must(t, "rpm --initdb")
	const flags = "--nodeps --force-debian "

	out := r.must(t, "rpm -i "+flags+rpm)
	if !strings.Contains(out, "Write the configuration first") || strings.Contains(out, "scriptlet failed") {
		t.Errorf("first install:\n%s", out)
	}
	installed := []string{"bastiond:/var/lib/bastiond:/usr/sbin/nologin", "group bastion-admin",
		"/var/lib/bastiond 750 bastiond:bastiond", "/var/log/bastiond 750 bastiond:bastiond",
		"/etc/bastiond 750 root:bastiond", "/etc/bastiond/bastiond.yaml 640 root:bastiond", "socket enabled"}
	expect(t, "rpm first install", r.must(t, state), append(installed, "config not edited")...)

	r.must(t, "echo '# edited by the admin' >> /etc/bastiond/bastiond.yaml")
	out = r.must(t, "rpm -U "+flags+nextRPM)
	if strings.Contains(out, "Write the configuration first") || strings.Contains(out, "stay in force") || strings.Contains(out, "scriptlet failed") {
		t.Errorf("an upgrade speaks as a first install or a removal, or fails:\n%s", out)
	}
	expect(t, "rpm upgrade", r.must(t, state), append(installed, "config edited", "/usr/sbin/bastiond 755 root:root")...)
	if q := r.must(t, "rpm -q bastiond"); !strings.Contains(q, built.pkgVer+"+next") {
		t.Errorf("after the upgrade rpm -q says %s", q)
	}

	out = r.must(t, "rpm -e "+flags+"bastiond")
	if !strings.Contains(out, "stay in force") || strings.Contains(out, "scriptlet failed") {
		t.Errorf("erase:\n%s", out)
	}
	expect(t, "rpm erase", r.must(t, state), "bastiond:/var/lib/bastiond:/usr/sbin/nologin",
		"/var/lib/bastiond 750 bastiond:bastiond", "/usr/sbin/bastiond absent", "socket not enabled")
}

// TestReproducible: packaging the same files again at the same commit
// gives the same bytes (file times come from SOURCE_DATE_EPOCH, the
// commit's time); make release-check covers the binaries themselves.
func TestReproducible(t *testing.T) {
	d := dist(t)
	epoch := strings.TrimSpace(must(t, root, "git", "log", "-1", "--format=%ct"))
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		epoch = e
	}
	for _, f := range []struct{ format, file string }{{"deb", debFile(t, "amd64")}, {"rpm", rpmFile(t, "x86_64")}} {
		out := t.TempDir()
		b, err := run(root, []string{"PKG_ARCH=amd64", "PKG_VERSION=" + built.pkgVer, "SOURCE_DATE_EPOCH=" + epoch,
			"PKG_STAGE=" + filepath.Join(d, "pkgroot", "amd64")},
			"go", "tool", "nfpm", "package", "-f", "packaging/nfpm.yaml", "-p", f.format, "-t", out+"/")
		if err != nil {
			t.Fatalf("nfpm %s: %v\n%s", f.format, err, b)
		}
		first, err1 := os.ReadFile(f.file)
		again, err2 := os.ReadFile(filepath.Join(out, filepath.Base(f.file)))
		if err1 != nil || err2 != nil || !bytes.Equal(first, again) {
			t.Errorf("%s: packaged again, %s differs (%v, %v)", f.format, filepath.Base(f.file), err1, err2)
		}
	}
}
