package pgstore

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/bastiond/bastiond/internal/store"
)

// Config is how to reach the database and how hard to try.
type Config struct {
	// DSNFile is a file holding the connection string: libpq's
	// keyword=value form or a postgres:// URL, password included, with
	// sslmode=verify-full (see the package doc). It must not be readable
	// by every user.
	DSNFile string
	// Credential, used when DSNFile is empty, is the name of a systemd
	// credential holding the connection string:
	// $CREDENTIALS_DIRECTORY/<Credential> (LoadCredential= in the unit).
	Credential string
	// CAFile is a PEM file of the CA certificates the server's certificate
	// must chain to. Empty: the DSN's sslrootcert, or else the system's
	// trust store.
	CAFile string
	// MaxConns is the most connections this instance opens; zero means 10.
	MaxConns int32
	// StatementTimeout bounds each statement, on the client and on the
	// server (statement_timeout); zero means 5 seconds.
	StatementTimeout time.Duration
	// ConnectTimeout bounds connecting (TCP, TLS, authentication) and
	// waiting for a free connection of the pool; zero means 5 seconds.
	ConnectTimeout time.Duration
	// MigrateTimeout bounds waiting for another instance's migration and
	// applying this binary's; zero means 2 minutes.
	MigrateTimeout time.Duration
	// MaxAttempts is how many times Update runs a transaction that keeps
	// conflicting with others before it gives up; zero means 20.
	MaxAttempts int
}

func (c *Config) setDefaults() {
	if c.MaxConns <= 0 {
		c.MaxConns = 10
	}
	if c.StatementTimeout <= 0 {
		c.StatementTimeout = 5 * time.Second
	}
	if c.ConnectTimeout <= 0 {
		c.ConnectTimeout = 5 * time.Second
	}
	if c.MigrateTimeout <= 0 {
		c.MigrateTimeout = 2 * time.Minute
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 20
	}
}

// DB is a PostgreSQL database as a store.DB.
type DB struct {
	cfg   Config
	pool  *pgxpool.Pool
	where string // user@host:port/database, for messages (never the password)
	counters
}

var _ store.DB = (*DB)(nil)

// Open connects to the database, checks that it is writable, and brings
// its schema up to this binary's (or refuses a newer one).
func Open(ctx context.Context, cfg Config) (*DB, error) {
	cfg.setDefaults()
	pcfg, err := ParseConfig(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	db := &DB{cfg: cfg, pool: pool, where: where(pcfg.ConnConfig)}
	if err := db.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return db, nil
}

// ParseConfig reads the connection string of cfg and checks it (TLS
// verified, see the package doc) without connecting.
func ParseConfig(cfg Config) (*pgxpool.Config, error) {
	cfg.setDefaults()
	dsn, src, err := readDSN(cfg)
	if err != nil {
		return nil, err
	}
	pcfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		// pgx redacts the password from the text it quotes only on a best
		// effort basis: say what is wrong without quoting it.
		msg := "not a PostgreSQL connection string (keyword=value pairs or a postgres:// URL; not shown here: it holds a password)"
		// pgx's message is "cannot parse `<the string>`: <what>": keep
		// only what is wrong.
		if e := err.Error(); strings.HasPrefix(e, "cannot parse `") {
			if i := strings.LastIndex(e, "`: "); i > 0 {
				msg += ": " + e[i+3:]
			}
		}
		return nil, fmt.Errorf("pgstore: %s: %s", src, msg)
	}
	cc := &pcfg.ConnConfig.Config
	if err := checkTLS(cc, src, cfg.CAFile); err != nil {
		return nil, err
	}
	pcfg.MaxConns = cfg.MaxConns
	pcfg.MinConns = 0
	pcfg.MaxConnIdleTime = 5 * time.Minute
	pcfg.HealthCheckPeriod = 15 * time.Second
	pcfg.PingTimeout = cfg.StatementTimeout
	if cc.ConnectTimeout == 0 || cc.ConnectTimeout > cfg.ConnectTimeout {
		cc.ConnectTimeout = cfg.ConnectTimeout
	}
	if cc.RuntimeParams == nil {
		cc.RuntimeParams = map[string]string{}
	}
	if cc.RuntimeParams["application_name"] == "" {
		cc.RuntimeParams["application_name"] = "bastiond"
	}
	ms := strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	cc.RuntimeParams["statement_timeout"] = ms
	cc.RuntimeParams["lock_timeout"] = ms
	// A transaction left open (a process stopped between statements)
	// holds its locks no longer than this.
	cc.RuntimeParams["idle_in_transaction_session_timeout"] = "60000"
	return pcfg, nil
}

