package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/recording"
)

// defaultRecordDir is where the sessions of recorded roles are recorded
// unless recordings_dir says otherwise: this host's alone.
func defaultRecordDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir, "recordings") }

// checkRecordDir checks recordings_dir as start-up needs it (recording
// CheckDir): a recorded role's sessions are recorded or refused, so a
// directory that cannot take recordings stops the start. The default one,
// in state_dir, is made when missing (unless check, which changes
// nothing); a configured one must exist: when it is a mount that is
// missing, recordings written to the mount point would stay on this host.
func checkRecordDir(cfg *config.Config, check bool) error {
	dir := cfg.RecordingsDir
	if dir == defaultRecordDir(cfg) {
		if check {
			if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
				return nil // made at start, in state_dir
			}
		} else if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("recordings_dir: %w", err)
		}
	}
	if err := recording.CheckDir(dir); err != nil {
		return fmt.Errorf("recordings_dir: %w", err)
	}
	return nil
}

// openCatalog opens the catalog of the recordings in a cluster's shared
// state store; a single host has none (its audit trail describes its
// recordings).
func (d *daemon) openCatalog(cfg *config.Config) {
	if !clustered(d.state) {
		return
	}
	d.catalog = recording.NewCatalog(d.state)
	if cfg.RecordingsDir == defaultRecordDir(cfg) {
		d.log.Warn("recordings_dir is this host's own (in state_dir): the other instances list this instance's recordings but cannot play them; "+
			"set recordings_dir to a directory every instance mounts", zap.String("recordings_dir", cfg.RecordingsDir))
	}
}

// recordingStarted enters a recording that starts in the cluster's
// catalog. A failure is logged: the recording goes on, this instance's
// audit trail describes it, and its close enters it again.
func (d *daemon) recordingStarted(i broker.Info) {
	if d.catalog == nil || i.Recording == "" {
		return
	}
	e := recording.Entry{ID: i.ID, Protocol: i.Protocol, File: filepath.Base(i.Recording), Instance: d.instance, User: i.User,
		Target: i.Target, Login: i.Login, Start: i.Start}
	if i.Client.IsValid() {
		e.Client = i.Client.String()
	}
	if err := d.catalog.Started(e); err != nil {
		d.log.Error("cannot enter a recording in the cluster's catalog: other instances will not describe it until it closes",
			zap.String("session", i.ID), zap.Error(err))
	}
}

// recordingClosed notes in the cluster's catalog the close of a session's
// recording: when, its size and hash. A recording whose start was not
// entered (the store was down then) is entered now.
func (d *daemon) recordingClosed(i broker.Info, size int64) {
	if d.catalog == nil || i.Recording == "" {
		return
	}
	fallback := recording.Entry{Protocol: i.Protocol, File: filepath.Base(i.Recording), Instance: d.instance, User: i.User,
		Target: i.Target, Login: i.Login, Start: i.Start}
	if i.Client.IsValid() {
		fallback.Client = i.Client.String()
	}
	if err := d.catalog.Closed(i.ID, time.Now(), size, i.RecordingSHA256, fallback); err != nil {
		d.log.Error("cannot note a closed recording in the cluster's catalog", zap.String("session", i.ID), zap.Error(err))
	}
}

func recordingLimits(cfg *config.Config) recording.Limits {
	return recording.Limits{Keep: cfg.Limits.RecordingsKeep, MaxBytes: int64(cfg.Limits.RecordingsMaxBytes)}
}

// startRetention applies limits.recordings_keep and recordings_max_bytes
// to the recordings directory until close.
func (d *daemon) startRetention(cfg *config.Config) {
	d.retention = recording.NewRetention(d.recordDir, recordingLimits(cfg), d.trail, d.log.Named("recordings"))
	if d.catalog != nil {
		d.retention.Share(d.catalog, d.instance)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.retention.Run(ctx)
	}()
	d.stopRetention = func() {
		cancel()
		<-done
	}
}

// recordingsAPI serves `bastionctl recordings`.
type recordingsAPI struct{ d *daemon }

var _ adminapi.Recordings = recordingsAPI{}

func (r recordingsAPI) config() *config.Config {
	r.d.mu.Lock()
	defer r.d.mu.Unlock()
	return r.d.cfg
}

func (r recordingsAPI) List() ([]adminapi.RecordingInfo, error) {
	cfg := r.config()
	files, err := recording.List(r.d.recordDir)
	if err != nil {
		return nil, err
	}
	cat, err := r.catalog()
	if err != nil {
		return nil, err
	}
	idx := readTrail(cfg.Logging.AuditFile, r.d.log)
	out := make([]adminapi.RecordingInfo, len(files))
	for i, f := range files {
		out[i] = idx.describe(f, cat[f.ID])
	}
	return out, nil
}

