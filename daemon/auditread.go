package daemon

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	wire "github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
)

// auditAPI reads the audit trail by time range for `bastionctl audit
// events`: in a cluster, from the database's copy of every instance's
// lines (daemon/auditship's database destination, seconds behind the
// files); on a single host, or when asked for this instance's own lines,
// from the audit file and its rotated predecessors.
type auditAPI struct{ d *daemon }

var _ adminapi.AuditEvents = auditAPI{}

// auditDB is the state store's copy of the audit lines (pgstore.DB).
type auditDB interface {
	AuditEvents(ctx context.Context, q audit.Query) (audit.Found, error)
}

func (a auditAPI) Events(ctx context.Context, q audit.Query, local bool) (wire.AuditEvents, error) {
	a.d.mu.Lock()
	cfg := a.d.cfg
	a.d.mu.Unlock()
	if db, ok := a.d.state.(auditDB); ok && !local {
		f, err := db.AuditEvents(ctx, q)
		if errors.Is(err, store.ErrUnavailable) {
			return wire.AuditEvents{}, fmt.Errorf("%w: %w (bastionctl audit events --local reads this instance's own file)",
				adminapi.ErrAuditUnavailable, err)
		}
		if err != nil {
			return wire.AuditEvents{}, err
		}
		return auditAnswer(wire.AuditFromDatabase, nil, f), nil
	}
	files := trailFiles(cfg.Logging.AuditFile, q.Since)
	f, err := searchFiles(q, cfg.Cluster.Instance, files)
	return auditAnswer(wire.AuditFromFiles, files, f), err
}

func auditAnswer(from string, files []string, f audit.Found) wire.AuditEvents {
	ev := wire.AuditEvents{From: from, Files: files, More: f.More, Next: f.Next, Lines: make([]string, len(f.Lines))}
	for i, l := range f.Lines {
		ev.Lines[i] = string(l)
	}
	return ev
}

// rotatedAny matches the names logrotate gives the trail's older files,
// compressed or not: audit.jsonl.1, audit.jsonl.2.gz, audit.jsonl-20261206.
var rotatedAny = regexp.MustCompile(`^[.-][0-9]+(\.gz)?$`)

// trailFiles are the audit file at path and its rotated predecessors,
// oldest first (by their last write; the live file last), leaving out the
// rotated files last written before since: all their lines are older.
func trailFiles(path string, since time.Time) []string {
	dir, base := filepath.Dir(path), filepath.Base(path)
	type file struct {
		name string
		mod  time.Time
	}
	var old []file
	if ents, err := os.ReadDir(dir); err == nil {
		for _, e := range ents {
			rest, ok := strings.CutPrefix(e.Name(), base)
			if !ok || !rotatedAny.MatchString(rest) {
				continue
			}
			if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && !fi.ModTime().Before(since) {
				old = append(old, file{filepath.Join(dir, e.Name()), fi.ModTime()})
			}
		}
	}
	slices.SortFunc(old, func(a, b file) int { return a.mod.Compare(b.mod) })
	names := make([]string, 0, len(old)+1)
	for _, f := range old {
		names = append(names, f.name)
	}
	return append(names, path)
}

// searchFiles answers q from files, oldest first; a file that is gone
// (rotated away meanwhile, or no trail yet) is skipped.
func searchFiles(q audit.Query, instance string, names []string) (audit.Found, error) {
	var files []audit.File
	for _, name := range names {
		r, closeFile, err := openTrail(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return audit.Found{}, err
		}
		defer closeFile()
		files = append(files, audit.File{Name: name, R: r})
	}
	return audit.Search(q, instance, files...)
}

// openTrail opens a file of the trail, through gzip when it is compressed
// (by its magic number).
func openTrail(name string) (io.Reader, func(), error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, nil, err
	}
	br := bufio.NewReader(f)
	magic, err := br.Peek(2)
	if err != nil || magic[0] != 0x1f || magic[1] != 0x8b {
		return br, func() { f.Close() }, nil
	}
	zr, err := gzip.NewReader(br)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("audit file %s: %w", name, err)
	}
	return zr, func() { zr.Close(); f.Close() }, nil
}