// readDSN returns the connection string of cfg and where it came from.
func readDSN(cfg Config) (dsn, src string, err error) {
	path := cfg.DSNFile
	switch {
	case path != "":
		src = "dsn_file " + path
	case cfg.Credential != "":
		dir := os.Getenv("CREDENTIALS_DIRECTORY")
		if dir == "" {
			return "", "", fmt.Errorf("pgstore: credential %q: $CREDENTIALS_DIRECTORY is not set (the unit needs LoadCredential=%s:/path/to/dsn)",
				cfg.Credential, cfg.Credential)
		}
		if strings.ContainsRune(cfg.Credential, '/') {
			return "", "", fmt.Errorf("pgstore: credential %q: a credential's name has no /", cfg.Credential)
		}
		path = filepath.Join(dir, cfg.Credential)
		src = "credential " + cfg.Credential + " (" + path + ")"
	default:
		return "", "", errors.New("pgstore: no connection string: set dsn_file or credential")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return "", "", fmt.Errorf("pgstore: %s: %w", src, err)
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return "", "", fmt.Errorf("pgstore: %s is readable by every user (mode %04o), and it holds the database's password: chmod o-rwx it",
			src, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", "", fmt.Errorf("pgstore: %s: %w", src, err)
	}
	dsn = strings.TrimSpace(string(b))
	if dsn == "" {
		return "", "", fmt.Errorf("pgstore: %s is empty", src)
	}
	return dsn, src, nil
}

// checkTLS refuses a connection string that would connect over TCP without
// TLS verified as sslmode=verify-full verifies it (pgx leaves
// InsecureSkipVerify set for every weaker mode, and a nil TLS config for
// disable and the fallbacks of allow and prefer), and puts caFile's
// certificates in place of the roots.
func checkTLS(cc *pgconn.Config, src, caFile string) error {
	var roots *x509.CertPool
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return fmt.Errorf("pgstore: ca_file: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("pgstore: ca_file %s holds no PEM certificate", caFile)
		}
	}
	fix := func(host string, port uint16, tc **tls.Config) error {
		if isSocket(host) {
			return nil
		}
		if *tc == nil || (*tc).InsecureSkipVerify {
			return fmt.Errorf("pgstore: %s: the connection to %s asks for less than a verified TLS connection: "+
				"add sslmode=verify-full (TLS required, the server's certificate checked against ca_file and its name against the host)",
				src, net.JoinHostPort(host, strconv.Itoa(int(port))))
		}
		c := (*tc).Clone()
		if roots != nil {
			c.RootCAs = roots
		}
		if c.MinVersion < tls.VersionTLS12 {
			c.MinVersion = tls.VersionTLS12
		}
		*tc = c
		return nil
	}
	if err := fix(cc.Host, cc.Port, &cc.TLSConfig); err != nil {
		return err
	}
	for _, fb := range cc.Fallbacks {
		if err := fix(fb.Host, fb.Port, &fb.TLSConfig); err != nil {
			return err
		}
	}
	return nil
}

func isSocket(host string) bool { return strings.HasPrefix(host, "/") }

// Endpoint is a server the connection string names.
type Endpoint struct {
	// Host is a name or an address, or a unix socket's directory.
	Host string
	Port uint16
}

// Socket reports whether e is a unix socket, which needs no egress rule.
func (e Endpoint) Socket() bool { return isSocket(e.Host) }

// Endpoints are the servers cfg's connection string names (more than one
// when it lists several hosts), for the egress rules that let the daemon
// reach them.
func Endpoints(cfg Config) ([]Endpoint, error) {
	pcfg, err := ParseConfig(cfg)
	if err != nil {
		return nil, err
	}
	cc := pcfg.ConnConfig.Config
	eps := []Endpoint{{cc.Host, cc.Port}}
	for _, fb := range cc.Fallbacks {
		if e := (Endpoint{fb.Host, fb.Port}); !contains(eps, e) {
			eps = append(eps, e)
		}
	}
	return eps, nil
}

