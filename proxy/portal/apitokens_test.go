package portal

import (
	"net/http"
	"strings"
	"testing"
)

// TestTokenCommentRefused: POST /api/tokens refuses a comment with control
// characters or over the cap with 400, before the password is checked (a
// wrong one changes nothing), from IPv4 and IPv6 sources.
func TestTokenCommentRefused(t *testing.T) {
	s := newTestServer(t, testConfig{})
	for _, remote := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		for _, tc := range []struct{ name, comment string }{
			{"OSC 52", "laptop\x1b]52;c;ZXZpbA==\x07"},
			{"C1 CSI", "laptop\u009b2J"},
			{"bidi override", "laptop\u202eexe"},
			{"201 characters", strings.Repeat("a", 201)},
		} {
			for _, pw := range []string{testPassword, "not the password"} {
				t.Run(remote+" "+tc.name+" "+pw, func(t *testing.T) {
					cli := newBrowser(t, s.routes())
					cli.origin, cli.remote = "", remote
					r := cli.postJSON("/api/tokens", TokenRequest{User: "carol", Password: pw, Comment: tc.comment}, nil)
					if r.code != http.StatusBadRequest || !strings.Contains(r.body, "token comment") {
						t.Errorf("%d %s, want 400 about the comment", r.code, r.body)
					}
				})
			}
		}
	}
	if ts, _ := s.auth.Store().Tokens("carol"); len(ts) != 0 {
		t.Errorf("tokens issued with refused comments: %d", len(ts))
	}
}
