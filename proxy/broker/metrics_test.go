package broker

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// metricValue is the value of the series of c named name that has
// labelValue among its label values, or that has no labels if labelValue
// is "".
func metricValue(t testing.TB, c prometheus.Collector, name, labelValue string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if labelValue == "" && len(m.GetLabel()) == 0 {
				return m.Gauge.GetValue()
			}
			for _, l := range m.GetLabel() {
				if l.GetValue() != labelValue {
					continue
				}
				if m.Gauge != nil {
					return m.Gauge.GetValue()
				}
				return m.Counter.GetValue()
			}
		}
	}
	t.Fatalf("no series %s{...=%q}", name, labelValue)
	return 0
}

func TestMetrics(t *testing.T) {
	srv := listen(t, "tcp4", "127.0.0.1:0")
	e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}, Capacity: 50})
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(e.b)
	s, u, done := relayed(t, e, srv, "alice", clientTCP)
	target := srv.next(t)
	u.Write(make([]byte, 1000))
	io.ReadFull(target, make([]byte, 1000))
	target.Write(make([]byte, 10))
	io.ReadFull(u, make([]byte, 10))
	// The relay counts a chunk once its write returns, a moment after the
	// peer may have read it.
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if i := s.Info(); i.BytesUp == 1000 && i.BytesDown == 10 {
			break
		}
	}
	e.b.HandshakeFailed("tunnel")
	e.b.HandshakeFailed("tls")
	e.b.HandshakeFailed("tls")
	want := `
# HELP bastiond_sessions_active Sessions open now.
# TYPE bastiond_sessions_active gauge
bastiond_sessions_active{protocol="tunnel"} 1
# HELP bastiond_session_bytes_total Bytes carried by sessions, live ones included: up is from users to machines.
# TYPE bastiond_session_bytes_total counter
bastiond_session_bytes_total{direction="down",protocol="tunnel"} 10
bastiond_session_bytes_total{direction="up",protocol="tunnel"} 1000
# HELP bastiond_handshake_failures_total Handshakes that failed, by layer: tls, quic, tunnel, ssh, rdp.
# TYPE bastiond_handshake_failures_total counter
bastiond_handshake_failures_total{layer="tls"} 2
bastiond_handshake_failures_total{layer="tunnel"} 1
# HELP bastiond_capacity_units Capacity in weighted units: used by open sessions, and the total (limits.capacity).
# TYPE bastiond_capacity_units gauge
bastiond_capacity_units{state="total"} 50
bastiond_capacity_units{state="used"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bastiond_sessions_active", "bastiond_session_bytes_total",
		"bastiond_handshake_failures_total", "bastiond_capacity_units"); err != nil {
		t.Error(err)
	}
	s.End(ReasonAccessRevoked)
	waitDone(t, done)
	_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()+1))
	wantKind(t, err, KindUnknownTarget, "does not offer")
	want = `
# HELP bastiond_sessions_active Sessions open now.
# TYPE bastiond_sessions_active gauge
bastiond_sessions_active{protocol="tunnel"} 0
# HELP bastiond_sessions_ended_total Sessions ended, by why.
# TYPE bastiond_sessions_ended_total counter
bastiond_sessions_ended_total{protocol="tunnel",reason="access_revoked"} 1
# HELP bastiond_session_bytes_total Bytes carried by sessions, live ones included: up is from users to machines.
# TYPE bastiond_session_bytes_total counter
bastiond_session_bytes_total{direction="down",protocol="tunnel"} 10
bastiond_session_bytes_total{direction="up",protocol="tunnel"} 1000
# HELP bastiond_capacity_units Capacity in weighted units: used by open sessions, and the total (limits.capacity).
# TYPE bastiond_capacity_units gauge
bastiond_capacity_units{state="total"} 50
bastiond_capacity_units{state="used"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "bastiond_sessions_active", "bastiond_sessions_ended_total",
		"bastiond_session_bytes_total", "bastiond_capacity_units"); err != nil {
		t.Error(err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n == 0 {
		t.Errorf("gather: %d, %v", n, err)
	}
}

func TestReasonClass(t *testing.T) {
	for reason, class := range map[string]string{
		ReasonClientClosed:                     "client_closed",
		ReasonTargetClosed:                     "target_closed",
		ReasonKilled + "by root: maintenance":  "killed",
		ReasonIdle:                             "idle_timeout",
		ReasonMaxDuration:                      "max_duration",
		ReasonAccessRevoked:                    "access_revoked",
		ReasonTargetUnreachable:                "target_unreachable",
		ReasonClientError + "connection reset": "client_error",
		ReasonTargetError + "broken pipe":      "target_error",
		ReasonShutdown:                         "shutdown",
		ReasonAbandoned:                        "abandoned",
		ReasonAuthFailed:                       "auth_failed",
		ReasonRecordingFailed:                  "recording_failed",
		ReasonAuditUnavailable:                 "audit_unavailable",
		ReasonRemoteExit + " (status 0)":       "remote_exit",
		ReasonHostKey + "mismatch: vm1":        "host_key",
		ReasonNegotiation + "TLS required":     "negotiation",
		"test":                                 "other",
	} {
		if got := reasonClass(reason); got != class {
			t.Errorf("reasonClass(%q) = %q, want %q", reason, got, class)
		}
	}
	for k, s := range map[ErrorKind]string{KindUnknownTarget: "unknown_target", KindUserLimit: "user_limit", KindCapacity: "capacity",
		KindUnreachable: "unreachable", KindRefused: "refused", KindClosed: "closed", KindInternal: "internal", KindAuditUnavailable: "audit_unavailable"} {
		if k.String() != s {
			t.Errorf("%d.String() = %q, want %q", k, k.String(), s)
		}
	}
}