func contains(eps []Endpoint, e Endpoint) bool {
	for _, x := range eps {
		if x == e {
			return true
		}
	}
	return false
}

func where(c *pgx.ConnConfig) string {
	host := c.Host
	if !isSocket(host) {
		host = net.JoinHostPort(host, strconv.Itoa(int(c.Port)))
	}
	return c.User + "@" + host + "/" + c.Database
}

// Shared says that other instances may use the database too: the daemon
// then runs as a cluster (the live-session registry, the SSH CA sealed in
// the store).
func (db *DB) Shared() bool { return true }

// Close closes the pool's connections, waiting for those in use.
func (db *DB) Close() error {
	db.pool.Close()
	return nil
}

// Ping checks that the database answers and takes writes: a read-only one
// (a hot standby, default_transaction_read_only) is an error wrapping
// store.ErrUnavailable.
func (db *DB) Ping(ctx context.Context) error {
	c, err := db.acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	return db.checkWritable(ctx, c.Conn())
}

func (db *DB) checkWritable(ctx context.Context, c *pgx.Conn) error {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.StatementTimeout)
	defer cancel()
	var standby bool
	var readOnly string
	err := c.QueryRow(ctx, "SELECT pg_is_in_recovery(), current_setting('default_transaction_read_only')").Scan(&standby, &readOnly)
	switch {
	case err != nil:
		return db.fail("check the database is writable", err)
	case standby:
		return fmt.Errorf("%w: pgstore: %s is a hot standby (in recovery), read-only: point the DSN at the primary", store.ErrUnavailable, db.where)
	case readOnly == "on":
		return fmt.Errorf("%w: pgstore: %s is read-only (default_transaction_read_only is on): bastiond writes its state there", store.ErrUnavailable, db.where)
	}
	return nil
}

// acquire takes a connection of the pool, connecting if need be.
func (db *DB) acquire(ctx context.Context) (*pgxpool.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, db.cfg.ConnectTimeout)
	defer cancel()
	c, err := db.pool.Acquire(ctx)
	if err != nil {
		return nil, db.fail("connect", err)
	}
	return c, nil
}

// fail describes err, which happened while doing op, and wraps
// store.ErrUnavailable in it when it says the database cannot be reached
// or used now.
func (db *DB) fail(op string, err error) error {
	hint := ""
	var (
		pgErr   *pgconn.PgError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		netErr  net.Error
	)
	switch {
	case errors.As(err, &pgErr):
		switch {
		case pgErr.Code == "28P01":
			hint = ": check the user and password of the DSN"
		case pgErr.Code == "28000":
			hint = ": the server's pg_hba.conf admits no such connection (user, database, address, TLS)"
		case pgErr.Code == "3D000":
			hint = ": create the database, or fix dbname in the DSN"
		case pgErr.Code == "25006":
			hint = ": the database is read-only (a hot standby, or default_transaction_read_only): point the DSN at the primary"
		case pgErr.Code == "57014":
			hint = ": no answer within the statement timeout"
		case pgErr.Code == "55P03":
			hint = ": a lock held by another transaction was not granted in time"
		case !unavailableCode(pgErr.Code):
			return fmt.Errorf("pgstore: %s (%s): %w", op, db.where, err)
		}
	case errors.As(err, &unknown):
		hint = ": the server's certificate is not signed by a CA of ca_file (or sslrootcert)"
	case errors.As(err, &host):
		hint = ": the server's certificate is not for the host the DSN names"
	case errors.As(err, &invalid):
		hint = ": the server's certificate is not valid"
	case errors.Is(err, context.DeadlineExceeded):
		hint = ": no answer in time"
	case errors.As(err, &netErr):
	case errors.Is(err, store.ErrUnavailable):
		return err
	}
	return fmt.Errorf("%w: pgstore: %s (%s): %w%s", store.ErrUnavailable, op, db.where, err, hint)
}

