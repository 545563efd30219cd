package netpolicy

import (
	"fmt"
	"sort"
	"time"
)

// Traffic is what a counter saw.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

func (t *Traffic) add(packets, bytes uint64) {
	t.Packets += packets
	t.Bytes += bytes
}

// TargetCounters are the kernel's counters for one target, summed over its
// addresses and ports. They count packets, not sessions: an independent
// check on the session accounting, kept by the kernel whatever the daemon
// does.
type TargetCounters struct {
	Target string `json:"target"`
	// Sent and Received are the bastion's own traffic with the target's
	// offered ports, each way.
	Sent     Traffic `json:"sent"`
	Received Traffic `json:"received"`
	// Blocked is what the VNet guard dropped on its way to the target's
	// guarded ports: someone other than the bastion tried to reach them.
	// Always zero in attached mode, where the machines guard themselves.
	Blocked Traffic `json:"blocked"`
}

// counterSets says which total each counting set feeds.
var counterSets = map[string]func(*TargetCounters) *Traffic{
	ToTargets4:   func(c *TargetCounters) *Traffic { return &c.Sent },
	ToTargets6:   func(c *TargetCounters) *Traffic { return &c.Sent },
	FromTargets4: func(c *TargetCounters) *Traffic { return &c.Received },
	FromTargets6: func(c *TargetCounters) *Traffic { return &c.Received },
	BlockedTo4:   func(c *TargetCounters) *Traffic { return &c.Blocked },
	BlockedTo6:   func(c *TargetCounters) *Traffic { return &c.Blocked },
}

// Counters reads the per-target counters, one entry per target of the
// policy in force (zeros included), sorted by name. They add up from the
// daemon's first apply: a re-apply (a reload, a drift repair) replaces the
// tables and so the kernel's counters, and what they held is carried over.
func (k *Kernel) Counters() ([]TargetCounters, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.applied == nil {
		return nil, fmt.Errorf("netpolicy: no policy applied")
	}
	cur, err := k.readCounters()
	if err != nil {
		return nil, err
	}
	out := make([]TargetCounters, 0, len(cur))
	for name, c := range cur {
		c.plus(k.counted[name])
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Target < out[j].Target })
	return out, nil
}

// CountingSince is when the counters started: the first apply.
func (k *Kernel) CountingSince() time.Time {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.since
}

func (c *TargetCounters) plus(o TargetCounters) {
	c.Sent.add(o.Sent.Packets, o.Sent.Bytes)
	c.Received.add(o.Received.Packets, o.Received.Bytes)
	c.Blocked.add(o.Blocked.Packets, o.Blocked.Bytes)
}

// carriedCounters is called before the tables are replaced by next: what
// the kernel counted so far joined to what earlier tables counted, for the
// targets that are still in next. The caller keeps it once next is in force.
func (k *Kernel) carriedCounters(next Ruleset) map[string]TargetCounters {
	carried := map[string]TargetCounters{}
	for name, c := range k.counted {
		carried[name] = c
	}
	if k.applied != nil {
		cur, err := k.readCounters()
		if err == nil { // tables deleted under us: their counts went with them
			for name, c := range cur {
				c.plus(carried[name])
				carried[name] = *c
			}
		}
	}
	keep := map[string]bool{}
	for _, t := range next.Tables {
		for _, s := range t.Sets {
			if _, ok := counterSets[s.Name]; ok && s.Counter {
				for _, e := range s.Elements {
					keep[e.Comment] = true
				}
			}
		}
	}
	for name := range carried {
		if !keep[name] {
			delete(carried, name)
		}
	}
	return carried
}

// readCounters reads the kernel's counters of the applied ruleset's
// counting sets, by target.
func (k *Kernel) readCounters() (map[string]*TargetCounters, error) {
	byName := map[string]*TargetCounters{}
	for _, t := range k.applied.Tables {
		for _, s := range t.Sets {
			if _, ok := counterSets[s.Name]; ok && s.Counter {
				for _, e := range s.Elements {
					if byName[e.Comment] == nil { // every target shows, counted or not
						byName[e.Comment] = &TargetCounters{Target: e.Comment}
					}
				}
			}
		}
	}
	buf := make([]byte, dumpBuffer)
	for _, t := range k.applied.Tables {
		for _, s := range t.Sets {
			field, ok := counterSets[s.Name]
			if !ok || !s.Counter {
				continue
			}
			err := k.gen.dumpSetCounters(buf, tableFamily(t.Family), t.Name, s.Name, func(comment []byte, packets, bytes uint64) {
				if c := byName[string(comment)]; c != nil { // no allocation: a lookup by bytes
					field(c).add(packets, bytes)
				}
			})
			if err != nil {
				return nil, fmt.Errorf("%w (table %s)", err, tableKey(t))
			}
		}
	}
	return byName, nil
}
