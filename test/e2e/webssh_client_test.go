package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsMsg is any message of the browser SSH protocol (proxy/webssh/doc.go).
type wsMsg struct {
	Type        string   `json:"type"`
	Target      string   `json:"target,omitempty"`
	Logins      []string `json:"logins,omitempty"`
	Certificate bool     `json:"certificate,omitempty"`
	Clipboard   bool     `json:"clipboard,omitempty"`
	Recorded    bool     `json:"recorded,omitempty"`
	IdleTimeout int      `json:"idle_timeout,omitempty"`
	Message     string   `json:"message,omitempty"`
	Retry       bool     `json:"retry,omitempty"`
	Session     string   `json:"session,omitempty"`
	Seconds     int      `json:"seconds,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	ExitStatus  *int     `json:"exit_status,omitempty"`
	Reconnect   bool     `json:"reconnect,omitempty"`
	Prompts     []struct {
		Text string `json:"text"`
		Echo bool   `json:"echo"`
	} `json:"prompts,omitempty"`

	Login      string   `json:"login,omitempty"`
	Password   string   `json:"password,omitempty"`
	PrivateKey string   `json:"private_key,omitempty"`
	Passphrase string   `json:"passphrase,omitempty"`
	Cols       int      `json:"cols,omitempty"`
	Rows       int      `json:"rows,omitempty"`
	Answers    []string `json:"answers,omitempty"`
	Data       string   `json:"data,omitempty"`
}

// termClient speaks the browser SSH protocol as the page does, from the
// client namespace with the cookies of a signed-in webUser.
type termClient struct {
	t     testing.TB
	ws    *websocket.Conn
	Hello wsMsg

	mu     sync.Mutex
	screen bytes.Buffer // every output byte so far
	msgs   []wsMsg      // text messages after hello, in order
	closed error        // set when the reader stops
	wake   chan struct{}
}

// openTerminal asks the bastion for a ticket to target's SSH and opens the
// terminal's WebSocket. It returns once hello has arrived.
func (u *webUser) openTerminal(target string) *termClient {
	u.t.Helper()
	ws, _, err := u.dialWS(target, "ssh")
	if err != nil {
		u.t.Fatalf("open the terminal WebSocket: %v", err)
	}
	tc := &termClient{t: u.t, ws: ws, wake: make(chan struct{}, 1)}
	u.t.Cleanup(func() { ws.CloseNow() })
	typ, data, err := ws.Read(context.Background())
	if err != nil || typ != websocket.MessageText || json.Unmarshal(data, &tc.Hello) != nil || tc.Hello.Type != "hello" {
		u.t.Fatalf("first message: %v %q %v", typ, data, err)
	}
	go tc.read()
	return tc
}

// dialWS gets a ticket for target and protocol and dials its WebSocket.
func (u *webUser) dialWS(target, protocol string) (*websocket.Conn, *http.Response, error) {
	u.t.Helper()
	tk := u.connectTicket(target, protocol)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{"Origin": {u.base}}
	return websocket.Dial(ctx, "wss://"+serverName+"/ws/"+protocol+"?ticket="+tk,
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: h, Subprotocols: []string{"bastion-" + protocol + ".v1"}})
}

// connectTicket is POST /api/connect with the session's CSRF token.
func (u *webUser) connectTicket(target, protocol string) string {
	u.t.Helper()
	tk, err := u.ticket(target, protocol)
	if err != nil {
		u.t.Fatal(err)
	}
	return tk
}

// ticket is connectTicket for any goroutine: it returns its failure.
func (u *webUser) ticket(target, protocol string) (string, error) {
	resp, err := u.c.Get(u.base + "/")
	if err != nil {
		return "", err
	}
	portal, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := csrfField.FindSubmatch(portal)
	if m == nil {
		return "", fmt.Errorf("connect %s %s: no CSRF token in the portal (%d)", target, protocol, resp.StatusCode)
	}
	body := fmt.Sprintf(`{"target":%q,"protocol":%q}`, target, protocol)
	req, _ := http.NewRequest(http.MethodPost, u.base+"/api/connect", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", u.base)
	req.Header.Set("X-CSRF-Token", string(m[1]))
	resp, err = u.c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var r struct{ Ticket, Error string }
	json.NewDecoder(resp.Body).Decode(&r)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("connect %s %s: %d %s", target, protocol, resp.StatusCode, r.Error)
	}
	return r.Ticket, nil
}

func (tc *termClient) read() {
	for {
		typ, data, err := tc.ws.Read(context.Background())
		tc.mu.Lock()
		switch {
		case err != nil:
			tc.closed = err
		case typ == websocket.MessageBinary:
			tc.screen.Write(data)
		default:
			var m wsMsg
			if json.Unmarshal(data, &m) != nil {
				m = wsMsg{Type: "malformed: " + string(data)}
			}
			tc.msgs = append(tc.msgs, m)
		}
		tc.mu.Unlock()
		select {
		case tc.wake <- struct{}{}:
		default:
		}
		if err != nil {
			return
		}
	}
}

// send sends a text message.
func (tc *termClient) send(m wsMsg) {
	tc.t.Helper()
	data, _ := json.Marshal(m)
	if err := tc.ws.Write(context.Background(), websocket.MessageText, data); err != nil {
		tc.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// typeText sends keystrokes.
func (tc *termClient) typeText(s string) {
	tc.t.Helper()
	if err := tc.ws.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		tc.t.Fatalf("type: %v", err)
	}
}

// waitFor waits until cond holds for the screen and messages so far.
func (tc *termClient) waitFor(what string, timeout time.Duration, cond func(screen string, msgs []wsMsg) bool) {
	tc.t.Helper()
	deadline := time.After(timeout)
	for {
		tc.mu.Lock()
		ok := cond(tc.screen.String(), tc.msgs)
		screen, msgs, closed := tc.screen.String(), tc.msgs, tc.closed
		tc.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-tc.wake:
		case <-deadline:
			tc.t.Fatalf("waiting for %s: screen %q, messages %+v, connection %v", what, tail(screen, 600), msgs, closed)
		}
	}
}

// message waits for the first message of type typ.
func (tc *termClient) message(typ string, timeout time.Duration) wsMsg {
	tc.t.Helper()
	var found wsMsg
	tc.waitFor("a "+typ+" message", timeout, func(_ string, msgs []wsMsg) bool {
		for _, m := range msgs {
			if m.Type == typ {
				found = m
				return true
			}
		}
		return false
	})
	return found
}

// screenHas waits for s on the screen.
func (tc *termClient) screenHas(s string, timeout time.Duration) {
	tc.t.Helper()
	tc.waitFor(fmt.Sprintf("%q on the screen", s), timeout, func(screen string, _ []wsMsg) bool { return strings.Contains(screen, s) })
}

func (tc *termClient) screenText() string {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.screen.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
