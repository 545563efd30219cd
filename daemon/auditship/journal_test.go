package auditship

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/journal"

	"github.com/bastiond/bastiond/internal/audit"
)

type sent struct {
	msg  string
	prio journal.Priority
	vars map[string]string
}

// fakeJournald records entries, and refuses them while down is set.
type fakeJournald struct {
	mu      sync.Mutex
	entries []sent
	down    bool
}

func (f *fakeJournald) send(msg string, prio journal.Priority, vars map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return errors.New("dial unixgram /run/systemd/journal/socket: connect: no such file or directory")
	}
	f.entries = append(f.entries, sent{msg, prio, vars})
	return nil
}

func (f *fakeJournald) setDown(down bool) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

func (f *fakeJournald) got() []sent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]sent(nil), f.entries...)
}

func runJournal(t *testing.T, j *Journal) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { j.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func TestJournalFields(t *testing.T) {
	f := &fakeJournald{}
	j := NewJournal(JournalConfig{Send: f.send})
	runJournal(t, j)
	lines, _ := trailLines(3, audit.Zero)
	j.Ship(lines)
	waitFor(t, "3 entries", 5*time.Second, func() bool { return len(f.got()) == 3 })
	e := f.got()
	if e[0].prio != journal.PriWarning || e[1].prio != journal.PriNotice {
		t.Errorf("priorities %d, %d; want warning for a failed sign-in, notice for a session", e[0].prio, e[1].prio)
	}
	if want := "audit: signin_failed by alice from 198.51.100.7: bad_password"; e[0].msg != want {
		t.Errorf("MESSAGE %q, want %q", e[0].msg, want)
	}
	if want := "audit: session_start by bob from 2001:db8::7 to vm1 (ssh)"; e[1].msg != want {
		t.Errorf("MESSAGE %q, want %q", e[1].msg, want)
	}
	v := e[1].vars
	h := audit.HashLine(lines[1])
	want := map[string]string{
		"MESSAGE_ID":        MessageID(audit.SessionStart),
		"SYSLOG_IDENTIFIER": "bastiond",
		"BASTIOND_AUDIT":    string(lines[1]),
		"BASTIOND_HASH":     h.String(),
		"BASTIOND_PREV":     audit.HashLine(lines[0]).String(),
		"BASTIOND_EVENT":    "session_start",
		"BASTIOND_ACTOR":    "bob",
		"BASTIOND_SOURCE":   "2001:db8::7",
		"BASTIOND_SESSION":  "s1",
		"BASTIOND_ROLES":    "ops,dev",
		"BASTIOND_V":        "2",
		"BASTIOND_DETAIL":   `ünïcode ✓ "quoted" ]`,
	}
	for k, w := range want {
		if v[k] != w {
			t.Errorf("%s = %q, want %q", k, v[k], w)
		}
	}
	for k := range v {
		if !journalName(k) {
			t.Errorf("field %q is not a name journald takes", k)
		}
	}
	if e[0].vars["MESSAGE_ID"] == e[1].vars["MESSAGE_ID"] {
		t.Error("two event types share a MESSAGE_ID")
	}
}

func TestMessageID(t *testing.T) {
	seen := map[string]string{}
	for _, ev := range []string{audit.SigninFailed, audit.SigninSucceeded, audit.SessionStart, audit.SessionEnd, audit.ShippingFailed, audit.ShippingResumed} {
		id := MessageID(ev)
		if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
			t.Errorf("%s: %q is not 128 bits in hex", ev, id)
		}
		if other, ok := seen[id]; ok {
			t.Errorf("%s and %s share %s", ev, other, id)
		}
		seen[id] = ev
	}
	// Fixed: docs/audit.md lists them, and journalctl queries use them.
	if got := MessageID(audit.SigninFailed); got != "0932923957455baab9876ebb00b8450f" {
		t.Errorf("signin_failed's MESSAGE_ID changed to %s", got)
	}
}

// journald away: entries wait and are sent once it is back, in order; the
// outage is one failed and one resumed event.
func TestJournalOutage(t *testing.T) {
	f := &fakeJournald{down: true}
	ev := &events{}
	j := NewJournal(JournalConfig{Send: f.send, Audit: ev})
	runJournal(t, j)
	lines, _ := trailLines(10, audit.Zero)
	j.Ship(lines[:4])
	waitFor(t, "retries", 5*time.Second, func() bool { return j.c.failures.Load() >= 3 })
	j.Ship(lines[4:])
	f.setDown(false)
	waitFor(t, "10 entries", 5*time.Second, func() bool { return len(f.got()) == 10 })
	for i, e := range f.got() {
		if e.vars["BASTIOND_AUDIT"] != string(lines[i]) {
			t.Fatalf("entry %d out of order", i)
		}
	}
	waitFor(t, "resumed", 5*time.Second, func() bool { return len(ev.of(audit.ShippingResumed)) == 1 })
	if n := len(ev.of(audit.ShippingFailed)); n != 1 {
		t.Errorf("%d failed events for one outage", n)
	}
	if c := ev.of(audit.ShippingResumed)[0]; c.Count != 10 || c.Collector != JournalName {
		t.Errorf("resumed: %+v", c)
	}
}

// The real journald, when this machine has one.
func TestJournalSocket(t *testing.T) {
	if _, err := os.Stat("/run/systemd/journal/socket"); err != nil {
		t.Skip("no journald socket at /run/systemd/journal/socket on this machine: the field mapping is tested with TestJournalFields")
	}
	ev := &events{}
	j := NewJournal(JournalConfig{Audit: ev, Identifier: "bastiond-test"})
	runJournal(t, j)
	lines, _ := trailLines(2, audit.Zero)
	j.Ship(lines)
	waitFor(t, "2 entries sent", 5*time.Second, func() bool { return j.c.shipped.Load() == 2 })
	if n := j.c.failures.Load(); n != 0 {
		t.Errorf("%d failures: %+v", n, ev.of(audit.ShippingFailed))
	}
}
