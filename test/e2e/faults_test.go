package e2e

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
)

// faultConfig is upgradeConfig with short timeouts, so that faults show
// within seconds, and vm1 offering 9002 (nothing listens) and 9003 (a
// service that resets).
func faultConfig(dir string) string {
	cfg := strings.Replace(upgradeConfig(dir), "  target_timeout: 2s\n", "  target_timeout: 2s\n  client_timeout: 4s\n  dial_timeout: 3s\n", 1)
	return strings.Replace(cfg, "tunnel: [9001]", "tunnel: [9001, 9002, 9003]", 1)
}

// startFaultDaemon starts a daemon on faultConfig, edited by edit.
func startFaultDaemon(t *testing.T, edit func(dir, cfg string) string) *Daemon {
	t.Helper()
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return edit(dir, faultConfig(dir)) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	AddLabUsers(t, d, "alice")
	PinVM1(t, d)
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9001", SinkEcho)
	return d
}

// nft loads a ruleset into namespace ns; the returned func deletes table.
func nft(t testing.TB, ns, table, rules string) func() {
	t.Helper()
	cmd := exec.Command("ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("nft in %s: %v\n%s", ns, err, out)
	}
	var once sync.Once
	undo := func() {
		once.Do(func() { exec.Command("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", table).Run() })
	}
	t.Cleanup(undo)
	return undo
}

// waitEnd waits for the end record of session id and returns it with how
// long after since it came.
func (d *Daemon) waitEnd(id string, since time.Time, limit time.Duration) (map[string]any, time.Duration) {
	d.t.Helper()
	for end := time.Now().Add(limit); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if r := d.auditRecords()[id]["session_end"]; len(r) > 0 {
			at, _ := time.Parse(time.RFC3339Nano, r[0]["end"].(string))
			return r[0], at.Sub(since)
		}
	}
	d.t.Fatalf("no end record for session %s within %s", id, limit)
	return nil, 0
}

// newSessionIDs returns the ids of the live sessions not in seen, and adds
// them to seen.
func (d *Daemon) newSessionIDs(seen map[string]bool) []string {
	d.t.Helper()
	var ids []string
	for _, s := range d.liveSessions() {
		if id := s["id"].(string); !seen[id] {
			seen[id] = true
			ids = append(ids, id)
		}
	}
	return ids
}

