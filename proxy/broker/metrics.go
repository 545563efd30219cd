package broker

import (
	"github.com/prometheus/client_golang/prometheus"
)

type byteKey struct{ protocol, direction string }

// metrics are the broker's Prometheus series.
type metrics struct {
	active     *prometheus.GaugeVec
	ended      *prometheus.CounterVec
	refusals   *prometheus.CounterVec
	dialErrors *prometheus.CounterVec
	handshakes *prometheus.CounterVec

	// endedBytes are the bytes of ended sessions; the broker's mu guards it.
	endedBytes map[byteKey]int64
}

var (
	bytesDesc = prometheus.NewDesc("bastiond_session_bytes_total",
		"Bytes carried by sessions, live ones included: up is from users to machines.", []string{"protocol", "direction"}, nil)
	unitsDesc = prometheus.NewDesc("bastiond_capacity_units",
		"Capacity in weighted units: used by open sessions, and the total (limits.capacity).", []string{"state"}, nil)
	auditDesc = prometheus.NewDesc("bastiond_audit_writable",
		"1 while the audit file can be written; 0 while it cannot: new sessions are refused and end records wait in memory.", nil, nil)
	auditQueueDesc = prometheus.NewDesc("bastiond_audit_queue_depth",
		"Audit events waiting to be written to the audit file.", nil, nil)
	auditEventsDesc = prometheus.NewDesc("bastiond_audit_events_total",
		"Audit events submitted, by type (session records included).", []string{"event"}, nil)
	auditLostDesc = prometheus.NewDesc("bastiond_audit_events_lost_total",
		"Audit events dropped because too many waited for the audit file (each loss is counted in an audit_events_lost line).", nil, nil)
)

func newMetrics() *metrics {
	return &metrics{
		active: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "bastiond_sessions_active",
			Help: "Sessions open now."}, []string{"protocol"}),
		ended: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_sessions_ended_total",
			Help: "Sessions ended, by why."}, []string{"protocol", "reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_admission_refusals_total",
			Help: "Sessions refused because the bastion was at capacity, the user at their cap, or the audit file unwritable."}, []string{"reason"}),
		dialErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_dial_errors_total",
			Help: "Sessions whose target could not be dialled."}, []string{"target"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_handshake_failures_total",
			Help: "Handshakes that failed, by layer: tls, quic, tunnel, ssh, rdp."}, []string{"layer"}),
		endedBytes: map[byteKey]int64{},
	}
}

// addBytes moves an ended session's bytes into the totals; b.mu is held.
func (m *metrics) addBytes(protocol string, up, down int64) {
	m.endedBytes[byteKey{protocol, "up"}] += up
	m.endedBytes[byteKey{protocol, "down"}] += down
}

var _ prometheus.Collector = (*Broker)(nil)

// Describe implements prometheus.Collector.
func (b *Broker) Describe(ch chan<- *prometheus.Desc) {
	m := b.metrics
	m.active.Describe(ch)
	m.ended.Describe(ch)
	m.refusals.Describe(ch)
	m.dialErrors.Describe(ch)
	m.handshakes.Describe(ch)
	ch <- bytesDesc
	ch <- unitsDesc
	ch <- auditDesc
	ch <- auditQueueDesc
	ch <- auditEventsDesc
	ch <- auditLostDesc
}

// Collect implements prometheus.Collector.
func (b *Broker) Collect(ch chan<- prometheus.Metric) {
	m := b.metrics
	m.active.Collect(ch)
	m.ended.Collect(ch)
	m.refusals.Collect(ch)
	m.dialErrors.Collect(ch)
	m.handshakes.Collect(ch)
	b.mu.Lock()
	totals := make(map[byteKey]int64, len(m.endedBytes))
	for k, v := range m.endedBytes {
		totals[k] = v
	}
	for _, s := range b.sessions {
		totals[byteKey{s.info.Protocol, "up"}] += s.up.Load()
		totals[byteKey{s.info.Protocol, "down"}] += s.down.Load()
	}
	used := b.used
	b.mu.Unlock()
	for k, v := range totals {
		ch <- prometheus.MustNewConstMetric(bytesDesc, prometheus.CounterValue, float64(v), k.protocol, k.direction)
	}
	ch <- prometheus.MustNewConstMetric(unitsDesc, prometheus.GaugeValue, float64(used), "used")
	ch <- prometheus.MustNewConstMetric(unitsDesc, prometheus.GaugeValue, float64(b.cfg.Load().Capacity), "total")
	writable := 1.0
	if b.audit.unavailable() != nil {
		writable = 0
	}
	ch <- prometheus.MustNewConstMetric(auditDesc, prometheus.GaugeValue, writable)
	ch <- prometheus.MustNewConstMetric(auditQueueDesc, prometheus.GaugeValue, float64(b.audit.depth.Load()))
	ch <- prometheus.MustNewConstMetric(auditLostDesc, prometheus.CounterValue, float64(b.audit.lostEver.Load()))
	b.eventsMu.Lock()
	for ev, n := range b.events {
		ch <- prometheus.MustNewConstMetric(auditEventsDesc, prometheus.CounterValue, float64(n), ev)
	}
	b.eventsMu.Unlock()
}
