package webssh

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/hostkeys"
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopSSHDs()
	os.Exit(code)
}

// testSession is a broker session over a plain connection to sshd: the
// real broker refuses to dial loopback addresses.
type testSession struct {
	id     string
	conn   net.Conn
	ctx    context.Context
	cancel context.CancelFunc
	login  string

	up, down atomic.Int64
	once     sync.Once
	mu       sync.Mutex
	reason   string
}

var _ Session = (*testSession)(nil)

func (s *testSession) ID() string               { return s.id }
func (s *testSession) Target() net.Conn         { return s.conn }
func (s *testSession) Context() context.Context { return s.ctx }
func (s *testSession) AddUp(n int64)            { s.up.Add(n) }
func (s *testSession) AddDown(n int64)          { s.down.Add(n) }

func (s *testSession) End(reason string) {
	s.once.Do(func() {
		s.mu.Lock()
		s.reason = reason
		s.mu.Unlock()
		s.cancel()
		s.conn.Close()
	})
}

func (s *testSession) EndReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// harness serves the terminal over httptest with Params p, and checks
// when the test ends that Serve returned, that no goroutine is left, and
// that nothing the user typed was logged.
type harness struct {
	t       testing.TB
	srv     *httptest.Server
	p       Params
	logs    *observer.ObservedLogs
	secrets []string // never to be logged
	ctx     context.Context
	cancel  context.CancelFunc // ends Serve's context: shutdown
	serving sync.WaitGroup

	mu           sync.Mutex
	sessions     []*testSession
	recording    string
	recordingSum string
	events       []audit.Event
	keyIDs       []string
}

// audited are the audit events of type typ sent so far.
func (h *harness) audited(typ string) []audit.Event {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []audit.Event
	for _, e := range h.events {
		if e.Event == typ {
			out = append(out, e)
		}
	}
	return out
}

// gunzip reads a compressed recording, up to its last flush.
func gunzip(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(zr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal(err)
	}
	return b
}

// newHarness serves a terminal to target at addr (an sshd), with the
// host key pinned; edit changes Params before serving.
func newHarness(t testing.TB, d *sshd, addr string, edit func(*Params)) *harness {
	t.Helper()
	goroutines := runtime.NumGoroutine()
	core, logs := observer.New(zapcore.DebugLevel)
	h := &harness{t: t, logs: logs}
	h.ctx, h.cancel = context.WithCancel(context.Background())
	if d != nil {
		h.secrets = []string{d.password, d.passphrase, pemBody(d.keyPEM), pemBody(d.encKeyPEM)}
	}
	h.p = Params{
		Target:    "vm1",
		User:      "alice",
		Client:    netip.MustParseAddrPort("203.0.113.10:50000"),
		Logins:    []string{testUser},
		Clipboard: true,
		Logger:    zap.New(core),
		KeepAlive: time.Second,
		Authorize: func(login string) ([]string, error) {
			if login != testUser {
				return nil, fmt.Errorf("role ops allows only %s", testUser)
			}
			return []string{"ops"}, nil
		},
		Open: func(ctx context.Context, login string, roles []string) (Session, error) {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				return nil, err
			}
			s := &testSession{id: randomHex(6), conn: c, login: login}
			s.ctx, s.cancel = context.WithCancel(context.Background())
			h.mu.Lock()
			h.sessions = append(h.sessions, s)
			h.mu.Unlock()
			return s, nil
		},
		HostKeys: func(target string) (ssh.HostKeyCallback, []string) {
			if d == nil {
				return nil, nil
			}
			return pinned(d.hostKey), []string{d.hostKey.Type()}
		},
		SetRecording: func(s Session, path string) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.recording = path
		},
		RecordingClosed: func(s Session, sum string, size int64) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.recordingSum = sum
		},
		Audit: audit.SinkFunc(func(e audit.Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			h.events = append(h.events, e)
		}),
	}
	if d != nil {
		h.p.Sign = func(login, keyID string) (ssh.Signer, error) {
			h.mu.Lock()
			h.keyIDs = append(h.keyIDs, keyID)
			h.mu.Unlock()
			return certificate(d.ca, login, keyID)
		}
	}
	if edit != nil {
		edit(&h.p)
	}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{Subprotocol}})
		if err != nil {
			return
		}
		h.serving.Add(1)
		defer h.serving.Done()
		if err := Serve(h.ctx, ws, h.p); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}))
	t.Cleanup(func() {
		done := make(chan struct{})
		go func() { h.serving.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			t.Errorf("Serve did not return")
		}
		h.cancel()
		h.srv.Close()
		h.checkLogs()
		checkGoroutines(t, goroutines)
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("log: %s %s %v", e.Level, e.Message, e.ContextMap())
			}
			if d != nil {
				t.Logf("sshd: %s", d.stderr)
			}
		}
	})
	return h
}

// session is the n-th broker session opened (from 0).
func (h *harness) session(n int) *testSession {
	h.mu.Lock()
	defer h.mu.Unlock()
	if n >= len(h.sessions) {
		h.t.Fatalf("%d sessions opened, want more than %d", len(h.sessions), n)
	}
	return h.sessions[n]
}

func (h *harness) sessionCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.sessions)
}

