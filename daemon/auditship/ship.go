package auditship

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Destination is one place lines are shipped to: a *Syslog, a *Journal or
// a *Database.
type Destination interface {
	Name() string
	Ship(lines [][]byte)
	Run(ctx context.Context) error
	counters() *counters
	queue() *queue
}

var (
	_ Destination = (*Syslog)(nil)
	_ Destination = (*Journal)(nil)
	_ Destination = (*Database)(nil)
)

// Shipper fans the audit trail out to its destinations. Its Ship is the
// broker's Options.Ship.
type Shipper struct {
	dests  []Destination
	cancel context.CancelFunc
	done   sync.WaitGroup
}

// New returns a Shipper over dests, which Start starts.
func New(dests ...Destination) *Shipper { return &Shipper{dests: dests} }

// Start runs each destination in its own goroutine until Close.
func (s *Shipper) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	for _, d := range s.dests {
		s.done.Go(func() { d.Run(ctx) })
	}
}

// Ship hands lines (stamped audit lines, without newlines, in the file's
// order) to every destination. It never blocks and keeps no reference
// beyond the lines themselves, which the caller must not change.
func (s *Shipper) Ship(lines [][]byte) {
	for _, d := range s.dests {
		d.Ship(lines)
	}
}

// Close gives the destinations up to grace to send what they hold, then
// stops them. Lines still waiting are lost to shipping (not to the audit
// file).
func (s *Shipper) Close(grace time.Duration) {
	if s.cancel == nil {
		return
	}
	for end := time.Now().Add(grace); time.Now().Before(end) && !s.idle(); {
		time.Sleep(20 * time.Millisecond)
	}
	s.cancel()
	s.done.Wait()
	s.cancel = nil
}

// idle reports whether no destination has a line it has not sent.
func (s *Shipper) idle() bool {
	for _, d := range s.dests {
		if _, unsent, _ := d.queue().stats(); unsent > 0 {
			return false
		}
	}
	return true
}

// Destinations are the shipper's destinations' names.
func (s *Shipper) Destinations() []string {
	names := make([]string, len(s.dests))
	for i, d := range s.dests {
		names[i] = d.Name()
	}
	return names
}

var (
	shippedDesc = prometheus.NewDesc("bastiond_audit_shipped_total",
		"Audit lines sent to a collector (journald, syslog or the cluster's database); a line sent again after a broken connection counts again.", []string{"collector"}, nil)
	failuresDesc = prometheus.NewDesc("bastiond_audit_ship_failures_total",
		"Failures to ship audit lines: connects that failed, connections that broke, entries or batches refused.", []string{"collector"}, nil)
	depthDesc = prometheus.NewDesc("bastiond_audit_ship_queue_depth",
		"Audit lines waiting for a collector: not sent yet, or sent and kept to be sent again if the connection breaks.", []string{"collector"}, nil)
	droppedDesc = prometheus.NewDesc("bastiond_audit_ship_dropped_total",
		"Audit lines never shipped because the collector's queue was full (the oldest go first); the audit file still has them.", []string{"collector"}, nil)
)

var _ prometheus.Collector = (*Shipper)(nil)

// Describe implements prometheus.Collector.
func (s *Shipper) Describe(ch chan<- *prometheus.Desc) {
	ch <- shippedDesc
	ch <- failuresDesc
	ch <- depthDesc
	ch <- droppedDesc
}

// Collect implements prometheus.Collector.
func (s *Shipper) Collect(ch chan<- prometheus.Metric) {
	for _, d := range s.dests {
		c := d.counters()
		depth, _, dropped := d.queue().stats()
		ch <- prometheus.MustNewConstMetric(shippedDesc, prometheus.CounterValue, float64(c.shipped.Load()), d.Name())
		ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.CounterValue, float64(c.failures.Load()), d.Name())
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(depth), d.Name())
		ch <- prometheus.MustNewConstMetric(droppedDesc, prometheus.CounterValue, float64(dropped), d.Name())
	}
}
