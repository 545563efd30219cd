package pgstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/storetest"
)

// hosts are the server's addresses every network test runs on.
var hosts = []string{"127.0.0.1", "::1"}

// dsnFile writes dsn to a file only its owner reads.
func dsnFile(t testing.TB, dsn string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dsn")
	if err := os.WriteFile(p, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// open opens db on s over host, closed at the end of t.
func open(t testing.TB, s *pgtest.Server, host, db string) *DB {
	t.Helper()
	h, err := Open(context.Background(), Config{DSNFile: dsnFile(t, s.DSN(host, db)), CAFile: s.CAFile})
	if err != nil {
		t.Fatalf("open %s on %s: %v", db, host, err)
	}
	t.Cleanup(func() { h.Close() })
	return h
}

// TestStore is the store interface's conformance test on PostgreSQL, over
// IPv4 and IPv6, each test on a fresh database.
func TestStore(t *testing.T) {
	s := pgtest.Start(t)
	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T) store.DB { return open(t, s, host, s.NewDatabase(t)) })
		})
	}
}

func TestSuccessor(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "<nil>"}, {"a", "b"}, {"a\xff", "b"}, {"\xff\xff", "<nil>"}, {"ab\x00", "ab\x01"}, {"a\xfe\xff", "a\xff"},
	} {
		got := "<nil>"
		if s := successor([]byte(tc.in)); s != nil {
			got = string(s)
		}
		if got != tc.want {
			t.Errorf("successor(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestLongKeysAndPages checks what the conformance test does not reach:
// keys longer than a btree entry (random, so incompressible), keys that
// differ only after the first 1024 bytes (the ordering index's prefix),
// and ForEach over more keys than a page, with fn using the transaction
// between rows.
func TestLongKeysAndPages(t *testing.T) {
	s := pgtest.Start(t)
	db := open(t, s, "127.0.0.1", s.NewDatabase(t))
	head := make([]byte, 1500)
	rand.Read(head)
	var want []string
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("long")
		for i := range 600 {
			k := append(bytes.Clone(head), fmt.Sprintf("%04d", i)...)
			if i%3 == 0 {
				k = make([]byte, store.MaxKey)
				rand.Read(k)
				k[0] = head[0]
				if bytes.HasPrefix(k, head) {
					k[1]++ // keep it out of the prefix below
				}
			}
			want = append(want, string(k))
			if err := b.Put(k, []byte{byte(i)}); err != nil {
				return fmt.Errorf("put key %d (%d bytes): %w", i, len(k), err)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(want)
	var got []string
	var prefixed int
	err = db.View(func(tx store.Tx) error {
		b := tx.Bucket("long")
		if err := b.ForEach(nil, func(k, v []byte) error {
			got = append(got, string(k))
			// The transaction is usable inside fn.
			if w, err := b.Get(k); err != nil || !bytes.Equal(w, v) {
				return fmt.Errorf("Get inside ForEach: %v, %v", w, err)
			}
			return nil
		}); err != nil {
			return err
		}
		return b.ForEach(head, func(k, v []byte) error { prefixed++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("ForEach saw %d keys, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("key %d out of bytewise order", i)
		}
	}
	if prefixed != 400 {
		t.Fatalf("ForEach with a 1500-byte prefix saw %d keys, want 400", prefixed)
	}
}

// TestJSONView: the DBAs' view shows keys as text and JSON values as JSON.
func TestJSONView(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	db := open(t, s, "::1", name)
	err := db.Update(func(tx store.Tx) error {
		b := tx.Bucket("users")
		return errors.Join(b.Put([]byte("alice"), []byte(`{"roles":["ops"]}`)), b.Put([]byte("\xff\x00"), []byte("not json")))
	})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	rows, err := s.Admin(t, name).Query(context.Background(), "SELECT key, coalesce(value->>'roles', '-') FROM kv_json WHERE bucket = 'users' ORDER BY key")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out = append(out, k+"="+v)
	}
	rows.Close()
	if got := strings.Join(out, " "); got != `\xff00=- alice=["ops"]` {
		t.Fatalf("kv_json: %s", got)
	}
}

// TestBucketName refuses a name PostgreSQL's text cannot hold.
func TestBucketName(t *testing.T) {
	s := pgtest.Start(t)
	db := open(t, s, "::1", s.NewDatabase(t))
	for _, name := range []string{"", "a\x00b", "\xff"} {
		err := db.Update(func(tx store.Tx) error { return tx.Bucket(name).Put([]byte("k"), nil) })
		if err == nil || !strings.Contains(err.Error(), "bucket name") {
			t.Errorf("bucket %q: %v", name, err)
		}
	}
}

// TestTwoInstances is two bastiond instances on one database: each sees
// what the other wrote, and a ticket both try to redeem at once goes to
// exactly one of them.
func TestTwoInstances(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	a, b := open(t, s, "127.0.0.1", name), open(t, s, "::1", name)
	put := func(db *DB, k, v string) {
		t.Helper()
		if err := db.Update(func(tx store.Tx) error { return tx.Bucket("users").Put([]byte(k), []byte(v)) }); err != nil {
			t.Fatal(err)
		}
	}
	get := func(db *DB, k string) string {
		t.Helper()
		var v []byte
		if err := db.View(func(tx store.Tx) error {
			var err error
			v, err = tx.Bucket("users").Get([]byte(k))
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return string(v)
	}
	put(a, "alice", "from a")
	if v := get(b, "alice"); v != "from a" {
		t.Fatalf("b reads %q", v)
	}
	put(b, "alice", "from b")
	if v := get(a, "alice"); v != "from b" {
		t.Fatalf("a reads %q", v)
	}

	const rounds, racers = 30, 4 // racers per instance
	for r := range rounds {
		key := []byte(fmt.Sprintf("ticket-%d", r))
		if err := a.Update(func(tx store.Tx) error { return tx.Bucket("tickets").Put(key, []byte("valid")) }); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		won := map[string]int{}
		var wg sync.WaitGroup
		for i := range 2 * racers {
			db, who := a, "a"
			if i%2 == 1 {
				db, who = b, "b"
			}
			wg.Go(func() {
				var got bool
				err := db.Update(func(tx store.Tx) error {
					got = false
					bk := tx.Bucket("tickets")
					v, err := bk.Get(key)
					if err != nil || v == nil {
						return err
					}
					got = true
					return bk.Delete(key)
				})
				if err != nil {
					t.Errorf("redeem on %s: %v", who, err)
					return
				}
				if got {
					mu.Lock()
					won[who]++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if won["a"]+won["b"] != 1 {
			t.Fatalf("round %d: the ticket was redeemed %d times on a and %d on b, want once in all", r, won["a"], won["b"])
		}
	}
}

// schemaState is what the migration tests compare: the recorded versions
// and the tables of the database.
func schemaState(t *testing.T, s *pgtest.Server, db string) string {
	t.Helper()
	c := s.Admin(t, db)
	ctx := context.Background()
	var out []string
	rows, err := c.Query(ctx, "SELECT replace(lower(table_type), 'base ', '') || ' ' || table_name FROM information_schema.tables "+
		"WHERE table_schema = 'public' ORDER BY table_name")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var n string
		rows.Scan(&n)
		out = append(out, n)
	}
	rows.Close()
	rows, err = c.Query(ctx, "SELECT version, name FROM schema_migrations ORDER BY 1")
	if err != nil {
		return strings.Join(out, "; ")
	}
	for rows.Next() {
		var v int
		var n string
		rows.Scan(&v, &n)
		out = append(out, fmt.Sprintf("version %d %s", v, n))
	}
	rows.Close()
	return strings.Join(out, "; ")
}

func TestMigrations(t *testing.T) {
	s := pgtest.Start(t)
	want := "table audit_events; view audit_events_json; table kv; view kv_json; table schema_migrations; version 1 0001_kv; version 2 0002_audit"
	if SchemaVersion() != 2 {
		t.Fatalf("SchemaVersion %d: update this test's expectations with the new migration", SchemaVersion())
	}

	t.Run("fresh then again", func(t *testing.T) {
		name := s.NewDatabase(t)
		check := func(want int) {
			t.Helper()
			cfg := Config{DSNFile: dsnFile(t, s.DSN("::1", name)), CAFile: s.CAFile}
			if v, err := Check(context.Background(), cfg); err != nil || v != want {
				t.Fatalf("Check: version %d, %v; want %d", v, err, want)
			}
		}
		check(0)
		if got := schemaState(t, s, name); got != "" {
			t.Fatalf("Check changed the database: %s", got)
		}
		open(t, s, "127.0.0.1", name).Close()
		check(2)
		if got := schemaState(t, s, name); got != want {
			t.Fatalf("after the first open: %s, want %s", got, want)
		}
		open(t, s, "::1", name).Close()
		if got := schemaState(t, s, name); got != want {
			t.Fatalf("after the second open: %s, want %s", got, want)
		}
	})

	t.Run("concurrent opens", func(t *testing.T) {
		name := s.NewDatabase(t)
		const n = 6
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			wg.Go(func() {
				h, err := Open(context.Background(), Config{DSNFile: dsnFile(t, s.DSN(hosts[i%2], name)), CAFile: s.CAFile})
				if err != nil {
					errs <- err
					return
				}
				h.Close()
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("an instance starting at the same time as others: %v", err)
		}
		if got := schemaState(t, s, name); got != want {
			t.Fatalf("after %d concurrent opens: %s, want %s", n, got, want)
		}
	})

	t.Run("waits for the migration lock", func(t *testing.T) {
		name := s.NewDatabase(t)
		holder := s.Admin(t, name)
		ctx := context.Background()
		if _, err := holder.Exec(ctx, "SELECT pg_advisory_lock($1)", migrationLock); err != nil {
			t.Fatal(err)
		}
		// Another instance is migrating: this one waits for it, up to
		// its MigrateTimeout, and says what it waited for.
		_, err := Open(ctx, Config{DSNFile: dsnFile(t, s.DSN("127.0.0.1", name)), CAFile: s.CAFile, MigrateTimeout: 500 * time.Millisecond})
		if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "wait for another bastiond's schema migration") {
			t.Fatalf("open while another holds the migration lock: %v", err)
		}
		if got := schemaState(t, s, name); got != "" {
			t.Fatalf("the open that gave up left %q", got)
		}
		if _, err := holder.Exec(ctx, "SELECT pg_advisory_unlock($1)", migrationLock); err != nil {
			t.Fatal(err)
		}
		open(t, s, "127.0.0.1", name)
		if got := schemaState(t, s, name); got != want {
			t.Fatalf("after the lock was let go: %s", got)
		}
	})

	t.Run("newer schema refused untouched", func(t *testing.T) {
		name := s.NewDatabase(t)
		h := open(t, s, "127.0.0.1", name)
		if err := h.Update(func(tx store.Tx) error { return tx.Bucket("users").Put([]byte("alice"), []byte("x")) }); err != nil {
			t.Fatal(err)
		}
		h.Close()
		s.Exec(t, name, "INSERT INTO schema_migrations (version, name) VALUES (7, '0007_future')")
		s.Exec(t, name, "CREATE TABLE future (a int)")
		before := schemaState(t, s, name)
		for _, host := range hosts {
			_, err := Open(context.Background(), Config{DSNFile: dsnFile(t, s.DSN(host, name)), CAFile: s.CAFile})
			var newer *NewerSchemaError
			if !errors.As(err, &newer) || err.Error() != "database schema version 7 is newer than this bastiond (2): upgrade bastiond" {
				t.Fatalf("open of a newer schema: %v", err)
			}
			if errors.Is(err, store.ErrUnavailable) {
				t.Fatal("a newer schema is not a database that is down")
			}
		}
		if _, err := Check(context.Background(), Config{DSNFile: dsnFile(t, s.DSN("::1", name)), CAFile: s.CAFile}); err == nil ||
			err.Error() != "database schema version 7 is newer than this bastiond (2): upgrade bastiond" {
			t.Fatalf("Check of a newer schema: %v", err)
		}
		if after := schemaState(t, s, name); after != before {
			t.Fatalf("the refused open changed the schema: %s, was %s", after, before)
		}
	})
}

// TestBadInput is each way the configuration can be wrong: a clear error,
// before or at connecting, and nothing written.
func TestBadInput(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	_, _, otherCA := pgtest.NewCA(t, "another CA")
	otherCAFile := filepath.Join(t.TempDir(), "other.crt")
	os.WriteFile(otherCAFile, otherCA, 0o644)
	closed := pgtest.FreePort(t)
	readOnly := s.NewDatabase(t)
	s.Exec(t, "postgres", "ALTER DATABASE "+readOnly+" SET default_transaction_read_only = on")

	type tc struct {
		name        string
		dsn         string // for host h
		ca          string
		unavailable bool   // the error wraps store.ErrUnavailable
		want        string // in the error
	}
	for _, h := range hosts {
		good := s.DSN(h, name)
		cases := []tc{
			{"wrong password", strings.Replace(good, "password="+s.Password, "password=wrong", 1), s.CAFile, true, "check the user and password"},
			{"unknown user", strings.Replace(good, "user=bastiond", "user=nobody", 1), s.CAFile, true, "pg_hba.conf"},
			{"no such database", strings.Replace(good, "dbname="+name, "dbname=nothere", 1), s.CAFile, true, "create the database"},
			{"unreachable port", strings.Replace(good, fmt.Sprintf("port=%d", s.Port), fmt.Sprintf("port=%d", closed), 1), s.CAFile, true, "connection refused"},
			{"CA mismatch", good, otherCAFile, true, "not signed by a CA of ca_file"},
			{"read-only database", s.DSN(h, readOnly), s.CAFile, true, "read-only (default_transaction_read_only is on)"},
			{"sslmode disable", strings.Replace(good, "verify-full", "disable", 1), s.CAFile, false, "add sslmode=verify-full"},
			{"sslmode prefer", strings.Replace(good, "verify-full", "prefer", 1), s.CAFile, false, "add sslmode=verify-full"},
			{"sslmode require", strings.Replace(good, "verify-full", "require", 1), s.CAFile, false, "add sslmode=verify-full"},
			{"sslmode verify-ca", strings.Replace(good, "verify-full", "verify-ca", 1), s.CAFile, false, "add sslmode=verify-full"},
			{"no sslmode", strings.Replace(good, "sslmode=verify-full", "", 1), s.CAFile, false, "add sslmode=verify-full"},
			{"not a DSN", "host=" + h + " port=notaport password=" + s.Password, s.CAFile, false, "not a PostgreSQL connection string (keyword=value pairs or a postgres:// URL; not shown here: it holds a password): invalid port"},
			{"not a URL", "postgres://bastiond:" + s.Password + "@[" + h + "/x", s.CAFile, false, "not a PostgreSQL connection string (keyword=value pairs or a postgres:// URL; not shown here: it holds a password): "},
			{"unterminated quote", good + " password='" + s.Password, s.CAFile, false, "unterminated quoted string"},
		}
		for _, c := range cases {
			t.Run(h+"/"+c.name, func(t *testing.T) {
				db, err := Open(context.Background(), Config{DSNFile: dsnFile(t, c.dsn), CAFile: c.ca, ConnectTimeout: 10 * time.Second})
				if err == nil {
					db.Close()
					t.Fatal("opened")
				}
				if !strings.Contains(err.Error(), c.want) || errors.Is(err, store.ErrUnavailable) != c.unavailable {
					t.Fatalf("error %q (unavailable: %v), want it to say %q (unavailable: %v)", err, errors.Is(err, store.ErrUnavailable), c.want, c.unavailable)
				}
				t.Log(err)
				if strings.Contains(err.Error(), s.Password) {
					t.Fatalf("the error shows the password: %v", err)
				}
				// -check-config says the same.
				_, cerr := Check(context.Background(), Config{DSNFile: dsnFile(t, c.dsn), CAFile: c.ca, ConnectTimeout: 10 * time.Second})
				if cerr == nil || !strings.Contains(cerr.Error(), c.want) || errors.Is(cerr, store.ErrUnavailable) != c.unavailable {
					t.Fatalf("Check: %v", cerr)
				}
			})
		}
	}

	t.Run("hot standby", func(t *testing.T) {
		open(t, s, "127.0.0.1", name).Close() // the schema, for the standby to have it
		standby := s.StartStandby(t)
		for _, h := range hosts {
			cfg := Config{DSNFile: dsnFile(t, standby.DSN(h, name)), CAFile: standby.CAFile}
			_, err := Open(context.Background(), cfg)
			if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "is a hot standby (in recovery), read-only: point the DSN at the primary") {
				t.Fatalf("open of a standby over %s: %v", h, err)
			}
			if _, cerr := Check(context.Background(), cfg); cerr == nil || cerr.Error() != err.Error() {
				t.Fatalf("Check of a standby: %v", cerr)
			}
		}
	})

	t.Run("hostname mismatch", func(t *testing.T) {
		other := pgtest.Start(t, pgtest.Options{CertNames: []string{"db.invalid"}})
		name := other.NewDatabase(t)
		for _, h := range append(hosts, "localhost") {
			_, err := Open(context.Background(), Config{DSNFile: dsnFile(t, other.DSN(h, name)), CAFile: other.CAFile})
			if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "not for the host the DSN names") {
				t.Fatalf("%s: %v", h, err)
			}
		}
	})

	t.Run("dsn file", func(t *testing.T) {
		p := dsnFile(t, s.DSN("127.0.0.1", name))
		os.Chmod(p, 0o644)
		if _, err := Open(context.Background(), Config{DSNFile: p, CAFile: s.CAFile}); err == nil || !strings.Contains(err.Error(), "readable by every user") {
			t.Fatalf("a world-readable DSN file: %v", err)
		}
		empty := dsnFile(t, "")
		if _, err := Open(context.Background(), Config{DSNFile: empty}); err == nil || !strings.Contains(err.Error(), "is empty") {
			t.Fatalf("an empty DSN file: %v", err)
		}
		if _, err := Open(context.Background(), Config{DSNFile: "/nonexistent/dsn"}); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("a missing DSN file: %v", err)
		}
		if _, err := Open(context.Background(), Config{DSNFile: p + ".x", CAFile: "/nonexistent/ca"}); err == nil {
			t.Fatal("missing files opened")
		}
		if _, err := Open(context.Background(), Config{}); err == nil || !strings.Contains(err.Error(), "set dsn_file or credential") {
			t.Fatalf("no DSN: %v", err)
		}
	})

	t.Run("credential", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "bastiond-db"), []byte(s.DSN("::1", name)), 0o400)
		t.Setenv("CREDENTIALS_DIRECTORY", dir)
		db, err := Open(context.Background(), Config{Credential: "bastiond-db", CAFile: s.CAFile})
		if err != nil {
			t.Fatalf("open from a systemd credential: %v", err)
		}
		db.Close()
		t.Setenv("CREDENTIALS_DIRECTORY", "")
		if _, err := Open(context.Background(), Config{Credential: "bastiond-db"}); err == nil || !strings.Contains(err.Error(), "LoadCredential=") {
			t.Fatalf("a credential outside systemd: %v", err)
		}
	})

	t.Run("unix socket", func(t *testing.T) {
		// No network, so no TLS: allowed.
		db, err := Open(context.Background(), Config{DSNFile: dsnFile(t, s.SocketDSN(name))})
		if err != nil {
			t.Fatalf("open over the unix socket: %v", err)
		}
		defer db.Close()
		if err := db.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	})
}

// TestRestart stops the server under a running pool, with writers going:
// while it is down every call fails with ErrUnavailable; once it is back,
// calls work again; and every transaction was all or nothing.
func TestRestart(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			db := open(t, s, host, name)
			bucket := "pairs-" + host
			pair := func(i int) func(store.Tx) error {
				return func(tx store.Tx) error {
					b := tx.Bucket(bucket)
					v := []byte(fmt.Sprint(i))
					if err := b.Put([]byte(fmt.Sprintf("%04d/a", i)), v); err != nil {
						return err
					}
					return b.Put([]byte(fmt.Sprintf("%04d/b", i)), v)
				}
			}
			// Writers go on while the server stops; each writes a pair.
			const writers, each = 4, 40
			ok := make([]bool, writers*each)
			stopped := make(chan struct{})
			var wg sync.WaitGroup
			for w := range writers {
				wg.Go(func() {
					for j := range each {
						i := w*each + j
						if j == each/4 {
							<-stopped // a quarter before the stop, the rest after
						}
						err := db.Update(pair(i))
						if err != nil && !errors.Is(err, store.ErrUnavailable) {
							t.Errorf("write %d: %v, want ErrUnavailable", i, err)
						}
						ok[i] = err == nil
					}
				})
			}
			s.Stop(t)
			close(stopped)
			wg.Wait()
			err := db.View(func(tx store.Tx) error { _, err := tx.Bucket(bucket).Get([]byte("k")); return err })
			if !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("a read while the server is down: %v, want ErrUnavailable", err)
			}
			if err := db.Update(pair(-1)); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("a write while the server is down: %v, want ErrUnavailable", err)
			}
			if err := db.Ping(context.Background()); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Ping while the server is down: %v", err)
			}
			s.Restart(t)
			if err := db.Update(pair(9999)); err != nil {
				t.Fatalf("a write after the server is back: %v", err)
			}
			got := map[string]string{}
			err = db.View(func(tx store.Tx) error {
				return tx.Bucket(bucket).ForEach(nil, func(k, v []byte) error { got[string(k)] = string(v); return nil })
			})
			if err != nil {
				t.Fatalf("a read after the server is back: %v", err)
			}
			for i := range writers * each {
				a, okA := got[fmt.Sprintf("%04d/a", i)]
				b, okB := got[fmt.Sprintf("%04d/b", i)]
				switch {
				case okA != okB || a != b:
					t.Errorf("pair %d half-written: a %q (%v), b %q (%v)", i, a, okA, b, okB)
				case ok[i] && !okA:
					t.Errorf("pair %d: Update returned nil, but nothing is there", i)
				}
			}
		})
	}
}

