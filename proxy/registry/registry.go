// Package registry is the live-session registry of a cluster of bastiond
// instances, kept in the shared state store (internal/store): which
// instances are alive (a heartbeat each), which sessions each one carries,
// and the requests to end one of them that any instance may make.
//
// Each instance's broker adds a session's entry before the session carries
// a byte and removes it once its end record is in the audit file, and
// refreshes its byte counts with its live journal's. Run, in every
// instance, writes the instance's heartbeat every few seconds, serves the
// kill requests addressed to it, and watches the others' heartbeats: an
// instance whose heartbeat has not changed for Config.Dead is dead, and the
// first survivor to see it takes over, in one transaction, its heartbeat
// and its session entries. The sessions taken over are recorded as
// abandoned (Handler.Abandoned) by that survivor only: exactly once in the
// cluster, since the one transaction that removes an entry is the only
// path to its record (the dead instance's own journal recovery, at its next
// start, goes through Claim, which finds nothing left to claim).
//
// An instance cut off from the store for longer than Dead is, to the
// others, a dead one: its sessions get abandoned records while they may go
// on, and their own end records follow when they end. The survivors judge
// heartbeats by their own clocks (a heartbeat that stops changing), never
// by the writer's, and none judges after a failure to write its own
// heartbeat until it has written them for Dead again: an outage of the
// store takes no instance for dead.
//
// The registry also holds the cluster's limits. limits.sessions_per_user
// counts a user's sessions on every instance: Add checks the count and
// writes the entry in one serializable transaction, from a list of each
// user's entries (usersBucket) kept with the entries themselves, so that
// of two instances racing for a user's last session exactly one gets it.
// A session stops counting when its entry goes: at its end, and when it is
// taken over (Claim, a dead instance's) to be recorded as abandoned.
// limits.capacity stays per instance (each one admits into its own
// capacity), and each heartbeat carries the instance's load (Heartbeat.Load)
// for operators.
//
// On a single host with the bbolt store the daemon runs no registry: the
// broker's local journal is all it needs.
package registry

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/store"
)

// Buckets of the store the registry keeps.
const (
	// instancesBucket: instance name -> heartbeat.
	instancesBucket = "cluster_instances"
	// sessionsBucket: "instance/session ID" -> entry.
	sessionsBucket = "cluster_sessions"
	// killsBucket: "instance/session ID" -> kill request, for the instance
	// that carries the session.
	killsBucket = "cluster_kills"
	// abandonedBucket: "instance/session ID" -> entry of a session that
	// instance took over (a dead instance's, or one of its own a crash
	// left) and has yet to record as abandoned.
	abandonedBucket = "cluster_abandoned"
	// recheckBucket: "generation" -> recheck, bumped by an instance whose
	// change of the shared state (an account, a grant, a token) or of its
	// configuration may have taken rights away.
	recheckBucket = "cluster_recheck"
	// usersBucket: "u" + user name -> the keys ("instance/session ID")
	// of the user's entries in sessionsBucket, a JSON array kept in the
	// transactions that add and remove those entries: the user's sessions
	// in the cluster, counted by reading one key. A user's key stays once
	// made (an empty array): on PostgreSQL a serializable read of a key
	// that exists locks that row alone, and a missing one a page of the
	// index, which other users' first sessions would conflict with.
	usersBucket = "cluster_users"
)

// userKey is user's key in usersBucket.
func userKey(user string) []byte { return []byte("u" + user) }

// userEntries reads user's list in usersBucket.
func userEntries(b store.Bucket, user string) ([]string, error) {
	v, err := b.Get(userKey(user))
	if err != nil || v == nil {
		return nil, err
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, fmt.Errorf("registry: the sessions of user %q: %w", user, err)
	}
	return list, nil
}

// putUserEntries writes user's list in usersBucket, sorted.
func putUserEntries(b store.Bucket, user string, list []string) error {
	slices.Sort(list)
	if list == nil {
		list = []string{}
	}
	v, _ := json.Marshal(list)
	return b.Put(userKey(user), v)
}

var recheckKey = []byte("generation")

