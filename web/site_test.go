package web

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// A fake bastiond for the browser tests: it serves the connect and player
// pages under the real CSP, the built assets, POST /api/connect, and the
// /ws/ssh endpoint, whose connections it hands to the test as peers that
// the test scripts message by message (see proxy/webssh/doc.go).

const (
	// pageCSP is the header bastiond sends with its pages.
	pageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
	// playerCSP adds what asciinema-player's WebAssembly needs.
	playerCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

	testCSRF   = "csrf-token-for-tests"
	testTarget = "vm1"
)

var connectPage = template.Must(template.New("connect").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{.Target}} · Bastion</title>
<link rel="stylesheet" href="/static/app/connect.css">
</head>
<body>
<div id="client" data-ticket="{{.Ticket}}" data-protocol="ssh" data-target="{{.Target}}" data-csrf="{{.CSRF}}"></div>
<script src="/static/app/connect.js" type="module"></script>
</body>
</html>
`))

var playerPage = template.Must(template.New("player").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>Recording · Bastion</title>
<link rel="stylesheet" href="/static/app/player.css">
</head>
<body>
<div id="player" data-cast="/api/recordings/{{.}}.cast" data-title="Session {{.}}"></div>
<script src="/static/app/player.js" type="module"></script>
</body>
</html>
`))

// testCast is a short asciicast v2 recording.
const testCast = `{"version": 2, "width": 60, "height": 10, "timestamp": 1700000000}
[0.05, "o", "recorded line one\r\n"]
[0.10, "o", "\u001b[32mrecorded in green\u001b[0m\r\n$ "]
`

// connectCall is one POST /api/connect the page made.
type connectCall struct {
	CSRF string
	Body map[string]any
}

type site struct {
	*httptest.Server
	peers chan *peer
	files fakeFiles // the file panel's routes (files_test.go)

	mu            sync.Mutex // guards the fields below
	connectStatus int        // what /api/connect answers; 0 means a new ticket
	connectCalls  []connectCall
	tickets       int
}

func newSite(t *testing.T) *site {
	s := &site{peers: make(chan *peer, 4)}
	mux := http.NewServeMux()
	mux.Handle("GET /static/app/", http.StripPrefix("/static/app/", http.FileServerFS(Assets())))
	mux.HandleFunc("GET /connect/{ticket}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", pageCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		connectPage.Execute(w, map[string]string{"Ticket": r.PathValue("ticket"), "Target": testTarget, "CSRF": testCSRF})
	})
	mux.HandleFunc("GET /recordings/{id}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", playerCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		playerPage.Execute(w, r.PathValue("id"))
	})
	mux.HandleFunc("GET /api/recordings/{file}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-asciicast")
		io.WriteString(w, testCast)
	})
	mux.HandleFunc("POST /api/connect", s.apiConnect)
	mux.HandleFunc("GET /ws/ssh", s.webSocket)
	mux.HandleFunc("/api/files/{session}/{op}", s.files.serve)
	s.Server = httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	return s
}

func (s *site) apiConnect(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || r.Header.Get("Content-Type") != "application/json" {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connectCalls = append(s.connectCalls, connectCall{CSRF: r.Header.Get("X-CSRF-Token"), Body: body})
	w.Header().Set("Content-Type", "application/json")
	if s.connectStatus != 0 {
		w.WriteHeader(s.connectStatus)
		json.NewEncoder(w).Encode(map[string]string{"error": "sign in again from the portal (session, origin or CSRF token missing)"})
		return
	}
	s.tickets++
	ticket := fmt.Sprintf("reconnect-%d", s.tickets)
	json.NewEncoder(w).Encode(map[string]any{"ticket": ticket, "url": "/connect/" + ticket, "expires": time.Now().Add(time.Minute)})
}

func (s *site) webSocket(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"bastion-ssh.v1"}})
	if err != nil {
		return
	}
	p := &peer{conn: c, ticket: r.URL.Query().Get("ticket"), subprotocol: c.Subprotocol(), frames: make(chan frame, 64), done: make(chan struct{})}
	go p.readLoop()
	s.peers <- p
	<-p.done
}

// accept waits for the page to open a WebSocket.
func (s *site) accept(t *testing.T) *peer {
	t.Helper()
	select {
	case p := <-s.peers:
		t.Cleanup(func() { p.conn.CloseNow() })
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("the page opened no WebSocket")
		return nil
	}
}

func (s *site) setConnectStatus(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connectStatus = code
}

func (s *site) takeConnectCalls() []connectCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	calls := s.connectCalls
	s.connectCalls = nil
	return calls
}

// peer is the server side of one WebSocket: the test double of bastiond's
// webssh relay.
type peer struct {
	conn        *websocket.Conn
	ticket      string
	subprotocol string
	frames      chan frame
	done        chan struct{} // closed when the connection is gone
}

type frame struct {
	binary bool
	data   []byte
}

func (p *peer) readLoop() {
	defer close(p.done)
	for {
		typ, data, err := p.conn.Read(context.Background())
		if err != nil {
			return
		}
		p.frames <- frame{binary: typ == websocket.MessageBinary, data: data}
	}
}

// send writes one JSON message.
func (p *peer) send(t *testing.T, msg map[string]any) {
	t.Helper()
	data, err := json.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.conn.Write(ctx, websocket.MessageText, data); err != nil {
		t.Fatalf("send %s: %v", data, err)
	}
}

// output writes terminal output in a binary frame.
func (p *peer) output(t *testing.T, s string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.conn.Write(ctx, websocket.MessageBinary, []byte(s)); err != nil {
		t.Fatalf("output: %v", err)
	}
}

var errNoFrame = errors.New("no frame")

func (p *peer) next(wait time.Duration) (frame, error) {
	select {
	case f := <-p.frames:
		return f, nil
	case <-p.done:
		select {
		case f := <-p.frames:
			return f, nil
		default:
			return frame{}, errors.New("the page closed the WebSocket")
		}
	case <-time.After(wait):
		return frame{}, errNoFrame
	}
}

// expect reads the next frame, which must be a text message of type typ.
func (p *peer) expect(t *testing.T, typ string) map[string]any {
	t.Helper()
	f, err := p.next(10 * time.Second)
	if err != nil {
		t.Fatalf("waiting for %q: %v", typ, err)
	}
	if f.binary {
		t.Fatalf("got binary frame %q, want %q message", f.data, typ)
	}
	var msg map[string]any
	if err := json.Unmarshal(f.data, &msg); err != nil {
		t.Fatalf("text frame %q: %v", f.data, err)
	}
	if msg["type"] != typ {
		t.Fatalf("got %s, want a %q message", f.data, typ)
	}
	return msg
}

// expectInput reads binary frames until their bytes add up to want; any
// text message on the way fails the test.
func (p *peer) expectInput(t *testing.T, want string) {
	t.Helper()
	var got []byte
	for len(got) < len(want) {
		f, err := p.next(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for keystrokes %q (have %q): %v", want, got, err)
		}
		if !f.binary {
			t.Fatalf("got message %s while waiting for keystrokes %q", f.data, want)
		}
		got = append(got, f.data...)
	}
	if string(got) != want {
		t.Fatalf("keystrokes: got %q, want %q", got, want)
	}
}

// expectClosed waits for the page to close the WebSocket.
func (p *peer) expectClosed(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		t.Fatal("the page did not close the WebSocket")
	}
}
