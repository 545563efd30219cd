package portal

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/watch"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// watchEvents are the events of types among the captured ones.
func watchEvents(got []audit.Event) []audit.Event {
	var out []audit.Event
	for _, e := range got {
		switch e.Event {
		case audit.WatchStart, audit.WatchEnd, audit.WatchRefused:
			out = append(out, e)
		}
	}
	return out
}

// TestWatchPages: only auditors list and watch live sessions, every other
// request a watch_refused event; an unknown or ended session's page says
// so, and one on another instance names it.
func TestWatchPages(t *testing.T) {
	s := newTestServer(t, testConfig{Access: auditPolicy()})
	sink := audited(t, s)
	h := s.routes()
	const id = "0123456789ab"
	st := s.watch.Open(watch.Info{Session: id, User: "alice", Target: "vm1", Protocol: "ssh", Start: time.Now()}, watch.SSHLimits, nil)

	alice := newBrowser(t, h)
	alice.signIn("alice")
	sink.Take()
	for _, path := range []string{"/sessions", "/watch/" + id} {
		if r := alice.get(path); r.code != http.StatusForbidden || !strings.Contains(r.body, "auditor") {
			t.Errorf("alice %s: %d\n%s", path, r.code, r.body)
		}
	}
	got := watchEvents(sink.Take())
	if len(got) != 2 || got[0].Reason != "not_auditor" || got[1].Reason != "not_auditor" || got[1].Session != id ||
		got[1].Watcher != "alice" || got[1].Actor != "alice" || got[1].Source != "2001:db8::10" {
		t.Errorf("alice's refusals: %+v", got)
	}
	if r := alice.get("/"); strings.Contains(r.body, `href="/sessions"`) {
		t.Error("the portal links a non-auditor to the live sessions")
	}

	carol := newBrowser(t, h)
	carol.remote = "192.0.2.20:40000"
	carol.signIn("carol")
	if r := carol.get("/"); !strings.Contains(r.body, `href="/sessions"`) {
		t.Error("no link to the live sessions for an auditor")
	}
	r := carol.get("/sessions")
	if r.code != http.StatusOK || !strings.Contains(r.body, `href="/watch/`+id+`"`) || !strings.Contains(r.body, "alice") {
		t.Errorf("sessions page: %d\n%s", r.code, r.body)
	}
	r = carol.get("/watch/" + id)
	if r.code != http.StatusOK || !strings.Contains(r.body, `data-session="`+id+`"`) || !strings.Contains(r.body, `data-protocol="ssh"`) ||
		!strings.Contains(r.body, "/static/app/watch.js") || strings.Contains(r.header.Get("Content-Security-Policy"), "wasm") {
		t.Errorf("watch page: %d %q\n%s", r.code, r.header.Get("Content-Security-Policy"), r.body)
	}
	sink.Take()
	for _, tc := range []struct{ path, want string }{
		{"/watch/aaaaaaaaaaaa", "No live session"},
		{"/watch/..%2f..%2fetc", "No live session"},
	} {
		if r := carol.get(tc.path); r.code != http.StatusNotFound || !strings.Contains(r.body, tc.want) || strings.Contains(r.body, "data-session") {
			t.Errorf("%s: %d\n%s", tc.path, r.code, r.body)
		}
	}
	st.Close()
	if r := carol.get("/watch/" + id); r.code != http.StatusNotFound || !strings.Contains(r.body, "it has ended") {
		t.Errorf("ended session: %d\n%s", r.code, r.body)
	}
	got = watchEvents(sink.Take())
	if len(got) != 3 || got[2].Reason != "unknown" || got[2].Session != id || got[2].Source != "192.0.2.20" {
		t.Errorf("carol's refusals: %+v", got)
	}

	// In a cluster, another instance's session is named, not watched.
	c := *s.cfg.Load()
	c.SessionOwner = func(sid string) (string, error) {
		if sid == "bbbbbbbbbbbb" {
			return "bastion-b", nil
		}
		return "", errors.New("no such session")
	}
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	if r := carol.get("/watch/bbbbbbbbbbbb"); r.code != http.StatusConflict || !strings.Contains(r.body, "bastion-b") {
		t.Errorf("another instance's session: %d\n%s", r.code, r.body)
	}
	if got := watchEvents(sink.Take()); len(got) != 1 || got[0].Reason != "elsewhere" || !strings.Contains(got[0].Detail, "bastion-b") {
		t.Errorf("elsewhere: %+v", got)
	}
}

