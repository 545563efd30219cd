// Package recording writes terminal sessions as asciicast v2 files
// (https://docs.asciinema.org/manual/asciicast/v2/), which asciinema plays
// back: a JSON header line, then one JSON array per event, output ("o"),
// resizes ("r") and markers ("m": a file moved through the session's file
// panel, which players show on the timeline). What the user types is never recorded, only what the
// terminal shows: a password typed at a prompt that does not echo it (sudo,
// su) stays out of the file.
//
// Recordings are gzip-compressed at rest (SESSIONID.cast.gz), flushed at
// least every FlushInterval so that a crash loses at most that much (see
// deflate.go: a recorder keeps no compressor between flushes, so that an
// idle terminal's recording holds a few KiB, not a compressor's 900); the
// store (store.go) also reads the plain SESSIONID.cast of earlier releases
// and the RDP recordings (SESSIONID.rdp.gz) another writer keeps in the same
// directory, and applies the retention limits to all of them. The
// directory may be shared by the instances of a cluster (a mount on each):
// a writer locks its file (lock.go), which no retention removes, and a
// catalog in the cluster's state store (catalog.go) describes every
// instance's recordings and says which instance applies the limits.
package recording

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// FlushInterval bounds how long an event waits in the buffer (and in the
// compressor) before it is written to the file.
const FlushInterval = time.Second

// Protocol is the metric label of the recordings this package writes.
const Protocol = "ssh"

// ErrClosed is returned by writes after Close.
var ErrClosed = errors.New("recording: closed")

// Header describes the terminal at the start of the recording.
type Header struct {
	Width, Height int    // columns and rows
	Title         string // shown by players; may be empty
}

// Recorder writes one session's recording. Its methods may be called from
// several goroutines. The first failed write ends the recording: every later
// call returns that error, and the file keeps what was written before it.
type Recorder struct {
	path  string
	f     *os.File
	start time.Time

	mu      sync.Mutex    // guards the fields below
	gz      gzipStream    // the events waiting for the next flush, and the stream's state
	disk    *diskWriter   // into f, hashing and counting
	flusher flushTimer    // flushes what waits in gz
	flushFn func()        // r.flushLater, made once
	last    time.Duration // the time of the last event; events never go back
	carry   []byte        // the incomplete UTF-8 sequence that ended the last output
	scratch []byte        // carry + the next output, joined
	prefix  [48]byte      // an event's start, formatted
	err     error         // the first failure
	closed  bool
	release func()        // lets retention remove the file
	failed  chan struct{} // closed at the first failure
}

// Create makes dir (mode 0700) if needed and starts the recording
// dir/SESSIONID.cast.gz (mode 0600); the file must not exist. The header's
// timestamp is now, and event times count from now. The header is on disk
// (synced) when Create returns: a directory that cannot take the file (full,
// read-only) fails here, before the session shows anything.
func Create(dir, sessionID string, h Header) (*Recorder, error) {
	if !validID(sessionID) {
		return nil, fmt.Errorf("recording: invalid session ID %q", sessionID)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	path := filepath.Join(dir, sessionID+ExtCastGzip)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	if err := lockWriting(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("recording: %w", err)
	}
	release := hold(path)
	disk := &diskWriter{f: f, sum: sha256.New()}
	r := &Recorder{path: path, f: f, start: time.Now(), disk: disk, release: release, failed: make(chan struct{})}
	r.flushFn = r.flushLater
	line, _ := json.Marshal(header{Version: 2, Width: h.Width, Height: h.Height, Timestamp: r.start.Unix(),
		Env: map[string]string{"TERM": "xterm-256color"}, Title: h.Title})
	r.gz.buf = append(append(r.gz.buf, line...), '\n')
	err = r.gz.start(disk)
	if err == nil {
		err = r.gz.flush(disk, false)
	}
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		os.Remove(path)
		release()
		return nil, fmt.Errorf("recording: %w", err) // a *fs.PathError naming the file
	}
	return r, nil
}

// diskWriter writes to the file, hashing and counting what it wrote.
type diskWriter struct {
	f     *os.File
	sum   hash.Hash
	n     int64
	proto string // for the bytes metric; "" is Protocol
}

func (d *diskWriter) Write(p []byte) (int, error) {
	n, err := d.f.Write(p)
	d.sum.Write(p[:n])
	d.n += int64(n)
	proto := d.proto
	if proto == "" {
		proto = Protocol
	}
	bytesWritten.WithLabelValues(proto).Add(float64(n))
	return n, err
}

type header struct {
	Version   int               `json:"version"`
	Width     int               `json:"width"`
	Height    int               `json:"height"`
	Timestamp int64             `json:"timestamp"`
	Env       map[string]string `json:"env"`
	Title     string            `json:"title,omitempty"`
}

// validID accepts the broker's session IDs and anything else that cannot
// leave dir: letters, digits, '-' and '_'.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, c := range []byte(id) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// Path is the recording's file.
func (r *Recorder) Path() string { return r.path }

// SHA256 is the hex SHA-256 of the file's bytes, once Close has returned
// without an error; "" before, or after a failure. It goes in the
// session's end record, for `bastionctl recordings verify`.
func (r *Recorder) SHA256() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed || r.err != nil {
		return ""
	}
	return hex.EncodeToString(r.disk.sum.Sum(nil))
}

// Size is the number of bytes written to the file so far (compressed).
func (r *Recorder) Size() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.disk.n
}

