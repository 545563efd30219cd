package recording

import (
	"bufio"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/audit"
)

// The recordings directory holds one file per recorded session, named by
// the session's ID and the kind of recording.
const (
	ExtCastGzip = ".cast.gz" // SSH, asciicast v2, gzip (this package)
	ExtCast     = ".cast"    // SSH, asciicast v2, plain (earlier releases)
	ExtRDPGzip  = ".rdp.gz"  // RDP, gzip (the RDP recorder)
)

// kinds are the recordings' extensions, in the order a lookup by ID tries
// them.
var kinds = []struct {
	ext        string
	protocol   string
	compressed bool
}{
	{ExtCastGzip, "ssh", true},
	{ExtCast, "ssh", false},
	{ExtRDPGzip, "rdp", true},
}

// Info is one recording file.
type Info = admin.RecordingFile

// parseName splits a recording's file name; ok is false for any other file.
func parseName(name string) (id string, kind int, ok bool) {
	for i, k := range kinds {
		if id, found := strings.CutSuffix(name, k.ext); found && validID(id) && !strings.Contains(id, ".") {
			return id, i, true
		}
	}
	return "", 0, false
}

// List describes every recording in dir, oldest first (by last write). A
// missing dir is an empty list.
func List(dir string) ([]Info, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("recording: %w", err)
	}
	var out []Info
	for _, e := range ents {
		id, k, ok := parseName(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // removed meanwhile
		}
		out = append(out, Info{ID: id, Protocol: kinds[k].protocol, Path: filepath.Join(dir, e.Name()),
			Compressed: kinds[k].compressed, Size: fi.Size(), Modified: fi.ModTime()})
	}
	slices.SortFunc(out, func(a, b Info) int {
		if c := a.Modified.Compare(b.Modified); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}

// ErrNotFound is returned for an ID with no recording.
var ErrNotFound = errors.New("recording: no such recording")

// Find describes the recording of session id in dir.
func Find(dir, id string) (Info, error) {
	if !validID(id) {
		return Info{}, ErrNotFound
	}
	for _, k := range kinds {
		path := filepath.Join(dir, id+k.ext)
		fi, err := os.Lstat(path)
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		return Info{ID: id, Protocol: k.protocol, Path: path, Compressed: k.compressed, Size: fi.Size(), Modified: fi.ModTime()}, nil
	}
	return Info{}, ErrNotFound
}

// Open opens the recording of session id: the file as it is on disk
// (compressed or not: see Info.Compressed).
func Open(dir, id string) (*os.File, Info, error) {
	i, err := Find(dir, id)
	if err != nil {
		return nil, Info{}, err
	}
	f, err := os.Open(i.Path)
	if err != nil {
		return nil, Info{}, fmt.Errorf("recording: %w", err)
	}
	return f, i, nil
}

// Decompressed reads r, the file of a recording described by i, as the
// recording's plain bytes. A recording still being written (or cut short
// by a crash) reads up to its last flush and then ends with
// io.ErrUnexpectedEOF.
func Decompressed(r io.Reader, i Info) (io.ReadCloser, error) {
	if !i.Compressed {
		return io.NopCloser(r), nil
	}
	zr, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("recording: %s: %w", i.Path, err)
	}
	return zr, nil
}

// Cast is what the header of an SSH recording says.
type Cast struct {
	Start time.Time
	Title string // "LOGIN@TARGET by USER"
	Width int
}

// ReadCast reads the header of the SSH recording i.
func ReadCast(i Info) (Cast, error) {
	if i.Protocol != "ssh" {
		return Cast{}, fmt.Errorf("recording: %s is not an asciicast", i.Path)
	}
	f, err := os.Open(i.Path)
	if err != nil {
		return Cast{}, err
	}
	defer f.Close()
	r, err := Decompressed(f, i)
	if err != nil {
		return Cast{}, err
	}
	defer r.Close()
	line, err := bufio.NewReaderSize(r, 4096).ReadSlice('\n')
	if err != nil {
		return Cast{}, fmt.Errorf("recording: %s: no header: %w", i.Path, err)
	}
	var h header
	if err := json.Unmarshal(line, &h); err != nil || h.Version != 2 {
		return Cast{}, fmt.Errorf("recording: %s: not an asciicast v2 file", i.Path)
	}
	return Cast{Start: time.Unix(h.Timestamp, 0), Title: h.Title, Width: h.Width}, nil
}

// FileSHA256 is the hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Hold marks the file at path as being written until release is called:
// retention leaves it alone. Create holds its own file; another writer of
// the directory (the RDP recorder) holds its files with Hold.
func Hold(path string) (release func()) { return hold(path) }

