package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/store"
)

// staleEvery is how often Run looks for this instance's entries whose
// process is gone.
const staleEvery = time.Minute

// Run makes this instance live in the registry until ctx is done: it
// writes the heartbeat every Config.Beat, takes over the sessions of dead
// instances and records them (h.Abandoned), and serves the kill requests
// for this instance (h.Kill). It removes the heartbeat when ctx is done, so
// that a clean stop is not taken for a death; a stop with sessions still
// in the registry (the previous process of an upgrade carries them) leaves
// it, and the next process's heartbeat takes over.
func (r *Registry) Run(ctx context.Context, h Handler) error {
	var kicks, rechecks <-chan struct{}
	if n, ok := r.cfg.DB.(Notifier); ok {
		var err error
		if kicks, err = n.Subscribe(ctx, killChannel(r.cfg.Instance)); err == nil {
			rechecks, err = n.Subscribe(ctx, recheckChannel)
		}
		if err != nil {
			r.log.Warn("no notifications from the store: kill requests and rechecks are polled for", zap.Error(err))
		}
	}
	beat := time.NewTicker(r.cfg.Beat)
	defer beat.Stop()
	poll := time.NewTicker(r.cfg.Poll)
	defer poll.Stop()
	r.tick(h, true)
	lastStale := r.now()
	for {
		select {
		case <-ctx.Done():
			r.leave()
			return nil
		case <-beat.C:
			stale := r.now().Sub(lastStale) >= staleEvery
			if stale {
				lastStale = r.now()
			}
			r.tick(h, stale)
		case <-poll.C:
			r.serveKills(h)
			r.serveRecheck(h)
		case <-kicks:
			r.serveKills(h)
		case <-rechecks:
			r.serveRecheck(h)
		case <-r.wake:
			r.recordAbandoned(h)
		}
	}
}

// tick is one heartbeat: write ours, watch theirs, take over the dead, and
// record what was taken over.
func (r *Registry) tick(h Handler, stale bool) {
	now := r.now()
	if err := r.heartbeat(now, h.Load()); err != nil {
		r.mu.Lock()
		// Nobody's heartbeat could be judged while ours was not written:
		// after an outage of the store, every instance waits a full Dead
		// again before taking another for dead.
		r.streak, r.observed = time.Time{}, map[string]observation{}
		r.mu.Unlock()
		r.log.Warn("cannot write this instance's heartbeat to the registry", zap.Error(err))
		return
	}
	dead, err := r.watch(now)
	if err != nil {
		r.log.Warn("cannot read the registry's heartbeats", zap.Error(err))
	}
	for _, d := range dead {
		r.reap(d)
	}
	if stale {
		r.takeStale(h)
	}
	r.recordAbandoned(h)
}

// heartbeat writes this instance's heartbeat, with load. A retired process
// (an upgrade's old one, which beats on while it serves its last sessions)
// keeps the load its successor wrote: the successor admits the new
// sessions, and the instance's load is its.
func (r *Registry) heartbeat(now time.Time, load admin.Load) error {
	r.mu.Lock()
	r.beat++
	hb := Heartbeat{Instance: r.cfg.Instance, Process: r.process, Beat: r.beat, Seen: now.UTC(), Version: r.cfg.Version,
		PID: r.cfg.PID, Addresses: r.cfg.Addresses, Lineage: r.cfg.Lineage, Load: load}
	wrote := r.wrote
	r.mu.Unlock()
	retired := r.retired.Load()
	var intruder *Heartbeat
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		intruder = nil
		b := tx.Bucket(instancesBucket)
		hb := hb
		v, err := b.Get([]byte(r.cfg.Instance))
		if err != nil {
			return err
		}
		var old Heartbeat
		if v != nil && json.Unmarshal(v, &old) == nil && old.Process != r.process {
			if retired {
				hb.Load = old.Load
			}
			// Written since this process last wrote it, by a process of
			// another line: not this instance's upgrade, another bastion
			// with this name. (Before this process's first write, it is
			// what a crash left, which CheckName looked at.)
			if wrote && old.Lineage != r.cfg.Lineage {
				intruder = &old
			}
		}
		v, _ = json.Marshal(hb)
		return b.Put([]byte(r.cfg.Instance), v)
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.streak.IsZero() {
		r.streak = now
	}
	r.wrote = true
	report := intruder != nil && (r.warned.IsZero() || now.Sub(r.warned) >= time.Minute)
	if report {
		r.warned = now
	}
	r.mu.Unlock()
	if report {
		r.log.Error("another bastiond writes this instance's heartbeat: two bastions are configured with one cluster.instance; "+
			"each needs its own, or they take each other's sessions for dead", zap.String("instance", r.cfg.Instance),
			zap.Int("other_pid", intruder.PID), zap.String("other_version", intruder.Version), zap.Any("other_addresses", intruder.Addresses))
		if r.cfg.Conflict != nil {
			r.cfg.Conflict(*intruder)
		}
	}
	return nil
}

