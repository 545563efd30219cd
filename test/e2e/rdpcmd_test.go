package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRDPCommand: `bastionctl rdp vm2` opens a tunnel on a free loopback
// port, starts FreeRDP against it (here `+auth-only`, under xvfb-run) and
// ends with the client: status 0 and a normal session_end when the client
// signs in, FreeRDP's own status and a message when it does not; over both
// of the bastion's addresses.
func TestRDPCommand(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice")
	rdp := func(t *testing.T, creds, password string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "xvfb-run", "-a",
			filepath.Join(binDir, "bastionctl"), "rdp", "vm2", "--port", LabValue(t, "VM2_RDP_NLA_PORT"), "--client", "xfreerdp", "--",
			"/u:"+LabValue(t, "LAB_USER"), "/p:"+password, "/cert:ignore", "+auth-only", "/log-level:ERROR")
		cmd.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
		cmd.WaitDelay = 5 * time.Second
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, fam := range []struct{ name, addr string }{{"ipv4", LabValue(t, "BASTION_PUB4")}, {"ipv6", LabValue(t, "BASTION_PUB6")}} {
		creds := LoginAs(t, "alice", fam.addr)
		t.Run(fam.name+"/signs in", func(t *testing.T) {
			seen := len(endedTo(d, "vm2"))
			if out, err := rdp(t, creds, LabValue(t, "LAB_PASSWORD")); err != nil {
				t.Fatalf("bastionctl rdp vm2: %v\n%s", err, out)
			}
			id := nextEnded(t, d, "vm2", seen)
			if r := d.AuditRecord(id, "session_end"); !normalEnds[r["reason"]] || r["protocol"] != "tunnel" || r["user"] != "alice" {
				t.Errorf("end record: %v; want alice's tunnel, ended normally", r)
			}
		})
		t.Run(fam.name+"/wrong password", func(t *testing.T) {
			out, err := rdp(t, creds, "not the password")
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() == 0 || !strings.Contains(out, "bastionctl: xfreerdp exited with status") {
				t.Fatalf("bastionctl rdp with a wrong password: %v, want FreeRDP's failure passed on\n%s", err, out)
			}
		})
	}
}