// catalog is the cluster's catalog of recordings by session ID; nil on a
// single host.
func (r recordingsAPI) catalog() (map[string]*recording.Entry, error) {
	if r.d.catalog == nil {
		return nil, nil
	}
	list, err := r.d.catalog.List()
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster's catalog of recordings from the state store: %w", err)
	}
	m := make(map[string]*recording.Entry, len(list))
	for i := range list {
		m[list[i].ID] = &list[i]
	}
	return m, nil
}

// notHere explains why recording id, which the cluster's catalog knows,
// has no file in this instance's recordings directory; err when the
// catalog knows nothing of it either.
func (r recordingsAPI) notHere(id string, err error) error {
	if r.d.catalog == nil {
		return err
	}
	e, ok, cerr := r.d.catalog.Get(id)
	switch {
	case cerr != nil || !ok:
		return err
	case !e.Removed.IsZero():
		return fmt.Errorf("%w: recording %s (%s on %s) was removed by the retention of instance %s on %s (%s)", err, id, e.User, e.Target,
			e.RemovedBy, e.Removed.UTC().Format(time.RFC3339), e.RemovedReason)
	default:
		return fmt.Errorf("%w: recording %s was made on instance %s as %s, which is not in this instance's recordings_dir %s: "+
			"is it the directory every instance mounts?", err, id, e.Instance, e.File, r.d.recordDir)
	}
}

func (r recordingsAPI) Export(id, actor string, raw bool) (io.ReadCloser, adminapi.RecordingInfo, error) {
	f, info, err := recording.Open(r.d.recordDir, id)
	if errors.Is(err, recording.ErrNotFound) {
		err = r.notHere(id, err)
	}
	if err != nil {
		return nil, adminapi.RecordingInfo{}, err
	}
	rc := io.ReadCloser(f)
	if !raw {
		zr, err := recording.Decompressed(f, info)
		if err != nil {
			f.Close()
			return nil, adminapi.RecordingInfo{}, err
		}
		rc = readCloser{zr, f}
		if recording.Writing(info.Path) {
			// A live recording's gzip stream is not finished: it ends at
			// its last flush, at most a second ago.
			rc = readCloser{liveReader{zr}, f}
		}
	}
	detail := "decompressed"
	if raw {
		detail = "raw"
	}
	r.d.trail.Audit(audit.Event{Event: audit.RecordingExported, Actor: actor, Source: audit.SourceLocal, Session: info.ID,
		Protocol: info.Protocol, Recording: info.Path, Bytes: info.Size, Detail: detail})
	return rc, adminapi.RecordingInfo{RecordingFile: info}, nil
}

// liveReader ends at the last flush of a gzip stream still being
// written, instead of failing there.
type liveReader struct{ io.ReadCloser }

func (r liveReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		err = io.EOF
	}
	return n, err
}

// readCloser reads r and closes both r and f.
type readCloser struct {
	io.ReadCloser
	f *os.File
}

func (rc readCloser) Close() error {
	rc.ReadCloser.Close()
	return rc.f.Close()
}

