package webssh

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/internal/audit"
)

const testOwner = "websession-1"

// files is the page's file panel: HTTP requests to Files.Serve for the
// terminal's session, as the portal's routes make them.
type files struct {
	t       testing.TB
	h       *harness
	reg     *Files
	srv     *httptest.Server
	session string
	dir     string // a directory of the test's own in the login's home, as sshd's user sees it
}

// openFiles logs a terminal in to d (on IPv6 loopback with ipv6) with the
// file panel, edit changing Params first, and returns the panel; the
// terminal ends with the test.
func openFiles(t testing.TB, d *sshd, ipv6 bool, edit func(*Params)) (*files, *client) {
	t.Helper()
	if ipv6 && !d.ipv6 {
		t.Skip("no IPv6 loopback here")
	}
	reg := NewFiles()
	h := newHarness(t, d, d.addr(ipv6), func(p *Params) {
		p.Files, p.Owner, p.FileTransfer = reg, testOwner, true
		// The page reads nothing while the test moves files: no pings,
		// which it would leave unanswered.
		p.KeepAlive = time.Hour
		if edit != nil {
			edit(p)
		}
	})
	mux := http.NewServeMux()
	mux.HandleFunc("/files/{session}/{op}", func(w http.ResponseWriter, r *http.Request) {
		reg.Serve(w, r, r.PathValue("session"), r.Header.Get("X-Owner"), r.PathValue("op"))
	})
	f := &files{t: t, h: h, reg: reg, srv: httptest.NewServer(mux)}
	t.Cleanup(f.srv.Close)
	c := h.dial()
	hello := c.expect(typeHello)
	if hello["files"] != h.p.FileTransfer {
		t.Errorf("hello %v, want files %v", hello, h.p.FileTransfer)
	}
	c.auth(map[string]any{"password": d.password})
	f.session = c.expect(typeReady).str("session")
	t.Cleanup(func() {
		c.ws.Close(websocket.StatusNormalClosure, "")
		h.waitServed()
		if reg.get(f.session) != nil {
			t.Errorf("the session's panel outlived it")
		}
	})
	home := filepath.Join(d.dir, "home")
	f.dir = filepath.Join(home, "t-"+randomHex(4))
	if err := os.Mkdir(f.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(f.dir, testUID, testUID); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(f.dir) })
	return f, c
}

// do makes one request of op with query q, as owner.
func (f *files) do(method, op string, q url.Values, body io.Reader, owner string) *http.Response {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+"/files/"+f.session+"/"+op+"?"+q.Encode(), body)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("X-Owner", owner)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() { res.Body.Close() })
	return res
}

// upload puts b as dir/name and returns the answer.
func (f *files) upload(dir, name string, b []byte) *http.Response {
	f.t.Helper()
	return f.do(http.MethodPut, FileUpload, url.Values{"dir": {dir}, "name": {name}}, bytes.NewReader(b), testOwner)
}

