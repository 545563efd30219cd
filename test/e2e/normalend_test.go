package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// normalEnds are the end reasons of a session that either side closed.
var normalEnds = map[any]bool{"client closed": true, "target closed": true}

// TestTunnelNormalEnds: a successful ssh through `bastionctl ssh-proxy` and
// a successful `xfreerdp +auth-only` through `bastionctl tunnel`, over the
// default transport and both of the bastion's addresses, are normal ends on
// the client (nothing on the proxy's stderr, no "failed" in the tunnel's
// log) and in the bastion's session_end records.
//
// It fails on the old behaviour: ssh-proxy printed "tunnel: failed to get
// reader: context canceled" after about 1 in 4 ssh runs (20 runs pass by
// chance 0.3% of the time), the tunnel logged xfreerdp's end as "failed
// ... broken pipe", and the broker recorded such a reset end as an error.
func TestTunnelNormalEnds(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice")
	fams := []struct{ name, addr, creds string }{
		{"ipv4", LabValue(t, "BASTION_PUB4"), ""}, {"ipv6", LabValue(t, "BASTION_PUB6"), ""},
	}
	for i := range fams {
		fams[i].creds = LoginAs(t, "alice", fams[i].addr)
	}
	bastionctl := filepath.Join(binDir, "bastionctl")

	t.Run("ssh-proxy x20", func(t *testing.T) {
		dir := t.TempDir()
		seen := len(endedTo(d, "vm1"))
		const runs = 20
		for i := range runs {
			fam := fams[i%2]
			proxyErr := filepath.Join(dir, fmt.Sprintf("proxy-%d.stderr", i))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			// ssh runs the ProxyCommand with its shell: the redirection
			// keeps the proxy's stderr apart from ssh's own.
			ssh := exec.CommandContext(ctx, "ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "ssh", "-F", "none",
				"-o", "ProxyCommand="+bastionctl+" ssh-proxy vm1 2>"+proxyErr,
				"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
				"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "-i", LabValue(t, "LAB_KEY"), "lab@vm1", "true")
			ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+fam.creds)
			ssh.WaitDelay = 5 * time.Second
			var stdout, stderr syncbuf.Buffer
			ssh.Stdout, ssh.Stderr = &stdout, &stderr
			err := ssh.Run()
			cancel()
			pe, _ := os.ReadFile(proxyErr)
			if err != nil || stderr.String() != "" || len(pe) != 0 {
				t.Errorf("run %d (%s): ssh lab@vm1 true: %v\nssh's stderr: %q\nthe proxy's stderr: %q", i, fam.name, err, stderr.String(), pe)
			}
		}
		// Each run's session ended normally in the bastion's records too.
		var ids []string
		for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if ids = endedTo(d, "vm1"); len(ids) >= seen+runs {
				break
			}
		}
		if len(ids) < seen+runs {
			t.Fatalf("%d session_end records to vm1, want %d; live: %v", len(ids)-seen, runs, d.liveSessions())
		}
		for _, id := range ids[seen:] {
			if r := d.AuditRecord(id, "session_end"); !normalEnds[r["reason"]] || r["protocol"] != "tunnel" {
				t.Errorf("end record of an ssh run: %v; want a normal end", r)
			}
		}
	})

	sessionRE := regexp.MustCompile(`open over \S+ \(session ([^)]+)\)`)
	for _, fam := range fams {
		t.Run("xfreerdp through bastionctl tunnel/"+fam.name, func(t *testing.T) {
			tunOut := StartRDPTunnel(t, fam.creds, "-v")
			// timeout(1) signals its process group: xvfb-run, Xvfb and xfreerdp.
			rdp := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "timeout", "-k", "5", "60",
				"xvfb-run", "-a", "xfreerdp", "/v:127.0.0.1:13389",
				"/u:"+LabValue(t, "LAB_USER"), "/p:"+LabValue(t, "LAB_PASSWORD"), "/cert:ignore", "+auth-only", "/log-level:ERROR")
			if out, err := rdp.CombinedOutput(); err != nil {
				t.Fatalf("xfreerdp +auth-only through the tunnel: %v\n%s\ntunnel:\n%s", err, out, tunOut.String())
			}
			// The tunnel logs each connection's end once both of its
			// directions are done.
			for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				log := tunOut.String()
				if opened := strings.Count(log, " open over "); opened > 0 && strings.Count(log, " after ") == opened {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("the tunnel never logged its connections' ends:\n%s", log)
				}
			}
			log := tunOut.String()
			if strings.Contains(log, "failed") || strings.Contains(log, "broken pipe") {
				t.Errorf("the tunnel's log of a successful xfreerdp:\n%s", log)
			}
			for _, m := range sessionRE.FindAllStringSubmatch(log, -1) {
				if r := d.AuditRecord(m[1], "session_end"); !normalEnds[r["reason"]] || r["target"] != "vm2" {
					t.Errorf("end record of xfreerdp's session: %v; want a normal end", r)
				}
			}
		})
	}
}
