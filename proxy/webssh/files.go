package webssh

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"os"
	"path"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pkg/sftp"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// The file panel moves file bytes over plain HTTPS requests, not over the
// terminal's WebSocket: a download is then a link the browser saves
// itself (Content-Disposition), streamed to disk with the browser's own
// progress and pause, and an upload is one PUT whose body the browser
// streams from the file. HTTP/2 and TCP flow control give backpressure
// both ways for free, and the terminal's socket never waits behind a
// gigabyte. On the bastion each transfer is one SFTP file on the
// session's one "sftp" channel, with a bounded window of concurrent
// 32 KiB requests (maxFileRequests): what sits in memory is that window,
// never the file.

// File operations, the last element of the portal's route
// /api/files/{session}/{op}.
const (
	FileList     = "list"     // GET ?path=DIR (empty: the login's home)
	FileDownload = "download" // GET ?path=FILE
	FileUpload   = "upload"   // PUT ?dir=DIR&name=NAME, the body is the file
	FileMkdir    = "mkdir"    // POST ?dir=DIR&name=NAME
)

// Transfer directions, as the audit events name them.
const (
	DirectionUpload   = "upload" // to the machine
	DirectionDownload = "download"
)

const (
	// maxFileRequests bounds the SFTP requests in flight for one file
	// (32 KiB each): the memory one transfer holds.
	maxFileRequests = 32
	// maxTransfers bounds the transfers one session carries at once.
	maxTransfers = 4
	// maxListing bounds the entries a listing returns.
	maxListing = 5000
	// maxName bounds a file name, in bytes (most file systems allow 255).
	maxName = 255
	// maxPath bounds a path, in bytes.
	maxPath = 4096
)

// Files is the registry of the live terminals' file panels, by broker
// session id, which the portal's file routes look up. A terminal is in it
// from its "ready" message to its end, whether its role allows file
// transfer or not: a refused request is then audited as such.
type Files struct {
	mu     sync.Mutex // guards panels
	panels map[string]*panel
}

// NewFiles returns an empty registry.
func NewFiles() *Files {
	return &Files{panels: make(map[string]*panel)}
}

func (f *Files) add(id string, p *panel) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.panels[id] = p
}

func (f *Files) remove(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.panels, id)
}

func (f *Files) get(id string) *panel {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.panels[id]
}

// FileError is the JSON body of a refused file request: a sentence for
// the user, and a code the page may branch on (exists, denied, not_found,
// refused, bad_request, busy, failed).
type FileError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// FileEntry is one entry of a listing.
type FileEntry struct {
	Name  string `json:"name"`
	Type  string `json:"type"` // file, dir, link (to neither), other
	Link  bool   `json:"link,omitempty"`
	Size  int64  `json:"size"`
	MTime int64  `json:"mtime"` // unix seconds
	Mode  string `json:"mode"`
}

// FileListing is the answer to a listing.
type FileListing struct {
	Path      string      `json:"path"`
	Entries   []FileEntry `json:"entries"`
	Truncated bool        `json:"truncated,omitempty"`
}

// FileUploaded is the answer to an upload.
type FileUploaded struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Serve answers one request of the file panel of the terminal whose broker
// session is session, made from the web session owner; op is one of
// FileList, FileDownload, FileUpload, FileMkdir. The caller checked the
// web session (and for uploads and mkdir, the Origin and CSRF token). A
// terminal of another web session is answered as one that does not exist.
func (f *Files) Serve(w http.ResponseWriter, r *http.Request, session, owner, op string) {
	p := f.get(session)
	if p == nil || owner == "" || subtle.ConstantTimeCompare([]byte(p.owner), []byte(owner)) != 1 {
		fileError(w, http.StatusNotFound, "not_found", "This terminal session has ended: files can be moved only while it is open.")
		return
	}
	p.serve(w, r, op)
}