// refusal reads a refused request's answer, which must have status and code.
func refusal(t testing.TB, res *http.Response, status int, code string) FileError {
	t.Helper()
	var fe FileError
	json.NewDecoder(res.Body).Decode(&fe)
	if res.StatusCode != status || fe.Code != code {
		t.Errorf("answer %d %+v, want %d %s", res.StatusCode, fe, status, code)
	}
	return fe
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func randomBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestFilesRoundTrip uploads files with plain, spaced and UTF-8 names over
// IPv4 and IPv6, checks them on the machine's disk, lists them, downloads
// them back, and checks every file_transfer event.
func TestFilesRoundTrip(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	for _, tc := range []struct {
		name string
		ipv6 bool
	}{{"IPv4", false}, {"IPv6", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f, _ := openFiles(t, d, tc.ipv6, nil)
			// The home directory first, as the panel opens.
			res := f.do(http.MethodGet, FileList, nil, nil, testOwner)
			var home FileListing
			if err := json.NewDecoder(res.Body).Decode(&home); err != nil || res.StatusCode != http.StatusOK {
				t.Fatalf("list home: %d %v", res.StatusCode, err)
			}
			if home.Path != filepath.Join(d.dir, "home") {
				t.Errorf("home listed as %q, want %q", home.Path, filepath.Join(d.dir, "home"))
			}
			want := map[string][]byte{
				"plain.bin":           randomBytes(t, 5<<20+123), // many SFTP writes in flight
				"with spaces in.txt":  []byte("a file with spaces\n"),
				"café € 中文 Ω.txt":     []byte("UTF-8 names: é ß € ü ñ 中 Ω\n"),
				"empty":               {},
				"-starts with a dash": []byte("-"),
			}
			for name, b := range want {
				res := f.upload(f.dir, name, b)
				var up FileUploaded
				if err := json.NewDecoder(res.Body).Decode(&up); err != nil || res.StatusCode != http.StatusCreated {
					t.Fatalf("upload %q: %d %v", name, res.StatusCode, err)
				}
				if up.SHA256 != sum(b) || up.Size != int64(len(b)) || up.Path != filepath.Join(f.dir, name) {
					t.Errorf("upload %q answered %+v", name, up)
				}
				onDisk, err := os.ReadFile(filepath.Join(f.dir, name))
				if err != nil || sum(onDisk) != sum(b) {
					t.Errorf("%q on the machine: %d bytes (%v), want %d with SHA-256 %s", name, len(onDisk), err, len(b), sum(b))
				}
				if fi, err := os.Stat(filepath.Join(f.dir, name)); err == nil && fi.Sys() != nil {
					if st, ok := fi.Sys().(interface{ Uid() uint32 }); ok && st.Uid() != testUID {
						t.Errorf("%q owned by %d", name, st.Uid())
					}
				}
			}
			res = f.do(http.MethodGet, FileList, url.Values{"path": {f.dir}}, nil, testOwner)
			var l FileListing
			if err := json.NewDecoder(res.Body).Decode(&l); err != nil {
				t.Fatal(err)
			}
			if len(l.Entries) != len(want) {
				t.Errorf("listing %+v, want %d files", l, len(want))
			}
			for _, e := range l.Entries {
				if b, ok := want[e.Name]; !ok || e.Type != "file" || e.Size != int64(len(b)) {
					t.Errorf("listed %+v", e)
				}
			}
			for name, b := range want {
				res := f.do(http.MethodGet, FileDownload, url.Values{"path": {filepath.Join(f.dir, name)}}, nil, testOwner)
				got, err := io.ReadAll(res.Body)
				if err != nil || res.StatusCode != http.StatusOK || sum(got) != sum(b) {
					t.Errorf("download %q: %d, %d bytes (%v)", name, res.StatusCode, len(got), err)
				}
				cd := res.Header.Get("Content-Disposition")
				if !strings.HasPrefix(cd, "attachment;") {
					t.Errorf("download %q: Content-Disposition %q", name, cd)
				}
				if _, params, err := parseDisposition(cd); err != nil || params != name {
					t.Errorf("download %q: Content-Disposition %q names %q (%v)", name, cd, params, err)
				}
			}
			events := f.h.audited(audit.FileTransfer)
			if len(events) != 2*len(want) {
				t.Fatalf("%d file_transfer events, want %d", len(events), 2*len(want))
			}
			for i, e := range events {
				dir := DirectionUpload
				if i >= len(want) {
					dir = DirectionDownload
				}
				b := want[e.Name]
				if e.Direction != dir || e.Path != filepath.Join(f.dir, e.Name) || e.SHA256 != sum(b) ||
					e.Size == nil || *e.Size != int64(len(b)) || e.Complete == nil || !*e.Complete ||
					e.Protocol != "ssh" || e.Session != f.session || e.User != "alice" || e.Login != testUser ||
					e.Target != "vm1" || e.Client != "203.0.113.10:50000" {
					t.Errorf("event %d: %+v", i, e)
				}
			}
		})
	}
}

