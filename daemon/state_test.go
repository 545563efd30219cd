package daemon

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/sshca"
)

func pgStoreConfig(t *testing.T, dsn, ca string) *config.Config {
	t.Helper()
	p := filepath.Join(t.TempDir(), "db.dsn")
	if err := os.WriteFile(p, []byte(dsn), 0o600); err != nil {
		t.Fatal(err)
	}
	return &config.Config{StateDir: t.TempDir(), Store: config.Store{Backend: config.StorePostgres, Postgres: &config.Postgres{
		DSNFile: p, CAFile: ca, MaxConns: 4, StatementTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second}}}
}

// TestDatabaseEgress: the egress chain lets the daemon reach every server
// the DSN names, IPv4 and IPv6 addresses as they are, names resolved, and
// a unix socket needs nothing.
func TestDatabaseEgress(t *testing.T) {
	cfg := pgStoreConfig(t, "host=192.0.2.5,2001:db8::5,localhost,/run/postgresql port=5432,6432,5433,5432 user=b dbname=b sslmode=verify-full", "")
	got := databaseEgress(cfg, zap.NewNop())
	for _, want := range []string{"192.0.2.5:5432", "[2001:db8::5]:6432", "127.0.0.1:5433"} {
		if !slices.Contains(got, netip.MustParseAddrPort(want)) {
			t.Errorf("egress to the database %v lacks %s", got, want)
		}
	}
	for _, ap := range got {
		if ap.Port() == 5432 && ap.Addr() != netip.MustParseAddr("192.0.2.5") {
			t.Errorf("egress to %s: the unix socket needs none", ap)
		}
	}
	facts := egressFacts{Database: got}
	if in := policyInput(labPolicyConfig(t, nil), labPolicyVNet, facts); !slices.Equal(in.Egress.Database, got) {
		t.Errorf("policy input's database egress %v, want %v", in.Egress.Database, got)
	}
	bbolt := &config.Config{Store: config.Store{Backend: config.StoreBBolt}}
	if got := databaseEgress(bbolt, zap.NewNop()); got != nil {
		t.Errorf("bbolt needs no egress: %v", got)
	}
}

// TestStatePostgres is the daemon's side of the PostgreSQL store: what
// -check-config says (changing nothing), an upgrade's Release and Reopen
// that do nothing (both processes hold the database at once), and the
// errors that keep the daemon from starting.
func TestStatePostgres(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			cfg := pgStoreConfig(t, s.DSN(host, name), s.CAFile)
			line, err := checkStore(cfg)
			if err != nil || !strings.Contains(line, "start-up creates schema version 2") && !strings.Contains(line, "writable, schema version 2") {
				t.Fatalf("check: %q, %v", line, err)
			}
			old, err := openStore(cfg, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			if _, ok := old.(*statedb.Handle); ok {
				t.Fatal("backend: postgres opened bbolt")
			}
			if line, err := checkStore(cfg); err != nil || !strings.Contains(line, "writable, schema version 2") {
				t.Fatalf("check after start: %q, %v", line, err)
			}
			// An upgrade: the old process releases, the new one opens;
			// both work.
			if err := old.Release(); err != nil {
				t.Fatal(err)
			}
			succ, err := openStore(cfg, zap.NewNop())
			if err != nil {
				t.Fatalf("the new process opens the database the old one holds: %v", err)
			}
			defer succ.Close()
			for _, db := range []stateStore{old, succ} {
				if err := db.Update(func(tx store.Tx) error { return tx.Bucket("b").Put([]byte(host), []byte("v")) }); err != nil {
					t.Fatalf("write after Release: %v", err)
				}
			}
			if err := old.Reopen(); err != nil {
				t.Fatal(err)
			}
		})
	}

	readOnly := s.NewDatabase(t)
	s.Exec(t, "postgres", "ALTER DATABASE "+readOnly+" SET default_transaction_read_only = on")
	newer := s.NewDatabase(t)
	cfg := pgStoreConfig(t, s.DSN("127.0.0.1", newer), s.CAFile)
	db, err := openStore(cfg, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	s.Exec(t, newer, "INSERT INTO schema_migrations (version, name) VALUES (99, '0099_future')")
	for _, tc := range []struct{ name, dsn, ca, want string }{
		{"read-only", s.DSN("::1", readOnly), s.CAFile, "store.postgres: state store unavailable: pgstore: bastiond@[::1]"},
		{"newer schema", s.DSN("127.0.0.1", newer), s.CAFile, "store.postgres: database schema version 99 is newer than this bastiond (2): upgrade bastiond"},
		{"wrong password", strings.Replace(s.DSN("::1", name), s.Password, "nope", 1), s.CAFile, "check the user and password"},
		{"no TLS", strings.Replace(s.DSN("127.0.0.1", name), "verify-full", "require", 1), s.CAFile, "add sslmode=verify-full"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := pgStoreConfig(t, tc.dsn, tc.ca)
			if _, err := checkStore(cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("check: %v, want %q", err, tc.want)
			}
			db, _, err := openState(cfg, zap.NewNop(), nil)
			if err == nil {
				db.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("start: %v, want %q", err, tc.want)
			}
		})
	}
	if _, err := checkStore(pgStoreConfig(t, s.DSN("127.0.0.1", readOnly), s.CAFile)); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("a read-only database: %v", err)
	}
}

