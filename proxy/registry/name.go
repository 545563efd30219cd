package registry

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/store"
)

// NameInUseError is CheckName's refusal: another bastiond, of another line
// of processes, writes this instance's heartbeat.
type NameInUseError struct {
	Other Heartbeat
}

func (e *NameInUseError) Error() string {
	o := e.Other
	return fmt.Sprintf("cluster.instance %q is in use by another running bastiond (pid %d, version %s, addresses %v, heartbeat %d "+
		"written %s by its clock): give each instance of the cluster its own name", o.Instance, o.PID, o.Version, o.Addresses,
		o.Beat, o.Seen.Format(time.RFC3339))
}

// CheckName makes sure no other bastion runs under this instance's name,
// before this process writes its first heartbeat: two would take each
// other's sessions for another's, and neither would ever be noticed dead.
// A heartbeat of this line of processes (an upgrade's predecessor), or
// none, is no obstacle. Another line's heartbeat may be a live bastion's
// or what a crash of this instance left: CheckName watches it for up to
// two beats, and returns a *NameInUseError if it is written
// again, nil if it is not. It returns the store's error if it cannot
// look.
func (r *Registry) CheckName(ctx context.Context) error {
	first, err := r.ownHeartbeat()
	if err != nil || first == nil || first.Lineage == r.cfg.Lineage {
		return err
	}
	r.log.Info("this instance's heartbeat was written by another process: waiting to see whether it still runs",
		zap.Int("pid", first.PID), zap.Time("seen", first.Seen))
	deadline := time.NewTimer(2 * r.cfg.Beat)
	defer deadline.Stop()
	tick := time.NewTicker(max(r.cfg.Beat/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			return nil // left by a process that is gone
		case <-tick.C:
		}
		hb, err := r.ownHeartbeat()
		switch {
		case err != nil:
			return err
		case hb == nil:
			return nil // it left
		case hb.Process != first.Process || hb.Beat != first.Beat:
			if hb.Lineage == r.cfg.Lineage {
				return nil
			}
			return &NameInUseError{Other: *hb}
		}
	}
}

// ownHeartbeat is this instance's heartbeat as stored, or nil.
func (r *Registry) ownHeartbeat() (*Heartbeat, error) {
	v, err := store.Get(r.cfg.DB, instancesBucket, []byte(r.cfg.Instance))
	if err != nil || v == nil {
		return nil, err
	}
	var hb Heartbeat
	if err := json.Unmarshal(v, &hb); err != nil {
		return nil, fmt.Errorf("registry: heartbeat of %s: %w", r.cfg.Instance, err)
	}
	return &hb, nil
}