// parseDisposition returns the file name a browser saves a
// Content-Disposition under: filename*, else filename.
func parseDisposition(cd string) (string, string, error) {
	for part := range strings.SplitSeq(cd, ";") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "filename*=UTF-8''"); ok {
			name, err := url.PathUnescape(v)
			return "attachment", name, err
		}
	}
	for part := range strings.SplitSeq(cd, ";") {
		part = strings.TrimSpace(part)
		if v, ok := strings.CutPrefix(part, "filename="); ok {
			return "attachment", strings.Trim(v, `"`), nil
		}
	}
	return "", "", errors.New("no file name")
}

// TestFilesRefusals: an existing name is not overwritten, the machine's
// permission denials are said as such, names that would leave the
// directory are refused, another web session sees no terminal, and a
// directory is made.
func TestFilesRefusals(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	f, _ := openFiles(t, d, false, nil)
	keep := filepath.Join(f.dir, "keep.txt")
	if err := os.WriteFile(keep, []byte("the original"), 0o644); err != nil {
		t.Fatal(err)
	}
	locked := filepath.Join(f.dir, "locked") // root's, closed to the login
	if err := os.Mkdir(locked, 0o755); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(f.dir, "secret")
	if err := os.WriteFile(secret, []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("existing name", func(t *testing.T) {
		fe := refusal(t, f.upload(f.dir, "keep.txt", []byte("a replacement")), http.StatusConflict, "exists")
		if !strings.Contains(fe.Error, "nothing was overwritten") {
			t.Errorf("refusal %q", fe.Error)
		}
		if b, _ := os.ReadFile(keep); string(b) != "the original" {
			t.Errorf("the file now holds %q", b)
		}
		refusal(t, f.do(http.MethodPost, FileMkdir, url.Values{"dir": {f.dir}, "name": {"keep.txt"}}, nil, testOwner),
			http.StatusConflict, "exists")
	})
	t.Run("permission denied", func(t *testing.T) {
		fe := refusal(t, f.upload(locked, "x", []byte("x")), http.StatusForbidden, "denied")
		if !strings.Contains(fe.Error, "permission denied") {
			t.Errorf("refusal %q", fe.Error)
		}
		refusal(t, f.do(http.MethodGet, FileDownload, url.Values{"path": {secret}}, nil, testOwner), http.StatusForbidden, "denied")
		refusal(t, f.do(http.MethodPost, FileMkdir, url.Values{"dir": {locked}, "name": {"d"}}, nil, testOwner), http.StatusForbidden, "denied")
		if _, err := os.Stat(filepath.Join(locked, "x")); err == nil {
			t.Error("a file was written where the login may not write")
		}
	})
	t.Run("not found", func(t *testing.T) {
		refusal(t, f.do(http.MethodGet, FileDownload, url.Values{"path": {f.dir + "/nope"}}, nil, testOwner), http.StatusNotFound, "not_found")
		refusal(t, f.do(http.MethodGet, FileList, url.Values{"path": {f.dir + "/nope"}}, nil, testOwner), http.StatusNotFound, "not_found")
		refusal(t, f.do(http.MethodGet, FileDownload, url.Values{"path": {f.dir}}, nil, testOwner), http.StatusBadRequest, "bad_request")
	})
	t.Run("traversal", func(t *testing.T) {
		for _, name := range []string{"../escaped", "..", ".", "a/b", "/abs", "", "tab\there", "nul\x00", strings.Repeat("n", 256)} {
			refusal(t, f.upload(f.dir, name, []byte("x")), http.StatusBadRequest, "bad_request")
		}
		for _, dir := range []string{f.dir + "/../" + filepath.Base(f.dir), "relative", f.dir + "/", f.dir + "/.", ""} {
			refusal(t, f.upload(dir, "x", []byte("x")), http.StatusBadRequest, "bad_request")
			if dir != "" {
				refusal(t, f.do(http.MethodGet, FileDownload, url.Values{"path": {dir + "/keep.txt"}}, nil, testOwner), http.StatusBadRequest, "bad_request")
			}
		}
		entries, _ := os.ReadDir(filepath.Dir(f.dir))
		for _, e := range entries {
			if e.Name() == "escaped" || e.Name() == "x" {
				t.Errorf("%s was written outside the directory", e.Name())
			}
		}
		if n := len(f.h.audited(audit.FileTransferRefused)); n != 9 {
			t.Errorf("%d file_transfer_refused events for the bad names, want 9", n)
		}
	})
	t.Run("another web session", func(t *testing.T) {
		refusal(t, f.do(http.MethodGet, FileList, nil, nil, "websession-2"), http.StatusNotFound, "not_found")
		refusal(t, f.do(http.MethodPut, FileUpload, url.Values{"dir": {f.dir}, "name": {"y"}}, strings.NewReader("y"), ""), http.StatusNotFound, "not_found")
		if _, err := os.Stat(filepath.Join(f.dir, "y")); err == nil {
			t.Error("another web session wrote a file")
		}
	})
	t.Run("mkdir", func(t *testing.T) {
		res := f.do(http.MethodPost, FileMkdir, url.Values{"dir": {f.dir}, "name": {"new dir é"}}, nil, testOwner)
		if res.StatusCode != http.StatusCreated {
			t.Fatalf("mkdir: %d", res.StatusCode)
		}
		if fi, err := os.Stat(filepath.Join(f.dir, "new dir é")); err != nil || !fi.IsDir() {
			t.Errorf("mkdir made %v (%v)", fi, err)
		}
	})
	t.Run("wrong method", func(t *testing.T) {
		refusal(t, f.do(http.MethodGet, FileUpload, url.Values{"dir": {f.dir}, "name": {"z"}}, nil, testOwner), http.StatusMethodNotAllowed, "bad_request")
		refusal(t, f.do(http.MethodGet, "rm", nil, nil, testOwner), http.StatusNotFound, "bad_request")
	})
	if n := len(f.h.audited(audit.FileTransfer)); n != 0 {
		t.Errorf("%d file_transfer events for refused requests", n)
	}
}

// TestFilesRoleSwitch: with file transfer off, the page is told there is
// no panel, and every request is refused by the server with an event,
// carrying nothing either way.
func TestFilesRoleSwitch(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	f, _ := openFiles(t, d, false, func(p *Params) { p.FileTransfer = false })
	keep := filepath.Join(f.dir, "keep.txt")
	if err := os.WriteFile(keep, []byte("the original"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, op string
		q          url.Values
		body       string
	}{
		{http.MethodGet, FileList, nil, ""},
		{http.MethodGet, FileDownload, url.Values{"path": {keep}}, ""},
		{http.MethodPut, FileUpload, url.Values{"dir": {f.dir}, "name": {"new.txt"}}, "smuggled"},
		{http.MethodPut, FileUpload, url.Values{"dir": {f.dir}, "name": {"keep.txt"}}, "overwritten"},
		{http.MethodPost, FileMkdir, url.Values{"dir": {f.dir}, "name": {"d"}}, ""},
	} {
		res := f.do(tc.method, tc.op, tc.q, strings.NewReader(tc.body), testOwner)
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != http.StatusForbidden || bytes.Contains(b, []byte("the original")) {
			t.Errorf("%s %s: %d %s", tc.method, tc.op, res.StatusCode, b)
		}
	}
	if b, _ := os.ReadFile(keep); string(b) != "the original" {
		t.Errorf("the file now holds %q", b)
	}
	entries, _ := os.ReadDir(f.dir)
	if len(entries) != 1 {
		t.Errorf("the directory holds %d entries", len(entries))
	}
	refused := f.h.audited(audit.FileTransferRefused)
	if len(refused) != 5 {
		t.Fatalf("%d file_transfer_refused events, want 5", len(refused))
	}
	for i, want := range []struct{ dir, name string }{{"", ""}, {DirectionDownload, "keep.txt"},
		{DirectionUpload, "new.txt"}, {DirectionUpload, "keep.txt"}, {"", ""}} {
		e := refused[i]
		if e.Reason != "role" || e.Direction != want.dir || e.Name != want.name || e.Protocol != "ssh" || e.Session != f.session || e.User != "alice" {
			t.Errorf("event %d: %+v", i, e)
		}
	}
	if n := len(f.h.audited(audit.FileTransfer)); n != 0 {
		t.Errorf("%d file_transfer events", n)
	}
	if f.h.logged("sftp subsystem open") {
		t.Error("the sftp subsystem was opened")
	}
}

// failingReader gives n bytes of b, then fails: a browser that went away
// mid-upload.
type failingReader struct {
	r io.Reader
	n int64
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("client went away")
	}
	if int64(len(p)) > f.n {
		p = p[:f.n]
	}
	n, err := f.r.Read(p)
	f.n -= int64(n)
	return n, err
}

// failingWriter takes n bytes, then fails: a browser that went away
// mid-download.
type failingWriter struct {
	*httptest.ResponseRecorder
	n int
}

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		n := f.n
		f.n = 0
		f.ResponseRecorder.Write(p[:n])
		return n, errors.New("client went away")
	}
	f.n -= len(p)
	return f.ResponseRecorder.Write(p)
}

