package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore"
)

// stateStore is the state store with what an upgrade does to it: bbolt's
// file is let go of by the old process for the new one to open, and taken
// back if the new one fails; a database takes both processes at once, so
// for it Release and Reopen do nothing.
type stateStore interface {
	store.DB
	Release() error
	Reopen() error
	Close() error
}

var (
	_ stateStore = (*statedb.Handle)(nil)
	_ stateStore = pgState{}
)

// pgState is the PostgreSQL store as a stateStore.
type pgState struct{ *pgstore.DB }

func (pgState) Release() error { return nil }
func (pgState) Reopen() error  { return nil }

// pgConfig is the pgstore configuration of store.postgres.
func pgConfig(p *config.Postgres) pgstore.Config {
	return pgstore.Config{DSNFile: p.DSNFile, Credential: p.Credential, CAFile: p.CAFile, MaxConns: int32(p.MaxConns),
		StatementTimeout: p.StatementTimeout, ConnectTimeout: p.ConnectTimeout}
}

// openStore opens the store of cfg: state_dir/state.db, which only one
// daemon may hold (a second one waits a moment, then fails with a clear
// error), or the PostgreSQL database, brought up to this binary's schema.
func openStore(cfg *config.Config, log *zap.Logger) (stateStore, error) {
	if cfg.Store.Backend == config.StorePostgres {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		db, err := pgstore.Open(ctx, pgConfig(cfg.Store.Postgres))
		if err != nil {
			return nil, fmt.Errorf("store.postgres: %w", err)
		}
		log.Info("state store: PostgreSQL", zap.Int("schema_version", pgstore.SchemaVersion()))
		return pgState{db}, nil
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state_dir: %w", err)
	}
	return statedb.Open(filepath.Join(cfg.StateDir, "state.db"))
}

// checkStore is -check-config's look at the store: for PostgreSQL, it
// connects and checks what start-up would (TLS, password, the server's
// version, a writable database, a schema no newer than this binary's),
// changing nothing. It returns a line for the operator.
func checkStore(cfg *config.Config) (string, error) {
	if cfg.Store.Backend != config.StorePostgres {
		return "", nil
	}
	// The seal key is read first: it needs no network.
	var sealed string
	if k := cfg.Store.Postgres.SealKey; k != "" {
		key, err := seal.Load(k)
		if err != nil {
			return "", fmt.Errorf("store.postgres.seal_key: %w", err)
		}
		sealed = "; seal key " + key.ID()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := pgstore.Check(ctx, pgConfig(cfg.Store.Postgres))
	if err != nil {
		return "", fmt.Errorf("store.postgres: %w", err)
	}
	switch latest := pgstore.SchemaVersion(); v {
	case latest:
		return fmt.Sprintf("state store: PostgreSQL reachable, writable, schema version %d%s", v, sealed), nil
	case 0:
		return fmt.Sprintf("state store: PostgreSQL reachable, writable, empty: start-up creates schema version %d%s", latest, sealed), nil
	default:
		return fmt.Sprintf("state store: PostgreSQL reachable, writable, schema version %d: start-up migrates it to %d%s", v, latest, sealed), nil
	}
}

// databaseEgress are the addresses and ports of the store's PostgreSQL
// servers, for the egress chain (invariant 13): names in the DSN are
// resolved now, as a syslog collector's are. A unix socket needs nothing.
func databaseEgress(cfg *config.Config, log *zap.Logger) []netip.AddrPort {
	if cfg.Store.Backend != config.StorePostgres || cfg.Store.Postgres == nil {
		return nil
	}
	eps, err := pgstore.Endpoints(pgConfig(cfg.Store.Postgres))
	if err != nil {
		log.Warn("cannot read the state store's connection string; the egress chain does not let the daemon reach the database", zap.Error(err))
		return nil
	}
	var out []netip.AddrPort
	for _, e := range eps {
		if e.Socket() {
			continue
		}
		if a, err := netip.ParseAddr(e.Host); err == nil {
			out = append(out, netip.AddrPortFrom(a.WithZone(""), e.Port))
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", e.Host)
		cancel()
		if err != nil || len(addrs) == 0 {
			log.Warn("cannot resolve the state store's database server; the egress chain does not let the daemon reach it",
				zap.String("host", e.Host), zap.Error(errors.Join(err)))
		}
		for _, a := range addrs {
			out = append(out, netip.AddrPortFrom(a.Unmap().WithZone(""), e.Port))
		}
	}
	return out
}
