package auth

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// TestSignInSSO: the first sign-in creates the account, the next ones
// update its groups and say which were lost; a name that is a local
// account's, or another subject's, and a disabled account are refused and
// audited; the source's failures are counted.
func TestSignInSSO(t *testing.T) {
	s, clk := newTestStore(t)
	events := &audit.Capture{}
	a, err := NewAuthenticator(AuthenticatorConfig{Store: s, Logger: zap.NewNop(), Audit: events,
		Throttle: ThrottleConfig{FreeFailures: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.AddUser("alice", "correct horse battery staple", nil); err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddr("2001:db8:7::1")
	ana := SSOIdentity{Provider: "lab", Subject: "sub-ana", Name: "ana@lab.example", Groups: []string{"everyone", "lab-ops"}}
	u, lost, err := a.SignInSSO(ana, src)
	if err != nil || lost || u.Provider != "lab" || u.Subject != "sub-ana" || !slices.Equal(u.Subjects(), []string{"lab/everyone", "lab/lab-ops"}) ||
		!u.LastSignIn.Equal(clk.now()) || u.PasswordHash != "" {
		t.Fatalf("first sign-in: %+v, lost %v, %v", u, lost, err)
	}
	clk.advance(time.Hour)
	ana.Groups = []string{"everyone", "lab-ops", "new"}
	if _, lost, _ := a.SignInSSO(ana, src); lost {
		t.Error("a group added counts as lost")
	}
	ana.Groups = []string{"new"}
	if u, lost, _ := a.SignInSSO(ana, src); !lost || !slices.Equal(u.Groups, []string{"new"}) {
		t.Errorf("groups taken away: lost %v, groups %v", lost, u.Groups)
	}
	ev := events.Take()
	if len(ev) != 3 || ev[0].Event != audit.SigninSucceeded || ev[0].Reason != "sso" || ev[0].Source != "2001:db8:7::1" {
		t.Fatalf("events %+v", ev)
	}

	for _, tc := range []struct {
		name string
		id   SSOIdentity
		want string
	}{
		{"a local account's name", SSOIdentity{Provider: "lab", Subject: "x", Name: "alice"}, "sso_name_taken"},
		{"another subject", SSOIdentity{Provider: "lab", Subject: "impostor", Name: "ana@lab.example"}, "sso_name_taken"},
		{"another provider", SSOIdentity{Provider: "corp", Subject: "sub-ana", Name: "ana@lab.example"}, "sso_name_taken"},
	} {
		_, _, err := a.SignInSSO(tc.id, src)
		var le *LoginError
		ev := events.Take()
		if !errors.As(err, &le) || len(ev) != 1 || ev[0].Event != audit.SigninFailed || ev[0].Reason != tc.want || ev[0].User != tc.id.Name {
			t.Errorf("%s: %v, events %+v", tc.name, err, ev)
		}
	}
	if w, _ := a.SourceWait(src, "sso"); w == 0 {
		t.Error("three refusals from one source did not hold it up")
	}
	if err := s.SetDisabled("ana@lab.example", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.SignInSSO(SSOIdentity{Provider: "lab", Subject: "sub-ana", Name: "ana@lab.example"}, netip.MustParseAddr("192.0.2.9")); err == nil {
		t.Error("a disabled SSO account signed in")
	}
	// An SSO account has no password: to the form it is an unknown name,
	// whatever is typed.
	other := netip.MustParseAddr("198.51.100.4")
	if _, _, err := a.SignInSSO(SSOIdentity{Provider: "lab", Subject: "sub-ned", Name: "ned"}, other); err != nil {
		t.Fatal(err)
	}
	events.Take()
	var le *LoginError
	if _, err := a.Login(t.Context(), "ned", "", "", other); !errors.As(err, &le) || le.Reason != "unknown user" {
		t.Fatalf("password sign-in of an SSO account: %v", err)
	}
	if ev := events.Take(); len(ev) != 1 || ev[0].Reason != "unknown_user" {
		t.Errorf("events %+v", ev)
	}
}