// TestFilesCutOff: a transfer cut off midway is an event with
// complete false, the bytes that passed and their hash; a cut-off upload
// leaves nothing behind.
func TestFilesCutOff(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	f, _ := openFiles(t, d, false, nil)
	b := randomBytes(t, 4<<20)
	const cut = 1<<20 + 17

	req := httptest.NewRequest(http.MethodPut, "/?"+url.Values{"dir": {f.dir}, "name": {"partial.bin"}}.Encode(),
		&failingReader{r: bytes.NewReader(b), n: cut})
	rec := httptest.NewRecorder()
	f.reg.Serve(rec, req, f.session, testOwner, FileUpload)
	if rec.Code == http.StatusCreated {
		t.Errorf("a cut-off upload answered %d", rec.Code)
	}
	if _, err := os.Stat(filepath.Join(f.dir, "partial.bin")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the partial upload is still there: %v", err)
	}

	full := filepath.Join(f.dir, "whole.bin")
	if err := os.WriteFile(full, b, 0o644); err != nil {
		t.Fatal(err)
	}
	req = httptest.NewRequest(http.MethodGet, "/?"+url.Values{"path": {full}}.Encode(), nil)
	fw := &failingWriter{ResponseRecorder: httptest.NewRecorder(), n: cut}
	f.reg.Serve(fw, req, f.session, testOwner, FileDownload)

	events := f.h.audited(audit.FileTransfer)
	if len(events) != 2 {
		t.Fatalf("%d file_transfer events, want 2", len(events))
	}
	for i, dir := range []string{DirectionUpload, DirectionDownload} {
		e := events[i]
		if e.Direction != dir || e.Complete == nil || *e.Complete || e.Size == nil || *e.Size != cut || e.SHA256 != sum(b[:cut]) {
			t.Errorf("event %d: %+v (size %v complete %v), want %s of %d bytes, incomplete", i, e, deref(e.Size), deref(e.Complete), dir, cut)
		}
	}
	// The session carries on: the next transfer works.
	res := f.upload(f.dir, "after.txt", []byte("after"))
	if res.StatusCode != http.StatusCreated {
		t.Errorf("upload after a cut-off one: %d", res.StatusCode)
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestFilesConcurrent runs uploads and downloads at once on one session,
// and one more than the session allows.
func TestFilesConcurrent(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	f, _ := openFiles(t, d, false, nil)
	src := randomBytes(t, 3<<20)
	if err := os.WriteFile(filepath.Join(f.dir, "src.bin"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	data := make([][]byte, maxTransfers)
	for i := range data {
		data[i] = randomBytes(t, 2<<20+i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*maxTransfers)
	for i := range maxTransfers {
		wg.Go(func() {
			var res *http.Response
			var got []byte
			if i%2 == 0 {
				res = f.upload(f.dir, fmt.Sprintf("up-%d.bin", i), data[i])
			} else {
				res = f.do(http.MethodGet, FileDownload, url.Values{"path": {filepath.Join(f.dir, "src.bin")}}, nil, testOwner)
				got, _ = io.ReadAll(res.Body)
			}
			switch {
			case res.StatusCode == http.StatusTooManyRequests:
				errs <- nil // the race let another through first: allowed
			case i%2 == 0 && res.StatusCode != http.StatusCreated:
				errs <- fmt.Errorf("upload %d: %d", i, res.StatusCode)
			case i%2 == 1 && sum(got) != sum(src):
				errs <- fmt.Errorf("download %d: %d bytes, wrong hash", i, len(got))
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i := 0; i < maxTransfers; i += 2 {
		b, err := os.ReadFile(filepath.Join(f.dir, fmt.Sprintf("up-%d.bin", i)))
		if err == nil && sum(b) != sum(data[i]) {
			t.Errorf("up-%d.bin differs on the machine", i)
		}
	}
	for _, e := range f.h.audited(audit.FileTransfer) {
		if e.Complete == nil || !*e.Complete {
			t.Errorf("event %+v", e)
		}
	}
}

// TestFilesEndWithSession: once the terminal ends, its file routes answer
// as for no session, and nothing is left open.
func TestFilesEndWithSession(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	f, c := openFiles(t, d, false, nil)
	if res := f.do(http.MethodGet, FileList, nil, nil, testOwner); res.StatusCode != http.StatusOK {
		t.Fatalf("list: %d", res.StatusCode)
	}
	c.typeText("exit\r")
	c.expectEnd(endExit)
	f.h.waitServed()
	refusal(t, f.do(http.MethodGet, FileList, nil, nil, testOwner), http.StatusNotFound, "not_found")
}

func TestCheckNameAndAttachment(t *testing.T) {
	for name, ok := range map[string]bool{"a.txt": true, "with space": true, "é中": true, "..a": true,
		"": false, ".": false, "..": false, "a/b": false, "a\nb": false, "a\x7fb": false, "\xff": false} {
		if got := checkName(name) == ""; got != ok {
			t.Errorf("checkName(%q) = %q", name, checkName(name))
		}
	}
	for name, want := range map[string]string{
		"a.txt":       `attachment; filename=a.txt`,
		"with space":  `attachment; filename="with space"`,
		`q"uote`:      `attachment; filename=q_uote; filename*=UTF-8''q%22uote`,
		"café.txt":    `attachment; filename=caf_.txt; filename*=UTF-8''caf%C3%A9.txt`,
		"a;b%c\r\n.x": `attachment; filename=a_b_c__.x; filename*=UTF-8''a%3Bb%25c%0D%0A.x`,
	} {
		if got := attachment(name); got != want {
			t.Errorf("attachment(%q) = %s, want %s", name, got, want)
		}
	}
}

// TestFilesRecordedMarker: in a recorded session, each file is a marker
// on the recording's timeline, with its path, size and SHA-256.
func TestFilesRecordedMarker(t *testing.T) {
	d := startSSHD(t, sshdConfig{})
	dir := t.TempDir()
	f, c := openFiles(t, d, false, func(p *Params) { p.Record, p.RecordDir = true, dir })
	b := []byte("recorded transfer\n")
	if res := f.upload(f.dir, "marked.txt", b); res.StatusCode != http.StatusCreated {
		t.Fatalf("upload: %d", res.StatusCode)
	}
	c.typeText("exit\r")
	c.expectEnd(endExit)
	f.h.waitServed()
	rec := string(gunzip(t, filepath.Join(dir, f.session+".cast.gz")))
	want := fmt.Sprintf(`"m", "file upload: %s, %d bytes, SHA-256 %s"]`, filepath.Join(f.dir, "marked.txt"), len(b), sum(b))
	if !strings.Contains(rec, want) {
		t.Errorf("the recording has no marker %s:\n%s", want, rec)
	}
}