// watch notes which heartbeats changed since the last look, and returns
// those that have not for Config.Dead, while this instance has been
// watching (its own heartbeat written every time) for that long at least.
func (r *Registry) watch(now time.Time) ([]deadInstance, error) {
	list, err := r.Instances()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	seen := map[string]bool{}
	var dead []deadInstance
	for _, hb := range list {
		if hb.Instance == r.cfg.Instance {
			continue
		}
		seen[hb.Instance] = true
		o, ok := r.observed[hb.Instance]
		if !ok || o.process != hb.Process || o.beat != hb.Beat {
			r.observed[hb.Instance] = observation{process: hb.Process, beat: hb.Beat, since: now}
			continue
		}
		if now.Sub(o.since) >= r.cfg.Dead && now.Sub(r.streak) >= r.cfg.Dead {
			dead = append(dead, deadInstance{name: hb.Instance, observation: o})
		}
	}
	for name := range r.observed {
		if !seen[name] {
			delete(r.observed, name)
		}
	}
	return dead, nil
}

// deadInstance is an instance whose heartbeat stopped.
type deadInstance struct {
	name string
	observation
}

// reap takes over a dead instance, in one transaction: its heartbeat is
// removed (if it is still the one seen: an instance that came back, or one
// another survivor took over first, is left alone), its session entries and
// the sessions it had taken over itself move to this instance's abandoned
// ones, and the kill requests for it go.
func (r *Registry) reap(d deadInstance) {
	name := []byte(d.name)
	var n int
	var reaped bool
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		n, reaped = 0, false
		ib := tx.Bucket(instancesBucket)
		v, err := ib.Get(name)
		if err != nil || v == nil {
			return err
		}
		var hb Heartbeat
		if json.Unmarshal(v, &hb) != nil || hb.Process != d.process || hb.Beat != d.beat {
			return nil // it beat again
		}
		if err := ib.Delete(name); err != nil {
			return err
		}
		reaped = true
		prefix := []byte(d.name + "/")
		ab := tx.Bucket(abandonedBucket)
		for _, bucket := range []string{sessionsBucket, abandonedBucket} {
			b := tx.Bucket(bucket)
			var keys, vals [][]byte
			if err := b.ForEach(prefix, func(k, v []byte) error {
				keys, vals = append(keys, bytes.Clone(k)), append(vals, bytes.Clone(v))
				return nil
			}); err != nil {
				return err
			}
			for i, k := range keys {
				del := b.Delete
				if bucket == sessionsBucket {
					// Abandoned, it no longer counts for its user.
					del = func(k []byte) error { return deleteEntry(tx, k, vals[i]) }
				}
				if err := del(k); err != nil {
					return err
				}
				if err := ab.Put(r.key(r.cfg.Instance, string(k[len(prefix):])), vals[i]); err != nil {
					return err
				}
				n++
			}
		}
		kb := tx.Bucket(killsBucket)
		var kills [][]byte
		if err := kb.ForEach(prefix, func(k, _ []byte) error {
			kills = append(kills, bytes.Clone(k))
			return nil
		}); err != nil {
			return err
		}
		for _, k := range kills {
			if err := kb.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("cannot take over a dead instance; trying again at the next heartbeat", zap.String("instance", d.name), zap.Error(err))
		return
	}
	r.mu.Lock()
	delete(r.observed, d.name)
	r.mu.Unlock()
	if reaped {
		r.log.Warn("an instance stopped beating: its sessions are recorded as abandoned here", zap.String("instance", d.name),
			zap.Duration("silent_for", r.now().Sub(d.since).Round(time.Second)), zap.Int("sessions", n))
	}
}

// takeStale takes over the entries of this instance whose process is gone
// without a live journal left to recover them (it wrote their end records
// and stopped before it could remove them; h.Abandoned writes no second
// record for those).
func (r *Registry) takeStale(h Handler) {
	var ids []string
	err := r.cfg.DB.View(func(tx store.Tx) error {
		ids = nil
		return tx.Bucket(sessionsBucket).ForEach(r.own(), func(k, v []byte) error {
			var e entry
			if json.Unmarshal(v, &e) == nil && !h.ProcessAlive(e.Process) {
				ids = append(ids, e.Session.ID)
			}
			return nil
		})
	})
	if err == nil && len(ids) > 0 {
		_, err = r.Claim(ids)
	}
	if err != nil {
		r.log.Warn("cannot look for the sessions of this instance's processes that are gone", zap.Error(err))
	}
}

