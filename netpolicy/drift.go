package netpolicy

import (
	"context"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"go.uber.org/zap"
)

// Drift detection compares the kernel with what the kernel held right after
// our own Apply, not with a prediction of it: whatever normalization the
// kernel does, it did it to both. The root tests hold Apply to the compiled
// ruleset, so "as applied" is "as compiled". Entries of dynamic sets (the
// blocklist, meters) and counter values change by design and are not compared.

// snapshot is the drift-relevant state of bastiond's tables.
type snapshot map[string]tableSnap // key: "family name"

type tableSnap struct {
	sets   map[string]string // set name -> attributes and constant elements
	chains map[string]chainSnap
}

type chainSnap struct {
	header string
	rules  []string
}

func tableKey(t Table) string { return string(t.Family) + " " + t.Name }

// read takes a snapshot of the tables rs names.
func read(c *nftables.Conn, rs Ruleset) (snapshot, error) {
	snap := snapshot{}
	for _, t := range rs.Tables {
		nt, err := c.ListTableOfFamily(t.Name, tableFamily(t.Family))
		if err != nil {
			continue // missing: absent from the snapshot
		}
		ts := tableSnap{sets: map[string]string{}, chains: map[string]chainSnap{}}
		sets, err := c.GetSets(nt)
		if err != nil {
			return nil, fmt.Errorf("netpolicy: read sets of %s: %w", tableKey(t), err)
		}
		for _, s := range sets {
			desc := fmt.Sprintf("type=%d interval=%v timeout=%s size=%d dynamic=%v counter=%v", s.KeyType.GetNFTMagic(), s.Interval, s.Timeout, s.Size, s.Dynamic, s.Counter)
			if !s.Dynamic && !s.HasTimeout {
				elems, err := c.GetSetElements(s)
				if err != nil {
					return nil, fmt.Errorf("netpolicy: read set %s: %w", s.Name, err)
				}
				keys := make([]string, len(elems))
				for i, e := range elems {
					keys[i] = fmt.Sprintf("%s/%v/%q", hex.EncodeToString(e.Key), e.IntervalEnd, e.Comment)
					if e.KeyEnd != nil {
						keys[i] += "/" + hex.EncodeToString(e.KeyEnd)
					}
				}
				sort.Strings(keys)
				desc += " elements=" + strings.Join(keys, ",")
			}
			ts.sets[s.Name] = desc
		}
		chains, err := c.ListChainsOfTableFamily(tableFamily(t.Family))
		if err != nil {
			return nil, fmt.Errorf("netpolicy: read chains of %s: %w", tableKey(t), err)
		}
		for _, ch := range chains {
			if ch.Table.Name != t.Name {
				continue
			}
			cs := chainSnap{header: chainHeader(ch)}
			rules, err := c.GetRules(nt, ch)
			if err != nil {
				return nil, fmt.Errorf("netpolicy: read rules of %s %s: %w", tableKey(t), ch.Name, err)
			}
			for _, r := range rules {
				cs.rules = append(cs.rules, ruleString(r))
			}
			ts.chains[ch.Name] = cs
		}
		snap[tableKey(t)] = ts
	}
	return snap, nil
}

func chainHeader(ch *nftables.Chain) string {
	var hook, prio, policy string
	if ch.Hooknum != nil {
		hook = fmt.Sprint(*ch.Hooknum)
	}
	if ch.Priority != nil {
		prio = fmt.Sprint(*ch.Priority)
	}
	if ch.Policy != nil {
		policy = fmt.Sprint(*ch.Policy)
	}
	return fmt.Sprintf("type=%s hook=%s prio=%s policy=%s", ch.Type, hook, prio, policy)
}

func ruleString(r *nftables.Rule) string {
	parts := make([]string, 0, len(r.Exprs)+1)
	for _, x := range r.Exprs {
		parts = append(parts, exprString(x))
	}
	parts = append(parts, "userdata="+hex.EncodeToString(r.UserData))
	return strings.Join(parts, " ")
}

