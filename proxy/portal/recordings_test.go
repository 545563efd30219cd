package portal

import (
	"compress/gzip"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/web"
)

// auditPolicy is testPolicy with carol as an auditor.
func auditPolicy() *access.Policy {
	return access.New(testName, []access.Target{{Name: "vm1", SSH: 22}}, nil, []access.Role{
		{Name: "ops", Subjects: []string{"user:alice"}, Targets: []string{"vm1"}, Protocols: []string{access.SSH}},
		{Name: "audit", Subjects: []string{"user:carol"}, Auditor: true},
	})
}

func writeCast(t *testing.T, dir, id, title string, start time.Time, events ...string) {
	t.Helper()
	data := fmt.Sprintf(`{"version":2,"width":80,"height":24,"timestamp":%d,"title":%q}`+"\n", start.Unix(), title) +
		strings.Join(events, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(dir, id+".cast"), []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRecordings(t *testing.T) {
	dir := t.TempDir()
	start := time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
	writeCast(t, dir, "0123456789ab", "alice → lab@vm1", start, `[0.5,"o","hello"]`, `[75.2,"o","bye"]`)
	writeCast(t, dir, "ba9876543210", "alice → root@vm1", start.Add(time.Hour), `[1.0,"o","x"]`)
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("not a recording"), 0o600)
	os.WriteFile(filepath.Join(dir, "ffffffffffff.cast"), []byte("garbage\n"), 0o600)
	os.Chtimes(filepath.Join(dir, "ba9876543210.cast"), start.Add(time.Hour), start.Add(time.Hour))
	os.Chtimes(filepath.Join(dir, "0123456789ab.cast"), start.Add(75*time.Second), start.Add(75*time.Second))
	h := newTestServer(t, testConfig{Access: auditPolicy(), SSH: SSHConfig{RecordDir: dir}}).routes()

	carol := newBrowser(t, h)
	carol.signIn("carol")
	if r := carol.get("/"); !strings.Contains(r.body, `href="/recordings"`) {
		t.Error("the portal shows no recordings link to an auditor")
	}
	r := carol.get("/recordings")
	if r.code != http.StatusOK {
		t.Fatalf("list: %d\n%s", r.code, r.body)
	}
	newer, older := strings.Index(r.body, "root@vm1"), strings.Index(r.body, "lab@vm1")
	if newer < 0 || older < 0 || newer > older || strings.Contains(r.body, "ffffffffffff") || !strings.Contains(r.body, "1m15s") {
		t.Errorf("list, newest first, without the unreadable file, with durations:\n%s", r.body)
	}
	r = carol.get("/recordings/0123456789ab")
	if r.code != http.StatusOK || !strings.Contains(r.body, `data-cast="/api/recordings/0123456789ab.cast"`) ||
		!strings.Contains(r.header.Get("Content-Security-Policy"), "script-src 'self' 'wasm-unsafe-eval';") {
		t.Errorf("player page: %d %q\n%s", r.code, r.header.Get("Content-Security-Policy"), r.body)
	}
	r = carol.get("/api/recordings/0123456789ab.cast")
	if r.code != http.StatusOK || !strings.Contains(r.body, `"hello"`) || r.header.Get("Content-Type") != "application/x-asciicast" {
		t.Errorf("cast: %d %q", r.code, r.body)
	}
	for _, bad := range []string{"/api/recordings/..%2fstate.db", "/api/recordings/0123456789AB.cast", "/api/recordings/aaaaaaaaaaaa.cast",
		"/recordings/..%2f..%2fetc%2fpasswd", "/recordings/aaaaaaaaaaaa"} {
		if r := carol.get(bad); r.code != http.StatusNotFound {
			t.Errorf("%s: %d", bad, r.code)
		}
	}
	if r := carol.get("/"); strings.Contains(r.header.Get("Content-Security-Policy"), "wasm") {
		t.Error("the portal allows WebAssembly")
	}

	alice := newBrowser(t, h)
	alice.signIn("alice")
	if r := alice.get("/"); strings.Contains(r.body, `href="/recordings"`) {
		t.Error("the portal shows the recordings link to a non-auditor")
	}
	for _, p := range []string{"/recordings", "/recordings/0123456789ab", "/api/recordings/0123456789ab.cast"} {
		if r := alice.get(p); r.code != http.StatusForbidden || strings.Contains(r.body, "hello") {
			t.Errorf("alice %s: %d", p, r.code)
		}
	}
	if r := newBrowser(t, h).get("/api/recordings/0123456789ab.cast"); r.code != http.StatusForbidden {
		t.Errorf("signed out: %d", r.code)
	}
}

func TestAppAssets(t *testing.T) {
	h := newTestServer(t, testConfig{}).routes()
	b := newBrowser(t, h)
	r := b.get("/static/app/README.txt")
	if r.code != http.StatusOK || r.header.Get("ETag") == "" || r.header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("asset: %d %v", r.code, r.header)
	}
	again := b.do(http.MethodGet, "/static/app/README.txt", nil, map[string]string{"If-None-Match": r.header.Get("ETag")})
	if again.code != http.StatusNotModified {
		t.Errorf("revalidation: %d", again.code)
	}
	if r := b.get("/static/app/../portal.go"); r.code == http.StatusOK {
		t.Errorf("path escape: %d", r.code)
	}
	if !web.Built() {
		t.Skip("web/dist is not built (make web): no bundle to compress")
	}
	plain := b.get("/static/app/desktop.js")
	gz := b.do(http.MethodGet, "/static/app/desktop.js", nil, map[string]string{"Accept-Encoding": "br, gzip"})
	if plain.header.Get("Content-Encoding") != "" || gz.header.Get("Content-Encoding") != "gzip" ||
		gz.header.Get("Vary") != "Accept-Encoding" || gz.header.Get("ETag") == plain.header.Get("ETag") {
		t.Fatalf("encodings: plain %v, gzip %v", plain.header, gz.header)
	}
	zr, err := gzip.NewReader(strings.NewReader(gz.body))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil || string(body) != plain.body || len(gz.body) >= len(plain.body)/2 {
		t.Errorf("gzip body: %d bytes for %d, decoded equal %v, %v", len(gz.body), len(plain.body), string(body) == plain.body, err)
	}
}

