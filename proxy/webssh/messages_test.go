package webssh

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/coder/websocket"
)

func TestSecret(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"plain", `"hunter2"`, "hunter2"},
		{"escapes", `"a\"b\\c\/d\b\f\n\r\t"`, "a\"b\\c/d\b\f\n\r\t"},
		{"unicode escape", `"caf\u00e9 \u20AC"`, "café €"},
		{"surrogate pair", `"\ud83d\ude00"`, "😀"},
		{"lone high surrogate", `"\ud83dx"`, "\ufffdx"},
		{"lone low surrogate", `"\ude00"`, "\ufffd"},
		{"raw UTF-8", `"pässwörd 😀"`, "pässwörd 😀"},
		{"invalid UTF-8", "\"a\xffb\"", "a\ufffdb"},
		{"empty", `""`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m struct{ P secret }
			if err := json.Unmarshal([]byte(`{"P":`+tt.json+`}`), &m); err != nil {
				t.Fatal(err)
			}
			if string(m.P) != tt.want {
				t.Errorf("got %q, want %q", m.P, tt.want)
			}
			m.P.wipe()
			for _, b := range m.P {
				if b != 0 {
					t.Fatalf("wipe left %q", m.P)
				}
			}
		})
	}
	t.Run("not a string", func(t *testing.T) {
		var m struct{ P secret }
		err := json.Unmarshal([]byte(`{"P":12345678}`), &m)
		if err == nil {
			t.Fatal("a number decoded as a secret")
		}
		if strings.Contains(err.Error(), "12345678") {
			t.Errorf("error quotes the input: %v", err)
		}
	})
	t.Run("null", func(t *testing.T) {
		var m struct{ P secret }
		if err := json.Unmarshal([]byte(`{"P":null}`), &m); err != nil || m.P != nil {
			t.Errorf("null: %q, %v", m.P, err)
		}
	})
}

// FuzzSecret checks that a secret decodes every JSON string exactly as
// encoding/json decodes it into a Go string.
func FuzzSecret(f *testing.F) {
	for _, s := range []string{`"hunter2"`, `"a\"b\\c\/d\b\f\n\r\t"`, `"\ud83d\ude00"`, `"\ud83dx"`, `"\ud800\ud800\udc00"`,
		"\"a\xffb\"", `"\u00"`, `"x\"`, `12`, `null`, `"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\n"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var want string
		werr := json.Unmarshal(in, &want)
		var got secret
		gerr := json.Unmarshal(in, &got)
		if werr != nil {
			if gerr == nil {
				t.Errorf("%q: decoded %q where encoding/json fails: %v", in, got, werr)
			}
			return
		}
		if gerr != nil {
			t.Fatalf("%q: %v, encoding/json decodes %q", in, gerr, want)
		}
		if string(got) != want {
			t.Errorf("%q: got %q, encoding/json %q", in, got, want)
		}
	})
}

// FuzzParseKey: a private key pasted in the page, with its passphrase, is
// read or refused with a message, never a panic.
func FuzzParseKey(f *testing.F) {
	f.Add([]byte("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"), []byte(""))
	f.Add([]byte("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n"), []byte("pw"))
	f.Add([]byte("not a key"), []byte("x"))
	f.Fuzz(func(t *testing.T, key, passphrase []byte) {
		s, msg := parseKey(secret(key), secret(passphrase))
		if (s == nil) == (msg == "") {
			t.Fatalf("signer %v with message %q", s, msg)
		}
	})
}

// FuzzBrowserMessage: any text message from the page is decoded into a
// message or refused as unreadable, never a panic; the buffer it was read
// into is cleared (it may hold a password), and wipe clears every secret.
func FuzzBrowserMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"auth","login":"lab","password":"hunter2","cols":80,"rows":24}`,
		`{"type":"auth","private_key":"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n-----END OPENSSH PRIVATE KEY-----\n","passphrase":"p"}`,
		`{"type":"answers","answers":["123456","x"]}`, `{"type":"resize","cols":1000,"rows":1}`, `{"type":"paste","data":"\u0000\ud800"}`,
		`{"type":"resize","cols":-1,"rows":1e9}`, `{"answers":null}`, `[]`, `{"type":`, "", "\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &conn{}
		var m inMsg
		err := c.decode(websocket.MessageText, bytes.NewReader(in), &m)
		if err != nil && err != errUnreadable {
			t.Fatalf("%q: %v", in, err)
		}
		if !bytes.Equal(c.in, make([]byte, len(c.in))) {
			t.Fatalf("%q: the read buffer still holds the message", in)
		}
		m.wipe()
		for _, s := range append([]secret{m.Password, m.PrivateKey, m.Passphrase, m.Data}, m.Answers...) {
			if !bytes.Equal(s, make([]byte, len(s))) {
				t.Fatalf("%q: a secret survives wipe: %q", in, s)
			}
		}
		if err := c.decode(websocket.MessageBinary, bytes.NewReader(in), &m); err != errUnreadable {
			t.Fatalf("a binary message decoded as a control message: %v", err)
		}
	})
}
