package link

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *clock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func newStore(db store.DB) (*Store, *clock) {
	s := NewStore(db)
	c := &clock{t: time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)}
	s.now = c.now
	return s, c
}

func forEachBackend(t *testing.T, f func(t *testing.T, db store.DB)) {
	for _, be := range pgstoretest.Backends {
		t.Run(be.Name, func(t *testing.T) { f(t, be.Open(t)) })
	}
}

func reason(err error) string {
	if r, ok := errors.AsType[*Refused](err); ok {
		return r.Reason
	}
	if err == nil {
		return ""
	}
	return "error: " + err.Error()
}

var vm1 = New{Target: "vm1", Protocol: "ssh", Login: "alice", CreatedBy: "uid:0", Valid: time.Hour, Uses: 2}

// TestSpendRevokeExpire: a link opens as many sessions as it has uses,
// then is used_up; a revoked one is revoked, an expired one expired, on
// the other instance too; a secret of no link is unknown; a peek spends
// nothing; nothing stored holds the secret.
func TestSpendRevokeExpire(t *testing.T) {
	for _, cl := range pgstoretest.Clusters {
		t.Run(cl.Name, func(t *testing.T) {
			da, db := cl.Open(t)
			a, ca := newStore(da)
			b, cb := newStore(db)
			l, secret, err := a.Create(vm1)
			if err != nil {
				t.Fatal(err)
			}
			if !Plausible(secret) || !validID.MatchString(l.ID) || l.Expires != ca.now().Add(time.Hour) {
				t.Fatalf("created %+v, secret %q", l, secret)
			}
			for range 3 {
				if p, err := b.Peek(secret); err != nil || p.Spent != 0 {
					t.Fatalf("peek: %+v %v", p, err)
				}
			}
			if got, err := b.Spend(secret); err != nil || got.Spent != 1 || got.Left() != 1 {
				t.Fatalf("first use on B: %+v %v", got, err)
			}
			if got, err := a.Spend(secret); err != nil || got.Spent != 2 {
				t.Fatalf("second use on A: %+v %v", got, err)
			}
			if _, err := b.Spend(secret); reason(err) != StateUsedUp {
				t.Fatalf("third use: %v", err)
			}
			if _, err := a.Peek(secret); reason(err) != StateUsedUp {
				t.Fatalf("peek of a used-up link: %v", err)
			}
			if r, _ := errors.AsType[*Refused](func() error { _, err := a.Spend(secret); return err }()); r == nil || r.Link.ID != l.ID {
				t.Fatalf("the refusal names no link: %+v", r)
			}

			l2, s2, err := a.Create(vm1)
			if err != nil {
				t.Fatal(err)
			}
			if r, err := b.Revoke(l2.ID); err != nil || r.Revoked.IsZero() {
				t.Fatalf("revoke on B: %+v %v", r, err)
			}
			if _, err := a.Spend(s2); reason(err) != StateRevoked {
				t.Fatalf("revoked link spent: %v", err)
			}
			if _, err := a.Revoke("0123456789abcdef"); !errors.Is(err, ErrNoLink) {
				t.Fatalf("revoke of no link: %v", err)
			}

			_, s3, err := a.Create(vm1)
			if err != nil {
				t.Fatal(err)
			}
			ca.add(time.Hour)
			cb.add(time.Hour)
			if _, err := b.Spend(s3); reason(err) != StateExpired {
				t.Fatalf("expired link spent: %v", err)
			}
			for _, bad := range []string{"", "x", strings.Repeat("A", secretLen), secret[:secretLen-1] + "!", s3 + "A"} {
				if _, err := a.Spend(bad); reason(err) != Unknown {
					t.Errorf("spend %q: %v", bad, err)
				}
				if _, err := a.Peek(bad); reason(err) != Unknown {
					t.Errorf("peek %q: %v", bad, err)
				}
			}

			ls, err := b.List()
			if err != nil || len(ls) != 3 {
				t.Fatalf("list: %d %v", len(ls), err)
			}
			states := map[string]int{}
			for _, x := range ls {
				states[x.State(cb.now())]++
			}
			if states[StateRevoked] != 1 || states[StateExpired] != 2 {
				// Revoked says more than expired; the used-up one expired since.
				t.Errorf("states %v", states)
			}
			// Nothing stored holds a secret.
			err = da.View(func(tx store.Tx) error {
				return tx.Bucket(bucket).ForEach(nil, func(k, v []byte) error {
					for _, sec := range []string{secret, s2, s3} {
						if strings.Contains(string(k)+string(v), sec) {
							t.Errorf("a secret is stored under %x", k)
						}
					}
					return nil
				})
			})
			if err != nil {
				t.Fatal(err)
			}
			if n, err := a.Prune(ca.now().Add(time.Second)); err != nil || n != 3 {
				t.Fatalf("prune: %d %v", n, err)
			}
			if _, err := a.Peek(s2); reason(err) != Unknown {
				t.Fatalf("a pruned link: %v", err)
			}
		})
	}
}

