package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/proxy/rdcleanpath"
)

// WebUser is a browser in the client namespace talking to the bastion at
// addr under its server name, with a cookie jar.
type WebUser struct {
	t    testing.TB
	c    *http.Client
	base string
}

// NewWebUser is a browser that has not signed in, bound for the bastion at
// addr.
func NewWebUser(t testing.TB, addr string) *WebUser {
	return NewWebUserIn(t, LabValue(t, "NS_CLIENT"), addr)
}

// NewWebUserIn is NewWebUser in the network namespace ns.
func NewWebUserIn(t testing.TB, ns, addr string) *WebUser {
	jar, _ := cookiejar.New(nil)
	return newWebUser(t, jar, ns, addr)
}

// Via is the same browser, its cookies shared, bound for the bastion at
// addr from the network namespace ns: in a cluster, another instance.
func (u *WebUser) Via(ns, addr string) *WebUser {
	return newWebUser(u.t, u.c.Jar, ns, addr)
}

func newWebUser(t testing.TB, jar http.CookieJar, ns, addr string) *WebUser {
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: ServerName, InsecureSkipVerify: true},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var c net.Conn
			err := InNetns(ns, func() (err error) {
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, net.JoinHostPort(addr, "443"))
				return err
			})
			return c, err
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &WebUser{t: t, base: "https://" + ServerName, c: &http.Client{
		Jar: jar, Transport: tr, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

func (u *WebUser) do(method, path string, form url.Values) (*http.Response, string) {
	u.t.Helper()
	resp, body, err := u.try(method, path, form)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp, body
}

// try is do that returns its error, for goroutines other than the test's.
func (u *WebUser) try(method, path string, form url.Values) (*http.Response, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, u.base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method != http.MethodGet {
		req.Header.Set("Origin", u.base)
	}
	resp, err := u.c.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp, string(data), err
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

func csrfIn(t testing.TB, page string) string {
	t.Helper()
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no CSRF token in:\n%s", page)
	}
	return m[1]
}

// SignIn posts the login form and returns the portal page.
func (u *WebUser) SignIn(user, password, code string) (int, string) {
	u.t.Helper()
	status, page, err := u.TrySignIn(user, password, code)
	if err != nil {
		u.t.Fatal(err)
	}
	return status, page
}

// TrySignIn is SignIn that returns its error, for goroutines other than
// the test's.
func (u *WebUser) TrySignIn(user, password, code string) (int, string, error) {
	_, login, err := u.try(http.MethodGet, "/", nil)
	if err != nil {
		return 0, "", fmt.Errorf("GET /: %w", err)
	}
	m := csrfField.FindStringSubmatch(login)
	if m == nil {
		return 0, "", fmt.Errorf("no CSRF token in:\n%s", login)
	}
	resp, body, err := u.try(http.MethodPost, "/login", url.Values{"csrf": {m[1]}, "user": {user}, "password": {password}, "code": {code}})
	if err != nil {
		return 0, "", fmt.Errorf("POST /login: %w", err)
	}
	if resp.StatusCode != http.StatusSeeOther {
		return resp.StatusCode, body, nil
	}
	_, portal, err := u.try(http.MethodGet, "/", nil)
	return resp.StatusCode, portal, err
}

// WSMsg is any message of the browser SSH protocol (proxy/webssh/doc.go).
type WSMsg struct {
	Type        string   `json:"type"`
	Target      string   `json:"target,omitempty"`
	Logins      []string `json:"logins,omitempty"`
	Certificate bool     `json:"certificate,omitempty"`
	Clipboard   bool     `json:"clipboard,omitempty"`
	Files       bool     `json:"files,omitempty"`
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

// TermClient speaks the browser SSH protocol as the page does, from the
// client namespace with the cookies of a signed-in webUser.
type TermClient struct {
	t     testing.TB
	ws    *websocket.Conn
	Hello WSMsg

	mu     sync.Mutex
	screen bytes.Buffer // every output byte so far
	msgs   []WSMsg      // text messages after hello, in order
	closed error        // set when the reader stops
	wake   chan struct{}
}

// OpenTerminal asks the bastion for a ticket to target's SSH and opens the
// terminal's WebSocket. It returns once hello has arrived.
func (u *WebUser) OpenTerminal(target string) *TermClient {
	u.t.Helper()
	ws, _, err := u.DialWS(target, "ssh")
	if err != nil {
		u.t.Fatalf("open the terminal WebSocket: %v", err)
	}
	tc := &TermClient{t: u.t, ws: ws, wake: make(chan struct{}, 1)}
	u.t.Cleanup(func() { ws.CloseNow() })
	typ, data, err := ws.Read(context.Background())
	if err != nil || typ != websocket.MessageText || json.Unmarshal(data, &tc.Hello) != nil || tc.Hello.Type != "hello" {
		u.t.Fatalf("first message: %v %q %v", typ, data, err)
	}
	go tc.read()
	return tc
}

// DialWS gets a ticket for target and protocol and dials its WebSocket.
func (u *WebUser) DialWS(target, protocol string) (*websocket.Conn, *http.Response, error) {
	u.t.Helper()
	return u.DialTicket(protocol, u.ConnectTicket(target, protocol))
}

// DialTicket opens the WebSocket of protocol with ticket, as the page does.
func (u *WebUser) DialTicket(protocol, ticket string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	h := http.Header{"Origin": {u.base}}
	return websocket.Dial(ctx, "wss://"+ServerName+"/ws/"+protocol+"?ticket="+ticket,
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: h, Subprotocols: []string{"bastion-" + protocol + ".v1"}})
}

// ConnectTicket is POST /api/connect with the session's CSRF token.
func (u *WebUser) ConnectTicket(target, protocol string) string {
	u.t.Helper()
	tk, err := u.Ticket(target, protocol)
	if err != nil {
		u.t.Fatal(err)
	}
	return tk
}

// Ticket is connectTicket for any goroutine: it returns its failure.
func (u *WebUser) Ticket(target, protocol string) (string, error) {
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

func (tc *TermClient) read() {
	for {
		typ, data, err := tc.ws.Read(context.Background())
		tc.mu.Lock()
		switch {
		case err != nil:
			tc.closed = err
		case typ == websocket.MessageBinary:
			tc.screen.Write(data)
		default:
			var m WSMsg
			if json.Unmarshal(data, &m) != nil {
				m = WSMsg{Type: "malformed: " + string(data)}
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

// Send sends a text message.
func (tc *TermClient) Send(m WSMsg) {
	tc.t.Helper()
	data, _ := json.Marshal(m)
	if err := tc.ws.Write(context.Background(), websocket.MessageText, data); err != nil {
		tc.t.Fatalf("send %s: %v", m.Type, err)
	}
}

// TypeText sends keystrokes.
func (tc *TermClient) TypeText(s string) {
	tc.t.Helper()
	if err := tc.ws.Write(context.Background(), websocket.MessageBinary, []byte(s)); err != nil {
		tc.t.Fatalf("type: %v", err)
	}
}

// waitFor waits until cond holds for the screen and messages so far.
func (tc *TermClient) waitFor(what string, timeout time.Duration, cond func(screen string, msgs []WSMsg) bool) {
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

// Message waits for the first Message of type typ.
func (tc *TermClient) Message(typ string, timeout time.Duration) WSMsg {
	tc.t.Helper()
	var found WSMsg
	tc.waitFor("a "+typ+" message", timeout, func(_ string, msgs []WSMsg) bool {
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

// ScreenHas waits for s on the screen.
func (tc *TermClient) ScreenHas(s string, timeout time.Duration) {
	tc.t.Helper()
	tc.waitFor(fmt.Sprintf("%q on the screen", s), timeout, func(screen string, _ []WSMsg) bool { return strings.Contains(screen, s) })
}

func (tc *TermClient) screenText() string {
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

// WebSSHConfig is the lab's configuration for browser SSH: alice's role
// records, bob's may log in only as the lab user and has no clipboard,
// carol audits. vm1 may be changed by edit (a YAML fragment replacing
// "ports: {ssh: 22}").
func WebSSHConfig(dir, vm1, limits string) string {
	access := `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: ops-ssh
      subjects: [group:ops]
      targets: [vm1]
      protocols: [ssh]
      record: true
    - name: restricted
      subjects: [user:bob]
      targets: [vm1]
      protocols: [ssh]
      logins: [` + lab["LAB_USER"] + `]
      disable_clipboard: true
    - name: audit
      subjects: [group:auditors]
      auditor: true
limits:
  target_timeout: 2s
` + limits
	cfg := LabConfig(dir, access)
	if vm1 != "" {
		cfg = strings.Replace(cfg, "ports: {ssh: 22}", vm1, 1)
	}
	return cfg
}

// PinVM1 pins vm1's host keys as an admin would: a scan, then a pin.
func PinVM1(t testing.TB, d *Daemon) {
	t.Helper()
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm1", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm1 --pin: %v\n%s", err, out)
	}
}

// PinVM2 pins vm2's RDP certificates as an admin would: a scan, then a pin.
func PinVM2(t testing.TB, d *Daemon) {
	t.Helper()
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		t.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
}

// SignedIn is a signed-in browser of user at the bastion address addr.
func SignedIn(t testing.TB, addr, user string) *WebUser {
	t.Helper()
	u := NewWebUser(t, addr)
	if code, page := u.SignIn(user, TunnelPassword, ""); code != 303 {
		t.Fatalf("sign in %s: %d\n%s", user, code, page)
	}
	return u
}

// Shell signs tc in with a password and waits for the Shell.
func (tc *TermClient) Shell(password string) WSMsg {
	tc.t.Helper()
	tc.Send(WSMsg{Type: "auth", Login: lab["LAB_USER"], Password: password, Cols: 100, Rows: 30})
	return tc.Message("ready", 20*time.Second)
}

// Ended waits for the end message.
func (tc *TermClient) Ended() WSMsg { tc.t.Helper(); return tc.Message("end", 30*time.Second) }

// EncryptedLabKey is the lab user's key, encrypted with passphrase.
func EncryptedLabKey(t testing.TB, passphrase string) string {
	t.Helper()
	data, err := os.ReadFile(lab["LAB_KEY"])
	if err != nil {
		t.Fatal(err)
	}
	key, err := ssh.ParseRawPrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(block))
}

// EndedRecords are the session_end records of sessions to target, oldest first.
func EndedRecords(d *Daemon, target string) []map[string]any {
	d.t.Helper()
	var out []map[string]any
	data, _ := os.ReadFile(d.Dir + "/audit.jsonl")
	for _, line := range strings.Split(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == "session_end" && r["target"] == target {
			out = append(out, r)
		}
	}
	return out
}

// WebRDPConfig is the lab's configuration for the desktop in the browser:
// alice may open vm2 and vm2-desk, bob may open them without the clipboard.
// vm2's RDP port is its shadow server with NLA; tlsV6 makes it the one with
// TLS alone, on vm2's IPv6 address only. vm2-desk is vm2's second desktop
// (desk.go).
func WebRDPConfig(dir string, tlsV6 bool, limits string) string {
	access := `access:
  groups:
    ops: [alice]
  roles:
    - name: desktops
      subjects: [group:ops]
      targets: [vm2, ` + DeskTarget + `]
      protocols: [rdp]
    - name: no-clipboard
      subjects: [user:bob]
      targets: [vm2, ` + DeskTarget + `]
      protocols: [rdp]
      disable_clipboard: true
limits:
  target_timeout: 2s
` + limits
	cfg := LabConfigTargets(dir, deskTarget(), access)
	if tlsV6 {
		vm2 := "addresses: [" + lab["VM2_4"] + `, "` + lab["VM2_6"] + `"]` + "\n      ports: {rdp: " + lab["VM2_RDP_NLA_PORT"]
		cfg = strings.Replace(cfg, vm2, `addresses: ["`+lab["VM2_6"]+`"]`+"\n      ports: {rdp: "+lab["VM2_RDP_TLS_PORT"], 1)
	}
	return cfg
}

// RDPClient speaks RDCleanPath as the IronRDP web client does, from the
// client namespace with the cookies of a signed-in webUser.
type RDPClient struct {
	t    testing.TB
	ws   *websocket.Conn
	conn net.Conn
}

// OpenDesktop opens the desktop WebSocket of u; the ticket goes in the
// request, not the URL.
func (u *WebUser) OpenDesktop() *RDPClient {
	u.t.Helper()
	rc, err := u.dialDesktop()
	if err != nil {
		u.t.Fatal(err)
	}
	u.t.Cleanup(func() { rc.ws.CloseNow() })
	return rc
}

// dialDesktop is openDesktop for any goroutine: it returns its failure,
// and the caller closes the WebSocket.
func (u *WebUser) dialDesktop() (*RDPClient, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss://"+ServerName+"/ws/rdp",
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: http.Header{"Origin": {u.base}}})
	if err != nil {
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return nil, fmt.Errorf("open the desktop WebSocket: %w (HTTP %d)", err, code)
	}
	ws.SetReadLimit(1 << 20)
	return &RDPClient{t: u.t, ws: ws, conn: websocket.NetConn(context.Background(), ws, websocket.MessageBinary)}, nil
}

// Request sends an RDCleanPath Request with ticket and an X.224 Request
// for protocols, and reads the gateway's answer.
func (c *RDPClient) Request(ticket string, protocols uint32) *rdcleanpath.PDU {
	c.t.Helper()
	req := &rdcleanpath.PDU{Version: rdcleanpath.Version, Destination: "somewhere-else:3389", ProxyAuth: ticket,
		X224ConnectionPDU: rdcleanpath.ConnectionRequestPDU(lab["LAB_USER"], protocols)}
	b, err := req.Marshal()
	if err != nil {
		c.t.Fatal(err)
	}
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
	c.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
	resp, err := rdcleanpath.Read(c.conn, 1<<20)
	if err != nil {
		c.t.Fatalf("read the gateway's answer: %v", err)
	}
	return resp
}

// Get is GET path with u's cookies: the status and the body.
func (u *WebUser) Get(path string) (int, string) {
	u.t.Helper()
	resp, body := u.do(http.MethodGet, path, nil)
	return resp.StatusCode, body
}

// Close closes the desktop's WebSocket.
func (c *RDPClient) Close() { c.ws.Close(websocket.StatusNormalClosure, "") }

// Outcome is GET /api/rdp/Outcome for ticket.
func (u *WebUser) Outcome(ticket string) (code int, o RDPOutcome) {
	u.t.Helper()
	code, o, err := u.outcomeOf(ticket)
	if err != nil {
		u.t.Error(err)
	}
	return code, o
}

// RDPOutcome is how a desktop session ended, as the page learns it.
type RDPOutcome struct{ Reason, Message, Session string }

// outcomeOf is outcome for any goroutine. The outcome is kept a moment
// after the WebSocket closes: a 404 is asked again for up to 2 s.
func (u *WebUser) outcomeOf(ticket string) (code int, o RDPOutcome, err error) {
	for range 20 {
		resp, err := u.c.Get(u.base + "/api/rdp/outcome?ticket=" + ticket)
		if err != nil {
			return 0, o, err
		}
		json.NewDecoder(resp.Body).Decode(&o)
		resp.Body.Close()
		if code = resp.StatusCode; code != http.StatusNotFound {
			return code, o, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return code, o, nil
}

const (
	TLSOnly = rdcleanpath.ProtocolSSL
	AnyTLS  = rdcleanpath.ProtocolSSL | rdcleanpath.ProtocolHybrid | rdcleanpath.ProtocolHybridEx
)
