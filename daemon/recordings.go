package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/bastiond/bastiond/proxy/recording"
)

// recordDir is where the sessions of recorded roles are recorded.
func recordDir(cfg *config.Config) string { return filepath.Join(cfg.StateDir, "recordings") }

func recordingLimits(cfg *config.Config) recording.Limits {
	return recording.Limits{Keep: cfg.Limits.RecordingsKeep, MaxBytes: int64(cfg.Limits.RecordingsMaxBytes)}
}

// startRetention applies limits.recordings_keep and recordings_max_bytes
// to the recordings directory until close.
func (d *daemon) startRetention(cfg *config.Config) {
	d.retention = recording.NewRetention(recordDir(cfg), recordingLimits(cfg), d.trail, d.log.Named("recordings"))
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
	files, err := recording.List(recordDir(cfg))
	if err != nil {
		return nil, err
	}
	idx := readTrail(cfg.Logging.AuditFile, r.d.log)
	out := make([]adminapi.RecordingInfo, len(files))
	for i, f := range files {
		out[i] = idx.describe(f)
	}
	return out, nil
}

func (r recordingsAPI) Export(id, actor string, raw bool) (io.ReadCloser, adminapi.RecordingInfo, error) {
	cfg := r.config()
	f, info, err := recording.Open(recordDir(cfg), id)
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
	dir := recordDir(cfg)
	idx := readTrail(cfg.Logging.AuditFile, r.d.log)
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

func (idx trailIndex) describe(f recording.Info) adminapi.RecordingInfo {
	ri := adminapi.RecordingInfo{RecordingFile: f, Duration: -1}
	if s := idx.sessions[f.ID]; s != nil {
		ri.User, ri.Target, ri.Login, ri.Start, ri.SHA256 = s.user, s.target, s.login, s.start, s.sha
		if !s.end.IsZero() {
			ri.Duration = s.end.Sub(s.start)
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