// Output records what the terminal received. A multi-byte UTF-8 sequence
// that p ends in the middle of is held back and recorded with the next
// output; bytes that are not UTF-8 are recorded as U+FFFD.
func (r *Recorder) Output(p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	if len(r.carry) > 0 {
		r.scratch = append(append(r.scratch[:0], r.carry...), p...)
		p = r.scratch
	}
	cut := completeLen(p)
	r.carry = append(r.carry[:0], p[cut:]...)
	if cut == 0 {
		return nil
	}
	r.gz.grow(cut + cut/8 + 64) // the event's line: most bytes need no escape
	r.event('o')
	r.gz.buf = appendEscaped(r.gz.buf, p[:cut])
	return r.endEvent()
}

// Resize records a new terminal size.
func (r *Recorder) Resize(cols, rows int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	r.event('r')
	n := strconv.AppendInt(r.prefix[:0], int64(cols), 10)
	n = append(n, 'x')
	n = strconv.AppendInt(n, int64(rows), 10)
	r.gz.buf = append(r.gz.buf, n...)
	return r.endEvent()
}

// Marker records a marker (asciicast v2 "m") labelled label: a moment an
// auditor may want to find, that was not terminal output.
func (r *Recorder) Marker(label string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.usable(); err != nil {
		return err
	}
	r.event('m')
	r.gz.buf = appendEscaped(r.gz.buf, []byte(label))
	return r.endEvent()
}

// Close records what output is still held back (as U+FFFD for each
// byte, as for other bytes that are not UTF-8), writes the
// events still waiting and the end of the gzip stream, syncs and closes
// the file. It
// returns the recording's first failure, if any; later calls return nil.
func (r *Recorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	defer r.release()
	r.flusher.stop()
	if r.err == nil && len(r.carry) > 0 {
		r.event('o')
		for range r.carry {
			r.gz.buf = append(r.gz.buf, `\ufffd`...)
		}
		r.endEvent()
	}
	if r.err == nil {
		if err := r.gz.flush(r.disk, true); err != nil {
			r.fail(err)
		} else if err := r.f.Sync(); err != nil {
			r.fail(err)
		}
	}
	if err := r.f.Close(); err != nil && r.err == nil {
		r.fail(err)
	}
	return r.err
}

// usable is the error a write must return instead of writing; r.mu is held.
func (r *Recorder) usable() error {
	if r.closed {
		return ErrClosed
	}
	return r.err
}

// event starts an event line of code: `[TIME, "CODE", "`; r.mu is held.
func (r *Recorder) event(code byte) {
	t := time.Since(r.start) // monotonic clock
	if t < r.last {
		t = r.last
	}
	r.last = t
	n := append(r.prefix[:0], '[')
	n = strconv.AppendFloat(n, t.Seconds(), 'f', 6, 64)
	n = append(n, ", \""...)
	n = append(n, code)
	n = append(n, "\", \""...)
	r.gz.buf = append(r.gz.buf, n...)
}

// endEvent ends the event line and has it flushed within FlushInterval,
// or now if enough waits for a block of its own; r.mu is held.
func (r *Recorder) endEvent() error {
	r.gz.buf = append(r.gz.buf, "\"]\n"...)
	if len(r.gz.buf) >= blockSize {
		if err := r.gz.flush(r.disk, false); err != nil {
			return r.fail(err)
		}
	}
	r.flusher.arm(r.flushFn)
	return nil
}

func (r *Recorder) flushLater() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flusher.fired()
	if r.closed || r.err != nil {
		return
	}
	if err := r.gz.flush(r.disk, false); err != nil {
		r.fail(err)
	}
}

// fail ends the recording with err; r.mu is held.
func (r *Recorder) fail(err error) error {
	if r.err == nil {
		if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
			r.err = fmt.Errorf("recording: %w", err) // it names the file
		} else {
			r.err = fmt.Errorf("recording: write %s: %w", r.path, err)
		}
		close(r.failed)
	}
	return r.err
}

// Failed is closed when the recording fails, also when the failure is
// found by the flush that follows an event rather than by a write call:
// a relay that must not go on unrecorded watches it.
func (r *Recorder) Failed() <-chan struct{} { return r.failed }

// Err is the recording's first failure, or nil.
func (r *Recorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Cause is the innermost text of a recording's error, without the paths
// that only the bastion's admins should see: "no space left on device".
func Cause(err error) string {
	for {
		next := errors.Unwrap(err)
		if next == nil {
			break
		}
		err = next
	}
	if err == nil {
		return ""
	}
	return err.Error()
}

// completeLen is the length of p without an incomplete UTF-8 sequence at
// its end, one that more bytes could still complete.
func completeLen(p []byte) int {
	for i := len(p) - 1; i >= 0 && i > len(p)-utf8.UTFMax; i-- {
		if utf8.RuneStart(p[i]) {
			if utf8.FullRune(p[i:]) {
				return len(p)
			}
			return i
		}
	}
	return len(p)
}

const hexDigits = "0123456789abcdef"

// appendEscaped appends p as the inside of a JSON string: quotes,
// backslashes and control characters escaped, invalid UTF-8 as U+FFFD.
func appendEscaped(w []byte, p []byte) []byte {
	start := 0
	for i := 0; i < len(p); {
		c := p[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRune(p[i:])
			if r == utf8.RuneError && size == 1 {
				w = append(w, p[start:i]...)
				w = append(w, `\ufffd`...)
				i++
				start = i
				continue
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		w = append(w, p[start:i]...)
		switch c {
		case '"', '\\':
			w = append(w, '\\', c)
		case '\n':
			w = append(w, `\n`...)
		case '\r':
			w = append(w, `\r`...)
		case '\t':
			w = append(w, `\t`...)
		default:
			w = append(w, `\u00`...)
			w = append(w, hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	return append(w, p[start:]...)
}