// TestLastUseRace: instances racing for the uses of a link (two handles
// on one database in a cluster) get exactly as many as it has.
func TestLastUseRace(t *testing.T) {
	for _, cl := range pgstoretest.Clusters {
		t.Run(cl.Name, func(t *testing.T) {
			da, db := cl.Open(t)
			a, _ := newStore(da)
			b, _ := newStore(db)
			for _, uses := range []int{1, 3} {
				n := vm1
				n.Uses = uses
				_, secret, err := a.Create(n)
				if err != nil {
					t.Fatal(err)
				}
				const racers = 8
				var wg sync.WaitGroup
				var mu sync.Mutex
				won, lost := 0, 0
				for i := range racers {
					s := a
					if i%2 == 1 {
						s = b
					}
					wg.Go(func() {
						_, err := s.Spend(secret)
						mu.Lock()
						defer mu.Unlock()
						switch reason(err) {
						case "":
							won++
						case StateUsedUp:
							lost++
						default:
							t.Errorf("spend: %v", err)
						}
					})
				}
				wg.Wait()
				if won != uses || lost != racers-uses {
					t.Fatalf("%d uses: %d won, %d used up", uses, won, lost)
				}
			}
		})
	}
}

// TestCreateRefuses: what cannot be a link is refused, and nothing stored.
func TestCreateRefuses(t *testing.T) {
	s, _ := newStore(pgstoretest.Backends[0].Open(t))
	for name, n := range map[string]New{
		"no target":      {Protocol: "ssh", Login: "a", Valid: time.Hour, Uses: 1},
		"tunnel":         {Target: "vm1", Protocol: "tunnel", Login: "a", Valid: time.Hour, Uses: 1},
		"no login":       {Target: "vm1", Protocol: "ssh", Valid: time.Hour, Uses: 1},
		"login option":   {Target: "vm1", Protocol: "ssh", Login: "-oProxyCommand=x", Valid: time.Hour, Uses: 1},
		"login space":    {Target: "vm1", Protocol: "ssh", Login: "a b", Valid: time.Hour, Uses: 1},
		"long login":     {Target: "vm1", Protocol: "ssh", Login: strings.Repeat("a", MaxLogin+1), Valid: time.Hour, Uses: 1},
		"no validity":    {Target: "vm1", Protocol: "ssh", Login: "a", Uses: 1},
		"negative valid": {Target: "vm1", Protocol: "ssh", Login: "a", Valid: -time.Hour, Uses: 1},
		"no uses":        {Target: "vm1", Protocol: "ssh", Login: "a", Valid: time.Hour},
		"too many uses":  {Target: "vm1", Protocol: "ssh", Login: "a", Valid: time.Hour, Uses: MaxUses + 1},
	} {
		if _, _, err := s.Create(n); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: created", name)
		}
	}
	if ls, err := s.List(); err != nil || len(ls) != 0 {
		t.Fatalf("stored: %v %v", ls, err)
	}
}

func TestIDOf(t *testing.T) {
	for user, want := range map[string]bool{"link:0123456789abcdef": true, "link:": false, "alice": false,
		"link:0123456789ABCDEF": false, "link:0123456789abcdef0": false} {
		if _, ok := IDOf(user); ok != want {
			t.Errorf("IDOf(%q) = %v", user, ok)
		}
	}
}
