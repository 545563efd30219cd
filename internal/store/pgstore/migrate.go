package pgstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// migration is one file of migrations/: NNNN_what.sql.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations are this binary's, in order, numbered 1, 2, 3...
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	for _, p := range names {
		name := strings.TrimSuffix(path.Base(p), ".sql")
		num, _, ok := strings.Cut(name, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil {
			return nil, fmt.Errorf("pgstore: migration %s is not named NNNN_what.sql", p)
		}
		b, err := migrationFiles.ReadFile(p)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: name, sql: string(b)})
	}
	for i, m := range ms { // fs.Glob sorts by name, and the numbers are zero-padded
		if m.version != i+1 {
			return nil, fmt.Errorf("pgstore: migration %s: want version %d", m.name, i+1)
		}
	}
	return ms, nil
}

// SchemaVersion is the schema version of this binary: that of its last
// migration.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // the embedded files are checked by the tests
	}
	return len(ms)
}

// NewerSchemaError is what Open returns for a database whose schema is
// newer than this binary's: another instance runs a newer bastiond.
type NewerSchemaError struct {
	Database, Binary int
}

func (e *NewerSchemaError) Error() string {
	return fmt.Sprintf("database schema version %d is newer than this bastiond (%d): upgrade bastiond", e.Database, e.Binary)
}

// migrationLock is the advisory lock the instances migrate under: any
// 64-bit number other programs sharing the database are unlikely to use
// ("bastiond" in ASCII).
const migrationLock int64 = 0x62617374696f6e64

const createMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version    integer PRIMARY KEY,
	name       text NOT NULL,
	applied_at timestamptz NOT NULL DEFAULT now(),
	applied_by text NOT NULL DEFAULT current_user || ' from ' || coalesce(host(inet_client_addr()), 'the local socket')
)`

// migrate brings the schema up to this binary's. It first reads the
// version without taking anything, so that a newer database or a
// read-only one is refused before anything is written; then it takes the
// advisory lock in a transaction, reads the version again (another
// instance may have migrated meanwhile), applies what is missing and
// records it, all or nothing.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	latest := len(ms)
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	conn := c.Conn()
	v, err := db.inspect(ctx, conn)
	if err != nil || v == latest {
		return err
	}

	mctx, cancel := context.WithTimeout(ctx, db.cfg.MigrateTimeout)
	defer cancel()
	tx, err := conn.BeginTx(mctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted, AccessMode: pgx.ReadWrite})
	if err != nil {
		return db.fail("migrate", err)
	}
	defer tx.Rollback(context.Background())
	ms2 := strconv.FormatInt(db.cfg.MigrateTimeout.Milliseconds(), 10)
	if _, err := tx.Exec(mctx, "SET LOCAL statement_timeout = "+ms2+"; SET LOCAL lock_timeout = "+ms2); err != nil {
		return db.fail("migrate", err)
	}
	if _, err := tx.Exec(mctx, "SELECT pg_advisory_xact_lock($1)", migrationLock); err != nil {
		return db.fail("wait for another bastiond's schema migration (advisory lock)", err)
	}
	if _, err := tx.Exec(mctx, createMigrations); err != nil {
		return db.fail("migrate", err)
	}
	if err := tx.QueryRow(mctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return db.fail("migrate", err)
	}
	if v > latest {
		return &NewerSchemaError{Database: v, Binary: latest}
	}
	for _, m := range ms[v:] {
		if _, err := tx.Exec(mctx, m.sql); err != nil {
			return fmt.Errorf("pgstore: migration %s on %s: %w", m.name, db.where, err)
		}
		if _, err := tx.Exec(mctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name); err != nil {
			return db.fail("migrate", err)
		}
	}
	if err := tx.Commit(mctx); err != nil {
		return db.fail("migrate", err)
	}
	return nil
}

// inspect checks, writing nothing, that the server is recent enough, that
// the schema is not newer than this binary's and that the database takes
// writes, and returns the schema's version.
func (db *DB) inspect(ctx context.Context, conn *pgx.Conn) (int, error) {
	if err := db.checkVersion(ctx, conn); err != nil {
		return 0, err
	}
	v, err := db.version(ctx, conn)
	if err != nil {
		return 0, err
	}
	if v > SchemaVersion() {
		return v, &NewerSchemaError{Database: v, Binary: SchemaVersion()}
	}
	return v, db.checkWritable(ctx, conn)
}

// Check connects as Open does and checks what Open would, but changes
// nothing: it is `bastiond -check-config`. It returns the schema version
// of the database (0 for a database bastiond has not used yet), which
// Open brings up to SchemaVersion.
func Check(ctx context.Context, cfg Config) (int, error) {
	cfg.setDefaults()
	pcfg, err := ParseConfig(cfg)
	if err != nil {
		return 0, err
	}
	pcfg.MaxConns = 1
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return 0, fmt.Errorf("pgstore: %w", err)
	}
	defer pool.Close()
	db := &DB{cfg: cfg, pool: pool, where: where(pcfg.ConnConfig)}
	c, err := db.acquire(ctx)
	if err != nil {
		return 0, err
	}
	defer c.Release()
	return db.inspect(ctx, c.Conn())
}

// version is the database's schema version, 0 for none; it writes nothing.
func (db *DB) version(ctx context.Context, conn *pgx.Conn) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT to_regclass('schema_migrations') IS NOT NULL").Scan(&exists); err != nil {
		return 0, db.fail("read the schema version", err)
	}
	if !exists {
		return 0, nil
	}
	var v int
	if err := conn.QueryRow(ctx, "SELECT coalesce(max(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return 0, db.fail("read the schema version", err)
	}
	return v, nil
}

// minServer is the oldest PostgreSQL the schema runs on (generated
// columns, sha256()); 13 is the oldest still supported when this was
// written.
const minServer = 130000

func (db *DB) checkVersion(ctx context.Context, conn *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	var num int
	var text string
	if err := conn.QueryRow(ctx, "SELECT current_setting('server_version_num')::int, current_setting('server_version')").Scan(&num, &text); err != nil {
		return db.fail("read the server's version", err)
	}
	if num < minServer {
		return errors.New("pgstore: " + db.where + " runs PostgreSQL " + text + ": bastiond needs 13 or later")
	}
	return nil
}