// panel is one terminal's file panel: the SFTP client on the terminal's
// SSH connection, opened on first use.
type panel struct {
	c       *conn
	owner   string
	enabled bool
	log     *zap.Logger

	mu       sync.Mutex // guards the fields below
	client   *sftp.Client
	closed   bool
	inflight int
	idle     *sync.Cond // signalled when inflight drops
}

func newPanel(c *conn) *panel {
	p := &panel{c: c, owner: c.p.Owner, enabled: c.p.FileTransfer, log: c.log.With(zap.String("session", c.sess.ID()))}
	p.idle = sync.NewCond(&p.mu)
	return p
}

// sftp returns the session's SFTP client, opening the "sftp" subsystem
// channel on the terminal's SSH connection on first use: never a second
// login.
func (p *panel) sftp() (*sftp.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPanelClosed
	}
	if p.client != nil {
		return p.client, nil
	}
	cl, err := p.c.client.sftpClient(sftp.MaxConcurrentRequestsPerFile(maxFileRequests),
		sftp.UseConcurrentWrites(true))
	if err != nil {
		return nil, fmt.Errorf("webssh: open the sftp subsystem: %w", err)
	}
	p.client = cl
	p.log.Info("sftp subsystem open")
	return cl, nil
}

var errPanelClosed = errors.New("webssh: the session ended")

// begin counts a request in flight, or refuses it when the session ended
// or already carries maxTransfers.
func (p *panel) begin(transfer bool) (ok, busy bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false, false
	}
	if transfer && p.inflight >= maxTransfers {
		return false, true
	}
	p.inflight++
	return true, false
}

func (p *panel) done() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inflight--
	p.idle.Broadcast()
}

// close closes the SFTP client (which fails the requests in flight) and
// waits, at most drainTimeout, for those requests to write their events.
func (p *panel) close() {
	p.mu.Lock()
	p.closed = true
	if p.client != nil {
		p.client.Close()
	}
	done := make(chan struct{})
	go func() {
		p.mu.Lock()
		for p.inflight > 0 {
			p.idle.Wait()
		}
		p.mu.Unlock()
		close(done)
	}()
	p.mu.Unlock()
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		p.log.Info("file transfers still running as the session ends")
	}
}

func (p *panel) serve(w http.ResponseWriter, r *http.Request, op string) {
	w.Header().Set("Cache-Control", "no-store")
	var direction, name string
	switch op {
	case FileDownload:
		direction, name = DirectionDownload, path.Base(r.URL.Query().Get("path"))
	case FileUpload:
		direction, name = DirectionUpload, r.URL.Query().Get("name")
	case FileList, FileMkdir:
	default:
		fileError(w, http.StatusNotFound, "bad_request", "No such file operation.")
		return
	}
	if !p.enabled {
		p.refused(direction, name, "role", "file transfer is disabled for this session (disable_file_transfer)")
		fileError(w, http.StatusForbidden, "refused", "Your role does not allow moving files to or from this machine.")
		return
	}
	ok, busy := p.begin(direction != "")
	if busy {
		fileError(w, http.StatusTooManyRequests, "busy", fmt.Sprintf("At most %d files move at once in one session: wait for one to finish.", maxTransfers))
		return
	}
	if !ok {
		fileError(w, http.StatusNotFound, "not_found", "This terminal session has ended: files can be moved only while it is open.")
		return
	}
	defer p.done()
	cl, err := p.sftp()
	if err != nil {
		p.log.Info("cannot open sftp", zap.Error(err))
		fileError(w, http.StatusBadGateway, "failed", p.c.p.Target+" does not offer file transfer (its SSH server has no sftp subsystem, or refused it).")
		return
	}
	switch op {
	case FileList:
		p.list(w, r, cl)
	case FileDownload:
		p.download(w, r, cl)
	case FileUpload:
		p.upload(w, r, cl)
	case FileMkdir:
		p.mkdir(w, r, cl)
	}
}