// recheck is the value of recheckKey.
type recheck struct {
	Generation uint64    `json:"generation"`
	Why        string    `json:"why"`
	From       string    `json:"from"`    // the instance
	Process    string    `json:"process"` // the process that asked (it checked its own sessions)
	At         time.Time `json:"at"`
}

// Notifier is an optional interface of a store.DB whose backend can wake
// the other instances (PostgreSQL's LISTEN/NOTIFY). Without it, kill
// requests are found by polling the store every Config.Poll.
type Notifier interface {
	// Notify wakes the subscribers of channel, once the transactions
	// committed before it are visible to them.
	Notify(channel string) error
	// Subscribe returns a channel that receives a value (coalesced, not
	// counted) after each Notify on channel, until ctx is done.
	Subscribe(ctx context.Context, channel string) (<-chan struct{}, error)
}

// Config is what New needs.
type Config struct {
	// DB is the shared state store; required.
	DB store.DB
	// Instance is this instance's name (cluster.instance); required.
	Instance string
	// Logger is required.
	Logger *zap.Logger
	// Version and Addresses go into the heartbeat, for operators.
	Version   string
	PID       int
	Addresses []netip.Addr
	// Beat is how often the heartbeat is written and the others' read.
	// Default 5s.
	Beat time.Duration
	// Dead is how long an instance's heartbeat may stay unchanged, as this
	// instance sees it, before it is taken for dead. Default 15s: a dead
	// instance is noticed within Dead + Beat (20 s). It must exceed Beat.
	Dead time.Duration
	// Poll is how often kill requests for this instance are looked for.
	// Default 1s.
	Poll time.Duration
	// KillWait bounds how long Kill waits for the owning instance to
	// answer. Default 10s.
	KillWait time.Duration
	// Lineage names this instance's line of processes: the same for the
	// processes of one start and its binary upgrades, another after a
	// restart (a public name of the handover lineage, never its key).
	// Two lines writing one instance's heartbeat are two bastions
	// configured with one name (see CheckName). Empty: this process's own.
	Lineage string
	// Conflict, if set, is told when another line of processes wrote this
	// instance's heartbeat since this one last did: another bastion runs
	// with this instance's name. At most once a minute.
	Conflict func(other Heartbeat)
}

// Handler is what Run calls back into: the broker (and the previous
// process of an upgrade) of this instance.
type Handler interface {
	// Kill ends the session id of this instance with the reason given
	// (for the end record); an error if it is not here or cannot be
	// ended.
	Kill(id, reason string) error
	// Abandoned records the end of sessions nobody carries any more, with
	// reason abandoned: each one's Instance is the instance that carried
	// it. It returns once the records are durable; an error leaves them
	// for the next call. A session whose end record is in the audit file
	// already gets no second one.
	Abandoned(list []admin.Session) error
	// Recheck ends the sessions of this instance whose rights are gone,
	// as its own configuration and the shared state now say: another
	// instance changed either (Registry.Recheck).
	Recheck(why string)
	// ProcessAlive says whether the process of this instance that added
	// an entry (Entry.Process, a live journal's name) still runs: the
	// entries of one that is gone and left no journal (its end records
	// were written, removing the entries was not) are taken over.
	ProcessAlive(process string) bool
	// Load is this instance's use of its capacity now, for its heartbeat.
	Load() admin.Load
}

