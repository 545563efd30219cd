package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/bastiond/bastiond/internal/audit"
)

// The audit copy: table audit_events (migrations/0002_audit.sql), where
// every instance copies the lines of its audit file, so that the cluster's
// events are read in one place.

// AddAudit copies lines of writer's audit file (stamped lines, in the
// file's order) into audit_events, in one statement: all or none. A line
// already there (sent again after an outage) is left as it is. Lines that
// are not audit lines are skipped and counted in skipped; added is how
// many rows are new.
func (db *DB) AddAudit(ctx context.Context, writer string, lines [][]byte) (added, skipped int, err error) {
	n := len(lines)
	hashes, writers, instances := make([][]byte, 0, n), make([]string, 0, n), make([]string, 0, n)
	ats, events, actors, users, texts := make([]time.Time, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n), make([]string, 0, n)
	for _, l := range lines {
		s, err := audit.Summarize(l)
		if err != nil {
			skipped++
			continue
		}
		inst := s.Instance
		if inst == "" {
			inst = writer
		}
		hashes = append(hashes, s.Hash[:])
		writers, instances = append(writers, writer), append(instances, inst)
		ats, events, actors, users = append(ats, s.Time), append(events, s.Event), append(actors, s.Actor), append(users, s.User)
		texts = append(texts, string(l))
	}
	if len(hashes) == 0 {
		return 0, skipped, nil
	}
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	// unnest keeps the arrays' order, and so the identity column the
	// file's order.
	tag, err := db.pool.Exec(ctx, `INSERT INTO audit_events (hash, written_by, instance, at, event, actor, user_name, line)
		SELECT * FROM unnest($1::bytea[], $2::text[], $3::text[], $4::timestamptz[], $5::text[], $6::text[], $7::text[], $8::text[])
		ON CONFLICT (hash) DO NOTHING`, hashes, writers, instances, ats, events, actors, users, texts)
	if err != nil {
		return 0, skipped, db.fail("copy audit lines", err)
	}
	return int(tag.RowsAffected()), skipped, nil
}

// AuditEvents returns the lines of every instance that q selects, oldest
// first (by their time, then in each file's order), up to q's limit.
func (db *DB) AuditEvents(ctx context.Context, q audit.Query) (audit.Found, error) {
	var f audit.Found
	if err := q.Check(); err != nil {
		return f, err
	}
	where := []string{"at >= $1", "at < $2"}
	args := []any{q.Since, q.Until}
	add := func(cond string, v any) {
		args = append(args, v)
		where = append(where, strings.ReplaceAll(cond, "$?", "$"+strconv.Itoa(len(args))))
	}
	if len(q.Instances) > 0 {
		add("instance = ANY($?::text[])", q.Instances)
	}
	if len(q.Events) > 0 {
		add("event = ANY($?::text[])", q.Events)
	}
	if q.User != "" {
		add("(user_name = $? OR actor = $?)", q.User)
	}
	sql := "SELECT at, line FROM audit_events WHERE " + strings.Join(where, " AND ") +
		" ORDER BY at, id LIMIT " + strconv.Itoa(q.Limit+1)
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	rows, err := db.pool.Query(ctx, sql, args...)
	if err != nil {
		return f, db.fail("read audit lines", err)
	}
	defer rows.Close()
	size := 0
	for rows.Next() {
		var at time.Time
		var line string
		if err := rows.Scan(&at, &line); err != nil {
			return f, db.fail("read audit lines", err)
		}
		if !f.Add([]byte(line), at, q.Limit, &size) {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return audit.Found{}, db.fail("read audit lines", err)
	}
	return f, nil
}

// LastAudit returns the hash of the last line writer copied (by the order
// it copied them), and false when it copied none.
func (db *DB) LastAudit(ctx context.Context, writer string) (audit.Hash, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	var h []byte
	err := db.pool.QueryRow(ctx, "SELECT hash FROM audit_events WHERE written_by = $1 ORDER BY id DESC LIMIT 1", writer).Scan(&h)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return audit.Hash{}, false, nil
	case err != nil:
		return audit.Hash{}, false, db.fail("read the last audit line copied", err)
	case len(h) != len(audit.Hash{}):
		return audit.Hash{}, false, fmt.Errorf("pgstore: audit_events holds a hash of %d bytes", len(h))
	}
	return audit.Hash(h), true, nil
}

// pruneBatch is how many rows one statement of PruneAudit deletes at most,
// so that each stays well within the statement timeout.
const pruneBatch = 5000

// PruneAudit deletes the copied lines older than before, a batch at a
// time, and returns how many it deleted. Several instances may run it at
// once: a row is deleted once, and the others find nothing.
func (db *DB) PruneAudit(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for range 10000 { // 50 million rows at most per call
		sctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
		tag, err := db.pool.Exec(sctx, `DELETE FROM audit_events WHERE hash IN
			(SELECT hash FROM audit_events WHERE at < $1 ORDER BY at LIMIT `+strconv.Itoa(pruneBatch)+` FOR UPDATE SKIP LOCKED)`, before)
		cancel()
		if err != nil {
			return total, db.fail("delete old audit lines", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < pruneBatch {
			return total, nil
		}
		if ctx.Err() != nil {
			return total, ctx.Err()
		}
	}
	return total, errors.New("pgstore: delete old audit lines: still more after 10000 batches")
}
