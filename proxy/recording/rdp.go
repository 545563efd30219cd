package recording

import (
	"bufio"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// RDP recordings. A browser desktop's recording is RECORDDIR/ID.rdp.gz: one
// gzip stream (flushed at least every FlushInterval while data flows) that
// holds
//
//	a header line: RDPHeader as JSON, ended by '\n'
//	records, each:  kind (1 byte) | delta (uvarint) | length (uvarint) | payload
//
// kind is RDPServer (bytes from the server to the client), RDPClient (from
// the client to the server) or RDPMeta (a JSON object that completes the
// header once known: {"width":W,"height":H}, the desktop size the client
// asked for in its Connect Initial). delta is the milliseconds since the
// previous record (since the header's start for the first one); the payload
// is the bytes relayed in that direction, in order, as read. The stream
// starts after the security negotiation: CredSSP (NLA) messages are never
// written, and the Client Info PDU's password and auto-reconnect cookie are
// zeroed (see RDPTap).
const RDPExt = ".rdp.gz"

// RDPVersion is the format version in the header.
const RDPVersion = 1

// Kinds of records.
const (
	RDPServer byte = 0
	RDPClient byte = 1
	RDPMeta   byte = 2
)

// maxRDPRecord bounds a record's payload when reading: a relay read is at
// most a few tens of KiB.
const maxRDPRecord = 4 << 20

// RDPHeader describes an RDP recording.
type RDPHeader struct {
	Version int    `json:"version"`
	Kind    string `json:"kind"` // "rdp"
	Session string `json:"session"`
	Target  string `json:"target"`
	User    string `json:"user"`
	// Start is when the relay began: records' times count from it.
	Start time.Time `json:"start"`
	// Protocol is the security protocol the server selected (rdcleanpath.Protocol*).
	Protocol uint32 `json:"protocol"`
	// Confirm is the server's X.224 Connection Confirm; CertChain its
	// certificates, leaf first (DER). A player answers a client with them.
	Confirm   []byte   `json:"confirm"`
	CertChain [][]byte `json:"certChain"`
	// Width and Height are the desktop's size, if known at the start;
	// otherwise an RDPMeta record says it.
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
}

// RDPRecorder writes one RDP session's recording. Its methods may be called
// from several goroutines. The first failed write ends the recording: every
// later call returns that error.
type RDPRecorder struct {
	path    string
	f       *os.File
	disk    *diskWriter // into f, hashing and counting
	release func()      // lets retention remove the file

	mu sync.Mutex // guards the fields below
	gz *gzip.Writer
	// bw gathers gzip's output, which comes in pieces of a few hundred
	// bytes, into writes of the file.
	bw      *bufio.Writer
	start   time.Time
	last    time.Duration // the time of the previous record
	flusher flushTimer
	hdr     [2 * binary.MaxVarintLen64]byte
	err     error
	closed  bool
}

// CreateRDP makes dir (mode 0700) if needed and starts the recording
// dir/SESSION.rdp.gz (mode 0600), which must not exist. h.Start is set to
// now when zero.
func CreateRDP(dir string, h RDPHeader) (*RDPRecorder, error) {
	if !validID(h.Session) {
		return nil, fmt.Errorf("recording: invalid session ID %q", h.Session)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	path := filepath.Join(dir, h.Session+RDPExt)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	if err := lockWriting(f); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("recording: %w", err)
	}
	if h.Start.IsZero() {
		h.Start = time.Now()
	}
	h.Version, h.Kind = RDPVersion, "rdp"
	release := hold(path)
	disk := &diskWriter{f: f, sum: sha256.New(), proto: "rdp"}
	bw := bufio.NewWriterSize(disk, 64<<10)
	gz, _ := gzip.NewWriterLevel(bw, rdpLevel)
	r := &RDPRecorder{path: path, f: f, disk: disk, release: release, start: h.Start, gz: gz, bw: bw}
	line, _ := json.Marshal(h)
	r.gz.Write(append(line, '\n'))
	if err := r.flush(); err != nil {
		f.Close()
		os.Remove(path)
		release()
		return nil, fmt.Errorf("recording: write %s: %w", path, err)
	}
	return r, nil
}

// Path is the recording's file.
func (r *RDPRecorder) Path() string { return r.path }

// Record writes one record of kind with payload p.
func (r *RDPRecorder) Record(kind byte, p []byte) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.err != nil {
		return r.err
	}
	t := time.Since(r.start)
	if t < r.last {
		t = r.last
	}
	delta := t/time.Millisecond - r.last/time.Millisecond
	r.last = t
	r.hdr[0] = kind
	n := 1 + binary.PutUvarint(r.hdr[1:], uint64(delta))
	n += binary.PutUvarint(r.hdr[n:], uint64(len(p)))
	if _, err := r.gz.Write(r.hdr[:n]); err != nil {
		return r.fail(err)
	}
	if _, err := r.gz.Write(p); err != nil {
		return r.fail(err)
	}
	r.flusher.arm(r.flushLater)
	return nil
}