// unavailableCode reports whether an SQLSTATE says the database cannot be
// used now, rather than that the statement is wrong: connection exceptions
// (08), authorization (28), insufficient resources (53), operator
// intervention (57: shutdown, cancelled, cannot connect now), system
// errors (58), a missing database, a read-only transaction, a lock not
// granted within lock_timeout.
func unavailableCode(code string) bool {
	if len(code) != 5 {
		return false
	}
	switch code[:2] {
	case "08", "28", "53", "57", "58":
		return true
	}
	return code == "3D000" || code == "25006" || code == "55P03"
}

// conflict reports whether err is a serialization failure or a deadlock:
// the transaction was rolled back and may be run again.
func conflict(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && (pgErr.Code == "40001" || pgErr.Code == "40P01")
}

// The BEGIN statements of View and Update. View's is REPEATABLE READ READ
// ONLY (see the package doc for why not SERIALIZABLE); Update's does not
// say READ WRITE, so that a database made read-only stays so.
const (
	beginView   = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
	beginUpdate = "BEGIN ISOLATION LEVEL SERIALIZABLE"
)

// View runs fn in a REPEATABLE READ READ ONLY transaction.
func (db *DB) View(fn func(store.Tx) error) error {
	db.views.Add(1)
	return db.run(beginView, false, fn)
}

// Update runs fn in a SERIALIZABLE transaction, again when it conflicts
// with another one, up to Config.MaxAttempts times.
func (db *DB) Update(fn func(store.Tx) error) error {
	db.updates.Add(1)
	return db.run(beginUpdate, true, fn)
}

// run runs fn in transactions until one commits, fn fails, or retrying is
// no use. A conflict is retried up to MaxAttempts; a connection that turns
// out broken before COMMIT was sent (a pooled connection to a server that
// has restarted since) is retried once: fn's effects were rolled back with
// it.
func (db *DB) run(begin string, writable bool, fn func(store.Tx) error) error {
	backoff := 2 * time.Millisecond
	lost := false
	for attempt := 1; ; attempt++ {
		err, again := db.once(begin, writable, fn)
		switch {
		case !again:
			return err
		case conflict(err):
			db.conflicts.Add(1)
			if attempt >= db.cfg.MaxAttempts {
				db.gaveUp.Add(1)
				return fmt.Errorf("%w: pgstore: the transaction still conflicted with others after %d attempts: %w", store.ErrUnavailable, attempt, err)
			}
		case lost:
			return err
		default:
			lost = true
			continue
		}
		// Full jitter: transactions that conflicted at once do not
		// come back at once.
		time.Sleep(backoff/2 + rand.N(backoff))
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}

// once runs fn in one transaction. again says the error may go away by
// running it again: a conflict, or a connection lost before the commit.
func (db *DB) once(begin string, writable bool, fn func(store.Tx) error) (err error, again bool) {
	c, err := db.acquire(context.Background())
	if err != nil {
		return err, false
	}
	// A connection left in a transaction (a panic in fn) is closed, not
	// reused, by Release.
	defer c.Release()
	t := &tx{db: db, conn: c.Conn(), begin: begin, writable: writable}
	ferr := fn(t)
	if ferr != nil || t.err != nil {
		t.end(false)
		switch {
		case t.err != nil && conflict(t.err):
			return t.err, true
		case t.err != nil && c.Conn().IsClosed():
			return t.err, true
		case ferr != nil:
			return ferr, false
		default:
			// fn went on after a statement failed, and the
			// transaction was aborted with it: nothing was written.
			return t.err, false
		}
	}
	if err := t.end(true); err != nil {
		if conflict(err) {
			return err, true
		}
		return db.fail("commit", err), false
	}
	return nil, false
}

// tx is one transaction. Its BEGIN is sent with its first statement, in
// one round trip (a transaction that runs no statement costs none); after
// a statement failed, PostgreSQL has aborted the transaction, and every
// later call fails with the same error.
type tx struct {
	db       *DB
	conn     *pgx.Conn
	begin    string
	begun    bool
	writable bool
	err      error // the first statement that failed
}

func (t *tx) Bucket(name string) store.Bucket { return bucket{t: t, name: name} }

// query runs a statement, calling row for each row of its result.
func (t *tx) query(op, sql string, args []any, row func(pgx.Rows) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), t.db.cfg.StatementTimeout)
	defer cancel()
	var (
		rows pgx.Rows
		br   pgx.BatchResults
		err  error
	)
	if t.begun {
		rows, err = t.conn.Query(ctx, sql, args...)
	} else {
		t.begun = true // or may be: ROLLBACK is harmless outside a transaction
		b := &pgx.Batch{}
		b.Queue(t.begin)
		b.Queue(sql, args...)
		br = t.conn.SendBatch(ctx, b)
		if _, err = br.Exec(); err == nil {
			rows, err = br.Query()
		}
	}
	if err == nil {
		for err == nil && rows.Next() {
			if row != nil {
				err = row(rows)
			}
		}
		rows.Close()
		if rerr := rows.Err(); err == nil {
			err = rerr
		}
	}
	if br != nil {
		if cerr := br.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return t.failed(op, err)
	}
	return nil
}

