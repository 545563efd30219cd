package systemd

import (
	"bufio"
	"io/fs"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` score we accept.
const maxExposure = 2.0

func TestSecurityExposure(t *testing.T) {
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Skip("systemd-analyze is not installed; cannot rate the unit")
	}
	out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", "bastiond.service").CombinedOutput()
	// systemd-analyze exits non-zero when the score is above its own threshold;
	// the figure is what we judge, so parse before looking at err.
	m := regexp.MustCompile(`Overall exposure level for bastiond\.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in systemd-analyze output (err %v):\n%s", err, out)
	}
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	t.Logf("systemd-analyze security --offline=true: %.1f", score)
	if score > maxExposure {
		t.Errorf("exposure %.1f is above %.1f:\n%s", score, maxExposure, out)
	}
}

// unit reads a unit file into section -> key -> values (keys may repeat).
func unit(t *testing.T, name string) map[string]map[string][]string {
	t.Helper()
	f, err := Files.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	u := map[string]map[string][]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";"):
		case strings.HasPrefix(line, "["):
			section = strings.Trim(line, "[]")
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(line, "=")
			if !ok {
				t.Fatalf("%s: not key=value: %q", name, line)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func TestUnitDirectives(t *testing.T) {
	svc := unit(t, "bastiond.service")["Service"]
	sock := unit(t, "bastiond.socket")["Socket"]
	tests := []struct {
		name  string
		got   []string
		check func([]string) bool
	}{
		{"Type=notify", svc["Type"], equals("notify")},
		{"own user", svc["User"], equals("bastiond")},
		{"only CAP_NET_ADMIN bounded", svc["CapabilityBoundingSet"], equals("CAP_NET_ADMIN")},
		{"only CAP_NET_ADMIN ambient", svc["AmbientCapabilities"], equals("CAP_NET_ADMIN")},
		{"netlink allowed for nftables", svc["RestrictAddressFamilies"], contains("AF_NETLINK")},
		{"no privilege escalation", svc["NoNewPrivileges"], equals("yes")},
		{"read-only system", svc["ProtectSystem"], equals("strict")},
		{"watchdog set", svc["WatchdogSec"], nonEmpty},
		{"reload sends SIGHUP", svc["ExecReload"], contains("-HUP $MAINPID")},
		{"stop outlasts the drain", svc["TimeoutStopSec"], equals("45s")},
		{"no cleanup on stop (fail closed)", svc["ExecStopPost"], empty},
		{"TCP 443", sock["ListenStream"], equals("443")},
		{"UDP 443", sock["ListenDatagram"], equals("443")},
		{"dual stack", sock["BindIPv6Only"], equals("both")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.check(tt.got) {
				t.Errorf("got %q", tt.got)
			}
		})
	}
}

func TestShippedFiles(t *testing.T) {
	for _, name := range []string{"sysusers.d/bastiond.conf", "tmpfiles.d/bastiond.conf", "bastiond.example.yaml"} {
		if _, err := fs.Stat(Files, name); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	b, _ := fs.ReadFile(Files, "sysusers.d/bastiond.conf")
	for _, want := range []string{"u bastiond ", "g bastion-admin "} {
		if !strings.Contains(string(b), want) {
			t.Errorf("sysusers.d lacks %q", want)
		}
	}
}

func equals(want string) func([]string) bool {
	return func(v []string) bool { return len(v) == 1 && v[0] == want }
}

func contains(want string) func([]string) bool {
	return func(v []string) bool { return len(v) > 0 && strings.Contains(strings.Join(v, " "), want) }
}

func nonEmpty(v []string) bool { return len(v) > 0 && v[0] != "" }
func empty(v []string) bool    { return len(v) == 0 }