// A user who vanishes without a word (a laptop shut, a network gone) is
// reaped within client_timeout (4s here), whatever the session; one whose
// connection is reset at once.
func TestClientVanishes(t *testing.T) {
	d := startFaultDaemon(t, func(_, cfg string) string { return cfg })
	pw := lab["LAB_PASSWORD"]
	seen := map[string]bool{}
	open := map[string]string{} // session id -> what it is

	tc := SignedIn(t, lab["BASTION_PUB4"], "alice").OpenTerminal("vm1")
	tc.Shell(pw)
	tc.TypeText("echo up-$((2*21))\r")
	tc.ScreenHas("up-42", 10*time.Second)
	for _, id := range d.newSessionIDs(seen) {
		open[id] = "browser terminal"
	}
	creds := LoginAs(t, "alice", lab["BASTION_PUB6"])
	for _, tr := range []string{"quic", "tcp"} {
		c, err := Dial(t, TunnelClient(t, creds, lab["BASTION_PUB6"], tr), "vm1", 9001)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		(&echoTunnel{c: c}).roundTrip(t, "hello "+tr+"\n")
		for _, id := range d.newSessionIDs(seen) {
			open[id] = "tunnel over " + tr
		}
	}
	if len(open) != 3 {
		t.Fatalf("sessions: %v", open)
	}

	// The client's network goes silent both ways.
	start := time.Now()
	undo := nft(t, LabValue(t, "NS_CLIENT"), "vanish", `table inet vanish {
	chain in { type filter hook input priority -10; policy drop; }
	chain out { type filter hook output priority -10; policy drop; }
}`)
	for id, what := range open {
		r, took := d.waitEnd(id, start, 30*time.Second)
		t.Logf("%s reaped after %s: %v", what, took.Round(100*time.Millisecond), r["reason"])
		if took > 10*time.Second || r["bytes_exact"] != true || !strings.HasPrefix(r["reason"].(string), "client") {
			t.Errorf("%s: ended after %s (client_timeout 4s) with %v", what, took, r)
		}
	}
	undo()

	// A connection reset: the session ends at once.
	u := SignedIn(t, lab["BASTION_PUB4"], "alice")
	var mu sync.Mutex
	var conns []*net.TCPConn
	tr := u.c.Transport.(*http.Transport)
	dialCtx := tr.DialContext
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dialCtx(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			mu.Lock()
			conns = append(conns, tc)
			mu.Unlock()
		}
		return c, err
	}
	tc = u.OpenTerminal("vm1")
	tc.Shell(pw)
	ids := d.newSessionIDs(seen)
	if len(ids) != 1 {
		t.Fatalf("new sessions %v", ids)
	}
	mu.Lock()
	ws := conns[len(conns)-1] // the WebSocket's: an HTTP/1.1 connection of its own
	mu.Unlock()
	start = time.Now()
	ws.SetLinger(0)
	ws.Close() // RST
	r, took := d.waitEnd(ids[0], start, 10*time.Second)
	t.Logf("browser terminal reset: ended after %s: %v", took.Round(10*time.Millisecond), r["reason"])
	if took > 2*time.Second || !strings.HasPrefix(r["reason"].(string), "client") {
		t.Errorf("a reset terminal ended after %s with %v", took, r)
	}
}

// A machine that refuses, resets, or goes silent: the user is told, within
// bounded time, and every session that opened has its record.
func TestTargetFaults(t *testing.T) {
	d := startFaultDaemon(t, func(_, cfg string) string { return cfg })
	creds := LoginAs(t, "alice", lab["BASTION_PUB4"])
	cl := TunnelClient(t, creds, lab["BASTION_PUB4"], "quic")
	vm1 := LabValue(t, "NS_VM1")

	t.Run("refuses", func(t *testing.T) {
		start := time.Now()
		_, err := Dial(t, cl, "vm1", 9002) // nothing listens
		var te *tunnelwire.Error
		if !errors.As(err, &te) || te.Status != tunnelwire.StatusUnreachable || !strings.Contains(err.Error(), "refused") {
			t.Errorf("dial a closed port: %v", err)
		}
		t.Logf("refused: told after %s: %v", time.Since(start).Round(time.Millisecond), err)
		if time.Since(start) > 2*time.Second {
			t.Errorf("took %s", time.Since(start))
		}
	})

	t.Run("resets mid-session", func(t *testing.T) {
		var ln net.Listener
		if err := InNetns(vm1, func() (err error) {
			ln, err = net.Listen("tcp", "[::]:9003")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		go func() {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.ReadFull(c, make([]byte, 6))
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}()
		seen := map[string]bool{}
		d.newSessionIDs(seen)
		c, err := Dial(t, cl, "vm1", 9003)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ids := d.newSessionIDs(seen)
		start := time.Now()
		io.WriteString(c, "reset!")
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the tunnel after the machine reset: %v", err)
		}
		r, took := d.waitEnd(ids[0], start, 10*time.Second)
		t.Logf("reset: ended after %s: %v", took.Round(time.Millisecond), r["reason"])
		if took > 2*time.Second || !strings.HasPrefix(r["reason"].(string), "target") || r["bytes_up"].(float64) != 6 {
			t.Errorf("ended after %s with %v", took, r)
		}
	})

	t.Run("goes silent mid-session", func(t *testing.T) {
		seen := map[string]bool{}
		d.newSessionIDs(seen)
		c, err := Dial(t, cl, "vm1", 9001)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		e := &echoTunnel{c: c}
		e.roundTrip(t, "before\n")
		ids := d.newSessionIDs(seen)
		undo := nft(t, vm1, "silent", `table inet silent {
	chain in { type filter hook input priority -10; tcp dport 9001 drop; }
	chain out { type filter hook output priority -10; tcp sport 9001 drop; }
}`)
		defer undo()
		start := time.Now()
		io.WriteString(c, "into the void\n")
		r, took := d.waitEnd(ids[0], start, 30*time.Second)
		t.Logf("silent: ended after %s (target_timeout 2s): %v", took.Round(100*time.Millisecond), r["reason"])
		if took > 8*time.Second || r["reason"] != "target unreachable" {
			t.Errorf("ended after %s with %v", took, r)
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 64)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("the user's tunnel after the machine went silent: %v", err)
		}
	})

	t.Run("silent at the dial", func(t *testing.T) {
		defer nft(t, vm1, "nosyn", `table inet nosyn {
	chain in { type filter hook input priority -10; tcp dport 9001 drop; }
}`)()
		start := time.Now()
		_, err := Dial(t, cl, "vm1", 9001)
		var te *tunnelwire.Error
		if !errors.As(err, &te) || te.Status != tunnelwire.StatusUnreachable {
			t.Errorf("dial a machine that drops: %v", err)
		}
		t.Logf("silent at the dial: told after %s (dial_timeout 3s): %v", time.Since(start).Round(100*time.Millisecond), err)
		if took := time.Since(start); took < 2*time.Second || took > 6*time.Second {
			t.Errorf("took %s", took)
		}
	})
}