// Heartbeat is an instance's entry in the registry.
type Heartbeat struct {
	Instance  string       `json:"instance"`
	Process   string       `json:"process"` // the process that wrote it last (pid-random)
	Beat      uint64       `json:"beat"`    // counts up with each write
	Seen      time.Time    `json:"seen"`    // the writer's clock: for people, not for deciding death
	Version   string       `json:"version,omitempty"`
	PID       int          `json:"pid,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
	// Lineage is the writer's line of processes (Config.Lineage).
	Lineage string `json:"lineage,omitempty"`
	// Load is the instance's capacity and use as of this heartbeat.
	admin.Load
}

// entry is a session's value in sessionsBucket and abandonedBucket.
type entry struct {
	Session admin.Session `json:"session"`
	// Process is the live journal of the process that carries it.
	Process string `json:"process"`
}

// killRequest is a value in killsBucket.
type killRequest struct {
	Reason string    `json:"reason"`
	From   string    `json:"from"` // the requesting instance
	At     time.Time `json:"at"`
	Taken  bool      `json:"taken,omitempty"` // the owner is ending it
	Done   bool      `json:"done,omitempty"`
	Err    string    `json:"error,omitempty"`
}

var (
	// ErrNoSession is Kill's error for an ID no instance carries.
	ErrNoSession = errors.New("registry: no such live session")
	// ErrNotHere is what Handler.Kill returns for a session that this
	// process does not carry: the request is left for another process of
	// the instance (the two of an upgrade).
	ErrNotHere = errors.New("registry: the session is not carried by this process")
	// ErrInstanceDead is Kill's error for a session of an instance that
	// no longer beats.
	ErrInstanceDead = errors.New("registry: the instance that carries the session is not answering")
)

// LimitError is Add's refusal of a session whose user has Limit sessions
// in the cluster already (limits.sessions_per_user).
type LimitError struct {
	User  string
	Limit int
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("registry: user %q has %d sessions open in the cluster, the most allowed", e.User, e.Limit)
}

// UserLimit is the limit reached: the broker tells this refusal by it
// (errors.As with an interface{ UserLimit() int }) without importing the
// registry.
func (e *LimitError) UserLimit() int { return e.Limit }

// Registry is one instance's view of the cluster's live sessions.
type Registry struct {
	cfg     Config
	log     *zap.Logger
	process string           // this process, in the heartbeat: pid-random
	wake    chan struct{}    // kicks Run to record claimed sessions
	now     func() time.Time // time.Now but in tests
	retired atomic.Bool      // Retire: kills and rechecks are the successor's

	mu       sync.Mutex // guards the fields below
	beat     uint64
	streak   time.Time // since when every heartbeat was written; zero after a failure
	observed map[string]observation
	seenGen  uint64    // the recheck generation last acted on
	genRead  bool      // seenGen was read at least once
	wrote    bool      // this process has written its heartbeat
	warned   time.Time // the last Conflict
}

// observation is when this instance last saw another's heartbeat change.
type observation struct {
	process string
	beat    uint64
	since   time.Time // this host's monotonic clock
}

// New checks cfg and returns the registry; Run makes it live.
func New(cfg Config) (*Registry, error) {
	switch {
	case cfg.DB == nil || cfg.Logger == nil:
		return nil, errors.New("registry: a DB and a Logger are required")
	case !validInstance(cfg.Instance):
		return nil, fmt.Errorf("registry: instance name %q: 1 to 63 of a-z, 0-9 and '-'", cfg.Instance)
	}
	if cfg.Beat == 0 {
		cfg.Beat = 5 * time.Second
	}
	if cfg.Dead == 0 {
		cfg.Dead = 15 * time.Second
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Second
	}
	if cfg.KillWait == 0 {
		cfg.KillWait = 10 * time.Second
	}
	if cfg.Beat <= 0 || cfg.Dead <= cfg.Beat || cfg.Poll <= 0 || cfg.KillWait <= 0 {
		return nil, fmt.Errorf("registry: timing: beat %v, dead %v (more than beat), poll %v", cfg.Beat, cfg.Dead, cfg.Poll)
	}
	cfg.Addresses = slices.Clone(cfg.Addresses)
	var rnd [4]byte
	rand.Read(rnd[:]) // never fails (crypto/rand)
	process := fmt.Sprintf("%d-%x", os.Getpid(), rnd)
	if cfg.Lineage == "" {
		cfg.Lineage = process
	}
	return &Registry{cfg: cfg, log: cfg.Logger, process: process, wake: make(chan struct{}, 1), now: time.Now, observed: map[string]observation{}}, nil
}

func validInstance(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// Retire hands kill requests and rechecks over to the process that took
// over from this one (a binary upgrade); the heartbeat and the recording of
// dead instances' sessions go on while this one serves its last sessions.
func (r *Registry) Retire() { r.retired.Store(true) }

// Recheck asks every other instance to end the sessions whose rights are
// gone (Handler.Recheck), after this one has ended its own: why says what
// changed. An instance learns of it within Config.Poll.
func (r *Registry) Recheck(why string) error {
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		b := tx.Bucket(recheckBucket)
		var q recheck
		if v, err := b.Get(recheckKey); err != nil {
			return err
		} else if v != nil {
			json.Unmarshal(v, &q)
		}
		q = recheck{Generation: q.Generation + 1, Why: why, From: r.cfg.Instance, Process: r.process, At: r.now().UTC()}
		v, _ := json.Marshal(q)
		return b.Put(recheckKey, v)
	})
	if err != nil {
		return fmt.Errorf("registry: recheck: %w", err)
	}
	if n, ok := r.cfg.DB.(Notifier); ok {
		n.Notify(recheckChannel)
	}
	return nil
}

// recheckChannel is the Notifier channel of rechecks.
const recheckChannel = "bastiond_recheck"

// Instance is this instance's name.
func (r *Registry) Instance() string { return r.cfg.Instance }

func (r *Registry) key(instance, id string) []byte { return []byte(instance + "/" + id) }

func (r *Registry) own() []byte { return []byte(r.cfg.Instance + "/") }

// Add registers a session of this instance, carried by process (the name
// of its live journal, which Handler.ProcessAlive knows), unless its user
// has perUser sessions in the cluster already (0: no limit): then it
// writes nothing and returns a *LimitError. The count and the entry are
// one serializable transaction: two instances racing for a user's last
// session cannot both get it. The broker calls Add before the session
// carries a byte, and refuses the session if it fails.
func (r *Registry) Add(process string, s admin.Session, perUser int) error {
	s.Instance = r.cfg.Instance
	v, err := json.Marshal(entry{Session: s, Process: process})
	if err != nil {
		return err
	}
	k := r.key(r.cfg.Instance, s.ID)
	err = r.cfg.DB.Update(func(tx store.Tx) error {
		ub := tx.Bucket(usersBucket)
		list, err := userEntries(ub, s.User)
		if err != nil {
			return err
		}
		if perUser > 0 && len(list) >= perUser {
			return &LimitError{User: s.User, Limit: perUser}
		}
		if err := tx.Bucket(sessionsBucket).Put(k, v); err != nil {
			return err
		}
		if !slices.Contains(list, string(k)) {
			list = append(list, string(k))
		}
		return putUserEntries(ub, s.User, list)
	})
	var limit *LimitError
	switch {
	case errors.As(err, &limit):
		return err
	case err != nil:
		return fmt.Errorf("registry: add session %s: %w", s.ID, err)
	}
	return nil
}

// UserSessions is how many sessions user has in the cluster now. Add
// checks again in its own transaction: this is for refusing a session
// before its target is dialled.
func (r *Registry) UserSessions(user string) (int, error) {
	n := 0
	err := r.cfg.DB.View(func(tx store.Tx) error {
		list, err := userEntries(tx.Bucket(usersBucket), user)
		n = len(list)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("registry: count the sessions of %q: %w", user, err)
	}
	return n, nil
}

// deleteEntry removes the session entry k (v is its value), and k from
// its user's list in usersBucket.
func deleteEntry(tx store.Tx, k, v []byte) error {
	if err := tx.Bucket(sessionsBucket).Delete(k); err != nil {
		return err
	}
	var e entry
	if err := json.Unmarshal(v, &e); err != nil {
		return nil // an unreadable entry was never counted: Add wrote every one
	}
	ub := tx.Bucket(usersBucket)
	list, err := userEntries(ub, e.Session.User)
	if err != nil {
		return err
	}
	i := slices.Index(list, string(k))
	if i < 0 {
		return nil
	}
	return putUserEntries(ub, e.Session.User, slices.Delete(list, i, i+1))
}

// Refresh updates the entries of live sessions (their byte counts), in one
// transaction; it does not bring back an entry removed meanwhile.
func (r *Registry) Refresh(process string, list []admin.Session) error {
	vals := make(map[string][]byte, len(list))
	for _, s := range list {
		s.Instance = r.cfg.Instance
		v, err := json.Marshal(entry{Session: s, Process: process})
		if err != nil {
			return err
		}
		vals[s.ID] = v
	}
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		b := tx.Bucket(sessionsBucket)
		for id, v := range vals {
			k := r.key(r.cfg.Instance, id)
			old, err := b.Get(k)
			if err != nil {
				return err
			}
			if old == nil {
				continue
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: refresh: %w", err)
	}
	return nil
}

// Remove removes the entries of sessions whose end records are durable,
// and any kill request left for them.
func (r *Registry) Remove(ids []string) error {
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		s, kb := tx.Bucket(sessionsBucket), tx.Bucket(killsBucket)
		for _, id := range ids {
			k := r.key(r.cfg.Instance, id)
			v, err := s.Get(k)
			if err != nil {
				return err
			}
			if v != nil {
				if err := deleteEntry(tx, k, v); err != nil {
					return err
				}
			}
			if err := kb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("registry: remove: %w", err)
	}
	return nil
}

// Claim takes over, for recording as abandoned, the entries of this
// instance's sessions that a dead process left in its live journal (ids),
// and returns those it found: one the registry no longer holds was
// recorded by whoever removed it (another instance that took this one for
// dead, or its own end), and must not be recorded again. The claimed
// sessions are recorded by Run (Handler.Abandoned) shortly after.
func (r *Registry) Claim(ids []string) (map[string]bool, error) {
	var claimed map[string]bool
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		claimed = map[string]bool{}
		s, a := tx.Bucket(sessionsBucket), tx.Bucket(abandonedBucket)
		for _, id := range ids {
			k := r.key(r.cfg.Instance, id)
			v, err := s.Get(k)
			if err != nil {
				return err
			}
			if v == nil {
				continue
			}
			if err := a.Put(k, v); err != nil {
				return err
			}
			if err := deleteEntry(tx, k, v); err != nil {
				return err
			}
			claimed[id] = true
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("registry: claim: %w", err)
	}
	if len(claimed) > 0 {
		select {
		case r.wake <- struct{}{}:
		default:
		}
	}
	return claimed, nil
}

// List is every live session in the cluster, each with its Instance, in
// the order of their start.
func (r *Registry) List() ([]admin.Session, error) {
	var list []admin.Session
	err := r.cfg.DB.View(func(tx store.Tx) error {
		list = nil
		return tx.Bucket(sessionsBucket).ForEach(nil, func(k, v []byte) error {
			var e entry
			if err := json.Unmarshal(v, &e); err != nil {
				r.log.Warn("unreadable session entry in the registry", zap.ByteString("key", k), zap.Error(err))
				return nil
			}
			list = append(list, e.Session)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: list: %w", err)
	}
	slices.SortFunc(list, func(x, y admin.Session) int {
		if c := x.Start.Compare(y.Start); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return list, nil
}

// Instances are the heartbeats in the registry, by name.
func (r *Registry) Instances() ([]Heartbeat, error) {
	var list []Heartbeat
	err := r.cfg.DB.View(func(tx store.Tx) error {
		list = nil
		return tx.Bucket(instancesBucket).ForEach(nil, func(k, v []byte) error {
			var h Heartbeat
			if json.Unmarshal(v, &h) == nil {
				list = append(list, h)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("registry: instances: %w", err)
	}
	return list, nil
}

// Owner is the instance that carries session id, or ErrNoSession.
func (r *Registry) Owner(id string) (string, error) {
	var owner string
	suffix := []byte("/" + id)
	err := r.cfg.DB.View(func(tx store.Tx) error {
		owner = ""
		return tx.Bucket(sessionsBucket).ForEach(nil, func(k, _ []byte) error {
			if bytes.HasSuffix(k, suffix) {
				owner = string(k[:len(k)-len(suffix)])
				return errFound
			}
			return nil
		})
	})
	switch {
	case errors.Is(err, errFound):
	case err != nil:
		return "", fmt.Errorf("registry: %w", err)
	case owner == "":
		return "", ErrNoSession
	}
	return owner, nil
}

var errFound = errors.New("found")

// killChannel is the Notifier channel of instance's kill requests.
func killChannel(instance string) string {
	return "bastiond_kill_" + strings.ReplaceAll(instance, "-", "_")
}

// Kill asks the instance that carries session id (another one: the caller
// ends its own sessions itself) to end it with reason, and waits for the
// answer, at most Config.KillWait or until ctx is done. The record says
// reason as given: the caller names the admin and this instance in it.
func (r *Registry) Kill(ctx context.Context, id, reason string) (owner string, err error) {
	owner, err = r.Owner(id)
	if err != nil {
		return "", err
	}
	if owner == r.cfg.Instance {
		// The caller ends its own instance's sessions itself: one it could
		// not find is ending, or its process is gone (and it is recorded
		// as abandoned).
		return owner, fmt.Errorf("%w: session %s is registered to this instance, but none of its processes carries it", ErrNoSession, id)
	}
	if dead, ago := r.seemsDead(owner); dead {
		return owner, fmt.Errorf("%w: instance %s has not been heard from for %v; its sessions will be recorded as abandoned",
			ErrInstanceDead, owner, ago.Round(time.Second))
	}
	v, _ := json.Marshal(killRequest{Reason: reason, From: r.cfg.Instance, At: r.now()})
	k := r.key(owner, id)
	err = r.cfg.DB.Update(func(tx store.Tx) error {
		got, err := tx.Bucket(sessionsBucket).Get(k)
		if err != nil {
			return err
		}
		if got == nil {
			return ErrNoSession // it ended meanwhile
		}
		return tx.Bucket(killsBucket).Put(k, v)
	})
	if err != nil {
		return owner, fmt.Errorf("registry: kill %s: %w", id, err)
	}
	if n, ok := r.cfg.DB.(Notifier); ok {
		if err := n.Notify(killChannel(owner)); err != nil {
			r.log.Warn("cannot notify the instance of a kill request; it polls for it", zap.String("instance", owner), zap.Error(err))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.KillWait)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		var req *killRequest
		var gone bool
		err := r.cfg.DB.View(func(tx store.Tx) error {
			req, gone = nil, false
			v, err := tx.Bucket(killsBucket).Get(k)
			if err != nil || v == nil {
				gone = err == nil
				return err
			}
			req = &killRequest{}
			return json.Unmarshal(v, req)
		})
		switch {
		case err != nil:
			r.log.Warn("cannot read the answer to a kill request", zap.Error(err))
		case gone:
			// The owner removed the request with the entry: the session's
			// end record is written.
			return owner, nil
		case req.Done:
			r.cfg.DB.Update(func(tx store.Tx) error { return tx.Bucket(killsBucket).Delete(k) })
			if req.Err != "" {
				return owner, fmt.Errorf("instance %s: %s", owner, req.Err)
			}
			return owner, nil
		}
		select {
		case <-ctx.Done():
			var taken bool
			r.cfg.DB.Update(func(tx store.Tx) error {
				taken = false
				b := tx.Bucket(killsBucket)
				v, err := b.Get(k)
				if err != nil || v == nil {
					return err
				}
				var q killRequest
				if json.Unmarshal(v, &q) == nil && q.Taken {
					taken = true
					return nil
				}
				return b.Delete(k)
			})
			if taken {
				return owner, fmt.Errorf("instance %s is ending session %s but did not confirm it in time", owner, id)
			}
			return owner, fmt.Errorf("instance %s did not take the kill request in time (%v); nothing was done", owner, r.cfg.KillWait)
		case <-t.C:
		}
	}
}

// seemsDead says whether this instance has seen owner's heartbeat
// unchanged for Config.Dead (or never seen it at all while it has been
// watching that long), and for how long.
func (r *Registry) seemsDead(owner string) (bool, time.Duration) {
	if owner == r.cfg.Instance {
		return false, 0
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.streak.IsZero() {
		return false, 0 // not watching: let the request time out if it is
	}
	o, ok := r.observed[owner]
	if !ok {
		return false, 0
	}
	ago := r.now().Sub(o.since)
	return ago >= r.cfg.Dead, ago
}
