package pgstore

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// counters are what a DB counts of its own work.
type counters struct {
	views, updates, takes, gets atomic.Uint64
	conflicts                   atomic.Uint64 // transactions rolled back by a conflict and run again
	gaveUp                      atomic.Uint64 // updates that still conflicted after MaxAttempts
}

// Stats is a DB's work since it was opened.
type Stats struct {
	// Views, Updates, Takes and Gets are the calls of each, however many
	// attempts each took.
	Views, Updates, Takes, Gets uint64
	// Conflicts are the attempts rolled back because they conflicted with
	// another transaction (serialization failure or deadlock) and run
	// again: the cost of contention, the first thing to look at when an
	// Update's latency has a long tail.
	Conflicts uint64
	// GaveUp are the Updates that still conflicted after MaxAttempts and
	// failed with store.ErrUnavailable.
	GaveUp uint64
}

// Stats returns the counts of the DB's work so far.
func (db *DB) Stats() Stats {
	c := &db.counters
	return Stats{Views: c.views.Load(), Updates: c.updates.Load(), Takes: c.takes.Load(), Gets: c.gets.Load(),
		Conflicts: c.conflicts.Load(), GaveUp: c.gaveUp.Load()}
}

var (
	descTransactions = prometheus.NewDesc("bastiond_store_transactions_total",
		"Transactions on the PostgreSQL store, by kind (view, update, take, get), each counted once however many attempts it took.",
		[]string{"kind"}, nil)
	descConflicts = prometheus.NewDesc("bastiond_store_conflicts_total",
		"Transactions rolled back because they conflicted with another (serialization failure or deadlock) and run again.",
		nil, nil)
	descGaveUp = prometheus.NewDesc("bastiond_store_conflicts_gave_up_total",
		"Updates that still conflicted after the most attempts, and failed.", nil, nil)
	descConns = prometheus.NewDesc("bastiond_store_connections",
		"Connections of this instance's pool to PostgreSQL, by state (acquired, idle) and the pool's maximum (max).",
		[]string{"state"}, nil)
	descWaits = prometheus.NewDesc("bastiond_store_connection_waits_total",
		"Times a transaction waited for a free connection of the pool (all of them in use).", nil, nil)
)

var _ prometheus.Collector = (*DB)(nil)

// Describe is prometheus.Collector's.
func (db *DB) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descTransactions, descConflicts, descGaveUp, descConns, descWaits} {
		ch <- d
	}
}

// Collect is prometheus.Collector's.
func (db *DB) Collect(ch chan<- prometheus.Metric) {
	s := db.Stats()
	ch <- prometheus.MustNewConstMetric(descTransactions, prometheus.CounterValue, float64(s.Views), "view")
	ch <- prometheus.MustNewConstMetric(descTransactions, prometheus.CounterValue, float64(s.Updates), "update")
	ch <- prometheus.MustNewConstMetric(descTransactions, prometheus.CounterValue, float64(s.Takes), "take")
	ch <- prometheus.MustNewConstMetric(descTransactions, prometheus.CounterValue, float64(s.Gets), "get")
	ch <- prometheus.MustNewConstMetric(descConflicts, prometheus.CounterValue, float64(s.Conflicts))
	ch <- prometheus.MustNewConstMetric(descGaveUp, prometheus.CounterValue, float64(s.GaveUp))
	ps := db.pool.Stat()
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(ps.AcquiredConns()), "acquired")
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(ps.IdleConns()), "idle")
	ch <- prometheus.MustNewConstMetric(descConns, prometheus.GaugeValue, float64(ps.MaxConns()), "max")
	ch <- prometheus.MustNewConstMetric(descWaits, prometheus.CounterValue, float64(ps.EmptyAcquireCount()))
}