func (p *panel) list(w http.ResponseWriter, r *http.Request, cl *sftp.Client) {
	if r.Method != http.MethodGet {
		fileError(w, http.StatusMethodNotAllowed, "bad_request", "Use GET to list a directory.")
		return
	}
	dir := r.URL.Query().Get("path")
	if dir == "" {
		home, err := cl.RealPath(".")
		if err != nil {
			p.machineError(w, "the home directory", err)
			return
		}
		dir = home
	} else if msg := checkPath(dir); msg != "" {
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	infos, err := cl.ReadDir(dir)
	if err != nil {
		p.machineError(w, dir, err)
		return
	}
	out := FileListing{Path: dir, Entries: make([]FileEntry, 0, min(len(infos), maxListing))}
	for _, fi := range infos {
		if len(out.Entries) == maxListing {
			out.Truncated = true
			break
		}
		e := FileEntry{Name: fi.Name(), Size: fi.Size(), MTime: fi.ModTime().Unix(), Mode: fi.Mode().String()}
		m := fi.Mode()
		if m&os.ModeSymlink != 0 {
			e.Link = true
			if t, err := cl.Stat(path.Join(dir, fi.Name())); err == nil {
				m, e.Size = t.Mode(), t.Size()
			}
		}
		switch {
		case m.IsDir():
			e.Type = "dir"
		case m.IsRegular():
			e.Type = "file"
		case m&os.ModeSymlink != 0:
			e.Type = "link"
		default:
			e.Type = "other"
		}
		out.Entries = append(out.Entries, e)
	}
	sort.Slice(out.Entries, func(i, j int) bool {
		a, b := out.Entries[i], out.Entries[j]
		if (a.Type == "dir") != (b.Type == "dir") {
			return a.Type == "dir"
		}
		return a.Name < b.Name
	})
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(out)
}

func (p *panel) download(w http.ResponseWriter, r *http.Request, cl *sftp.Client) {
	if r.Method != http.MethodGet {
		fileError(w, http.StatusMethodNotAllowed, "bad_request", "Use GET to download a file.")
		return
	}
	name := r.URL.Query().Get("path")
	if msg := checkPath(name); msg != "" {
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	f, err := cl.Open(name)
	if err != nil {
		p.machineError(w, name, err)
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		p.machineError(w, name, err)
		return
	}
	if !fi.Mode().IsRegular() {
		fileError(w, http.StatusBadRequest, "bad_request", name+" is not a file: only files can be downloaded.")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
	h.Set("Content-Disposition", attachment(path.Base(name)))
	h.Set("X-Content-Type-Options", "nosniff")
	m := newMeter(p.c, DirectionDownload)
	_, err = f.WriteTo(teeWriter{w, m})
	complete := err == nil && m.n == fi.Size()
	if err != nil {
		p.log.Info("download cut off", zap.String("path", name), zap.Int64("bytes", m.n), zap.Error(err))
	}
	p.transferred(DirectionDownload, name, m, complete)
}

func (p *panel) upload(w http.ResponseWriter, r *http.Request, cl *sftp.Client) {
	if r.Method != http.MethodPut {
		fileError(w, http.StatusMethodNotAllowed, "bad_request", "Use PUT to upload a file.")
		return
	}
	dir, name := r.URL.Query().Get("dir"), r.URL.Query().Get("name")
	if msg := checkPath(dir); msg != "" {
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	if msg := checkName(name); msg != "" {
		p.refused(DirectionUpload, name, "bad_name", msg)
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	full := path.Join(dir, name)
	// O_EXCL: the machine itself refuses an existing name, atomically;
	// nothing is overwritten.
	f, err := cl.OpenFile(full, os.O_WRONLY|os.O_CREATE|os.O_EXCL)
	if err != nil {
		if _, serr := cl.Lstat(full); serr == nil {
			fileError(w, http.StatusConflict, "exists", fmt.Sprintf("%q already exists in %s: nothing was overwritten. Rename the file, or remove the old one first.", name, dir))
			return
		}
		p.machineError(w, full, err)
		return
	}
	m := newMeter(p.c, DirectionUpload)
	_, err = f.ReadFromWithConcurrency(io.TeeReader(r.Body, m), maxFileRequests)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// A partial file is removed: the upload made it, nothing of the
		// user's is lost.
		if rerr := cl.Remove(full); rerr != nil {
			p.log.Info("cannot remove a partial upload", zap.String("path", full), zap.Error(rerr))
		}
		p.log.Info("upload cut off", zap.String("path", full), zap.Int64("bytes", m.n), zap.Error(err))
		p.transferred(DirectionUpload, full, m, false)
		p.machineError(w, full, err)
		return
	}
	sum := p.transferred(DirectionUpload, full, m, true)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(FileUploaded{Path: full, Size: m.n, SHA256: sum})
}

func (p *panel) mkdir(w http.ResponseWriter, r *http.Request, cl *sftp.Client) {
	if r.Method != http.MethodPost {
		fileError(w, http.StatusMethodNotAllowed, "bad_request", "Use POST to make a directory.")
		return
	}
	dir, name := r.URL.Query().Get("dir"), r.URL.Query().Get("name")
	if msg := checkPath(dir); msg != "" {
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	if msg := checkName(name); msg != "" {
		fileError(w, http.StatusBadRequest, "bad_request", msg)
		return
	}
	full := path.Join(dir, name)
	if err := cl.Mkdir(full); err != nil {
		if _, serr := cl.Lstat(full); serr == nil {
			fileError(w, http.StatusConflict, "exists", fmt.Sprintf("%q already exists in %s.", name, dir))
			return
		}
		p.machineError(w, full, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	json.NewEncoder(w).Encode(map[string]string{"path": full})
}

// machineError answers a failed SFTP operation on what, saying which of
// the machine's refusals it was.
func (p *panel) machineError(w http.ResponseWriter, what string, err error) {
	switch {
	case errors.Is(err, os.ErrPermission):
		fileError(w, http.StatusForbidden, "denied", fmt.Sprintf("%s refused: permission denied on %s.", p.c.p.Target, what))
	case errors.Is(err, os.ErrNotExist):
		fileError(w, http.StatusNotFound, "not_found", fmt.Sprintf("%s has no %s.", p.c.p.Target, what))
	default:
		p.log.Info("sftp operation failed", zap.String("path", what), zap.Error(err))
		fileError(w, http.StatusBadGateway, "failed", fmt.Sprintf("Moving %s failed: %s.", what, sftpCause(err)))
	}
}

// sftpCause is err in words, without Go's wrapping.
func sftpCause(err error) string {
	var se *sftp.StatusError
	if errors.As(err, &se) {
		return strings.TrimSuffix(se.Error(), ".")
	}
	if errors.Is(err, errPanelClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return "the connection ended"
	}
	return "the transfer was interrupted"
}

// transferred writes the file_transfer event of one file and returns the
// hex SHA-256 of the bytes that passed.
func (p *panel) transferred(direction, full string, m *meter, complete bool) string {
	sum := hex.EncodeToString(m.h.Sum(nil))
	e := p.event(audit.FileTransfer, direction, path.Base(full))
	e.Path, e.Size, e.SHA256, e.Complete = full, new(m.n), sum, new(complete)
	p.c.p.Audit.Audit(e)
	if p.c.rec != nil {
		// A marker on the recording's timeline; a failed write fails
		// the recording, which ends the session (the relay sees it).
		what := "file " + direction + ": " + full
		if !complete {
			what += " (cut off)"
		}
		if err := p.c.rec.Marker(fmt.Sprintf("%s, %d bytes, SHA-256 %s", what, m.n, sum)); err != nil {
			p.log.Error("recording failed", zap.Error(err))
		}
	}
	p.log.Info("file transferred", zap.String("direction", direction), zap.String("path", full),
		zap.Int64("bytes", m.n), zap.Bool("complete", complete))
	return sum
}

// refused writes the file_transfer_refused event.
func (p *panel) refused(direction, name, reason, detail string) {
	e := p.event(audit.FileTransferRefused, direction, name)
	e.Reason, e.Detail = reason, detail
	p.c.p.Audit.Audit(e)
	p.log.Info("file transfer refused", zap.String("direction", direction), zap.String("reason", reason))
}

func (p *panel) event(typ, direction, name string) audit.Event {
	c := p.c
	e := audit.Event{Event: typ, Actor: c.p.User, Source: audit.ActorAnonymous, User: c.p.User, Session: c.sess.ID(),
		Target: c.p.Target, Protocol: "ssh", Login: c.login, Direction: direction, Name: name}
	if c.p.Client.IsValid() {
		e.Source, e.Client = c.p.Client.Addr().String(), c.p.Client.String()
	}
	return e
}

// meter hashes and counts a transfer's bytes as they pass, counting them
// in the session's bytes too (which keeps a busy session from idling out).
type meter struct {
	c  *conn
	up bool
	h  hash.Hash
	n  int64
}

func newMeter(c *conn, direction string) *meter {
	return &meter{c: c, up: direction == DirectionUpload, h: sha256.New()}
}

func (m *meter) Write(b []byte) (int, error) {
	m.h.Write(b)
	m.n += int64(len(b))
	if m.up {
		m.c.sess.AddUp(int64(len(b)))
	} else {
		m.c.sess.AddDown(int64(len(b)))
	}
	m.c.activity()
	return len(b), nil
}

// teeWriter writes to w, and to m what w took: the bytes that passed.
type teeWriter struct {
	w io.Writer
	m *meter
}

func (t teeWriter) Write(b []byte) (int, error) {
	n, err := t.w.Write(b)
	t.m.Write(b[:n])
	return n, err
}

// checkPath says what is wrong with a path the page sent, or "": it must
// be absolute and clean (no "." or ".." elements), as the listings give
// them.
func checkPath(p string) string {
	switch {
	case p == "":
		return "No path given."
	case len(p) > maxPath:
		return "The path is too long."
	case !utf8.ValidString(p) || strings.ContainsRune(p, 0):
		return "The path is not valid text."
	case !strings.HasPrefix(p, "/") || path.Clean(p) != p:
		return "The path must be absolute, without . or .. in it."
	}
	return ""
}

// checkName says what is wrong with a file name for an upload or a new
// directory, or "": one path element, no control characters.
func checkName(n string) string {
	switch {
	case n == "":
		return "No name given."
	case n == "." || n == "..":
		return "A file cannot be named . or ..: choose another name."
	case len(n) > maxName:
		return "The name is too long (at most 255 bytes)."
	case !utf8.ValidString(n):
		return "The name is not valid text."
	case strings.ContainsRune(n, '/'):
		return "A file name cannot contain /: it would land in another directory."
	case strings.ContainsFunc(n, unicode.IsControl):
		return "A file name cannot contain control characters."
	}
	return ""
}

// attachment is a Content-Disposition that saves the file under name:
// an ASCII fallback with anything unsafe replaced, and the exact name
// encoded (RFC 6266, RFC 8187).
func attachment(name string) string {
	fallback := strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f || r == '"' || r == '\\' || r == '/' || r == ';' || r == '%' {
			return '_'
		}
		return r
	}, name)
	if v := mime.FormatMediaType("attachment", map[string]string{"filename": name}); v != "" && fallback == name {
		return v
	}
	return mime.FormatMediaType("attachment", map[string]string{"filename": fallback}) +
		"; filename*=UTF-8''" + pathEscape(name)
}

// pathEscape percent-encodes everything but RFC 8187's attr-chars.
func pathEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$&+-.^_`|~", c) >= 0 {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

func fileError(w http.ResponseWriter, code int, kind, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(FileError{Error: msg, Code: kind})
}
