package daemon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/version"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/registry"
)

// The cluster's live sessions. A bastiond whose state store is shared with
// other instances (PostgreSQL) keeps its sessions in the registry of the
// cluster (proxy/registry) besides its live journal: `bastionctl sessions`
// lists every instance's, `sessions kill` reaches any of them, a change of
// rights on one instance is rechecked on all, and the sessions of an
// instance that dies are recorded as abandoned by another. A single host
// on its bbolt file runs no registry and behaves as before: the two
// processes of an upgrade reach each other's sessions over the hand-over
// socket, and a crash's sessions are recorded from the live journal.

// sharedStore is what a state store backend implements to say that other
// instances share it (the PostgreSQL backend); the bbolt file of a single
// host does not.
type sharedStore interface{ Shared() bool }

// clustered says whether the state store db is shared by a cluster.
func clustered(db any) bool {
	s, ok := db.(sharedStore)
	return ok && s.Shared()
}

// sharedState is the state store db when a cluster shares it, where the
// web sessions and connect tickets are then kept (a browser signed in on
// one instance is signed in on all); nil on a single host, whose bbolt
// file the old process of an upgrade releases while it still serves
// them: they stay in memory and are handed over.
func sharedState(db store.DB) store.DB {
	if db == nil || !clustered(db) {
		return nil
	}
	return db
}

// openRegistry makes the cluster's registry over db, or returns nil when
// db is this host's alone.
func openRegistry(cfg *config.Config, d *daemon, db store.DB, lineage string) (*registry.Registry, error) {
	if !clustered(db) {
		return nil, nil
	}
	addrs, err := vnetAddrs(cfg)
	if err != nil {
		d.log.Warn("the heartbeat will not list this instance's VNet addresses", zap.Error(err))
	}
	reg, err := registry.New(registry.Config{DB: db, Instance: cfg.Cluster.Instance, Logger: d.log.Named("registry"),
		Version: version.Version, PID: os.Getpid(), Addresses: addrs, Lineage: lineage,
		Conflict: func(o registry.Heartbeat) {
			d.event(audit.Event{Event: audit.InstanceConflict, Reason: "name_in_use",
				Detail: fmt.Sprintf("another bastiond writes the heartbeat of instance %s (pid %d, version %s, addresses %v): "+
					"two bastions are configured with one cluster.instance", o.Instance, o.PID, o.Version, o.Addresses)})
		}})
	if err != nil {
		return nil, err
	}
	// Before the first heartbeat: two bastions under one name would take
	// each other's sessions for their own.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := reg.CheckName(ctx); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return reg, nil
}

// runRegistry makes this instance live in the registry until
// stopRegistry. It does nothing on a single host.
func (d *daemon) runRegistry() {
	if d.registry == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.registry.Run(ctx, registryHandler{d})
	}()
	d.stopRegistry = func() {
		cancel()
		<-done
	}
}

// registryHandler is what the registry asks this process to do.
type registryHandler struct{ d *daemon }

var _ registry.Handler = registryHandler{}

// Kill ends a session of this process (or of the one it took over from)
// that another instance asked to end.
func (h registryHandler) Kill(id, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := h.d.kill(ctx, id, reason)
	if errors.Is(err, broker.ErrNoSession) {
		return registry.ErrNotHere
	}
	return err
}

func (h registryHandler) Abandoned(list []broker.Info) error { return h.d.broker.Abandoned(list) }
func (h registryHandler) ProcessAlive(p string) bool         { return h.d.broker.ProcessAlive(p) }
func (h registryHandler) Recheck(why string)                 { h.d.endRevoked(why) }

// Load is this process's broker's: it admits the instance's new sessions
// into its capacity (an upgrade's old process only serves its last ones).
func (h registryHandler) Load() adminapi.Load { return h.d.broker.Load() }

// clusterInstances is every instance's heartbeat, for `bastionctl status`;
// nil on a single host.
func (d *daemon) clusterInstances() ([]adminapi.Instance, error) {
	if d.registry == nil {
		return nil, nil
	}
	hbs, err := d.registry.Instances()
	if err != nil {
		return nil, err
	}
	list := make([]adminapi.Instance, len(hbs))
	for i, hb := range hbs {
		list[i] = adminapi.Instance{Name: hb.Instance, Version: hb.Version, PID: hb.PID, Addresses: hb.Addresses, Seen: hb.Seen, Load: hb.Load}
	}
	return list, nil
}

// revoke ends the sessions whose right to exist is gone (endRevoked) and,
// in a cluster, has every other instance do the same: the change (an
// account, a grant, a token in the shared store, or this instance's
// configuration) may have taken rights from their sessions too. Each
// instance judges its sessions by its own configuration and the shared
// accounts: the cluster is consistent when every instance runs the same
// configuration file, and reloading it on each one makes them all check.
func (d *daemon) revoke(why string) int {
	n := d.endRevoked(why)
	if d.registry != nil {
		if err := d.registry.Recheck(why); err != nil {
			d.log.Error("cannot ask the other instances to end the sessions whose access was revoked", zap.String("why", why), zap.Error(err))
		}
	}
	return n
}

// clusterSessions lists every instance's sessions: the registry's, with
// this instance's own as they are now (the registry's byte counts are a
// few seconds old).
func (d *daemon) clusterSessions(ctx context.Context) ([]broker.Info, error) {
	local := d.allSessions(ctx)
	if d.registry == nil {
		return local, nil
	}
	all, err := d.registry.List()
	if err != nil {
		return nil, fmt.Errorf("cannot read the cluster's sessions from the state store: %w", err)
	}
	fresh := make(map[string]broker.Info, len(local))
	for _, s := range local {
		s.Instance = d.registry.Instance()
		fresh[s.ID] = s
	}
	for i, s := range all {
		if f, ok := fresh[s.ID]; ok && s.Instance == f.Instance {
			all[i] = f
			delete(fresh, s.ID)
		}
	}
	for _, s := range fresh { // registered a moment ago, or ending
		all = append(all, s)
	}
	slices.SortFunc(all, func(x, y broker.Info) int {
		if c := x.Start.Compare(y.Start); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return all, nil
}

// clusterKill ends session id wherever it is: in this process, the one it
// took over from, or (in a cluster) another instance, which is asked
// through the registry and waited for.
func (d *daemon) clusterKill(ctx context.Context, id, reason string) error {
	err := d.kill(ctx, id, reason)
	if !errors.Is(err, broker.ErrNoSession) || d.registry == nil {
		return err
	}
	owner, err := d.registry.Kill(ctx, id, reason)
	switch {
	case errors.Is(err, registry.ErrNoSession):
		return broker.ErrNoSession
	case err != nil:
		return err
	}
	d.log.Info("session ended on another instance", zap.String("session", id), zap.String("instance", owner))
	return nil
}
