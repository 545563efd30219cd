package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/version"
	"github.com/bastiond/bastiond/netpolicy"
)

// metricsServer serves Prometheus metrics on the loopback address of
// listen.metrics (the configuration refuses any other, and the host firewall
// accepts loopback only).
type metricsServer struct {
	reg  *prometheus.Registry
	http *http.Server
	ln   net.Listener
}

func newMetricsServer(ln net.Listener, kernel *netpolicy.Kernel, log *zap.Logger, more ...prometheus.Collector) *metricsServer {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "bastiond_build_info",
			Help:        "Always 1; the version is a label.",
			ConstLabels: prometheus.Labels{"version": version.Version},
		}, func() float64 { return 1 }),
		&firewallCollector{k: kernel, log: log},
	)
	reg.MustRegister(more...)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            zap.NewStdLog(log),
		ErrorHandling:       promhttp.ContinueOnError, // a failed read of the firewall must not hide the rest
		MaxRequestsInFlight: 4,
		Timeout:             20 * time.Second,
	}))
	return &metricsServer{
		reg: reg,
		ln:  ln,
		http: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: 5 * time.Second,
			IdleTimeout:       time.Minute,
			ErrorLog:          zap.NewStdLog(log),
		},
	}
}

func (m *metricsServer) Serve() error {
	if err := m.http.Serve(m.ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("metrics: %w", err)
	}
	return nil
}

func (m *metricsServer) Shutdown(ctx context.Context) { m.http.Shutdown(ctx) }

// firewallCollector reads the firewall's counters from the kernel at each
// scrape.
type firewallCollector struct {
	k   *netpolicy.Kernel
	log *zap.Logger
}

var (
	targetPackets = prometheus.NewDesc("bastiond_target_packets_total",
		"Packets counted by the firewall per target: sent and received are the bastion's traffic with the target's offered ports, blocked what the VNet guard dropped on its way to the target's guarded ports.",
		[]string{"target", "direction"}, nil)
	targetBytes = prometheus.NewDesc("bastiond_target_bytes_total",
		"Bytes counted by the firewall per target (see bastiond_target_packets_total).",
		[]string{"target", "direction"}, nil)
	blocklisted = prometheus.NewDesc("bastiond_blocklist_entries",
		"Sources in the scan blocklist now: IPv4 addresses and IPv6 /64s.", []string{"family"}, nil)
	driftRepairs = prometheus.NewDesc("bastiond_firewall_drift_repairs_total",
		"Times someone changed bastiond's nftables tables and the daemon restored them.", nil, nil)
)

func (c *firewallCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- targetPackets
	ch <- targetBytes
	ch <- blocklisted
	ch <- driftRepairs
}

func (c *firewallCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(driftRepairs, prometheus.CounterValue, float64(c.k.Repairs()))
	if list, err := c.k.Counters(); err != nil {
		ch <- prometheus.NewInvalidMetric(targetPackets, err)
	} else {
		for _, t := range list {
			for _, d := range []struct {
				name string
				v    netpolicy.Traffic
			}{{"sent", t.Sent}, {"received", t.Received}, {"blocked", t.Blocked}} {
				ch <- prometheus.MustNewConstMetric(targetPackets, prometheus.CounterValue, float64(d.v.Packets), t.Target, d.name)
				ch <- prometheus.MustNewConstMetric(targetBytes, prometheus.CounterValue, float64(d.v.Bytes), t.Target, d.name)
			}
		}
	}
	if list, err := c.k.Blocklist(); err != nil {
		ch <- prometheus.NewInvalidMetric(blocklisted, err)
	} else {
		var v4, v6 float64
		for _, e := range list {
			if e.Prefix.Addr().Is4() {
				v4++
			} else {
				v6++
			}
		}
		ch <- prometheus.MustNewConstMetric(blocklisted, prometheus.GaugeValue, v4, "ipv4")
		ch <- prometheus.MustNewConstMetric(blocklisted, prometheus.GaugeValue, v6, "ipv6")
	}
}