// TestReadOnlyAtRuntime: a database an operator makes read-only under a
// running pool (default_transaction_read_only, its sessions ended) refuses
// writes with ErrUnavailable, saying why, and still serves reads: Update
// does not override the setting with READ WRITE.
func TestReadOnlyAtRuntime(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	for _, host := range hosts {
		t.Run(host, func(t *testing.T) {
			db := open(t, s, host, name)
			put := func(v string) error {
				return db.Update(func(tx store.Tx) error { return tx.Bucket("b").Put([]byte(host), []byte(v)) })
			}
			if err := put("before"); err != nil {
				t.Fatal(err)
			}
			s.Exec(t, "postgres", "ALTER DATABASE "+name+" SET default_transaction_read_only = on")
			defer s.Exec(t, "postgres", "ALTER DATABASE "+name+" RESET default_transaction_read_only")
			// The pool's connections were made before: end them, as a
			// failover or a restart would.
			s.Exec(t, "postgres", "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", name)
			err := put("after")
			if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "read-only") {
				t.Fatalf("a write to a read-only database: %v", err)
			}
			var v []byte
			if err := db.View(func(tx store.Tx) error { var err error; v, err = tx.Bucket("b").Get([]byte(host)); return err }); err != nil {
				t.Fatalf("a read of a read-only database: %v", err)
			}
			if string(v) != "before" {
				t.Fatalf("reads %q, want the value before it was made read-only", v)
			}
			if err := db.Ping(context.Background()); !errors.Is(err, store.ErrUnavailable) {
				t.Fatalf("Ping of a read-only database: %v", err)
			}
		})
	}
}