// end commits or rolls back the transaction, if it has begun.
func (t *tx) end(commit bool) error {
	if !t.begun {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), t.db.cfg.StatementTimeout)
	defer cancel()
	if !commit {
		_, err := t.conn.Exec(ctx, "ROLLBACK")
		return err
	}
	tag, err := t.conn.Exec(ctx, "COMMIT")
	if err == nil && tag.String() != "COMMIT" {
		// An aborted transaction's COMMIT is a ROLLBACK; once does not
		// commit one, but say so rather than report success.
		err = errors.New("pgstore: the transaction was rolled back by the server")
	}
	return err
}

// failed records the failure of a statement.
func (t *tx) failed(op string, err error) error {
	if !conflict(err) {
		err = t.db.fail(op, err)
	}
	if t.err == nil {
		t.err = err
	}
	return err
}

type bucket struct {
	t    *tx
	name string
}

// checkName refuses a call in an aborted transaction and a bucket name
// that PostgreSQL's text cannot hold.
func (b bucket) checkName() error {
	if b.t.err != nil {
		return b.t.err
	}
	if b.name == "" || !utf8.ValidString(b.name) || strings.IndexByte(b.name, 0) >= 0 {
		return fmt.Errorf("pgstore: bucket name %q: a bucket's name is non-empty UTF-8 without NUL", b.name)
	}
	return nil
}

// check is checkName and a key out of bounds.
func (b bucket) check(key []byte) error {
	if err := b.checkName(); err != nil {
		return err
	}
	return store.CheckKey(key)
}

func (b bucket) Get(key []byte) ([]byte, error) {
	if err := b.check(key); err != nil {
		return nil, err
	}
	var v []byte
	found := false
	err := b.t.query("get", "SELECT value FROM kv WHERE bucket = $1 AND key_hash = sha256($2::bytea) AND key = $2",
		[]any{b.name, key}, func(r pgx.Rows) error { found = true; return r.Scan(&v) })
	if err != nil || !found {
		return nil, err
	}
	if v == nil {
		v = []byte{}
	}
	return v, nil
}

func (b bucket) Put(key, value []byte) error {
	if !b.t.writable {
		return store.ErrReadOnly
	}
	if err := b.check(key); err != nil {
		return err
	}
	if value == nil {
		value = []byte{} // nil would be NULL
	}
	return b.t.query("put", "INSERT INTO kv (bucket, key, value) VALUES ($1, $2, $3) "+
		"ON CONFLICT (bucket, key_hash) DO UPDATE SET value = excluded.value", []any{b.name, key, value}, nil)
}

func (b bucket) Delete(key []byte) error {
	if !b.t.writable {
		return store.ErrReadOnly
	}
	if err := b.check(key); err != nil {
		return err
	}
	return b.t.query("delete", "DELETE FROM kv WHERE bucket = $1 AND key_hash = sha256($2::bytea) AND key = $2", []any{b.name, key}, nil)
}