func (r *RDPRecorder) flushLater() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.flusher.fired()
	if r.closed || r.err != nil {
		return
	}
	if err := r.flush(); err != nil {
		r.fail(err)
	}
}

// flush writes what gzip holds to the file; r.mu is held (or r is new).
func (r *RDPRecorder) flush() error {
	if err := r.gz.Flush(); err != nil {
		return err
	}
	return r.bw.Flush()
}

// Err is the recording's first failure, if any.
func (r *RDPRecorder) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// Close ends the gzip stream, syncs and closes the file. It returns the
// recording's first failure, if any; later calls return nil.
func (r *RDPRecorder) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	defer r.release()
	r.flusher.stop()
	if r.err == nil {
		if err := r.gz.Close(); err != nil {
			r.fail(err)
		} else if err := r.bw.Flush(); err != nil {
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

// SHA256 is the hex SHA-256 of the file as written, and its size; final
// after Close.
func (r *RDPRecorder) SHA256() (string, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return hex.EncodeToString(r.disk.sum.Sum(nil)), r.disk.n
}

// fail ends the recording with err (a file's error, which names it); r.mu
// is held.
func (r *RDPRecorder) fail(err error) error {
	if r.err == nil {
		r.err = fmt.Errorf("recording: %w", err)
	}
	return r.err
}

// RDPRecord is one record read back.
type RDPRecord struct {
	Kind byte
	// At is the record's time since the header's start.
	At   time.Duration
	Data []byte
}

// RDPReader reads an RDP recording.
type RDPReader struct {
	Header RDPHeader
	f      io.Closer
	gz     *gzip.Reader
	br     *bufio.Reader
	at     time.Duration
	buf    []byte
}

// OpenRDP opens the recording at path and reads its header.
func OpenRDP(path string) (*RDPReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	r, err := NewRDPReader(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("recording: %s: %w", path, err)
	}
	r.f = f
	return r, nil
}

// NewRDPReader reads the header of the recording in src.
func NewRDPReader(src io.Reader) (*RDPReader, error) {
	gz, err := gzip.NewReader(src)
	if err != nil {
		return nil, err
	}
	r := &RDPReader{gz: gz, br: bufio.NewReaderSize(gz, 64<<10)}
	line, err := r.br.ReadSlice('\n')
	if err != nil {
		return nil, errors.New("not an RDP recording: no header line")
	}
	if err := json.Unmarshal(line, &r.Header); err != nil || r.Header.Kind != "rdp" {
		return nil, errors.New("not an RDP recording")
	}
	if r.Header.Version != RDPVersion {
		return nil, fmt.Errorf("RDP recording version %d, this bastion reads %d", r.Header.Version, RDPVersion)
	}
	return r, nil
}

// Next returns the next record; its Data is valid until the next call.
// It returns io.EOF after the last whole record, and io.ErrUnexpectedEOF
// for a recording cut in a record (one still being written, or the end of
// a crashed one).
func (r *RDPReader) Next() (RDPRecord, error) {
	kind, err := r.br.ReadByte()
	if err != nil {
		return RDPRecord{}, eof(err)
	}
	delta, err := binary.ReadUvarint(r.br)
	if err != nil {
		return RDPRecord{}, unexpected(err)
	}
	n, err := binary.ReadUvarint(r.br)
	if err != nil {
		return RDPRecord{}, unexpected(err)
	}
	if n > maxRDPRecord || kind > RDPMeta {
		return RDPRecord{}, fmt.Errorf("recording: corrupt record (kind %d, %d bytes)", kind, n)
	}
	if cap(r.buf) < int(n) {
		r.buf = make([]byte, n)
	}
	r.buf = r.buf[:n]
	if _, err := io.ReadFull(r.br, r.buf); err != nil {
		return RDPRecord{}, unexpected(err)
	}
	r.at += time.Duration(delta) * time.Millisecond
	return RDPRecord{Kind: kind, At: r.at, Data: r.buf}, nil
}

func eof(err error) error {
	if errors.Is(err, io.ErrUnexpectedEOF) {
		// The gzip stream itself ends early: a recording still being
		// written, between two records.
		return io.EOF
	}
	return err
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// Close closes the file.
func (r *RDPReader) Close() error {
	if r.f == nil {
		return nil
	}
	return r.f.Close()
}

// RDPSummary is what a player needs to know before playing.
type RDPSummary struct {
	Header RDPHeader
	Width  int
	Height int
	// Channels are the static channels the recorded client asked for, in
	// order (nil if the recording predates their being recorded).
	Channels []string
	Duration time.Duration
	// Bytes are the payload bytes from the server and from the client.
	ServerBytes, ClientBytes int64
}

// SummarizeRDP reads the whole recording at path: its header, desktop size
// and duration.
func SummarizeRDP(path string) (RDPSummary, error) {
	r, err := OpenRDP(path)
	if err != nil {
		return RDPSummary{}, err
	}
	defer r.Close()
	s := RDPSummary{Header: r.Header, Width: r.Header.Width, Height: r.Header.Height}
	for {
		rec, err := r.Next()
		if err != nil {
			if err == io.EOF || err == io.ErrUnexpectedEOF {
				return s, nil
			}
			return s, err
		}
		s.Duration = rec.At
		switch rec.Kind {
		case RDPServer:
			s.ServerBytes += int64(len(rec.Data))
		case RDPClient:
			s.ClientBytes += int64(len(rec.Data))
		case RDPMeta:
			var m rdpMeta
			if json.Unmarshal(rec.Data, &m) == nil && m.Width > 0 && m.Height > 0 {
				s.Width, s.Height, s.Channels = m.Width, m.Height, m.Channels
			}
		}
	}
}

// maxProbe bounds the records ProbeRDP reads for the desktop size: the
// Connect Initial is among the client's first PDUs.
const maxProbe = 1000

// ProbeRDP reads the header of the recording at path and its first records,
// up to the desktop size; it does not read the whole file, as SummarizeRDP
// does. The duration is the time from the start to the file's last write
// (the recorder flushes every FlushInterval while data flows); the byte
// counts are left zero.
func ProbeRDP(path string) (RDPSummary, error) {
	r, err := OpenRDP(path)
	if err != nil {
		return RDPSummary{}, err
	}
	defer r.Close()
	s := RDPSummary{Header: r.Header, Width: r.Header.Width, Height: r.Header.Height}
	if fi, err := os.Stat(path); err == nil {
		s.Duration = max(0, fi.ModTime().Sub(r.Header.Start))
	}
	for i := 0; i < maxProbe && s.Width == 0; i++ {
		rec, err := r.Next()
		if err != nil {
			break
		}
		var m rdpMeta
		if rec.Kind == RDPMeta && json.Unmarshal(rec.Data, &m) == nil && m.Width > 0 && m.Height > 0 {
			s.Width, s.Height, s.Channels = m.Width, m.Height, m.Channels
		}
	}
	return s, nil
}

// rdpMeta is the payload of an RDPMeta record.
type rdpMeta struct {
	Width  int `json:"width,omitempty"`
	Height int `json:"height,omitempty"`
	// Channels are the static channels the client asked for, in order.
	Channels []string `json:"channels,omitempty"`
}

// rdpLevel is the gzip level of RDP recordings. The stream is mostly
// bitmaps the server has already compressed: the default level gains a few
// percent over the fastest at several times its CPU (BENCHMARKS.md).
var rdpLevel = gzip.BestSpeed
