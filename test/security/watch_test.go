package security

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/test/e2e"
)

// watchedAccess: alice's SSH on vm1 and RDP on vm2 (the desktop recorded),
// carol audits.
const watchedAccess = `access:
  groups:
    ops: [alice]
    auditors: [carol]
  roles:
    - name: ssh
      subjects: [group:ops]
      targets: [vm1]
      protocols: [ssh]
    - name: desktops
      subjects: [group:ops]
      targets: [vm2]
      protocols: [rdp]
      record: true
    - name: audit
      subjects: [group:auditors]
      auditor: true
`

// watcherTries is everything a watcher's page can send on its socket: keys
// (binary frames), the terminal protocol's paste, resize and auth, a
// mouse report, garbage text, and RDP's fast-path keyboard and mouse input
// and a slow-path frame.
var watcherTries = []struct {
	typ  websocket.MessageType
	data []byte
}{
	{websocket.MessageBinary, []byte("echo WATCHER-TYPED\r")},
	{websocket.MessageText, []byte(`{"type":"paste","data":"echo WATCHER-PASTED\r"}`)},
	{websocket.MessageText, []byte(`{"type":"resize","cols":33,"rows":11}`)},
	{websocket.MessageText, []byte(`{"type":"auth","login":"root","password":"x","cols":1,"rows":1}`)},
	{websocket.MessageBinary, []byte("\x1b[M #!")}, // an X10 mouse report
	{websocket.MessageText, []byte("WATCHER-RAW\r")},
	{websocket.MessageBinary, []byte{0x44, 0x08, 0x00, 0x1e, 0x00, 0x1e}},                   // fast-path: scancode 'a' down, up
	{websocket.MessageBinary, []byte{0x04, 0x09, 0x20, 0x00, 0x80, 0x10, 0x00, 0x10, 0x00}}, // fast-path: mouse button 1 down
	{websocket.MessageBinary, []byte{3, 0, 0, 12, 2, 0xf0, 0x80, 0x64, 0, 7, 0x03, 0xeb}},   // TPKT, X.224 data, MCS send data
	{websocket.MessageBinary, []byte{0x00, 0x03, 0x04}},                                     // a\x04: what a terminal's Ctrl-D would be
}

// sendTries sends every try on ws and closes it.
func sendTries(t *testing.T, ws *websocket.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, m := range watcherTries {
		if err := ws.Write(ctx, m.typ, m.data); err != nil {
			t.Logf("the bastion closed the watcher's socket: %v", err)
			break
		}
	}
	ws.Close(websocket.StatusNormalClosure, "")
}

