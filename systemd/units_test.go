package systemd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// maxExposure is the highest `systemd-analyze security` score we accept.
const maxExposure = 2.0

// acceptedExposures are the checks of `systemd-analyze security` that the
// service is allowed to fail, each for a reason the daemon cannot avoid. Any
// other failing check is a regression, even while the score stays low.
var acceptedExposures = map[string]string{
	"PrivateNetwork=":                          "serves users and dials targets on the host's network",
	"RestrictAddressFamilies=~AF_(INET|INET6)": "users and targets",
	"RestrictAddressFamilies=~AF_NETLINK":      "nftables and interface discovery",
	"RestrictAddressFamilies=~AF_UNIX":         "admin socket, journald, sd_notify",
	"CapabilityBoundingSet=~CAP_NET_ADMIN":     "programs nftables",
	"AmbientCapabilities=":                     "CAP_NET_ADMIN for a non-root user",
	"PrivateUsers=":                            "CAP_NET_ADMIN must apply to the host's network namespace",
	"IPAddressDeny=":                           "users come from anywhere; targets are configurable",
	"DeviceAllow=":                             "char-rtc:r, implied by ProtectClock=",
	"RootDirectory=/RootImage=":                "runs from the host's file system",
	"UMask=":                                   "0027: logs and state are group-readable on purpose",
}

// analyze runs systemd-analyze with args and returns stdout and stderr. It
// skips the test when systemd-analyze is missing or too old for args.
func analyze(t *testing.T, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not on PATH; install systemd to rate and verify the units")
	}
	cmd := exec.Command("systemd-analyze", append([]string{"--no-pager"}, args...)...)
	cmd.Env = append(os.Environ(), "SYSTEMD_COLORS=0", "SYSTEMD_PAGER=", "LC_ALL=C.UTF-8")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if bytes.Contains(errb.Bytes(), []byte("unrecognized option")) {
		t.Skipf("systemd-analyze is too old for %q: %s", args, bytes.TrimSpace(errb.Bytes()))
	}
	return out.Bytes(), errb.Bytes(), err
}