// An audit log that cannot be written (a full disk, a file system gone
// read-only) refuses new sessions with a clear error, lets the live ones go
// on, and writes their records once it can.
func TestAuditUnwritable(t *testing.T) {
	NeedLab(t)
	// The audit log is on a 256 KiB tmpfs, seen through a faultFS that
	// can turn it read-only.
	disk, logDir := filepath.Join(t.TempDir(), "disk"), filepath.Join(t.TempDir(), "log")
	os.MkdirAll(disk, 0o755)
	os.MkdirAll(logDir, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "tmpfs", disk).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs for the audit log: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", disk).Run() })
	ffs, err := mountFaultFS(t, disk, logDir)
	if err != nil {
		t.Logf("no FUSE here (%v): the audit log goes on the tmpfs itself, and the read-only case is skipped", err)
		logDir = disk
	}
	audit := filepath.Join(logDir, "audit.jsonl")
	d := startFaultDaemon(t, func(dir, cfg string) string {
		return strings.Replace(cfg, "audit_file: "+dir+"/audit.jsonl", "audit_file: "+audit, 1)
	})
	d.audit = audit
	creds := LoginAs(t, "alice", lab["BASTION_PUB4"])
	cl := TunnelClient(t, creds, lab["BASTION_PUB4"], "tcp")
	u := SignedIn(t, lab["BASTION_PUB6"], "alice")
	writable := func() string {
		for _, l := range strings.Split(metricsText(t), "\n") {
			if strings.HasPrefix(l, "bastiond_audit_writable ") {
				return strings.TrimPrefix(l, "bastiond_audit_writable ")
			}
		}
		return "missing"
	}

	for _, fault := range []struct {
		name      string
		on, off   func()
		wantError string
	}{
		{"disk full", func() {
			f, _ := os.Create(filepath.Join(logDir, "fill"))
			io.Copy(f, io.LimitReader(zeros{}, 1<<20)) // stops at ENOSPC
			f.Close()
		}, func() { os.Remove(filepath.Join(logDir, "fill")) }, "no space left"},
		{"read-only", func() { ffs.readOnly.Store(true) }, func() { ffs.readOnly.Store(false) }, "read-only file system"},
	} {
		t.Run(fault.name, func(t *testing.T) {
			if fault.name == "read-only" && ffs == nil {
				t.Skip("needs FUSE (/dev/fuse) to make the audit log's file system read-only under the daemon")
			}
			seen := map[string]bool{}
			d.newSessionIDs(seen)
			var lives []*echoTunnel
			for range 3 {
				c, err := Dial(t, cl, "vm1", 9001)
				if err != nil {
					t.Fatal(err)
				}
				live := &echoTunnel{c: c}
				live.roundTrip(t, "before the fault\n")
				lives = append(lives, live)
			}
			ids := d.newSessionIDs(seen)

			fault.on()
			// The fault shows at the first write that needs what is gone:
			// on a full tmpfs, the first start record that needs a new page.
			opened := len(lives)
			var c net.Conn
			var err error
			for range 40 {
				c, err = Dial(t, cl, "vm1", 9001)
				if err != nil {
					break
				}
				e := &echoTunnel{c: c}
				e.roundTrip(t, "opened before the fault showed\n")
				lives = append(lives, e)
			}
			ids = append(ids, d.newSessionIDs(seen)...)
			t.Logf("%s: %d sessions opened before a record failed", fault.name, len(lives)-opened)
			var te *tunnelwire.Error
			if !errors.As(err, &te) || te.Status != tunnelwire.StatusUnavailable || !strings.Contains(err.Error(), "cannot record new sessions") {
				t.Errorf("a new tunnel with the audit log unwritable: %v", err)
			}
			tc := u.OpenTerminal("vm1")
			tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], Password: lab["LAB_PASSWORD"], Cols: 80, Rows: 24})
			if end := tc.Ended(); !strings.Contains(end.Message, "cannot record new sessions") {
				t.Errorf("a new terminal with the audit log unwritable: %+v", end)
			}
			if w := writable(); w != "0" {
				t.Errorf("bastiond_audit_writable %s while %s", w, fault.name)
			}
			if !strings.Contains(d.Log.String(), fault.wantError) {
				t.Errorf("the log does not say %q", fault.wantError)
			}
			// The live sessions go on; their ends wait for the file.
			for _, e := range lives {
				e.roundTrip(t, "during the fault\n")
				e.c.Close()
			}
			time.Sleep(time.Second)
			for _, id := range ids {
				if r := d.auditRecords()[id]["session_end"]; len(r) != 0 {
					t.Fatalf("an end record was written while %s: %v", fault.name, r)
				}
			}

			fault.off()
			cleared := time.Now()
			var up, down float64
			for _, e := range lives {
				up, down = up+float64(e.sent), down+float64(e.received)
			}
			var recUp, recDown float64
			for _, id := range ids {
				r, _ := d.waitEnd(id, cleared, 10*time.Second)
				recUp, recDown = recUp+r["bytes_up"].(float64), recDown+r["bytes_down"].(float64)
				if r["bytes_exact"] != true {
					t.Errorf("end record after the fault: %v", r)
				}
			}
			if recUp != up || recDown != down {
				t.Errorf("end records after the fault: %v up, %v down; the clients sent %v and got %v", recUp, recDown, up, down)
			}
			t.Logf("%s: the %d queued end records were in the file %s after the fault cleared", fault.name, len(ids), time.Since(cleared).Round(100*time.Millisecond))
			recs := d.auditRecords()
			for id, evs := range recs {
				if len(evs["session_start"]) > 1 || len(evs["session_end"]) > 1 {
					t.Errorf("session %s recorded twice: %v", id, evs)
				}
			}
			c, err = Dial(t, cl, "vm1", 9001)
			if err != nil {
				t.Fatalf("a new tunnel once the audit log is writable again: %v", err)
			}
			(&echoTunnel{c: c}).roundTrip(t, "after\n")
			c.Close()
			if w := writable(); w != "1" {
				t.Errorf("bastiond_audit_writable %s after %s cleared", w, fault.name)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