// TestURLForm: a postgres:// URL works as well as keyword=value pairs, on
// IPv4 and IPv6, with the CA from ca_file alone; and the URL's sslmode is
// held to verify-full too.
func TestURLForm(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	for _, host := range []string{"127.0.0.1", "[::1]", "localhost"} {
		t.Run(host, func(t *testing.T) {
			url := fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=verify-full", pgtest.User, s.Password, host, s.Port, name)
			db, err := Open(context.Background(), Config{DSNFile: dsnFile(t, url), CAFile: s.CAFile})
			if err != nil {
				t.Fatalf("open %s: %v", strings.Replace(url, s.Password, "…", 1), err)
			}
			if err := db.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = Open(context.Background(), Config{DSNFile: dsnFile(t, strings.TrimSuffix(url, "?sslmode=verify-full")), CAFile: s.CAFile})
			if err == nil || !strings.Contains(err.Error(), "add sslmode=verify-full") {
				t.Fatalf("a URL without sslmode: %v", err)
			}
		})
	}
}

// FuzzPrefixRange: the range ForEach asks PostgreSQL for, from p up to
// successor(p), holds exactly the keys with prefix p; and ordering by a
// key's first 1024 bytes, then the key, is ordering by the key.
func FuzzPrefixRange(f *testing.F) {
	for _, seed := range [][2]string{{"", "a"}, {"vm1/", "vm1/ssh"}, {"\xff\xff", "\xff\xff\x00"}, {"a\xff", "b"}, {"ab", "a"}, {"\x00", "\x00\xff"}} {
		f.Add([]byte(seed[0]), []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, p, k []byte) {
		end := successor(p)
		in := bytes.Compare(k, p) >= 0 && (end == nil || bytes.Compare(k, end) < 0)
		if in != bytes.HasPrefix(k, p) {
			t.Fatalf("prefix %x, key %x: in the range [p, %x) is %v, has the prefix is %v", p, k, end, in, !in)
		}
		head := func(b []byte) []byte { return b[:min(len(b), 1024)] }
		byHead := bytes.Compare(head(p), head(k))
		if byHead == 0 {
			byHead = bytes.Compare(p, k)
		}
		if byHead != bytes.Compare(p, k) {
			t.Fatalf("%x and %x order one way by head then key, the other by key", p, k)
		}
	})
}

