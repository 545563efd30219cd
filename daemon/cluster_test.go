package daemon

import (
	"context"
	"errors"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	wire "github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/registry"
)

// shared is a state store that says it is shared, as the PostgreSQL
// backend does, over a bbolt file.
type shared struct{ store.DB }

func (shared) Shared() bool { return true }

// remote is another instance of the cluster, as its registry sees it: it
// ends what it is asked to end.
type remote struct {
	reg    *registry.Registry
	mu     sync.Mutex
	killed map[string]string
	checks []string
}

func (r *remote) Kill(id, reason string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.killed[id] = reason
	return r.reg.Remove([]string{id})
}
func (r *remote) Abandoned([]wire.Session) error { return nil }
func (r *remote) ProcessAlive(string) bool       { return true }
func (r *remote) Load() wire.Load {
	return wire.Load{Capacity: 50, Used: 3, Sessions: 2, Draining: true}
}
func (r *remote) Recheck(why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.checks = append(r.checks, why)
}

// TestClusterSessionsAPI: an instance's admin API lists the sessions of
// another (IPv4 and IPv6 clients), kills one of them there, says so
// clearly for an unknown ID, and a change of rights here is rechecked
// there; its status shows every instance's load, as their heartbeats say.
// A single host's bbolt store runs no registry.
func TestClusterSessionsAPI(t *testing.T) {
	dir := t.TempDir()
	db, err := statedb.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := &config.Config{Cluster: config.Cluster{Instance: "bastion-a"}}
	d := &daemon{log: zap.NewNop()}
	if reg, err := openRegistry(cfg, d, db, "line-1"); reg != nil || err != nil {
		t.Fatalf("a single host's store made a registry: %v", err)
	}
	d.registry, err = openRegistry(cfg, d, shared{db}, "line-1")
	if err != nil || d.registry == nil {
		t.Fatalf("no registry over a shared store: %v", err)
	}
	d.broker, err = broker.New(broker.Config{Logger: zap.NewNop()}, broker.Options{LiveDir: filepath.Join(dir, "live"),
		AuditFile: filepath.Join(dir, "audit.jsonl"), Instance: "bastion-a", Registry: d.registry})
	if err != nil {
		t.Fatal(err)
	}
	defer d.broker.Close(context.Background())
	d.runRegistry()
	defer d.stopRegistry()
	// Another bastion configured with this one's name does not start.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if list, _ := d.registry.Instances(); len(list) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("bastion-a's first heartbeat was never written")
		}
	}
	if _, err := openRegistry(cfg, &daemon{log: zap.NewNop()}, shared{db}, "line-2"); err == nil ||
		!strings.Contains(err.Error(), `cluster.instance "bastion-a" is in use by another running bastiond`) {
		t.Errorf("a second bastion named bastion-a: %v, want it refused", err)
	}

	b, err := registry.New(registry.Config{DB: db, Instance: "bastion-b", Logger: zap.NewNop(), Poll: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	rb := &remote{reg: b, killed: map[string]string{}}
	for i, client := range []string{"192.0.2.10:50000", "[2001:db8::10]:50001"} {
		s := wire.Session{ID: []string{"bbbb00000001", "bbbb00000002"}[i], User: "alice", Client: netip.MustParseAddrPort(client),
			Target: "vm1", Protocol: "ssh", Port: 22, Start: time.Unix(1700000000+int64(i), 0)}
		if err := b.Add("live-1-00000000.db", s, 0); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		b.Run(ctx, rb)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	var cluster []wire.Instance
	for deadline := time.Now().Add(10 * time.Second); len(cluster) < 2; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the status lists the instances %+v", cluster)
		}
		if cluster, err = d.clusterInstances(); err != nil {
			t.Fatal(err)
		}
	}
	if a, b := cluster[0], cluster[1]; a.Name != "bastion-a" || a.Load != (wire.Load{Capacity: 100}) ||
		b.Name != "bastion-b" || b.Load != (wire.Load{Capacity: 50, Used: 3, Sessions: 2, Draining: true}) {
		t.Errorf("the status lists the instances %+v", cluster)
	}

	api := sessionsAPI{d}
	list, err := api.List()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range list {
		got = append(got, s.Instance+" "+s.Client.String())
	}
	if want := []string{"bastion-b 192.0.2.10:50000", "bastion-b [2001:db8::10]:50001"}; !slices.Equal(got, want) {
		t.Errorf("listed %v, want %v", got, want)
	}
	if err := api.Kill("bbbb00000002", "by root on instance bastion-a: left open"); err != nil {
		t.Fatal(err)
	}
	rb.mu.Lock()
	reason := rb.killed["bbbb00000002"]
	rb.mu.Unlock()
	if reason != "by root on instance bastion-a: left open" {
		t.Errorf("ended there with reason %q", reason)
	}
	if err := api.Kill("ffffffffffff", "x"); !errors.Is(err, broker.ErrNoSession) {
		t.Errorf("unknown session: %v", err)
	}
	if list, _ := api.List(); len(list) != 1 || list[0].ID != "bbbb00000001" {
		t.Errorf("left: %+v", list)
	}

	// A change of rights here: the other instance checks its sessions.
	if err := d.registry.Recheck("role revoked"); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		rb.mu.Lock()
		checks := slices.Clone(rb.checks)
		rb.mu.Unlock()
		if len(checks) > 0 {
			if !strings.Contains(checks[0], "on instance bastion-a: role revoked") {
				t.Errorf("recheck %q", checks[0])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the other instance never rechecked")
		}
	}
}

// TestSharedState: the web sessions and tickets go to the state store
// when a cluster shares it, and stay in memory on a single host's bbolt.
func TestSharedState(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := sharedState(db); got != nil {
		t.Errorf("a single host's bbolt file shared: %v", got)
	}
	var none *statedb.Handle
	if got := sharedState(none); got != nil {
		t.Errorf("no store shared: %v", got)
	}
	if got := sharedState(shared{db}); got != (shared{db}) {
		t.Errorf("a cluster's store not shared: %v", got)
	}
}
