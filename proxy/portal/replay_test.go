package portal

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/recording"
)

// writeRDPRecording writes a small RDP recording of alice on vm2 to dir.
func writeRDPRecording(t *testing.T, dir, id string) {
	t.Helper()
	rec, err := recording.CreateRDP(dir, recording.RDPHeader{Session: id, Target: "vm2", User: "alice", Protocol: 2})
	if err != nil {
		t.Fatal(err)
	}
	rec.Record(recording.RDPMeta, []byte(`{"width":1280,"height":800}`))
	rec.Record(recording.RDPServer, []byte{3, 0, 0, 8, 2, 0xf0, 0x80, 0})
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestRDPRecordings: auditors see RDP recordings listed and get their
// player page; others get neither, and their attempt to play one is an
// audit event.
func TestRDPRecordings(t *testing.T) {
	dir := t.TempDir()
	writeRDPRecording(t, dir, "0123456789ab")
	writeCast(t, dir, "ba9876543210", "alice → root@vm1", time.Now().Add(-time.Hour), `[1.0,"o","x"]`)
	var mu sync.Mutex
	var events []audit.Event
	sink := audit.SinkFunc(func(e audit.Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	h := newTestServer(t, testConfig{Access: auditPolicy(), SSH: SSHConfig{RecordDir: dir}, Audit: sink}).routes()

	carol := newBrowser(t, h)
	csrf := carol.signIn("carol")
	r := carol.get("/recordings")
	rdp, ssh := strings.Index(r.body, "alice on vm2 (remote desktop)"), strings.Index(r.body, "root@vm1")
	if r.code != http.StatusOK || rdp < 0 || ssh < 0 || rdp > ssh || !strings.Contains(r.body, `href="/recordings/0123456789ab"`) {
		t.Errorf("list, newest first, RDP included: %d\n%s", r.code, r.body)
	}
	r = carol.get("/recordings/0123456789ab")
	if r.code != http.StatusOK || !strings.Contains(r.body, `data-width="1280" data-height="800"`) ||
		!strings.Contains(r.body, `/static/app/desktop.js`) || r.header.Get("Content-Security-Policy") != desktopCSP {
		t.Errorf("player page: %d %q\n%s", r.code, r.header.Get("Content-Security-Policy"), r.body)
	}
	if r := carol.get("/api/replay/0123456789abcdef0123"); r.code != http.StatusNotFound {
		t.Errorf("state of a player that never connected: %d", r.code)
	}
	pause := func(b *browser, token string) reply {
		return b.postJSON("/api/replay/0123456789abcdef0123", map[string]string{"action": "pause"},
			map[string]string{"X-CSRF-Token": token, "Origin": b.origin})
	}
	if r := pause(carol, "wrong"); r.code != http.StatusForbidden {
		t.Errorf("control without the CSRF token: %d", r.code)
	}
	if r := pause(carol, csrf); r.code != http.StatusNotFound {
		t.Errorf("control of a player that never connected: %d", r.code)
	}

	alice := newBrowser(t, h)
	acsrf := alice.signIn("alice")
	if r := alice.get("/recordings/0123456789ab"); r.code != http.StatusForbidden {
		t.Errorf("alice's player page: %d", r.code)
	}
	ws := alice.do(http.MethodGet, "/ws/replay/0123456789ab?player=0123456789abcdef0123&from=0&speed=1", nil,
		map[string]string{"Origin": alice.origin, "Connection": "Upgrade", "Upgrade": "websocket",
			"Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="})
	if ws.code != http.StatusForbidden {
		t.Errorf("alice's replay WebSocket: %d", ws.code)
	}
	if r := pause(alice, acsrf); r.code != http.StatusForbidden {
		t.Errorf("alice's control: %d", r.code)
	}
	mu.Lock()
	defer mu.Unlock()
	var refused bool
	for _, e := range events {
		if e.Event == audit.ConnectRefused && e.Actor == "alice" && e.Reason == "not_auditor" && e.Recording == "0123456789ab" {
			refused = true
			line, _ := json.Marshal(e)
			t.Logf("%s", line)
		}
	}
	if !refused {
		t.Errorf("no connect_refused event for alice's playback: %+v", events)
	}
}
