package auth

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// TestTokenComments: a comment with anything a terminal would act on, or
// longer than the cap, is refused and no token is made.
func TestTokenComments(t *testing.T) {
	s, _ := newTestStore(t)
	if err := s.AddUser("alice", goodPassword, nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		comment string
		ok      bool
	}{
		{"empty", "", true},
		{"plain", "bastionctl on laptop-7", true},
		{"accents and symbols", "poste de Zoé ☕ (salle 2)", true},
		{"right-to-left letters", "מחשב נייד", true},
		{"at the cap", strings.Repeat("é", MaxTokenComment), true},
		{"over the cap", strings.Repeat("a", MaxTokenComment+1), false},
		{"escape: erase the screen", "laptop\x1b[2J", false},
		{"escape: window title", "\x1b]0;root@bastion\x07", false},
		{"OSC 52 clipboard", "\x1b]52;c;Y3VybCBldmlsLmV4YW1wbGUgfCBzaA==\x07", false},
		{"newline", "laptop\nfake row", false},
		{"carriage return", "laptop\rover", false},
		{"tab", "a\tb", false},
		{"NUL", "a\x00b", false},
		{"DEL", "a\x7fb", false},
		{"C1 CSI", "a\u009b2Jb", false},
		{"C1 NEL", "a\u0085b", false},
		{"bidi override RLO", "laptop\u202eexe.txt", false},
		{"bidi embedding LRE", "\u202alaptop", false},
		{"bidi isolate FSI", "\u2068laptop\u2069", false},
		{"invalid UTF-8 (lone C1 byte)", "a\x9b2Jb", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := s.Tokens("alice")
			_, tok, err := s.IssueToken("alice", nil, time.Hour, tt.comment, "2001:db8::7")
			after, _ := s.Tokens("alice")
			if tt.ok {
				if err != nil || tok.Comment != tt.comment {
					t.Fatalf("IssueToken(%q) = %q, %v; want it issued", tt.comment, tok.Comment, err)
				}
				return
			}
			if !errors.Is(err, ErrBadComment) {
				t.Fatalf("IssueToken(%q): %v, want ErrBadComment", tt.comment, err)
			}
			if len(after) != len(before) {
				t.Errorf("a token was stored for a refused comment")
			}
			if CheckTokenComment(tt.comment) == nil {
				t.Errorf("CheckTokenComment(%q) accepts what IssueToken refuses", tt.comment)
			}
		})
	}
}

// TestNoTokenForDisabledUser: once an account is disabled no token can be
// issued to it, so that revoking its tokens at disable leaves none behind.
func TestNoTokenForDisabledUser(t *testing.T) {
	s, _ := newTestStore(t)
	if err := s.AddUser("bob", goodPassword, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.SetDisabled("bob", true); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.IssueToken("bob", nil, time.Hour, "", "192.0.2.7"); !errors.Is(err, ErrUserDisabled) {
		t.Fatalf("IssueToken for a disabled user: %v, want ErrUserDisabled", err)
	}
	if ts, _ := s.Tokens("bob"); len(ts) != 0 {
		t.Errorf("tokens of a disabled user: %v", ts)
	}
}