// TestWriteSkew is what SERIALIZABLE gives over a snapshot: two on-call
// doctors each go off call if the other is still on; each transaction reads
// both, then (the two interleaved: both read before either writes) takes
// only its own off. Under REPEATABLE READ both would commit and nobody
// would be on call; under SERIALIZABLE one is rolled back, runs again,
// sees the other gone, and stays.
func TestWriteSkew(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	a, b := open(t, s, "127.0.0.1", name), open(t, s, "::1", name)
	for r := range 5 {
		bucket := fmt.Sprintf("oncall-%d", r)
		if err := a.Update(func(tx store.Tx) error {
			return errors.Join(tx.Bucket(bucket).Put([]byte("x"), []byte("on")), tx.Bucket(bucket).Put([]byte("y"), []byte("on")))
		}); err != nil {
			t.Fatal(err)
		}
		var read sync.WaitGroup
		read.Add(2)
		var wg sync.WaitGroup
		for i, db := range []*DB{a, b} {
			me := []byte{"xy"[i]}
			first := true
			wg.Go(func() {
				err := db.Update(func(tx store.Tx) error {
					bk := tx.Bucket(bucket)
					x, err := bk.Get([]byte("x"))
					if err != nil {
						return err
					}
					y, err := bk.Get([]byte("y"))
					if err != nil {
						return err
					}
					if first { // interleave the first runs only
						first = false
						read.Done()
						read.Wait()
					}
					if string(x) == "on" && string(y) == "on" {
						return bk.Put(me, []byte("off"))
					}
					return nil
				})
				if err != nil {
					t.Errorf("doctor %s: %v", me, err)
				}
			})
		}
		wg.Wait()
		if got := fmt.Sprint(getAll(t, a, bucket)); got != "[x=off y=on]" && got != "[x=on y=off]" {
			t.Fatalf("round %d: %s, want exactly one doctor off call", r, got)
		}
	}
}

func getAll(t *testing.T, db *DB, bucket string) []string {
	t.Helper()
	var out []string
	if err := db.View(func(tx store.Tx) error {
		return tx.Bucket(bucket).ForEach(nil, func(k, v []byte) error { out = append(out, string(k)+"="+string(v)); return nil })
	}); err != nil {
		t.Fatal(err)
	}
	return out
}
