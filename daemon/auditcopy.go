package daemon

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/auditship"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
)

// openAuditCopy returns, in a cluster, the shipper's destination that
// copies this instance's audit lines to the database, with the lines the
// database missed already queued; none on a single host.
func openAuditCopy(cfg *config.Config, d *daemon) ([]auditship.Destination, error) {
	pg, ok := d.state.(pgState)
	if !ok {
		return nil, nil
	}
	db, err := auditship.NewDatabase(auditship.DatabaseConfig{Table: pg.DB, Writer: cfg.Cluster.Instance,
		Keep: cfg.Store.Postgres.AuditKeep, Logger: d.log.Named("ship"), Audit: d.trail})
	if err != nil {
		return nil, err
	}
	// What the file gained while its lines did not reach the database
	// goes first, before this process's lines.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	missed, err := catchUpAuditCopy(ctx, pg.DB, cfg.Logging.AuditFile, cfg.Cluster.Instance, 100000)
	if err != nil {
		d.log.Warn("cannot find the audit lines the database missed; it gets this process's", zap.Error(err))
	}
	if len(missed) > 0 {
		d.log.Info("copying to the database the audit lines it missed", zap.Int("lines", len(missed)))
		db.Ship(missed)
	}
	return []auditship.Destination{db}, nil
}

// auditCopy is the database's copy of the audit lines as a starting
// instance sees it (pgstore.DB).
type auditCopy interface {
	LastAudit(ctx context.Context, writer string) (audit.Hash, bool, error)
}

// catchUpFiles is how many rotated files catchUpAuditCopy looks into
// besides the live one.
const catchUpFiles = 2

// catchUpAuditCopy returns the lines of this instance's audit file (and
// its last rotated predecessors) written after the last line it copied to
// the database: those still queued when it last stopped, the database
// down then. They are shipped before the lines this process writes, so
// the copy has no gap (sent twice, a line is stored once). At most limit
// lines, the newest. Nothing when the database holds no line of this
// instance (a new cluster: its history before stays in its files) or
// when that line is in none of the files read (rotated away long ago).
func catchUpAuditCopy(ctx context.Context, db auditCopy, file, writer string, limit int) ([][]byte, error) {
	last, ok, err := db.LastAudit(ctx, writer)
	if err != nil || !ok {
		return nil, err
	}
	files := trailFiles(file, time.Time{})
	files = files[max(0, len(files)-1-catchUpFiles):]
	var after [][]byte
	found := false
	for _, name := range files {
		r, closeFile, err := openTrail(name)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			switch {
			case audit.HashLine(line) == last:
				found, after = true, after[:0]
			case !found:
			case len(line) == 0 || line[len(line)-1] != '}':
				// A torn line (a failed write, or the other process of an
				// upgrade writing it now) is not an audit line.
			default:
				if len(after) == 2*limit { // keep the newest limit, trimming now and then
					after = append(after[:0], after[limit:]...)
				}
				after = append(after, slices.Clone(line))
			}
		}
		err = sc.Err()
		closeFile()
		if err != nil {
			return nil, fmt.Errorf("audit file %s: %w", name, err)
		}
	}
	if !found {
		return nil, nil
	}
	return after[max(0, len(after)-limit):], nil
}
