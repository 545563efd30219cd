package e2e

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/api/admin"
)

// DialWatch opens the live view's WebSocket of session id as the watch
// page does (bastion-watch.v1 for a terminal; a desktop's has no
// subprotocol, and its server ignores the one offered).
func (u *WebUser) DialWatch(id string) (*websocket.Conn, *http.Response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, "wss://"+ServerName+"/ws/watch/"+id,
		&websocket.DialOptions{HTTPClient: u.c, HTTPHeader: http.Header{"Origin": {u.base}}, Subprotocols: []string{"bastion-watch.v1"}})
	if err == nil {
		ws.SetReadLimit(1 << 20)
	}
	return ws, resp, err
}

// LiveSession is session id as `bastionctl sessions --json` shows it now.
func LiveSession(t testing.TB, d *Daemon, id string) (admin.Session, bool) {
	t.Helper()
	out, err := d.Ctl(nil, "sessions", "--json")
	if err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	var list []admin.Session
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	for _, s := range list {
		if s.ID == id {
			return s, true
		}
	}
	return admin.Session{}, false
}