// exprString prints an expression with the fields that define it. Counter
// values are left out; nested expressions are printed, not their pointers.
func exprString(x expr.Any) string {
	switch x := x.(type) {
	case *expr.Counter:
		return "counter"
	case *expr.Dynset:
		inner := make([]string, len(x.Exprs))
		for i, e := range x.Exprs {
			inner[i] = exprString(e)
		}
		y := *x
		y.Exprs = nil
		return fmt.Sprintf("%T%+v[%s]", x, y, strings.Join(inner, " "))
	}
	return fmt.Sprintf("%T%+v", x, x)
}

// diff describes how cur differs from want, in words an admin can act on.
// rs supplies the text of the expected rules.
func diff(want, cur snapshot, rs Ruleset) []string {
	var out []string
	for _, t := range rs.Tables {
		key := tableKey(t)
		w, c := want[key], cur[key]
		if _, ok := cur[key]; !ok {
			out = append(out, fmt.Sprintf("table %s is missing", key))
			continue
		}
		for name, wd := range w.sets {
			switch cd, ok := c.sets[name]; {
			case !ok:
				out = append(out, fmt.Sprintf("table %s: set %s is missing", key, name))
			case cd != wd:
				out = append(out, fmt.Sprintf("table %s: set %s was changed", key, name))
			}
		}
		for name := range c.sets {
			if _, ok := w.sets[name]; !ok && !strings.HasPrefix(name, "__set") {
				out = append(out, fmt.Sprintf("table %s: set %s was added", key, name))
			}
		}
		for _, ch := range t.Chains {
			wc, cc := w.chains[ch.Name], c.chains[ch.Name]
			if _, ok := c.chains[ch.Name]; !ok {
				out = append(out, fmt.Sprintf("table %s: chain %s is missing", key, ch.Name))
				continue
			}
			if wc.header != cc.header {
				out = append(out, fmt.Sprintf("table %s: chain %s: hook, priority or policy changed", key, ch.Name))
			}
			for _, d := range ruleDiff(wc.rules, cc.rules) {
				prefix := fmt.Sprintf("table %s: chain %s: ", key, ch.Name)
				switch {
				case d.want >= 0 && d.cur >= 0:
					out = append(out, prefix+fmt.Sprintf("rule %d differs from: %s", d.want+1, ruleText(ch, d.want)))
				case d.want >= 0:
					out = append(out, prefix+fmt.Sprintf("rule %d is missing: %s", d.want+1, ruleText(ch, d.want)))
				default:
					out = append(out, prefix+fmt.Sprintf("a rule was added at position %d", d.cur+1))
				}
			}
		}
		for name := range c.chains {
			if _, ok := w.chains[name]; !ok {
				out = append(out, fmt.Sprintf("table %s: chain %s was added", key, name))
			}
		}
	}
	sort.Strings(out)
	return out
}

// ruleEdit is one difference between the rules wanted and the rules found:
// want and cur index them, -1 where the rule exists on one side only.
type ruleEdit struct{ want, cur int }

// ruleDiff aligns the two lists on their longest common subsequence, so that
// one rule inserted or deleted is reported as just that, not as every rule
// after it differing. A rule deleted where another was added is a change.
func ruleDiff(want, cur []string) []ruleEdit {
	lcs := lcsTable(want, cur)
	var edits []ruleEdit
	i, j := 0, 0
	for i < len(want) || j < len(cur) {
		switch {
		case i < len(want) && j < len(cur) && want[i] == cur[j]:
			i, j = i+1, j+1
		case i < len(want) && j < len(cur) && lcs[i+1][j+1] == lcs[i][j]:
			edits = append(edits, ruleEdit{i, j}) // replaced in place
			i, j = i+1, j+1
		case j >= len(cur) || (i < len(want) && lcs[i+1][j] >= lcs[i][j+1]):
			edits = append(edits, ruleEdit{i, -1})
			i++
		default:
			edits = append(edits, ruleEdit{-1, j})
			j++
		}
	}
	return edits
}

