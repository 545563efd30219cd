package security

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"encoding/json"

	"github.com/bastiond/bastiond/test/e2e"
)

// dayAccess: alice's SSH on vm1 and RDP on vm2 are recorded, carol audits,
// bob has no role until an admin grants him "desk" (vm2 over RDP).
const dayAccess = `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: recorded
      subjects: [group:ops]
      targets: [vm1, vm2]
      protocols: [ssh, rdp]
      record: true
    - name: desk
      targets: [vm2]
      protocols: [rdp]
    - name: audit
      subjects: [group:auditors]
      auditor: true
`

// want is an expected audit event: its type and the fields it must have.
type want struct {
	event  string
	fields map[string]string
}

func (w want) String() string { return fmt.Sprintf("%s %v", w.event, w.fields) }

func (w want) matches(e map[string]any) bool {
	if e["event"] != w.event {
		return false
	}
	for k, v := range w.fields {
		if fmt.Sprint(e[k]) != v {
			return false
		}
	}
	return true
}

// Invariant 12: every refusal, sign-in outcome and admin change is an
// audit event, in a hash-chained file that audit verify checks. A scripted
// day of a bastion: sign-in failures of three kinds, a grant, a host-key
// pin, recorded SSH and RDP sessions, a kill, a denied connect, a playback
// and a reload leave exactly the expected events, in order, over both
// address families; then the file verifies, and an edit to it is caught.
func TestInvariant12EveryRefusalAndChangeIsAnAuditEvent(t *testing.T) {
	e2e.NeedLab(t)
	// The day's trail is shipped to a real rsyslog over TLS, which is
	// stopped for part of it.
	r := e2e.StartRsyslog(t, e2e.LabValue(t, "NS_BASTION"), 6515)
	withSyslog := func(cfg string) string {
		return strings.Replace(cfg, "format: json}", fmt.Sprintf(`format: json, journald: off, syslog: {address: "[::1]:%d", tls: true, ca_file: %s, server_name: %s}}`,
			r.Port, r.CAFile, r.Name), 1)
	}
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return withSyslog(e2e.LabConfig(dir, dayAccess)) })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice", "bob", "carol")
	e2e.PinVM2(t, d)
	pub4, pub6, pw := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6"), e2e.LabValue(t, "LAB_PASSWORD")
	client4, client6 := e2e.LabValue(t, "CLIENT4"), e2e.LabValue(t, "CLIENT6")
	start := len(auditEvents(t, d))

	// Sign-ins that fail: a wrong password over IPv4, a name that is no
	// account over IPv6, input the rules refuse.
	if code, _ := e2e.NewWebUser(t, pub4).SignIn("bob", "not bob's password", ""); code != 401 {
		t.Fatalf("a wrong password: %d", code)
	}
	if code, _ := e2e.NewWebUser(t, pub6).SignIn("nobody", "whatever", ""); code != 401 {
		t.Fatalf("an unknown name: %d", code)
	}
	if code, _ := e2e.NewWebUser(t, pub6).SignIn("Bad Name!", "whatever", ""); code < 400 {
		t.Fatalf("a malformed name: %d", code)
	}
	// A denied connect: bob has no role for vm2.
	bob := e2e.SignedIn(t, pub6, "bob")
	if _, err := bob.Ticket("vm2", "rdp"); err == nil {
		t.Fatal("bob got a ticket for vm2 without a role")
	}
	// An admin grants bob the desk role; another pins vm1's host key.
	if out, err := d.Ctl(nil, "users", "grant", "bob", "desk"); err != nil {
		t.Fatalf("grant: %v\n%s", err, out)
	}
	e2e.PinVM1(t, d)
	// The collector goes away for the sessions and the kill.
	r.Stop()
	// alice's recorded SSH session, over IPv4.
	alice := e2e.SignedIn(t, pub4, "alice")
	tc := alice.OpenTerminal("vm1")
	if ready := tc.Shell(pw); ready.Session == "" {
		t.Fatalf("ready: %+v", ready)
	}
	tc.TypeText("echo DAY-$((6*7))\r")
	tc.ScreenHas("DAY-42", 10*time.Second)
	tc.TypeText("exit\r")
	tc.Ended()
	sshEnd := lastRecord(t, d, "session_end", "vm1")
	// alice's recorded desktop, over IPv4.
	dc := alice.OpenDesktop()
	if resp := dc.Request(alice.ConnectTicket("vm2", "rdp"), e2e.AnyTLS); resp.Error != nil {
		t.Fatalf("the desktop: %+v", resp.Error)
	}
	dc.Close()
	lastRecord(t, d, "session_end", "vm2")
	// A second SSH session, which an admin kills.
	tc = alice.OpenTerminal("vm1")
	ready := tc.Shell(pw)
	if out, err := d.Ctl(nil, "sessions", "kill", ready.Session, "--reason", "end of shift"); err != nil {
		t.Fatalf("kill: %v\n%s", err, out)
	}
	tc.Ended()
	waitEvent(t, d, func(e map[string]any) bool { return e["event"] == "session_end" && e["session"] == ready.Session })
	r.Start()
	// carol plays the first recording back, over IPv6.
	carol := e2e.SignedIn(t, pub6, "carol")
	id := strings.TrimSuffix(filepath.Base(sshEnd["recording"].(string)), ".cast.gz")
	if code, _ := carol.Get("/api/recordings/" + id); code != 200 {
		t.Fatalf("playback: %d", code)
	}
	// A reload that changes the configuration.
	reload(t, d, withSyslog(e2e.LabConfig(d.Dir, dayAccess+"  session_idle: 25m\n")))

	wants := []want{
		{"signin_failed", map[string]string{"actor": "bob", "source": client4, "reason": "bad_password"}},
		{"signin_failed", map[string]string{"actor": "-", "source": client6, "reason": "unknown_user"}},
		{"signin_refused", map[string]string{"source": client6, "reason": "malformed"}},
		{"signin_succeeded", map[string]string{"actor": "bob", "source": client6}},
		{"connect_refused", map[string]string{"actor": "bob", "source": client6, "target": "vm2", "protocol": "rdp", "reason": "no_role"}},
		{"grant_added", map[string]string{"user": "bob", "role": "desk", "source": "local"}},
		// One per host key vm1's sshd offers: the lab's has two.
		{"hostkey_pinned", map[string]string{"target": "vm1", "protocol": "ssh", "source": "local"}},
		{"hostkey_pinned", map[string]string{"target": "vm1", "protocol": "ssh", "source": "local"}},
		{"signin_succeeded", map[string]string{"actor": "alice", "source": client4}},
		{"ticket_issued", map[string]string{"actor": "alice", "target": "vm1", "protocol": "ssh"}},
		{"session_start", map[string]string{"actor": "alice", "source": client4, "target": "vm1", "protocol": "ssh"}},
		{"session_end", map[string]string{"actor": "alice", "target": "vm1", "protocol": "ssh", "reason": "remote exit (status 0)"}},
		{"ticket_issued", map[string]string{"actor": "alice", "target": "vm2", "protocol": "rdp"}},
		{"session_start", map[string]string{"actor": "alice", "target": "vm2", "protocol": "rdp"}},
		{"session_end", map[string]string{"actor": "alice", "target": "vm2", "protocol": "rdp"}},
		{"ticket_issued", map[string]string{"actor": "alice", "target": "vm1", "protocol": "ssh"}},
		{"session_start", map[string]string{"actor": "alice", "target": "vm1", "session": ready.Session}},
		// The kill is recorded once done: after the session's end.
		{"session_end", map[string]string{"session": ready.Session, "reason": "killed: by root: end of shift"}},
		{"session_killed", map[string]string{"session": ready.Session, "user": "alice", "source": "local"}},
		{"signin_succeeded", map[string]string{"actor": "carol", "source": client6}},
		{"recording_played", map[string]string{"actor": "carol", "source": client6, "session": id, "protocol": "ssh"}},
		{"config_reloaded", map[string]string{"actor": "bastiond", "source": "local"}},
	}
	// The events of the day: every one expected, in order, and none of
	// another type (host-key scans and hashes of the session's recording
	// may add lines of the types listed here only).
	var got []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		got = auditEvents(t, d)[start:]
		if len(got) > 0 && got[len(got)-1]["event"] == "config_reloaded" || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	allowed := map[string]bool{}
	for _, w := range wants {
		allowed[w.event] = true
	}
	allowed["recording_closed"] = true // a recording's hash, when written after its end record
	// The collector's outage, whenever the shipper notices it.
	allowed["audit_shipping_failed"], allowed["audit_shipping_resumed"] = true, true
	var day []string
	i := 0
	for _, e := range got {
		day = append(day, fmt.Sprintf("%v %v %v %v", e["event"], e["actor"], e["source"], e["reason"]))
		if !allowed[e["event"].(string)] {
			t.Errorf("an event of a type the day did not expect: %v", e)
			continue
		}
		if i < len(wants) && wants[i].matches(e) {
			i++
			continue
		}
		if ev := e["event"]; ev != "recording_closed" && ev != "audit_shipping_failed" && ev != "audit_shipping_resumed" {
			t.Errorf("unexpected event %v (next expected: %v)", e, wants[min(i, len(wants)-1)])
		}
	}
	if i != len(wants) {
		t.Errorf("missing from the audit trail: %v\nthe day's events:\n%s", wants[i:], strings.Join(day, "\n"))
	}

	// Every line of the file reached rsyslog, across its restart.
	var missing int
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		received := map[string]bool{}
		for _, l := range r.Lines() {
			received[string(l)] = true
		}
		data, err := os.ReadFile(d.AuditFile())
		if err != nil {
			t.Fatal(err)
		}
		missing = 0
		for l := range strings.SplitSeq(strings.TrimSuffix(string(data), "\n"), "\n") {
			if !received[l] {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	if missing > 0 {
		t.Errorf("%d lines of the audit file never reached rsyslog", missing)
	}
	var failed, resumed int
	for _, e := range auditEvents(t, d) {
		switch e["event"] {
		case "audit_shipping_failed":
			failed++
		case "audit_shipping_resumed":
			resumed++
		}
	}
	if failed != 1 || resumed != 1 {
		t.Errorf("the collector's outage: %d audit_shipping_failed and %d audit_shipping_resumed events, want 1 and 1", failed, resumed)
	}

	// The whole file verifies; an edit to one of the day's lines is caught.
	out, err := exec.Command(e2e.BinPath("bastionctl"), "audit", "verify", d.AuditFile()).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
	data, err := os.ReadFile(d.AuditFile())
	if err != nil {
		t.Fatal(err)
	}
	edited := filepath.Join(t.TempDir(), "audit.jsonl")
	os.WriteFile(edited, []byte(strings.Replace(string(data), `"reason":"no_role"`, `"reason":"unknown_target"`, 1)), 0o600)
	out, err = exec.Command(e2e.BinPath("bastionctl"), "audit", "verify", edited).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "BROKEN") {
		t.Errorf("an edited trail verified: %v\n%s", err, out)
	}
}

// auditEvents reads the daemon's audit file, without its chain lines.
func auditEvents(t *testing.T, d *e2e.Daemon) []map[string]any {
	t.Helper()
	f, err := os.Open(d.AuditFile())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var e map[string]any
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("audit line %q: %v", sc.Text(), err)
		}
		if e["event"] != "audit_chain_started" {
			out = append(out, e)
		}
	}
	return out
}