// TestWatchSocket: an auditor's WebSocket, over IPv4 and IPv6, gets the
// terminal's catch-up and its output, is a watch_start and a watch_end
// event, and puts the auditor's name in the session's watchers; a
// non-auditor's and an unknown session's are refused with watch_refused.
func TestWatchSocket(t *testing.T) {
	for _, network := range []string{"4", "6"} {
		t.Run("ipv"+network, func(t *testing.T) {
			host := "127.0.0.1"
			if network == "6" {
				host = "::1"
			}
			ln, err := net.Listen("tcp"+network, net.JoinHostPort(host, "0"))
			if err != nil {
				t.Skipf("no IPv%s loopback: %v", network, err)
			}
			s := newTestServer(t, testConfig{Access: auditPolicy()})
			sink := audited(t, s)
			h := s.routes()
			srv := httptest.NewUnstartedServer(h)
			srv.Listener = ln
			srv.Start()
			t.Cleanup(srv.Close)
			const id = "0123456789ab"
			names := make(chan []string, 10)
			st := s.watch.Open(watch.Info{Session: id, User: "alice", Target: "vm1", Protocol: "ssh", Start: time.Now()}, watch.SSHLimits,
				func(n []string) { names <- n })
			st.Publish(watch.Size, []byte(`{"cols":80,"rows":24}`))
			st.Publish(watch.Output, []byte("before"))

			dial := func(user, session string) (*websocket.Conn, error) {
				b := newBrowser(t, h)
				b.signIn(user)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				hdr := http.Header{"Origin": {"https://" + testName}}
				for _, c := range b.cookies {
					hdr.Add("Cookie", c.Name+"="+c.Value)
				}
				ws, _, err := websocket.Dial(ctx, "ws://"+ln.Addr().String()+"/ws/watch/"+session,
					&websocket.DialOptions{Host: testName, HTTPHeader: hdr, Subprotocols: []string{webssh.WatchSubprotocol}})
				return ws, err
			}
			if _, err := dial("alice", id); err == nil {
				t.Error("a non-auditor's WebSocket was accepted")
			}
			if _, err := dial("carol", "aaaaaaaaaaaa"); err == nil {
				t.Error("a WebSocket for an unknown session was accepted")
			}
			got := watchEvents(sink.Take())
			if len(got) != 2 || got[0].Reason != "not_auditor" || got[1].Reason != "unknown" || got[0].Source != host {
				t.Errorf("refusals %+v", got)
			}
			full := s.watch.Open(watch.Info{Session: "bbbbbbbbbbbb", User: "alice", Protocol: "ssh"}, watch.SSHLimits, nil)
			for range watch.MaxWatchers {
				full.Subscribe("dave")
			}
			if _, err := dial("carol", "bbbbbbbbbbbb"); err == nil {
				t.Error("a 17th watcher was accepted")
			}
			full.Close()
			if got := watchEvents(sink.Take()); len(got) != 1 || got[0].Reason != "too_many" || got[0].Session != "bbbbbbbbbbbb" {
				t.Errorf("too many: %+v", got)
			}

			ws, err := dial("carol", id)
			if err != nil {
				t.Fatal(err)
			}
			defer ws.CloseNow()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var shown strings.Builder
			var texts []string
			read := func(want string) {
				t.Helper()
				for !strings.Contains(shown.String(), want) {
					typ, b, err := ws.Read(ctx)
					if err != nil {
						t.Fatalf("read: %v (shown %q)", err, shown.String())
					}
					if typ == websocket.MessageBinary {
						shown.Write(b)
					} else {
						texts = append(texts, string(b))
					}
				}
			}
			read("before")
			if len(texts) != 2 || !strings.Contains(texts[0], `"user":"alice"`) || !strings.Contains(texts[1], `"cols":80`) {
				t.Errorf("first messages %q", texts)
			}
			if n := <-names; len(n) != 1 || n[0] != "carol" {
				t.Errorf("watchers %q", n)
			}
			ws.Write(ctx, websocket.MessageBinary, []byte("typed by the watcher\r"))
			st.Publish(watch.Output, []byte("live"))
			read("live")
			st.Close()
			if _, _, err := ws.Read(ctx); err == nil {
				for {
					if _, _, err := ws.Read(ctx); err != nil {
						break
					}
				}
			}
			var start, end *audit.Event
			for range 100 {
				for _, e := range watchEvents(sink.Take()) {
					switch e.Event {
					case audit.WatchStart:
						start = &e
					case audit.WatchEnd:
						end = &e
					}
				}
				if end != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if start == nil || start.Watcher != "carol" || start.WatchedUser != "alice" || start.Session != id || start.Target != "vm1" ||
				start.Protocol != "ssh" || start.Source != host {
				t.Errorf("watch_start %+v", start)
			}
			if end == nil || end.Reason != "session_ended" || end.Watcher != "carol" {
				t.Errorf("watch_end %+v", end)
			}
		})
	}
}
