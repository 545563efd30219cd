package webssh

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/watch"
)

// watchServer serves Watch for the stream of session id on hub, as
// watcher name; Watch's result goes to done.
func watchServer(t *testing.T, hub *watch.Hub, name string, done chan<- error) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := hub.Get(r.URL.Query().Get("session"))
		if !ok {
			http.NotFound(w, r)
			return
		}
		wt, err := s.Subscribe(name)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{WatchSubprotocol}})
		if err != nil {
			wt.Leave()
			return
		}
		done <- Watch(context.Background(), ws, wt, zap.NewNop())
	}))
	t.Cleanup(srv.Close)
	return srv
}

// watcherPage is a watcher's page: it keeps what the terminal showed.
type watcherPage struct {
	t    *testing.T
	ws   *websocket.Conn
	out  strings.Builder
	msgs []msg
}

func dialWatcher(t *testing.T, srv *httptest.Server, session string) *watcherPage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/?session="+session,
		&websocket.DialOptions{Subprotocols: []string{WatchSubprotocol}})
	if err != nil {
		t.Fatal(err)
	}
	ws.SetReadLimit(1 << 20)
	t.Cleanup(func() { ws.CloseNow() })
	return &watcherPage{t: t, ws: ws}
}

// until reads until the terminal shows want.
func (p *watcherPage) until(want string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for !strings.Contains(p.out.String(), want) {
		typ, b, err := p.ws.Read(ctx)
		if err != nil {
			p.t.Fatalf("watcher waiting for %q: %v (shown: %q)", want, err, p.out.String())
		}
		if typ == websocket.MessageBinary {
			p.out.Write(b)
			continue
		}
		var m msg
		json.Unmarshal(b, &m)
		p.msgs = append(p.msgs, m)
	}
}

// untilWatchers reads the user's page until it is told the watchers are
// want, keeping the terminal's output.
func (c *client) untilWatchers(want ...string) {
	c.t.Helper()
	for range 100 {
		m := c.next()
		if m.str("type") != typeWatchers {
			continue
		}
		var got []string
		for _, n := range m["watchers"].([]any) {
			got = append(got, n.(string))
		}
		if slices.Equal(got, want) {
			return
		}
	}
	c.t.Fatalf("the page was never told the watchers are %q", want)
}

