// Package audittest checks, in tests, the audit events a component wrote
// (to an audit.Capture): which events, in which order, and that no secret
// is in them.
package audittest

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/internal/audit"
)

// Want is the part of an event a test checks. Event, Actor, Source and
// Reason are always compared; the other strings and Port only when set.
// Token and Session say whether the event names a token and a session.
type Want struct {
	Event, Actor, Source, User, Target, Protocol, Reason, Via string
	Port                                                      uint16
	Token, Session                                            bool
}

// Check fails t unless got are the events wants, in order. what names the
// events in the failure.
func Check(t testing.TB, what string, got []audit.Event, wants ...Want) {
	t.Helper()
	if len(got) != len(wants) {
		t.Fatalf("%s: %d events, want %d: %+v", what, len(got), len(wants), got)
	}
	for i, w := range wants {
		e := got[i]
		ok := e.Event == w.Event && e.Actor == w.Actor && e.Source == w.Source &&
			(w.User == "" || e.User == w.User) && (w.Target == "" || e.Target == w.Target) &&
			(w.Protocol == "" || e.Protocol == w.Protocol) && e.Reason == w.Reason && (w.Via == "" || e.Via == w.Via) &&
			(w.Port == 0 || e.Port == w.Port) && (e.Token != "") == w.Token && (!w.Session || e.Session != "")
		if !ok {
			b, _ := json.Marshal(e)
			t.Errorf("%s: event %d is %s, want %+v", what, i, b, w)
		}
	}
}

// NoSecrets fails t if any of es, as written to the file, holds one of
// secrets.
func NoSecrets(t testing.TB, es []audit.Event, secrets ...string) {
	t.Helper()
	for _, e := range es {
		line := string(audit.Marshal(e))
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				t.Errorf("a secret (%.12q...) is in the audit line %s", s, line)
			}
		}
	}
}