// recordAbandoned records the sessions this instance took over, then
// removes them from the registry.
func (r *Registry) recordAbandoned(h Handler) {
	var list []admin.Session
	var keys [][]byte
	err := r.cfg.DB.View(func(tx store.Tx) error {
		list, keys = nil, nil
		return tx.Bucket(abandonedBucket).ForEach(r.own(), func(k, v []byte) error {
			var e entry
			if err := json.Unmarshal(v, &e); err != nil {
				r.log.Error("unreadable abandoned session entry; removed without a record", zap.ByteString("key", k), zap.Error(err))
			} else {
				list = append(list, e.Session)
			}
			keys = append(keys, bytes.Clone(k))
			return nil
		})
	})
	if err != nil {
		r.log.Warn("cannot read the sessions taken over", zap.Error(err))
		return
	}
	if len(keys) == 0 {
		return
	}
	if len(list) > 0 {
		if err := h.Abandoned(list); err != nil {
			r.log.Error("cannot record the sessions taken over; trying again at the next heartbeat", zap.Int("sessions", len(list)), zap.Error(err))
			return
		}
	}
	err = r.cfg.DB.Update(func(tx store.Tx) error {
		b := tx.Bucket(abandonedBucket)
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		// Their records are written; the next pass finds them in the
		// audit file's tail and writes no second one.
		r.log.Warn("cannot remove the sessions recorded as abandoned from the registry", zap.Error(err))
	}
}

// serveRecheck calls h.Recheck when another process has bumped the
// recheck generation since the last look.
func (r *Registry) serveRecheck(h Handler) {
	if r.retired.Load() {
		return
	}
	var q recheck
	err := r.cfg.DB.View(func(tx store.Tx) error {
		q = recheck{}
		v, err := tx.Bucket(recheckBucket).Get(recheckKey)
		if err != nil || v == nil {
			return err
		}
		return json.Unmarshal(v, &q)
	})
	if err != nil {
		r.log.Warn("cannot read the cluster's recheck requests", zap.Error(err))
		return
	}
	r.mu.Lock()
	first, changed := !r.genRead, q.Generation != r.seenGen
	r.seenGen, r.genRead = q.Generation, true
	r.mu.Unlock()
	if first || !changed || q.Process == r.process {
		return
	}
	h.Recheck("on instance " + q.From + ": " + q.Why)
}

// serveKills ends the sessions of this instance that others asked to end.
func (r *Registry) serveKills(h Handler) {
	if r.retired.Load() {
		return
	}
	type pending struct {
		key []byte
		req killRequest
	}
	// Most polls find nothing: a read, not a write, each second.
	var found bool
	err := r.cfg.DB.View(func(tx store.Tx) error {
		found = false
		err := tx.Bucket(killsBucket).ForEach(r.own(), func(_, _ []byte) error {
			found = true
			return errFound
		})
		if errors.Is(err, errFound) {
			return nil
		}
		return err
	})
	if err != nil || !found {
		if err != nil {
			r.log.Warn("cannot read the kill requests for this instance", zap.Error(err))
		}
		return
	}
	var todo []pending
	err = r.cfg.DB.Update(func(tx store.Tx) error {
		todo = nil
		b := tx.Bucket(killsBucket)
		if err := b.ForEach(r.own(), func(k, v []byte) error {
			var q killRequest
			if json.Unmarshal(v, &q) == nil && !q.Taken && !q.Done {
				todo = append(todo, pending{bytes.Clone(k), q})
			}
			return nil
		}); err != nil {
			return err
		}
		for _, p := range todo {
			p.req.Taken = true
			v, _ := json.Marshal(p.req)
			if err := b.Put(p.key, v); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.log.Warn("cannot read the kill requests for this instance", zap.Error(err))
		return
	}
	for _, p := range todo {
		id := string(p.key[len(r.own()):])
		kerr := h.Kill(id, p.req.Reason)
		if errors.Is(kerr, ErrNotHere) {
			p.req.Taken = false // for the other process of this instance
		} else {
			r.log.Info("session kill asked by another instance", zap.String("session", id), zap.String("from", p.req.From),
				zap.String("reason", p.req.Reason), zap.Error(kerr))
			p.req.Done = true
		}
		if kerr != nil {
			p.req.Err = kerr.Error()
		}
		v, _ := json.Marshal(p.req)
		err := r.cfg.DB.Update(func(tx store.Tx) error {
			b := tx.Bucket(killsBucket)
			got, err := b.Get(p.key)
			if err != nil || got == nil {
				return err // the requester gave up, or the entry went with the session
			}
			return b.Put(p.key, v)
		})
		if err != nil {
			r.log.Warn("cannot answer a kill request", zap.String("session", id), zap.Error(err))
		}
	}
}

// leave removes this instance's heartbeat on a clean stop, unless sessions
// of it are still in the registry (another process of it carries them, or
// their end records could not be removed): then the heartbeat stays, to be
// taken over by the next process or taken for dead.
func (r *Registry) leave() {
	err := r.cfg.DB.Update(func(tx store.Tx) error {
		var left bool
		if err := tx.Bucket(sessionsBucket).ForEach(r.own(), func(_, _ []byte) error {
			left = true
			return errFound
		}); err != nil && !errors.Is(err, errFound) {
			return err
		}
		if left {
			return nil
		}
		ib := tx.Bucket(instancesBucket)
		v, err := ib.Get([]byte(r.cfg.Instance))
		if err != nil || v == nil {
			return err
		}
		var hb Heartbeat
		if json.Unmarshal(v, &hb) == nil && hb.Process != r.process {
			return nil // another process of this instance beats now
		}
		return ib.Delete([]byte(r.cfg.Instance))
	})
	if err != nil {
		r.log.Warn("cannot remove this instance's heartbeat", zap.Error(err))
	}
}
