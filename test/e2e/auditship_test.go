package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
)

// shipPort is where the lab's rsyslog takes TLS, on the bastion's loopback.
const shipPort = 6514

// TestAuditShipping: bastiond ships its audit trail to a real rsyslog over
// TLS; rsyslog is stopped (SIGTERM, by its PID) while events happen and
// started again; in the end every line of the audit file has arrived at
// rsyslog, whole, and the outage is one audit_shipping_failed and one
// audit_shipping_resumed event.
func TestAuditShipping(t *testing.T) {
	NeedLab(t)
	r := StartRsyslog(t, LabValue(t, "NS_BASTION"), shipPort)
	collector := fmt.Sprintf("[::1]:%d", shipPort)
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		cfg := LabConfig(dir, `access:
  roles:
    - name: ops
      subjects: [user:alice]
      targets: [vm1]
      protocols: [ssh]
`)
		logging := fmt.Sprintf(`format: json, journald: off, syslog: {address: "%s", tls: true, ca_file: %s, server_name: %s}}`, collector, r.CAFile, r.Name)
		return strings.Replace(cfg, "format: json}", logging, 1)
	})
	const pw = "lab password 1234"
	if out, err := d.CtlStdin(pw+"\n", "users", "add", "alice", "--password-stdin"); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	PinVM1(t, d)
	// Sign-ins, failed and succeeded, and an SSH session in the browser,
	// from the client over IPv4 and IPv6.
	signIns := func(round string) {
		for _, addr := range []string{LabValue(t, "BASTION_PUB4"), LabValue(t, "BASTION_PUB6")} {
			u := NewWebUser(t, addr)
			if code, _ := u.SignIn("alice", "wrong password "+round, ""); code < 400 {
				t.Fatalf("a wrong password: %d", code)
			}
			if code, _ := u.SignIn("mallory", "not an account", ""); code < 400 {
				t.Fatalf("an unknown user: %d", code)
			}
			// After a few failures the throttle makes alice wait a moment,
			// as the page says.
			for try := 0; ; try++ {
				code, page := u.SignIn("alice", pw, "")
				if code == http.StatusSeeOther {
					break
				}
				if try == 20 {
					t.Fatalf("alice's sign-in: %d\n%s", code, page)
				}
				time.Sleep(time.Second)
			}
			tc := u.OpenTerminal("vm1")
			tc.Shell(lab["LAB_PASSWORD"])
			tc.TypeText("exit\r")
			if end := tc.Ended(); end.Reason != "exit" {
				t.Fatalf("the SSH session ended with %+v", end)
			}
		}
	}
	signIns("before")
	waitShipped(t, d, r, 30*time.Second)
	before := len(auditLines(t, d))

	// Malformed sign-ins (refused before any check, each an audit event)
	// go on across the stop and the start, so that lines are in flight
	// when rsyslog goes.
	stream, streamer := make(chan struct{}), NewWebUser(t, LabValue(t, "BASTION_PUB4"))
	var streamed atomic.Int64
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stream:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if code, _, err := streamer.TrySignIn("not a name!", "x", ""); err == nil && code >= 400 {
				streamed.Add(1)
			}
		}
	})
	t.Cleanup(func() {
		select {
		case <-stream:
		default:
			close(stream)
		}
		wg.Wait()
	})

	// The collector goes away; events go on happening.
	pid := r.PID()
	r.Stop()
	t.Logf("stopped rsyslogd (pid %d)", pid)
	signIns("during")
	waitAudit(t, d, "audit_shipping_failed", 30*time.Second)
	during := len(auditLines(t, d))

	r.Start()
	t.Logf("started rsyslogd again (pid %d)", r.PID())
	signIns("after")
	close(stream)
	wg.Wait()
	t.Logf("%d malformed sign-ins across the stop and the start", streamed.Load())
	waitAudit(t, d, "audit_shipping_resumed", 60*time.Second)
	waitShipped(t, d, r, 60*time.Second)

	lines := auditLines(t, d)
	received := r.Lines()
	count := map[string]int{}
	for _, l := range received {
		count[string(l)]++
	}
	dups, missing := 0, 0
	for _, l := range lines {
		switch n := count[string(l)]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	t.Logf("audit file: %d lines (%d before the stop, %d when it was noticed); rsyslog: %d messages, %d duplicates, %d missing",
		len(lines), before, during, len(received), dups, missing)
	if missing > 0 {
		t.Errorf("%d lines of the audit file never reached rsyslog", missing)
	}
	if extra := len(count) - (len(lines) - missing); extra != 0 {
		t.Errorf("rsyslog has %d lines that are not in the audit file", extra)
	}
	// The collector's copy, its duplicates dropped (first arrival kept),
	// verifies as a chain and ends at the same head as the file.
	var first bytes.Buffer
	seen := map[string]bool{}
	for _, l := range received {
		if !seen[string(l)] {
			seen[string(l)] = true
			first.Write(append(l, '\n'))
		}
	}
	mine, err := audit.Verify(audit.File{Name: "audit.jsonl", R: bytes.NewReader(bytes.Join(lines, []byte("\n")))})
	if err != nil || mine.Broken != nil {
		t.Fatalf("the audit file does not verify: %v %v", err, mine.Broken)
	}
	theirs, err := audit.Verify(audit.File{Name: "rsyslog", R: &first})
	if err != nil || theirs.Broken != nil || theirs.Head != mine.Head {
		t.Errorf("rsyslog's copy without duplicates: %v, %+v; head %s, the file's %s", err, theirs.Broken, theirs.Head, mine.Head)
	}
	for _, l := range lines {
		if bytes.Contains(l, []byte(`"event":"audit_shipping_`)) {
			t.Logf("%s", l)
		}
	}
	if n := countEvents(lines, "audit_shipping_failed"); n != 1 {
		t.Errorf("%d audit_shipping_failed events for one outage", n)
	}
	if n := countEvents(lines, "audit_shipping_resumed"); n != 1 {
		t.Errorf("%d audit_shipping_resumed events for one outage", n)
	}
	name := fmt.Sprintf(`{collector="syslog+tls://%s"}`, collector)
	shipped, failures := Metric(t, "bastiond_audit_shipped_total"+name), Metric(t, "bastiond_audit_ship_failures_total"+name)
	dropped := Metric(t, "bastiond_audit_ship_dropped_total"+name)
	t.Logf("metrics: shipped %.0f, failures %.0f, dropped %.0f, queue depth %.0f", shipped, failures, dropped, Metric(t, "bastiond_audit_ship_queue_depth"+name))
	if shipped < float64(len(lines)) || failures < 1 || dropped != 0 {
		t.Errorf("metrics: shipped %.0f of %d lines, %.0f failures, %.0f dropped", shipped, len(lines), failures, dropped)
	}
}