// TestWatch: an auditor's page sees the terminal from a catch-up on, and
// sees its size; the user's page is told who watches, and when they leave;
// nothing the watcher's page sends (keystrokes, pastes, resizes, garbage)
// reaches the machine: a cat into a file receives none of it, the
// session's bytes-up count does not move, and the terminal keeps its size.
func TestWatch(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	for _, tc := range []struct {
		name string
		ipv6 bool
	}{{"IPv4", false}, {"IPv6", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.ipv6 && !d.ipv6 {
				t.Skip("no IPv6 loopback here")
			}
			hub := watch.NewHub()
			var mu sync.Mutex
			var watched [][]string
			h := newHarness(t, d, d.addr(tc.ipv6), func(p *Params) {
				p.Watch = hub
				p.Watched = func(_ Session, names []string) {
					mu.Lock()
					watched = append(watched, names)
					mu.Unlock()
				}
			})
			c := h.dial()
			ready := c.login(map[string]any{"password": d.password})
			id := ready.str("session")
			c.run("echo BEFORE-$((6*7))", "BEFORE-42")
			if l := hub.List(); len(l) != 1 || l[0].Session != id || l[0].User != "alice" || l[0].Protocol != "ssh" {
				t.Fatalf("hub lists %+v", l)
			}

			done := make(chan error, 1)
			srv := watchServer(t, hub, "carol", done)
			wp := dialWatcher(t, srv, id)
			wp.until("BEFORE-42") // the catch-up
			if len(wp.msgs) < 2 || wp.msgs[0].str("type") != "hello" || wp.msgs[0].str("user") != "alice" ||
				wp.msgs[1].str("type") != "size" || wp.msgs[1]["cols"] != float64(120) || wp.msgs[1]["rows"] != float64(40) {
				t.Errorf("watcher's first messages %v", wp.msgs)
			}
			c.untilWatchers("carol")

			// The user starts a sink; the watcher tries every way to type.
			c.run("f=$(mktemp); stty -echo; echo SINK-READY; cat > $f", "SINK-READY")
			wp.until("SINK-READY")
			up := h.session(0).up.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			for _, m := range []struct {
				typ  websocket.MessageType
				data string
			}{
				{websocket.MessageBinary, "WATCHER-TYPED\r"},
				{websocket.MessageText, `{"type":"paste","data":"WATCHER-PASTED\r"}`},
				{websocket.MessageText, `{"type":"resize","cols":50,"rows":10}`},
				{websocket.MessageText, `{"type":"auth","login":"root","password":"x","cols":1,"rows":1}`},
				{websocket.MessageText, "WATCHER-RAW\r"},
				{websocket.MessageBinary, "\x04\x03"},
			} {
				if err := wp.ws.Write(ctx, m.typ, []byte(m.data)); err != nil {
					t.Fatalf("watcher write: %v", err)
				}
			}
			wp.ws.Close(websocket.StatusNormalClosure, "")
			if err := <-done; !errors.Is(err, watch.ErrLeft) {
				t.Errorf("Watch returned %v, want ErrLeft", err)
			}
			c.untilWatchers() // none left
			if got := h.session(0).up.Load(); got != up {
				t.Errorf("bytes up moved from %d to %d while only the watcher sent", up, got)
			}
			c.typeText("\x04")
			c.run("stty echo; echo SIZE $(stty size) BYTES $(wc -c < $f)", "SIZE 40 120 BYTES 0")
			if strings.Contains(c.out.String(), "WATCHER") {
				t.Errorf("the watcher's input reached the terminal: %q", c.out.String())
			}

			// A second watcher sees the session's end.
			wp2 := dialWatcher(t, srv, id)
			wp2.until("BYTES 0")
			c.typeText("exit\r")
			c.expectEnd(endExit)
			if err := <-done; !errors.Is(err, watch.ErrEnded) {
				t.Errorf("Watch returned %v at the end, want ErrEnded", err)
			}
			for {
				typ, b, err := wp2.ws.Read(ctx)
				if err != nil {
					t.Fatalf("the watcher got no end message: %v", err)
				}
				if typ == websocket.MessageText && strings.Contains(string(b), `"type":"end"`) {
					if !strings.Contains(string(b), `"reason":"ended"`) {
						t.Errorf("end %s", b)
					}
					break
				}
			}
			h.waitServed()
			if _, ok := hub.Get(id); ok {
				t.Error("the ended session is still watchable")
			}
			mu.Lock()
			defer mu.Unlock()
			if !slices.ContainsFunc(watched, func(n []string) bool { return slices.Equal(n, []string{"carol"}) }) {
				t.Errorf("Watched was told %q", watched)
			}
		})
	}
}

// TestSlowWatcher: a watcher that reads nothing is dropped once its queue
// is full; the user's terminal goes on, and is told the watcher left.
func TestSlowWatcher(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	hub := watch.NewHub()
	h := newHarness(t, d, d.addr(false), func(p *Params) { p.Watch = hub })
	c := h.dial()
	id := c.login(map[string]any{"password": d.password}).str("session")
	s, ok := hub.Get(id)
	if !ok {
		t.Fatal("the session is not watchable")
	}
	w, err := s.Subscribe("slow")
	if err != nil {
		t.Fatal(err)
	}
	c.untilWatchers("slow")
	// About 2 MiB of output, more than a watcher's queue (1 MiB).
	c.typeText("seq 1 300000; echo END-$((5*5))\r")
	c.untilWatchers()
	c.waitFor("END-25")
	if _, err := w.Next(); !errors.Is(err, watch.ErrBehind) {
		t.Errorf("slow watcher: %v, want ErrBehind", err)
	}
	c.run("echo STILL-$((2*2))", "STILL-4")
	c.typeText("exit\r")
	c.expectEnd(endExit)
	h.waitServed()
}