// Invariant 19: a watcher's input never reaches the machine. An auditor
// watches alice's terminal on vm1 (over IPv4) and her desktop on vm2 (over
// IPv6) and sends every kind of input; vm1's `cat` into a file receives
// nothing and the terminal keeps its size, the desktop's recording holds no
// byte from the client after the negotiation, and neither session's
// bytes-up count moves.
func TestInvariant19AWatchersInputNeverReachesTheMachine(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.LabConfig(dir, watchedAccess) })
	removeFirewallAtEnd(t)
	e2e.AddLabUsers(t, d, "alice", "carol")
	e2e.PinVM1(t, d)
	e2e.PinVM2(t, d)
	pub4, pub6, pw := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6"), e2e.LabValue(t, "LAB_PASSWORD")

	t.Run("terminal", func(t *testing.T) {
		tc := e2e.SignedIn(t, pub4, "alice").OpenTerminal("vm1")
		ready := tc.Shell(pw)
		id := ready.Session
		tc.TypeText("f=$(mktemp); stty -echo; echo SINK-$((20+22)); cat > $f\r")
		tc.ScreenHas("SINK-42", 10*time.Second)

		carol := e2e.SignedIn(t, pub4, "carol")
		ws, _, err := carol.DialWatch(id)
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		var shown strings.Builder
		for !strings.Contains(shown.String(), "SINK-42") {
			typ, b, err := ws.Read(ctx)
			if err != nil {
				t.Fatalf("the watcher saw %q: %v", shown.String(), err)
			}
			if typ == websocket.MessageBinary {
				shown.Write(b)
			}
		}
		tc.Message("watchers", 10*time.Second) // alice is told
		before, _ := e2e.LiveSession(t, d, id)
		sendTries(t, ws)
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "watch_end" && e["session"] == id && e["watcher"] == "carol"
		}) == nil {
			t.Fatal("no watch_end event")
		}
		after, _ := e2e.LiveSession(t, d, id)
		if after.BytesUp != before.BytesUp {
			t.Errorf("bytes up moved from %d to %d while only the watcher sent", before.BytesUp, after.BytesUp)
		}
		tc.TypeText("\x04")
		tc.TypeText("stty echo; echo SIZE $(stty size) BYTES $(wc -c < $f)\r")
		tc.ScreenHas("SIZE 30 100 BYTES 0", 10*time.Second) // Shell asked for 100x30
		tc.TypeText("exit\r")
		tc.Ended()
		end := lastRecord(t, d, "session_end", "vm1")
		if w, _ := end["watchers"].([]any); len(w) != 1 || w[0] != "carol" {
			t.Errorf("the end record's watchers: %v", end["watchers"])
		}
	})

	t.Run("desktop", func(t *testing.T) {
		u := e2e.SignedIn(t, pub6, "alice")
		tk := u.ConnectTicket("vm2", "rdp")
		dc := u.OpenDesktop()
		if resp := dc.Request(tk, e2e.AnyTLS); resp.Error != nil || resp.ServerCertChain == nil {
			t.Fatalf("the desktop did not open: %+v", resp)
		}
		start := waitEvent(t, d, func(e map[string]any) bool { return e["event"] == "session_start" && e["target"] == "vm2" })
		if start == nil {
			t.Fatal("no session_start for the desktop")
		}
		id := start["session"].(string)

		carol := e2e.SignedIn(t, pub6, "carol")
		ws, _, err := carol.DialWatch(id)
		if err != nil {
			t.Fatalf("watch: %v", err)
		}
		conn := websocket.NetConn(context.Background(), ws, websocket.MessageBinary)
		req := &rdcleanpath.PDU{Version: rdcleanpath.Version, Destination: "vm2:3389", ProxyAuth: "watch",
			X224ConnectionPDU: rdcleanpath.ConnectionRequestPDU("watch", e2e.AnyTLS)}
		b, _ := req.Marshal()
		conn.Write(b)
		conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		resp, err := rdcleanpath.Read(conn, 1<<20)
		if err != nil || resp.Error != nil || len(resp.ServerCertChain) == 0 {
			t.Fatalf("the watcher's answer: %+v, %v", resp, err)
		}
		if n := waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "watch_start" && e["session"] == id && e["watched_user"] == "alice"
		}); n == nil {
			t.Fatal("no watch_start event")
		}
		before, _ := e2e.LiveSession(t, d, id)
		sendTries(t, ws)
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "watch_end" && e["session"] == id
		}) == nil {
			t.Fatal("no watch_end event")
		}
		after, ok := e2e.LiveSession(t, d, id)
		if ok && after.BytesUp != before.BytesUp {
			t.Errorf("bytes up moved from %d to %d while only the watcher sent", before.BytesUp, after.BytesUp)
		}
		dc.Close()
		end := lastRecord(t, d, "session_end", "vm2")
		if up, _ := end["bytes_up"].(float64); int64(up) != before.BytesUp {
			t.Errorf("the desktop's end record counts %v bytes up, %d before the watcher", end["bytes_up"], before.BytesUp)
		}
		if w, _ := end["watchers"].([]any); len(w) != 1 || w[0] != "carol" {
			t.Errorf("the end record's watchers: %v", end["watchers"])
		}
		path, _ := end["recording"].(string)
		if path == "" {
			t.Fatalf("the desktop was not recorded: %v", end)
		}
		r, err := recording.OpenRDP(path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		for {
			rec, err := r.Next()
			if err != nil {
				break
			}
			if rec.Kind == recording.RDPClient {
				t.Errorf("the recording holds %d bytes from the client after the negotiation: % x", len(rec.Data), rec.Data)
			}
		}
	})
}