// stage copies the two units into a fresh directory, so that systemd-analyze
// finds bastiond.socket next to bastiond.service, and returns the directory.
// With stub, ExecStart= points at an empty executable in that directory,
// since verify checks that the command exists.
func stage(t *testing.T, stub bool) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"bastiond.service", "bastiond.socket"} {
		b, err := fs.ReadFile(Units, name)
		if err != nil {
			t.Fatal(err)
		}
		if stub {
			b = bytes.ReplaceAll(b, []byte("/usr/local/bin/bastiond"), []byte(filepath.Join(dir, "bastiond")))
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if stub {
		if err := os.WriteFile(filepath.Join(dir, "bastiond"), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// mentions returns the lines of out that talk about our units: systemd
// reports a bad line as a warning and carries on, so any such line is a fault.
func mentions(out []byte) []string {
	var lines []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "bastiond") {
			lines = append(lines, l)
		}
	}
	return lines
}

func TestSecurityExposure(t *testing.T) {
	svc := filepath.Join(stage(t, false), "bastiond.service")
	text, warnings, err := analyze(t, "security", "--offline=true", svc)
	// systemd-analyze exits non-zero only above its own --threshold; the
	// figure is what we judge, so read it before looking at err.
	m := regexp.MustCompile(`Overall exposure level for bastiond\.service: ([0-9]+(?:\.[0-9]+)?)`).FindSubmatch(text)
	if m == nil {
		t.Fatalf("no overall exposure level in the output (err %v):\n%s%s", err, text, warnings)
	}
	score, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("systemd-analyze security --offline=true bastiond.service: %.1f", score)

	jsonOut, _, jsonErr := analyze(t, "security", "--offline=true", "--json=short", svc)
	var checks []struct {
		Name     string  `json:"name"`
		Set      bool    `json:"set"`
		Exposure *string `json:"exposure"`
	}
	if jsonErr == nil {
		jsonErr = json.Unmarshal(jsonOut, &checks)
	}

	tests := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"overall exposure at most 2.0", func(t *testing.T) {
			if score > maxExposure {
				t.Errorf("exposure %.1f is above %.1f:\n%s", score, maxExposure, text)
			}
		}},
		{"unit parses without warnings", func(t *testing.T) {
			if l := mentions(warnings); len(l) > 0 {
				t.Errorf("systemd-analyze warns about the unit:\n%s", strings.Join(l, "\n"))
			}
		}},
		{"only accepted checks fail", func(t *testing.T) {
			if jsonErr != nil {
				t.Skipf("no JSON output from systemd-analyze security: %v", jsonErr)
			}
			for _, c := range checks {
				if c.Set || c.Exposure == nil || *c.Exposure == "0.0" {
					continue
				}
				if why, ok := acceptedExposures[c.Name]; ok {
					t.Logf("%-42s %s (%s)", c.Name, *c.Exposure, why)
				} else {
					t.Errorf("%s fails with exposure %s: harden the unit or justify it in acceptedExposures", c.Name, *c.Exposure)
				}
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, tt.run)
	}
}

// TestVerify runs `systemd-analyze verify`, which loads the units as the
// manager would (it needs no running systemd) and reports unknown keys, bad
// values, missing commands and unresolvable dependencies.
func TestVerify(t *testing.T) {
	dir := stage(t, true)
	tests := []struct {
		name  string
		units []string
	}{
		{"service", []string{"bastiond.service"}},
		{"socket", []string{"bastiond.socket"}},
		{"both", []string{"bastiond.service", "bastiond.socket"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"verify", "--man=no"}
			for _, u := range tt.units {
				args = append(args, filepath.Join(dir, u))
			}
			out, warnings, err := analyze(t, args...)
			if err != nil {
				t.Errorf("systemd-analyze verify: %v\n%s%s", err, out, warnings)
			}
			if l := mentions(append(out, warnings...)); len(l) > 0 {
				t.Errorf("systemd-analyze verify complains:\n%s", strings.Join(l, "\n"))
			}
		})
	}
}

// unitFile is a unit file read the way systemd reads it: section -> key ->
// the values in order, where an empty assignment clears what came before.
type unitFile map[string]map[string][]string

func parseUnit(t *testing.T, name string) unitFile {
	t.Helper()
	b, err := fs.ReadFile(Units, name)
	if err != nil {
		t.Fatal(err)
	}
	u := unitFile{}
	section := ""
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		for strings.HasSuffix(line, `\`) && sc.Scan() {
			line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(sc.Text())
		}
		switch {
		case line == "":
		case strings.HasPrefix(line, "[") && strings.HasSuffix(line, "]"):
			section = line[1 : len(line)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok || section == "" {
				t.Fatalf("%s: not key=value in a section: %q", name, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if v == "" {
				u[section][k] = nil
				continue
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

// words splits every value of a list setting into its words.
func words(v []string) []string {
	var w []string
	for _, s := range v {
		w = append(w, strings.Fields(s)...)
	}
	return w
}

func TestUnitDirectives(t *testing.T) {
	service, socket := parseUnit(t, "bastiond.service"), parseUnit(t, "bastiond.socket")
	unit, svc, inst := service["Unit"], service["Service"], service["Install"]
	sock, sockInst := socket["Socket"], socket["Install"]
	tmpfiles, err := fs.ReadFile(Units, "tmpfiles.d/bastiond.conf")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		got   []string
		check func([]string) bool
	}{
		{"Type=notify", svc["Type"], is("notify")},
		{"notifications only from the main process", svc["NotifyAccess"], is("main")},
		{"ExecStart at the path make install rewrites", svc["ExecStart"], is("/usr/local/bin/bastiond -config /etc/bastiond/bastiond.yaml")},
		{"ExecReload sends SIGHUP to the daemon", svc["ExecReload"], is("/bin/kill -HUP $MAINPID")},
		{"restarted on failure", svc["Restart"], is("on-failure")},
		{"watchdog set", svc["WatchdogSec"], duration(func(d time.Duration) bool { return d > 0 })},
		{"stop outlasts the 30s default drain", svc["TimeoutStopSec"], duration(func(d time.Duration) bool { return d > 30*time.Second })},
		{"no cleanup on stop (fail closed)", svc["ExecStopPost"], none},
		{"requires the socket", unit["Requires"], hasWord("bastiond.socket")},
		{"starts after the socket", unit["After"], hasWord("bastiond.socket")},
		{"own user", svc["User"], is("bastiond")},
		{"own group", svc["Group"], is("bastiond")},
		{"only CAP_NET_ADMIN bounded", words(svc["CapabilityBoundingSet"]), exactly("CAP_NET_ADMIN")},
		{"only CAP_NET_ADMIN ambient", words(svc["AmbientCapabilities"]), exactly("CAP_NET_ADMIN")},
		{"no privilege escalation", svc["NoNewPrivileges"], is("yes")},
		{"address families: unix, inet, inet6, netlink", words(svc["RestrictAddressFamilies"]), exactly("AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK")},
		{"system call allow list", svc["SystemCallFilter"], func(v []string) bool { return len(v) > 0 && v[0] == "@system-service" }},
		{"native system calls only", svc["SystemCallArchitectures"], is("native")},
		{"no PrivateUsers (CAP_NET_ADMIN needs the host user namespace)", svc["PrivateUsers"], none},
		{"read-only system", svc["ProtectSystem"], is("strict")},
		{"no writable configuration", append(svc["ConfigurationDirectory"], svc["ReadWritePaths"]...), none},
		{"state directory", svc["StateDirectory"], is("bastiond")},
		{"logs directory", svc["LogsDirectory"], is("bastiond")},
		{"runtime directory for the admin socket", svc["RuntimeDirectory"], is("bastiond")},
		{"runtime directory reachable by admins", svc["RuntimeDirectoryMode"], is("0755")},
		{"state mode matches tmpfiles.d", svc["StateDirectoryMode"], tmpfilesMode(tmpfiles, "/var/lib/bastiond")},
		{"logs mode matches tmpfiles.d", svc["LogsDirectoryMode"], tmpfilesMode(tmpfiles, "/var/log/bastiond")},
		{"descriptors for 10,000+ sessions", svc["LimitNOFILE"], atLeast(65536)},
		{"started at boot", inst["WantedBy"], hasWord("multi-user.target")},
		{"TCP 443", sock["ListenStream"], is("443")},
		{"UDP 443", sock["ListenDatagram"], is("443")},
		{"dual stack", sock["BindIPv6Only"], is("both")},
		{"socket activates bastiond.service", sock["Service"], is("bastiond.service")},
		{"one name for the socket's descriptors at most", sock["FileDescriptorName"], func(v []string) bool { return len(v) <= 1 }},
		{"socket started at boot", sockInst["WantedBy"], hasWord("sockets.target")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.check(tt.got) {
				t.Errorf("got %q", tt.got)
			}
		})
	}
}

func TestInstallFiles(t *testing.T) {
	tests := []struct {
		file string
		line string // fields, compared with runs of blanks collapsed
	}{
		{"sysusers.d/bastiond.conf", `u bastiond - "bastiond bastion daemon" /var/lib/bastiond /usr/sbin/nologin`},
		{"sysusers.d/bastiond.conf", "g bastion-admin -"},
		{"tmpfiles.d/bastiond.conf", "d /var/lib/bastiond 0750 bastiond bastiond -"},
		{"tmpfiles.d/bastiond.conf", "d /var/lib/bastiond/recordings 0750 bastiond bastiond -"},
		{"tmpfiles.d/bastiond.conf", "d /var/log/bastiond 0750 bastiond bastiond -"},
		{"tmpfiles.d/bastiond.conf", "d /etc/bastiond 0750 root bastiond -"},
	}
	for _, tt := range tests {
		t.Run(tt.file+": "+tt.line, func(t *testing.T) {
			b, err := fs.ReadFile(Units, tt.file)
			if err != nil {
				t.Fatal(err)
			}
			for _, l := range strings.Split(string(b), "\n") {
				if strings.Join(strings.Fields(l), " ") == tt.line {
					return
				}
			}
			t.Errorf("%s lacks %q", tt.file, tt.line)
		})
	}
}

// TestApplyInstallFiles applies sysusers.d and tmpfiles.d to an empty root
// with the real tools, as the host does at install and boot, and checks what
// they create. It needs root for the chown.
func TestApplyInstallFiles(t *testing.T) {
	for _, tool := range []string{"systemd-sysusers", "systemd-tmpfiles"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not on PATH", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to create files owned by bastiond")
	}
	root := t.TempDir()
	if err := os.Mkdir(filepath.Join(root, "etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ tool, file string }{
		{"systemd-sysusers", "sysusers.d/bastiond.conf"},
		{"systemd-tmpfiles", "tmpfiles.d/bastiond.conf"},
	} {
		b, err := fs.ReadFile(Units, c.file)
		if err != nil {
			t.Fatal(err)
		}
		conf := filepath.Join(t.TempDir(), "bastiond.conf")
		if err := os.WriteFile(conf, b, 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"--root=" + root, conf}
		if c.tool == "systemd-tmpfiles" {
			args = append([]string{"--create"}, args...)
		}
		if out, err := exec.Command(c.tool, args...).CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", c.tool, c.file, err, out)
		}
	}
	users, groups := idNames(t, filepath.Join(root, "etc/passwd")), idNames(t, filepath.Join(root, "etc/group"))
	if _, ok := groups["bastion-admin"]; !ok {
		t.Errorf("systemd-sysusers created no bastion-admin group: %v", groups)
	}
	tests := []struct {
		path         string
		mode         os.FileMode
		owner, group string
	}{
		{"/var/lib/bastiond", 0o750, "bastiond", "bastiond"},
		{"/var/lib/bastiond/recordings", 0o750, "bastiond", "bastiond"},
		{"/var/log/bastiond", 0o750, "bastiond", "bastiond"},
		{"/etc/bastiond", 0o750, "root", "bastiond"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			fi, err := os.Stat(filepath.Join(root, tt.path))
			if err != nil {
				t.Fatal(err)
			}
			if !fi.IsDir() || fi.Mode().Perm() != tt.mode {
				t.Errorf("mode %v, want a directory with %v", fi.Mode(), tt.mode)
			}
			uid, gid := owner(fi)
			if want := idOf(users, tt.owner); uid != want {
				t.Errorf("owner uid %d, want %s (%d)", uid, tt.owner, want)
			}
			if want := idOf(groups, tt.group); gid != want {
				t.Errorf("group gid %d, want %s (%d)", gid, tt.group, want)
			}
		})
	}
}

// idNames reads name -> id from a passwd or group file.
func idNames(t *testing.T, path string) map[string]uint32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[string]uint32{}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Split(l, ":")
		if len(f) < 3 {
			continue
		}
		if id, err := strconv.ParseUint(f[2], 10, 32); err == nil {
			ids[f[0]] = uint32(id)
		}
	}
	return ids
}

// owner is the uid and gid of a file.
func owner(fi os.FileInfo) (uid, gid uint32) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return ^uint32(0), ^uint32(0)
	}
	return st.Uid, st.Gid
}

// idOf is the id of name in ids; root is 0 whether listed or not.
func idOf(ids map[string]uint32, name string) uint32 {
	if name == "root" {
		return 0
	}
	if id, ok := ids[name]; ok {
		return id
	}
	return ^uint32(0)
}

func is(want string) func([]string) bool {
	return func(v []string) bool { return len(v) == 1 && v[0] == want }
}

func none(v []string) bool { return len(v) == 0 }

func hasWord(want string) func([]string) bool {
	return func(v []string) bool { return slices.Contains(words(v), want) }
}

// exactly holds when v is the set want: no more, no fewer, no negation.
func exactly(want ...string) func([]string) bool {
	return func(v []string) bool {
		got := slices.Clone(v)
		slices.Sort(got)
		w := slices.Clone(want)
		slices.Sort(w)
		return slices.Equal(slices.Compact(got), w)
	}
}

// duration checks a single value written as a Go duration (e.g. 45s).
func duration(ok func(time.Duration) bool) func([]string) bool {
	return func(v []string) bool {
		if len(v) != 1 {
			return false
		}
		d, err := time.ParseDuration(v[0])
		return err == nil && ok(d)
	}
}

func atLeast(n int) func([]string) bool {
	return func(v []string) bool {
		if len(v) != 1 {
			return false
		}
		soft, hard, found := strings.Cut(v[0], ":")
		if !found {
			hard = soft
		}
		s, err1 := strconv.Atoi(soft)
		h, err2 := strconv.Atoi(hard)
		return err1 == nil && err2 == nil && s >= n && h >= n
	}
}

// tmpfilesMode holds when v is the mode tmpfiles.d gives path.
func tmpfilesMode(conf []byte, path string) func([]string) bool {
	return func(v []string) bool {
		for _, l := range strings.Split(string(conf), "\n") {
			if f := strings.Fields(l); len(f) >= 3 && f[0] == "d" && f[1] == path {
				return len(v) == 1 && v[0] == f[2]
			}
		}
		return false
	}
}