// lcsTable returns lcs[i][j]: the length of the longest common subsequence
// of a[i:] and b[j:].
func lcsTable(a, b []string) [][]int {
	lcs := make([][]int, len(a)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	return lcs
}

func ruleText(ch Chain, i int) string {
	if i < len(ch.Rules) {
		return ch.Rules[i].String()
	}
	return "?"
}

// Verify compares the kernel with the ruleset last applied and lists the
// differences; none means the policy is in force as compiled.
func (k *Kernel) Verify() ([]string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.verifyLocked()
}

func (k *Kernel) verifyLocked() ([]string, error) {
	if k.applied == nil {
		return nil, fmt.Errorf("netpolicy: nothing applied yet")
	}
	gen, genErr := k.gen.generation()
	if genErr == nil && k.matchedOK && gen == k.matched {
		return nil, nil // no transaction since the kernel last matched
	}
	cur, err := read(k.conn, *k.applied)
	if err != nil {
		return nil, err
	}
	diffs := diff(k.snap, cur, *k.applied)
	if len(diffs) == 0 {
		k.matched, k.matchedOK = gen, genErr == nil
	}
	return diffs, nil
}

// Reconcile keeps the applied ruleset in force until ctx ends: whenever
// someone changes or removes any part of it, it logs what differed and
// applies it again. It checks at once on every nftables change the kernel
// announces (coalesced), and every interval (default 30s) in case an
// announcement was lost; without announcements it checks every second.
func (k *Kernel) Reconcile(ctx context.Context, log *zap.Logger, interval time.Duration) error {
	if interval <= 0 {
		interval = 30 * time.Second
	}
	changes, stop, err := k.watch()
	if err != nil {
		log.Warn("no nftables change notifications; checking every second instead", zap.Error(err))
		interval = time.Second
	} else {
		defer stop()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case _, ok := <-changes:
			if !ok { // the monitor died: fall back to polling
				changes = nil
				t.Reset(time.Second)
				log.Warn("nftables change notifications stopped; checking every second instead")
				continue
			}
			// A transaction announces each object; wait for the rest.
			coalesce(changes, 50*time.Millisecond)
		}
		k.check(log)
	}
}

func (k *Kernel) check(log *zap.Logger) {
	k.mu.Lock()
	defer k.mu.Unlock()
	diffs, err := k.verifyLocked()
	if err == nil && len(diffs) > 0 {
		log.Warn("firewall drift: someone changed bastiond's tables; restoring them", zap.Strings("differences", diffs))
		if err = k.applyLocked(*k.applied); err == nil {
			k.repairs++
			log.Info("firewall restored")
			if k.repaired != nil {
				k.repaired(diffs)
			}
		}
	}
	if err != nil {
		log.Error("firewall check failed", zap.Error(err))
	}
}

// coalesce drains ch until it has been quiet for d.
func coalesce[T any](ch <-chan T, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
			timer.Reset(d)
		case <-timer.C:
			return
		}
	}
}

// watch subscribes to the kernel's nftables change announcements.
func (k *Kernel) watch() (<-chan *nftables.MonitorEvent, func(), error) {
	mon := nftables.NewMonitor(
		nftables.WithMonitorAction(nftables.MonitorActionAny),
		nftables.WithMonitorObject(nftables.MonitorObjectAny),
	)
	ch, err := k.conn.AddMonitor(mon)
	if err != nil {
		return nil, nil, fmt.Errorf("netpolicy: monitor: %w", err)
	}
	return ch, func() { mon.Close() }, nil
}

// OnRepair has Reconcile call f after each repair, with the differences it
// found and undid (the daemon's audit trail). f is called with the Kernel
// locked: it must return at once and not use the Kernel.
func (k *Kernel) OnRepair(f func(differences []string)) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.repaired = f
}

// Repairs is how many times Reconcile found drift and restored the policy.
func (k *Kernel) Repairs() uint64 {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.repairs
}
