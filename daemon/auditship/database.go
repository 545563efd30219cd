package auditship

import (
	"context"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// AuditTable is the cluster's copy of the audit trail: the state store's
// PostgreSQL database (internal/store/pgstore.DB).
type AuditTable interface {
	// AddAudit copies lines of writer's file, all or none; a line
	// already there is not added again.
	AddAudit(ctx context.Context, writer string, lines [][]byte) (added, skipped int, err error)
	// PruneAudit deletes the lines older than before.
	PruneAudit(ctx context.Context, before time.Time) (int64, error)
}

// DatabaseConfig describes the database destination.
type DatabaseConfig struct {
	// Table is where lines go. Required.
	Table AuditTable
	// Writer is this instance's name (cluster.instance), that of the file
	// the lines come from. Required.
	Writer string
	// Keep is how long the copy keeps a line (store.postgres.audit_keep).
	// Default 400 days.
	Keep time.Duration
	// PruneEvery is how often lines older than Keep are deleted. Default
	// 1h.
	PruneEvery time.Duration
	// Queue bounds the lines waiting. Default 100000.
	Queue int
	// MinBackoff is the wait after the first failure, doubled after each
	// one up to MaxBackoff. Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Logger defaults to zap.NewNop(); Audit, where failures are told,
	// to audit.Discard.
	Logger *zap.Logger
	Audit  audit.Sink
}

// DefaultAuditKeep is how long the database keeps a line unless told:
// a year and a month, so that a yearly audit finds its whole year.
const DefaultAuditKeep = 400 * 24 * time.Hour

// DatabaseName is the database destination's name in metrics and events.
const DatabaseName = "database"

// Database copies lines into the cluster's database, in batches of one
// statement each, in the file's order. A batch that fails (the database
// down or read-only) is sent again, whole, until it goes in: the table
// keeps a line once, so delivery is at least once and the copy has no
// duplicate.
type Database struct {
	cfg DatabaseConfig
	q   *queue
	c   counters
	out *outage
}

// NewDatabase checks cfg and returns a Database that ships once Run runs.
func NewDatabase(cfg DatabaseConfig) (*Database, error) {
	c := cfg
	if c.Table == nil || c.Writer == "" {
		return nil, errors.New("auditship: the database destination needs a table and this instance's name")
	}
	c.Keep = cmp(c.Keep, DefaultAuditKeep)
	c.PruneEvery = cmp(c.PruneEvery, time.Hour)
	c.Queue = cmp(c.Queue, 100000)
	c.MinBackoff = cmp(c.MinBackoff, 250*time.Millisecond)
	c.MaxBackoff = cmp(c.MaxBackoff, 30*time.Second)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	d := &Database{cfg: c, q: newQueue(c.Queue)}
	d.out = &outage{name: DatabaseName, log: c.Logger, audit: c.Audit, c: &d.c}
	return d, nil
}

// Name is DatabaseName.
func (d *Database) Name() string { return DatabaseName }

// Ship queues lines; it never blocks.
func (d *Database) Ship(lines [][]byte) { d.q.push(lines) }

func (d *Database) counters() *counters { return &d.c }
func (d *Database) queue() *queue       { return d.q }

// Run copies lines until ctx ends, retrying a failed batch with backoff,
// and deletes the lines past Keep once the queue is first empty and then
// every PruneEvery. It returns nil when ctx ends.
func (d *Database) Run(ctx context.Context) error {
	prune := time.NewTicker(d.cfg.PruneEvery)
	defer prune.Stop()
	pruneDue := true // the first time the queue is empty: lines go first
	wait := d.cfg.MinBackoff
	for {
		last, lines := d.q.take(batchLines, batchBytes)
		if len(lines) == 0 {
			d.out.caughtUp()
			if pruneDue {
				pruneDue = false
				d.prune(ctx)
				continue
			}
			select {
			case <-d.q.wake:
			case <-prune.C:
				pruneDue = true
			case <-ctx.Done():
				return nil
			}
			continue
		}
		_, skipped, err := d.cfg.Table.AddAudit(ctx, d.cfg.Writer, lines)
		if err == nil {
			if skipped > 0 {
				d.cfg.Logger.Error("audit lines not copied to the database: not audit lines", zap.Int("lines", skipped))
			}
			// The lines are committed: nothing to resend.
			d.q.wrote(last, 0, time.Now())
			d.q.release(func(int64, time.Time) bool { return true })
			d.out.sent(len(lines) - skipped)
			wait = d.cfg.MinBackoff
			continue
		}
		if ctx.Err() != nil {
			return nil
		}
		d.out.failed(err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, d.cfg.MaxBackoff)
	}
}

// prune deletes the copied lines older than Keep. Every instance does it
// (the statement is idempotent); a failure waits for the next turn.
func (d *Database) prune(ctx context.Context) {
	n, err := d.cfg.Table.PruneAudit(ctx, time.Now().Add(-d.cfg.Keep))
	switch {
	case err != nil && ctx.Err() == nil:
		d.cfg.Logger.Warn("cannot delete the database's audit lines past audit_keep; trying again later", zap.Error(err))
	case n > 0:
		d.cfg.Logger.Info("deleted the database's audit lines past audit_keep", zap.Int64("lines", n), zap.Duration("audit_keep", d.cfg.Keep))
	}
}