// openMu guards openFiles: the recordings being written by this process
// (path to the number of holds), which retention never removes, however
// old or large.
var (
	openMu    sync.Mutex
	openFiles = map[string]int{}
)

func hold(path string) func() {
	openMu.Lock()
	openFiles[path]++
	openMu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			openMu.Lock()
			defer openMu.Unlock()
			if openFiles[path]--; openFiles[path] <= 0 {
				delete(openFiles, path)
			}
		})
	}
}

// Writing reports whether the recording at path is being written: by this
// process, or by any other that shares the directory (lock.go).
func Writing(path string) bool { return held(path) || beingWritten(path) }

func held(path string) bool {
	openMu.Lock()
	defer openMu.Unlock()
	return openFiles[path] > 0
}

// Why a recording was removed: its reason in the recording_removed event
// and in bastiond_recordings_removed_total.
const (
	RemovedAge  = "age"
	RemovedSize = "size"
)

// Removed is a recording that retention removed.
type Removed struct {
	Info
	Reason string // RemovedAge or RemovedSize
}

// Limits bound the recordings directory. Zero means no limit.
type Limits struct {
	// Keep is how long a recording is kept after its last write.
	Keep time.Duration
	// MaxBytes caps the directory's recordings, in bytes on disk; past it
	// the oldest are removed first.
	MaxBytes int64
}

// Prune removes the recordings of dir that l no longer allows: every one
// older than l.Keep, then the oldest ones until the rest fit in
// l.MaxBytes. A recording still being written (Writing: by this process or
// any other sharing dir) is never removed, and counts towards MaxBytes;
// neither is, for size, a compressed one whose stream is unfinished (cut
// short by a crash, or written by a release before the locks). It returns
// what it removed, and the first error.
func Prune(dir string, l Limits, now time.Time) ([]Removed, error) {
	list, err := List(dir)
	if err != nil || (l.Keep <= 0 && l.MaxBytes <= 0) {
		return nil, err
	}
	var total int64
	for _, i := range list {
		total += i.Size
	}
	var removed []Removed
	var firstErr error
	remove := func(i Info, reason string) bool {
		if Writing(i.Path) || (reason == RemovedSize && i.Compressed && unfinished(i.Path)) {
			return false
		}
		if err := os.Remove(i.Path); err != nil {
			if !errors.Is(err, fs.ErrNotExist) && firstErr == nil {
				firstErr = fmt.Errorf("recording: %w", err)
			}
			return false
		}
		total -= i.Size
		removed = append(removed, Removed{Info: i, Reason: reason})
		return true
	}
	kept := list[:0:0]
	for _, i := range list {
		if l.Keep > 0 && now.Sub(i.Modified) > l.Keep && remove(i, RemovedAge) {
			continue
		}
		kept = append(kept, i)
	}
	for _, i := range kept { // oldest first
		if l.MaxBytes <= 0 || total <= l.MaxBytes {
			break
		}
		remove(i, RemovedSize)
	}
	return removed, firstErr
}

// unfinished reports whether the gzip file at path ends with a sync
// flush's marker rather than the stream's trailer: a recording still
// being written, maybe by another process (the other half of an upgrade),
// or one a crash cut short. Size pressure leaves those alone; age does
// not (no live session goes unwritten for days).
func unfinished(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	var tail [4]byte
	fi, err := f.Stat()
	if err != nil || fi.Size() < int64(len(tail)) {
		return false
	}
	if _, err := f.ReadAt(tail[:], fi.Size()-int64(len(tail))); err != nil {
		return false
	}
	return tail == [4]byte{0, 0, 0xff, 0xff}
}

var (
	bytesWritten = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bastiond_recording_bytes_total",
		Help: "Bytes of session recordings written to disk (compressed), by protocol.",
	}, []string{"protocol"})
	removedTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "bastiond_recordings_removed_total",
		Help: "Recordings removed by retention, by reason (age: older than limits.recordings_keep; size: over limits.recordings_max_bytes).",
	}, []string{"reason"})
)

func init() {
	bytesWritten.WithLabelValues("ssh")
	bytesWritten.WithLabelValues("rdp")
	removedTotal.WithLabelValues(RemovedAge)
	removedTotal.WithLabelValues(RemovedSize)
}

// Collectors are the recordings' metrics, for the daemon's registry.
func Collectors() []prometheus.Collector { return []prometheus.Collector{bytesWritten, removedTotal} }

// CountWritten adds n bytes written to disk to the recording bytes of
// protocol: for writers of the directory other than Recorder.
func CountWritten(protocol string, n int) { bytesWritten.WithLabelValues(protocol).Add(float64(n)) }