// auditLines are the lines of d's audit file.
func auditLines(t testing.TB, d *Daemon) [][]byte {
	t.Helper()
	data, err := os.ReadFile(d.AuditFile())
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	return lines
}

func countEvents(lines [][]byte, event string) int {
	n := 0
	for _, l := range lines {
		if bytes.Contains(l, []byte(`"event":"`+event+`"`)) {
			n++
		}
	}
	return n
}

// waitAudit waits for an event of type event in d's audit file.
func waitAudit(t testing.TB, d *Daemon, event string, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); countEvents(auditLines(t, d), event) == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("no %s in the audit file after %s\n%s", event, timeout, d.Log.String())
		}
	}
}

// waitShipped waits until every line of d's audit file has reached r.
func waitShipped(t testing.TB, d *Daemon, r *Rsyslog, timeout time.Duration) {
	t.Helper()
	for end := time.Now().Add(timeout); ; time.Sleep(100 * time.Millisecond) {
		got := map[string]bool{}
		for _, l := range r.Lines() {
			got[string(l)] = true
		}
		lines := auditLines(t, d)
		missing := 0
		for _, l := range lines {
			if !got[string(l)] {
				missing++
			}
		}
		if missing == 0 && len(lines) > 0 {
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%d of %d audit lines not at rsyslog after %s\nrsyslog:\n%s\nbastiond:\n%s", missing, len(lines), timeout, r.Log(), d.Log.String())
		}
	}
}