// Take reads and deletes key in one statement, outside any transaction
// (READ COMMITTED): of the DELETEs of one row racing, one returns it, the
// others wait for it and then find nothing. No predicate locks are taken,
// so it never makes a SERIALIZABLE transaction conflict.
func (db *DB) Take(bucket string, key []byte) ([]byte, error) {
	if err := checkBucketKey(bucket, key); err != nil {
		return nil, err
	}
	db.takes.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), db.cfg.StatementTimeout)
	defer cancel()
	var v []byte
	err := db.pool.QueryRow(ctx, "DELETE FROM kv WHERE bucket = $1 AND key_hash = sha256($2::bytea) AND key = $2 RETURNING value",
		bucket, key).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, nil
	case err != nil:
		return nil, db.fail("take", err)
	case v == nil:
		v = []byte{}
	}
	return v, nil
}

// checkBucketKey is what the statements outside a transaction (Take,
// Get) check of their bucket and key, as a bucket's methods do.
func checkBucketKey(bucket string, key []byte) error {
	if err := store.CheckKey(key); err != nil {
		return err
	}
	if bucket == "" || !utf8.ValidString(bucket) || strings.IndexByte(bucket, 0) >= 0 {
		return fmt.Errorf("pgstore: bucket name %q: a bucket's name is non-empty UTF-8 without NUL", bucket)
	}
	return nil
}

// Get reads key in one statement outside any transaction: one round trip
// where a View takes two. A statement that fails on a pooled connection
// found broken (a server restarted since) is sent once more: it changes
// nothing.
func (db *DB) Get(bucket string, key []byte) ([]byte, error) {
	if err := checkBucketKey(bucket, key); err != nil {
		return nil, err
	}
	db.gets.Add(1)
	for attempt := 1; ; attempt++ {
		v, lost, err := db.get(bucket, key)
		if !lost || attempt == 2 {
			return v, err
		}
	}
}

func (db *DB) get(bucket string, key []byte) (v []byte, lost bool, err error) {
	c, err := db.acquire(context.Background())
	if err != nil {
		return nil, false, err
	}
	defer c.Release()
	ctx, cancel := context.WithTimeout(context.Background(), db.cfg.StatementTimeout)
	defer cancel()
	err = c.QueryRow(ctx, "SELECT value FROM kv WHERE bucket = $1 AND key_hash = sha256($2::bytea) AND key = $2",
		bucket, key).Scan(&v)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, c.Conn().IsClosed(), db.fail("get", err)
	case v == nil:
		v = []byte{}
	}
	return v, false, nil
}

// page is how many rows ForEach reads at a time: fn runs between pages,
// free to use the transaction (a connection runs one query at a time), and
// a large bucket is never all in memory.
const page = 256

// ForEach reads the keys of prefix a page at a time, each page after the
// last key of the one before (the transaction's snapshot does not move).
func (b bucket) ForEach(prefix []byte, fn func(k, v []byte) error) error {
	if err := b.checkName(); err != nil {
		return err
	}
	if prefix == nil {
		prefix = []byte{}
	}
	end := successor(prefix) // nil: no upper bound
	from, op := prefix, ">="
	type kv struct{ k, v []byte }
	rows := make([]kv, 0, page)
	for {
		q := "SELECT key, value FROM kv WHERE bucket = $1 AND key_head >= substring($2::bytea FROM 1 FOR 1024) AND key " + op + " $2"
		args := []any{b.name, from}
		if end != nil {
			q += " AND key_head <= substring($3::bytea FROM 1 FOR 1024) AND key < $3"
			args = append(args, end)
		}
		q += " ORDER BY key_head, key LIMIT " + strconv.Itoa(page)
		rows = rows[:0]
		err := b.t.query("list", q, args, func(r pgx.Rows) error {
			var e kv
			if err := r.Scan(&e.k, &e.v); err != nil {
				return err
			}
			if e.v == nil {
				e.v = []byte{}
			}
			rows = append(rows, e)
			return nil
		})
		if err != nil {
			return err
		}
		for _, e := range rows {
			if err := fn(e.k, e.v); err != nil {
				return err
			}
		}
		if len(rows) < page {
			return nil
		}
		from, op = rows[len(rows)-1].k, ">"
	}
}

// successor is the least key greater than every key with prefix p, nil
// when there is none (p is empty or all 0xff).
func successor(p []byte) []byte {
	s := append([]byte(nil), p...)
	for len(s) > 0 && s[len(s)-1] == 0xff {
		s = s[:len(s)-1]
	}
	if len(s) == 0 {
		return nil
	}
	s[len(s)-1]++
	return s
}