func (r recordingsAPI) Verify(ids []string) ([]adminapi.RecordingCheck, error) {
	cfg := r.config()
	dir := r.d.recordDir
	idx := readTrail(cfg.Logging.AuditFile, r.d.log)
	cat, err := r.catalog()
	if err != nil {
		return nil, err
	}
	// What the cluster's catalog says of a recording wins over this
	// instance's trail, which knows only its own.
	for id, e := range cat {
		s := idx.sessions[id]
		if s == nil {
			s = &trailSession{}
			idx.sessions[id] = s
		}
		if e.SHA256 != "" {
			s.sha = e.SHA256
		}
		if !e.Removed.IsZero() {
			s.removed = true
		}
		if s.recording == "" {
			s.recording = filepath.Join(dir, e.File)
		}
	}
	all := len(ids) == 0
	if all {
		files, err := recording.List(dir)
		if err != nil {
			return nil, err
		}
		seen := map[string]bool{}
		for _, f := range files {
			ids = append(ids, f.ID)
			seen[f.ID] = true
		}
		// And every recording the trail vouches for whose file is gone.
		for id, s := range idx.sessions {
			if s.sha != "" && !seen[id] {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
	}
	var out []adminapi.RecordingCheck
	for _, id := range ids {
		s := idx.sessions[id]
		if s == nil {
			s = &trailSession{}
		}
		c := adminapi.RecordingCheck{ID: id, Want: s.sha}
		info, err := recording.Find(dir, id)
		switch {
		case errors.Is(err, recording.ErrNotFound) && s.removed:
			c.Outcome, c.Path = adminapi.CheckRemoved, s.recording
		case errors.Is(err, recording.ErrNotFound) && s.sha != "":
			c.Outcome, c.Path = adminapi.CheckMissing, s.recording
		case err != nil:
			c.Outcome = adminapi.CheckNoRecord
			if !errors.Is(err, recording.ErrNotFound) {
				return nil, err
			}
		default:
			c.Path = info.Path
			c.Got, err = recording.FileSHA256(info.Path)
			switch {
			case err != nil:
				return nil, err
			case s.sha == "":
				c.Outcome = adminapi.CheckNoRecord
			case c.Got == s.sha:
				c.Outcome = adminapi.CheckOK
			default:
				c.Outcome = adminapi.CheckMismatch
			}
		}
		out = append(out, c)
	}
	return out, nil
}

// trailIndex is what the audit trail says of the recorded sessions.
type trailIndex struct {
	sessions map[string]*trailSession
}

type trailSession struct {
	user, target, login string
	start, end          time.Time
	recording, sha      string
	removed             bool
}

// describe describes the recording file f: from its entry e in the
// cluster's catalog (nil: none, or a single host), else from this
// instance's audit trail, else from the file.
func (idx trailIndex) describe(f recording.Info, e *recording.Entry) adminapi.RecordingInfo {
	ri := adminapi.RecordingInfo{RecordingFile: f, Duration: -1}
	if s := idx.sessions[f.ID]; s != nil {
		ri.User, ri.Target, ri.Login, ri.Start, ri.SHA256 = s.user, s.target, s.login, s.start, s.sha
		if !s.end.IsZero() {
			ri.Duration = s.end.Sub(s.start)
		}
	}
	if e != nil {
		ri.Instance = e.Instance
		if e.User != "" {
			ri.User, ri.Target, ri.Login = e.User, e.Target, e.Login
		}
		if !e.Start.IsZero() {
			ri.Start = e.Start
		}
		if e.SHA256 != "" {
			ri.SHA256 = e.SHA256
		}
		if !e.End.IsZero() && !ri.Start.IsZero() {
			ri.Duration = e.End.Sub(ri.Start)
		}
	}
	if ri.Start.IsZero() && f.Protocol == "ssh" {
		if c, err := recording.ReadCast(f); err == nil {
			ri.Start = c.Start
		}
	}
	if ri.Duration < 0 {
		ri.Duration = max(0, f.Modified.Sub(ri.Start))
	}
	return ri
}

// rotated matches the names logrotate gives the trail's older files:
// audit.jsonl.1, audit.jsonl-20261206 (compressed ones are not read).
var rotated = regexp.MustCompile(`^[.-][0-9]+$`)

// readTrail indexes the session records that name a recording, and the
// removals, of the audit file at path and its rotated predecessors. Lines
// it cannot read are skipped: `bastionctl audit verify` is the check of
// the trail itself.
func readTrail(path string, log *zap.Logger) trailIndex {
	idx := trailIndex{sessions: map[string]*trailSession{}}
	files := []string{path}
	if ents, err := os.ReadDir(filepath.Dir(path)); err == nil {
		base := filepath.Base(path)
		for _, e := range ents {
			if rest, ok := strings.CutPrefix(e.Name(), base); ok && rotated.MatchString(rest) {
				files = append(files, filepath.Join(filepath.Dir(path), e.Name()))
			}
		}
	}
	// Oldest first, so that a later record wins: the rotated files by
	// their modification time, the live file last.
	slices.SortFunc(files[1:], func(a, b string) int { return modTime(a).Compare(modTime(b)) })
	files = append(files[1:], files[0])
	for _, name := range files {
		if err := idx.read(name); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("reading the audit trail for recordings", zap.String("file", name), zap.Error(err))
		}
	}
	return idx
}

func modTime(path string) time.Time {
	fi, err := os.Stat(path)
	if err != nil {
		return time.Time{}
	}
	return fi.ModTime()
}

func (idx trailIndex) read(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !bytes.Contains(line, []byte(`"recording":`)) { // a cheap filter before decoding
			continue
		}
		var e audit.Event
		if json.Unmarshal(line, &e) != nil || e.Session == "" {
			continue
		}
		s := idx.sessions[e.Session]
		if s == nil {
			s = &trailSession{}
			idx.sessions[e.Session] = s
		}
		switch e.Event {
		case audit.SessionStart, audit.SessionEnd:
			s.user, s.target, s.login, s.start = e.User, e.Target, e.Login, e.Time
			if e.Start != nil {
				s.start = *e.Start
			}
			if e.End != nil {
				s.end = *e.End
			}
			if e.Recording != "" {
				s.recording = e.Recording
			}
			if e.RecordingSHA256 != "" {
				s.sha = e.RecordingSHA256
			}
		case audit.RecordingClosed:
			if e.RecordingSHA256 != "" {
				s.sha = e.RecordingSHA256
			}
			if s.recording == "" {
				s.recording = e.Recording
			}
		case audit.RecordingRemoved:
			s.removed = true
			if s.recording == "" {
				s.recording = e.Recording
			}
		}
	}
	return sc.Err()
}