// waitServed waits for every Serve to return.
func (h *harness) waitServed() {
	h.t.Helper()
	done := make(chan struct{})
	go func() { h.serving.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		h.t.Fatal("Serve did not return")
	}
}

// checkLogs fails the test if a secret appears in any log entry
// (invariant 10).
func (h *harness) checkLogs() {
	for _, e := range h.logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		for _, s := range h.secrets {
			if s != "" && strings.Contains(line, s) {
				h.t.Errorf("a secret was logged: %s %v", e.Message, e.ContextMap())
			}
		}
	}
}

func (h *harness) logged(msg string) bool {
	return h.logs.FilterMessage(msg).Len() > 0
}

// checkGoroutines fails the test if more goroutines run than before it,
// once those that are ending have had time to.
func checkGoroutines(t testing.TB, before int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("goroutines leaked: %d, before the test %d\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func pemBody(pemBytes []byte) string {
	lines := strings.Split(string(pemBytes), "\n")
	if len(lines) < 3 {
		return ""
	}
	return lines[1]
}

// pinned is a host key check against one pinned key.
func pinned(want ssh.PublicKey) ssh.HostKeyCallback {
	return func(host string, remote net.Addr, key ssh.PublicKey) error {
		if !bytes.Equal(key.Marshal(), want.Marshal()) {
			return fmt.Errorf("hostkeys: %s offered %s, pinned %s: %w", host,
				ssh.FingerprintSHA256(key), ssh.FingerprintSHA256(want), hostkeys.ErrMismatch)
		}
		return nil
	}
}

// certificate signs a new key for login with ca, as the bastion's CA does.
func certificate(ca ssh.Signer, login, keyID string) (ssh.Signer, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key: signer.PublicKey(), CertType: ssh.UserCert, KeyId: keyID, ValidPrincipals: []string{login},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(5 * time.Minute).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{"permit-pty": ""}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		return nil, err
	}
	return ssh.NewCertSigner(cert, signer)
}

// client is the page: a WebSocket client speaking the protocol.
type client struct {
	t   testing.TB
	ws  *websocket.Conn
	out bytes.Buffer // the terminal so far
}

func (h *harness) dial() *client {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(h.srv.URL, "http"), &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
	if err != nil {
		h.t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	c := &client{t: h.t, ws: ws}
	h.t.Cleanup(func() { ws.CloseNow() })
	return c
}

// msg is a control message from the server.
type msg map[string]any

func (m msg) str(k string) string { s, _ := m[k].(string); return s }

// next returns the next control message, adding terminal bytes to c.out.
func (c *client) next() msg {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			c.t.Fatalf("read: %v (terminal so far: %q)", err, c.out.String())
		}
		if typ == websocket.MessageBinary {
			c.out.Write(b)
			continue
		}
		var m msg
		if err := json.Unmarshal(b, &m); err != nil {
			c.t.Fatalf("bad message %q: %v", b, err)
		}
		return m
	}
}

// expect returns the next control message, which must be of type typ.
func (c *client) expect(typ string) msg {
	c.t.Helper()
	m := c.next()
	if m.str("type") != typ {
		c.t.Fatalf("got %v, want a %q message", m, typ)
	}
	return m
}

// expectEnd reads to the "end" message, which must have reason, and then
// the close.
func (c *client) expectEnd(reason string) msg {
	c.t.Helper()
	var m msg
	for {
		m = c.next()
		if m.str("type") == typeEnd {
			break
		}
		if m.str("type") != typeIdleWarning && m.str("type") != typeActive && m.str("type") != typeWatchers {
			c.t.Fatalf("got %v, want an end message", m)
		}
	}
	if m.str("reason") != reason {
		c.t.Fatalf("end %v, want reason %q", m, reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if typ, b, err := c.ws.Read(ctx); websocket.CloseStatus(err) != websocket.StatusNormalClosure {
		c.t.Errorf("after end: %v message %.60q (error %v), want a normal close", typ, b, err)
	}
	return m
}

func (c *client) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, b); err != nil {
		c.t.Fatal(err)
	}
}

// auth sends an auth message with the credentials in fields.
func (c *client) auth(fields map[string]any) {
	c.t.Helper()
	m := map[string]any{"type": typeAuth, "login": testUser, "cols": 120, "rows": 40}
	for k, v := range fields {
		m[k] = v
	}
	c.send(m)
}

// login says hello, authenticates and waits for the shell.
func (c *client) login(fields map[string]any) msg {
	c.t.Helper()
	c.expect(typeHello)
	c.auth(fields)
	return c.expect(typeReady)
}

// typeText sends keystrokes.
func (c *client) typeText(s string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
		c.t.Fatal(err)
	}
}

// waitFor reads the terminal until it shows want; no control message may
// come first.
func (c *client) waitFor(want string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !strings.Contains(c.out.String(), want) {
		typ, b, err := c.ws.Read(ctx)
		if err != nil {
			c.t.Fatalf("waiting for %q: %v (terminal: %q)", want, err, c.out.String())
		}
		if typ != websocket.MessageBinary {
			c.t.Fatalf("waiting for %q: got %s (terminal: %q)", want, b, c.out.String())
		}
		c.out.Write(b)
	}
}

// run types a shell command line and waits for want in the output.
func (c *client) run(line, want string) {
	c.t.Helper()
	c.typeText(line + "\r")
	c.waitFor(want)
}
