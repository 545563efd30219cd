package webssh

import (
	"errors"
	"unicode/utf16"
	"unicode/utf8"
)

// Subprotocol is the WebSocket subprotocol the page asks for.
const Subprotocol = "bastion-ssh.v1"

// maxMessage bounds one WebSocket message either way.
const maxMessage = 64 << 10

// Message types (see the package documentation).
const (
	typeHello       = "hello"
	typePrompt      = "prompt"
	typeAuthFailed  = "auth_failed"
	typeReady       = "ready"
	typeIdleWarning = "idle_warning"
	typeActive      = "active"
	typeEnd         = "end"
	typeWatchers    = "watchers"

	typeAuth    = "auth"
	typeAnswers = "answers"
	typeResize  = "resize"
	typePaste   = "paste"
)

// End reasons, as the page sees them.
const (
	endExit           = "exit"
	endKilled         = "killed"
	endIdle           = "idle"
	endMaxDuration    = "max_duration"
	endAccessRevoked  = "access_revoked"
	endNetwork        = "network"
	endUnreachable    = "unreachable"
	endCapacity       = "capacity"
	endUserLimit      = "user_limit"
	endHostKeyChanged = "host_key_mismatch"
	endHostKeyUnknown = "host_key_unknown"
	endAuthFailed     = "auth_failed"
	endDenied         = "denied"
	endShutdown       = "shutdown"
	endError          = "error"
)

type helloMsg struct {
	Type        string   `json:"type"`
	Target      string   `json:"target"`
	Logins      []string `json:"logins,omitzero"` // nil: any
	Certificate bool     `json:"certificate"`
	Clipboard   bool     `json:"clipboard"`
	Files       bool     `json:"files"`
	Recorded    bool     `json:"recorded"`
	IdleTimeout int64    `json:"idle_timeout"` // seconds; 0: none
}

type promptMsg struct {
	Type        string   `json:"type"`
	Name        string   `json:"name"`
	Instruction string   `json:"instruction"`
	Prompts     []prompt `json:"prompts"`
}

type prompt struct {
	Text string `json:"text"`
	Echo bool   `json:"echo"`
}

type authFailedMsg struct {
	Type    string `json:"type"`
	Message string `json:"message"`
	Retry   bool   `json:"retry"`
}

type readyMsg struct {
	Type    string `json:"type"`
	Session string `json:"session"`
}

type idleWarningMsg struct {
	Type    string `json:"type"`
	Seconds int    `json:"seconds"`
}

type watchersMsg struct {
	Type     string   `json:"type"`
	Watchers []string `json:"watchers"`
}

// activeMsg is sent from the relay's hot paths, so it is encoded once.
var activeMsg = []byte(`{"type":"` + typeActive + `"}`)

type endMsg struct {
	Type       string `json:"type"`
	Reason     string `json:"reason"`
	Message    string `json:"message"`
	ExitStatus *int   `json:"exit_status,omitempty"`
	Reconnect  bool   `json:"reconnect"`
}

func end(reason, message string) *endMsg {
	return &endMsg{Type: typeEnd, Reason: reason, Message: message}
}

// inMsg is any message from the browser. What the user typed is decoded
// into secrets, never into strings, so that wipe can clear it.
type inMsg struct {
	Type       string   `json:"type"`
	Login      string   `json:"login"`
	Password   secret   `json:"password"`
	PrivateKey secret   `json:"private_key"`
	Passphrase secret   `json:"passphrase"`
	Answers    []secret `json:"answers"`
	Data       secret   `json:"data"`
	Cols       int      `json:"cols"`
	Rows       int      `json:"rows"`
}

func (m *inMsg) wipe() {
	m.Password.wipe()
	m.PrivateKey.wipe()
	m.Passphrase.wipe()
	for _, a := range m.Answers {
		a.wipe()
	}
	m.Data.wipe()
}

// validSize reports whether cols and rows are a terminal size the
// protocol allows.
func validSize(cols, rows int) bool {
	return cols >= 1 && cols <= 1000 && rows >= 1 && rows <= 1000
}

// secret is a JSON string decoded into bytes that can be cleared.
type secret []byte

func (s secret) wipe() { clear(s) }

var errNotString = errors.New("webssh: not a JSON string")

// UnmarshalJSON decodes a JSON string as encoding/json would into a Go
// string (invalid UTF-8 and lone surrogates become U+FFFD), without making
// one. Its errors never quote the input.
func (s *secret) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	if len(b) < 2 || b[0] != '"' || b[len(b)-1] != '"' {
		return errNotString
	}
	b = b[1 : len(b)-1]
	out := make(secret, 0, len(b))
	for i := 0; i < len(b); {
		c := b[i]
		switch {
		case c == '\\':
			if i+1 >= len(b) {
				return errNotString
			}
			switch e := b[i+1]; e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, n, ok := decodeU(b[i:])
				if !ok {
					return errNotString
				}
				out = utf8.AppendRune(out, r)
				i += n
				continue
			default:
				return errNotString
			}
			i += 2
		case c < 0x20 || c == '"':
			return errNotString
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, n := utf8.DecodeRune(b[i:])
			if r == utf8.RuneError && n == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, b[i:i+n]...)
			}
			i += n
		}
	}
	*s = out
	return nil
}

// decodeU decodes the \uXXXX escape that b starts with, and the low half
// that follows a high surrogate, returning the rune and the bytes used.
func decodeU(b []byte) (rune, int, bool) {
	r, ok := hex4(b)
	if !ok {
		return 0, 0, false
	}
	if utf16.IsSurrogate(r) {
		if r2, ok := hex4(b[6:]); ok {
			if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
				return d, 12, true
			}
		}
		return utf8.RuneError, 6, true
	}
	return r, 6, true
}

// hex4 is the value of the \uXXXX escape that b starts with.
func hex4(b []byte) (rune, bool) {
	if len(b) < 6 || b[0] != '\\' || b[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range b[2:6] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