// Retention applies Limits to a directory: every Interval, and soon after
// each Written.
type Retention struct {
	dir   string
	audit audit.Sink
	log   *zap.Logger
	kick  chan struct{}

	mu     sync.Mutex // guards limits
	limits Limits

	// catalog and instance, set by Share before Run: the instances
	// sharing dir take turns through a lease in catalog.
	catalog  *Catalog
	instance string
}

// RetentionLease names the lease that the instances sharing a recordings
// directory take in their catalog: the one holding it applies the limits,
// the others skip their passes. Its holder renews it at every pass, at
// least every RetentionInterval; RetentionLeaseTTL after its last renewal
// (the holder stopped or died) another instance takes it over.
const (
	RetentionLease    = "recordings_retention"
	RetentionLeaseTTL = 2*RetentionInterval + time.Minute
)

// Share makes r one of the instances (instance) sharing its directory,
// whose recordings catalog says who applies the limits (RetentionLease),
// and marks what r removes. Call it before Run.
func (r *Retention) Share(c *Catalog, instance string) {
	r.catalog, r.instance = c, instance
}

// RetentionInterval is how often Retention looks at the directory without
// being told a recording was written.
const RetentionInterval = 10 * time.Minute

// NewRetention applies l to dir once Run runs; every removal is an audit
// event (recording_removed) on sink and a log line on log.
func NewRetention(dir string, l Limits, sink audit.Sink, log *zap.Logger) *Retention {
	if sink == nil {
		sink = audit.Discard
	}
	return &Retention{dir: dir, limits: l, audit: sink, log: log, kick: make(chan struct{}, 1)}
}

// SetLimits changes the limits (on reload); they apply at the next pass,
// which it asks for.
func (r *Retention) SetLimits(l Limits) {
	r.mu.Lock()
	r.limits = l
	r.mu.Unlock()
	r.Written()
}

// Written tells r that a recording was written: a pass follows soon. It
// never blocks.
func (r *Retention) Written() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Run applies the limits until ctx ends: at once, then every
// RetentionInterval and after each Written.
func (r *Retention) Run(ctx context.Context) error {
	t := time.NewTicker(RetentionInterval)
	defer t.Stop()
	if r.catalog != nil {
		defer func() {
			if err := r.catalog.Release(RetentionLease, r.instance); err != nil {
				r.log.Warn("cannot release the recordings retention lease; another instance takes it when it expires", zap.Error(err))
			}
		}()
	}
	for {
		r.Pass(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.kick:
		}
	}
}

// Pass applies the limits once, at now.
func (r *Retention) Pass(now time.Time) []Removed {
	r.mu.Lock()
	l := r.limits
	r.mu.Unlock()
	if r.catalog != nil && (l.Keep > 0 || l.MaxBytes > 0) {
		ok, err := r.catalog.Lease(RetentionLease, r.instance, now, RetentionLeaseTTL)
		if err != nil {
			r.log.Warn("recordings retention skipped: cannot take its lease in the state store", zap.Error(err))
			return nil
		}
		if !ok {
			return nil // another instance applies the limits to the shared directory
		}
	}
	removed, err := Prune(r.dir, l, now)
	for _, rm := range removed {
		removedTotal.WithLabelValues(rm.Reason).Inc()
		detail := fmt.Sprintf("last written %s, older than limits.recordings_keep (%s)", rm.Modified.UTC().Format(time.RFC3339), l.Keep)
		if rm.Reason == RemovedSize {
			detail = fmt.Sprintf("the oldest recording while the directory was over limits.recordings_max_bytes (%d)", l.MaxBytes)
		}
		r.audit.Audit(audit.Event{Event: audit.RecordingRemoved, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
			Session: rm.ID, Protocol: rm.Protocol, Recording: rm.Path, Bytes: rm.Size, Reason: rm.Reason, Detail: detail})
		r.log.Info("recording removed", zap.String("recording", rm.Path), zap.Int64("bytes", rm.Size), zap.String("reason", rm.Reason))
		if r.catalog != nil {
			fallback := Entry{Protocol: rm.Protocol, File: filepath.Base(rm.Path), Size: rm.Size}
			if err := r.catalog.Removed(rm.ID, now, r.instance, rm.Reason, fallback); err != nil {
				r.log.Warn("cannot mark a removed recording in the catalog", zap.String("recording", rm.Path), zap.Error(err))
			}
		}
	}
	if err != nil {
		r.log.Warn("recordings retention", zap.Error(err))
	}
	return removed
}