// TestBrowserSSHUnavailable: without a broker or host key store the
// terminal's WebSocket is refused with a clear 503, and the ticket is used.
func TestBrowserSSHUnavailable(t *testing.T) {
	h := newTestServer(t, testConfig{}).routes()
	alice := newBrowser(t, h)
	csrf := alice.signIn("alice")
	r := alice.post("/connect", url.Values{"csrf": {csrf}, "target": {"vm1"}, "protocol": {"ssh"}})
	tk := strings.TrimPrefix(r.header.Get("Location"), "/connect/")
	ws := alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin})
	if ws.code != http.StatusServiceUnavailable || !strings.Contains(ws.body, "not available") {
		t.Errorf("%d %s", ws.code, ws.body)
	}
	if again := alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}); again.code != http.StatusForbidden {
		t.Errorf("the ticket was not used up: %d", again.code)
	}
}

// TestCompressedRecording: a recording written by the recorder (gzip) is
// listed with the old plain ones, goes to a browser compressed with
// Content-Encoding: gzip (inflated here for a client without gzip), and
// every playback is a recording_played event.
func TestCompressedRecording(t *testing.T) {
	dir := t.TempDir()
	writeCast(t, dir, "0123456789ab", "old plain", time.Now().Add(-time.Hour), `[0.5,"o","old"]`)
	rec, err := recording.Create(dir, "abcdef012345", recording.Header{Width: 80, Height: 24, Title: "lab@vm1 by alice"})
	if err != nil {
		t.Fatal(err)
	}
	rec.Output([]byte("compressed output"))
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	var events []audit.Event
	var mu sync.Mutex
	sink := audit.SinkFunc(func(e audit.Event) { mu.Lock(); events = append(events, e); mu.Unlock() })
	h := newTestServer(t, testConfig{Access: auditPolicy(), Audit: sink, SSH: SSHConfig{RecordDir: dir}}).routes()
	carol := newBrowser(t, h)
	carol.signIn("carol")
	if r := carol.get("/recordings"); !strings.Contains(r.body, "lab@vm1 by alice") || !strings.Contains(r.body, "old plain") {
		t.Errorf("list lacks a recording:\n%s", r.body)
	}
	r := carol.do(http.MethodGet, "/api/recordings/abcdef012345.cast", nil, map[string]string{"Accept-Encoding": "gzip, deflate, br"})
	if r.code != http.StatusOK || r.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("cast: %d %v", r.code, r.header)
	}
	zr, err := gzip.NewReader(strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(zr); err != nil || !strings.Contains(string(b), "compressed output") {
		t.Errorf("inflated cast %q %v", b, err)
	}
	r = carol.get("/api/recordings/abcdef012345.cast")
	if r.code != http.StatusOK || r.header.Get("Content-Encoding") != "" || !strings.Contains(r.body, "compressed output") {
		t.Errorf("cast without gzip: %d %v %q", r.code, r.header, r.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(events) != 2 || events[0].Event != audit.RecordingPlayed || events[0].Actor != "carol" ||
		events[0].Source != "2001:db8::10" || events[0].Session != "abcdef012345" || events[0].Recording != rec.Path() {
		t.Errorf("events %+v", events)
	}
	t.Logf("example line: %s", audit.Marshal(events[0]))
}