// TestStatePostgresTwoInstances: the daemon's accounts on PostgreSQL are
// the cluster's: an account added on one instance signs in on the other,
// and a wrong password is refused there too.
func TestStatePostgresTwoInstances(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	sink := audit.SinkFunc(func(audit.Event) {})
	dbA, a, err := openState(pgStoreConfig(t, s.DSN("127.0.0.1", name), s.CAFile), zap.NewNop(), sink)
	if err != nil {
		t.Fatal(err)
	}
	defer dbA.Close()
	dbB, b, err := openState(pgStoreConfig(t, s.DSN("::1", name), s.CAFile), zap.NewNop(), sink)
	if err != nil {
		t.Fatal(err)
	}
	defer dbB.Close()
	if err := a.Store().AddUser("alice", "correct horse battery", []string{"ops"}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if u, err := b.Login(ctx, "alice", "correct horse battery", "", netip.MustParseAddr("2001:db8::1")); err != nil || u.Name != "alice" {
		t.Fatalf("sign-in on B of an account added on A: %+v, %v", u, err)
	}
	if _, err := b.Login(ctx, "alice", "wrong", "", netip.MustParseAddr("192.0.2.1")); err == nil {
		t.Fatal("a wrong password signed in on B")
	}
	if err := b.Store().DeleteUser("alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Store().User("alice"); err == nil {
		t.Fatal("an account deleted on B is still there on A")
	}
}

// TestStoreNeedsRestart: a reload cannot move the state store; it says so.
func TestStoreNeedsRestart(t *testing.T) {
	a := &config.Config{Store: config.Store{Backend: config.StoreBBolt}}
	b := pgStoreConfig(t, "host=/run/postgresql", "")
	c := pgStoreConfig(t, "host=/run/postgresql", "")
	c.Store.Postgres.DSNFile = b.Store.Postgres.DSNFile
	c.StateDir = b.StateDir
	if keys := restartOnly(a, b); !slices.Contains(keys, "store") {
		t.Errorf("bbolt to postgres: restart-only keys %v lack store", keys)
	}
	if keys := restartOnly(b, c); slices.Contains(keys, "store") {
		t.Errorf("the same store: restart-only keys %v", keys)
	}
	c.Store.Postgres.MaxConns = 20
	if keys := restartOnly(b, c); !slices.Contains(keys, "store") {
		t.Errorf("another max_conns: restart-only keys %v lack store", keys)
	}
}

// TestClusterSSHTrust: instances on one database share one SSH CA, sealed
// there with the seal_key file; the first brings its own CA key along; an
// instance with another seal key is refused; and the machines' exported
// guard admits the bastion subnets, where every instance lives.
func TestClusterSSHTrust(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	sink := audit.SinkFunc(func(audit.Event) {})
	keyFile := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(keyFile, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	instance := func(host string) (*config.Config, store.DB) {
		cfg := pgStoreConfig(t, s.DSN(host, name), s.CAFile)
		cfg.Store.Postgres.SealKey = keyFile
		cfg.Listen.ServerName = "bastion.lab.example"
		db, _, err := openState(cfg, zap.NewNop(), sink)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return cfg, db
	}
	cfgA, dbA := instance("127.0.0.1")
	// A had been a single host: its own CA is the cluster's.
	single, err := sshca.Open(sshca.Config{Dir: cfgA.StateDir, ServerName: "bastion.lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	_, caA, err := openSSHTrust(cfgA, dbA, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	cfgB, dbB := instance("::1")
	_, caB, err := openSSHTrust(cfgB, dbB, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if caA.PublicKey() != single.PublicKey() || caB.PublicKey() != single.PublicKey() {
		t.Errorf("the instances' CAs %q and %q, want the first one's own %q", caA.PublicKey(), caB.PublicKey(), single.PublicKey())
	}
	other := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(other, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgB.Store.Postgres.SealKey = other
	if _, _, err := openSSHTrust(cfgB, dbB, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "every instance needs the same key file") {
		t.Errorf("an instance with another seal key: %v", err)
	}
	cfgB.Store.Postgres.SealKey = filepath.Join(t.TempDir(), "missing")
	if _, _, err := openSSHTrust(cfgB, dbB, zap.NewNop()); err == nil || !strings.Contains(err.Error(), "store.postgres.seal_key") {
		t.Errorf("a missing seal key: %v", err)
	}

	cfgA.Bastion.Subnets = []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:b5::/64")}
	from, err := guardSources(cfgA, dbA)
	if err != nil || !slices.Equal(from, cfgA.Bastion.Subnets) {
		t.Errorf("a cluster's exported guard admits %v (%v), want the bastion subnets %v", from, err, cfgA.Bastion.Subnets)
	}
}
