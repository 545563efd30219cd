package auditship

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/testcert"
)

// run starts s and stops it at the end of the test.
func run(t testing.TB, s *Syslog) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { s.Run(ctx) })
	t.Cleanup(func() { cancel(); wg.Wait() })
}

func newTestSyslog(t testing.TB, addr string, tlsCfg *tls.Config, ev *events, edit func(*SyslogConfig)) *Syslog {
	cfg := SyslogConfig{Address: addr, TLS: tlsCfg, Facility: 4, Hostname: "bastion-1", Audit: ev,
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, Timeout: 2 * time.Second}
	if edit != nil {
		edit(&cfg)
	}
	s, err := NewSyslog(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

var rfc5424 = regexp.MustCompile(`^<(\d+)>1 (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) bastion-1 bastiond (\d+) ([!-~]{1,32}) \[bastiond@32473 hash="([0-9a-f]{64})"(?: prev="([0-9a-f]{64})")? v="2"\] \{`)

// Every line arrives whole, as one RFC 5424 message with its hash, over
// TLS and over plain TCP, IPv4 and IPv6.
func TestSyslogFraming(t *testing.T) {
	for _, tt := range []struct {
		name, host string
		tls        bool
	}{
		{"tls/ipv4", "127.0.0.1", true},
		{"tls/ipv6", "::1", true},
		{"tcp/ipv4", "127.0.0.1", false},
		{"tcp/ipv6", "::1", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var server, client *tls.Config
			if tt.tls {
				server, client = collectorTLS(t)
			}
			c := newCollector(t, tt.host, server)
			s := newTestSyslog(t, c.addr, client, &events{}, nil)
			lines, _ := trailLines(20, audit.Zero)
			// A line far beyond a TLS record and a syslog default of 8 KiB.
			big := audit.Stamp(audit.Marshal(audit.Event{Event: audit.ConfigReloaded, Detail: string(bytes.Repeat([]byte("x"), 100_000))}), audit.HashLine(lines[19]))
			lines = append(lines, big)
			s.Ship(lines[:5])
			run(t, s)
			s.Ship(lines[5:])
			msgs := c.waitLines(lines, 10*time.Second)
			if len(msgs) != len(lines) {
				t.Errorf("%d messages for %d lines: no connection broke, so none may be repeated", len(msgs), len(lines))
			}
			for i, m := range msgs {
				g := rfc5424.FindSubmatch(m)
				if g == nil {
					t.Fatalf("message %d is not RFC 5424 as expected: %.200s", i, m)
				}
				line := msgOf(m)
				if !bytes.Equal(line, lines[i]) {
					t.Fatalf("message %d carries %.100s, want line %d in order", i, line, i)
				}
				h := audit.HashLine(line)
				if string(g[5]) != hex.EncodeToString(h[:]) {
					t.Errorf("message %d: hash %s is not the line's SHA-256", i, g[5])
				}
				wantPri := "36" // auth (4) * 8 + warning (4): signin_failed
				if i%3 == 1 || i == 20 {
					wantPri = "37" // notice
				}
				if string(g[1]) != wantPri {
					t.Errorf("message %d: PRI %s, want %s", i, g[1], wantPri)
				}
				if i > 0 && string(g[6]) != audit.HashLine(lines[i-1]).String() {
					t.Errorf("message %d: prev %q is not the line before's hash", i, g[6])
				}
			}
			if got := string(rfc5424.FindSubmatch(msgs[1])[4]); got != audit.SessionStart {
				t.Errorf("MSGID %q, want the event type", got)
			}
			// Counted once Write returns, which may be after the collector read.
			waitFor(t, "shipped to count every line", 5*time.Second, func() bool { return s.c.shipped.Load() == int64(len(lines)) })
		})
	}
}

// A collector that goes away, comes back and goes away again with lines it
// took but never read: every line arrives, the ones that may have been
// lost are sent again, and the outage is one failed and one resumed event.
func TestSyslogReconnectResend(t *testing.T) {
	for _, host := range []string{"127.0.0.1", "::1"} {
		t.Run(host, func(t *testing.T) {
			server, client := collectorTLS(t)
			c := newCollector(t, host, server)
			ev := &events{}
			s := newTestSyslog(t, c.addr, client, ev, nil)
			run(t, s)
			lines, head := trailLines(50, audit.Zero)
			s.Ship(lines)
			c.waitLines(lines, 10*time.Second)

			// The collector stops reading: what is shipped now reaches its
			// kernel (acknowledged by TCP) but never the collector's files.
			c.setDeaf(true)
			c.stop()
			c.start()
			waitFor(t, "a reconnect to the deaf collector", 10*time.Second, func() bool { return c.connections() > 0 })
			unread, head := trailLines(30, head)
			s.Ship(unread)
			waitFor(t, "the unread lines to be written", 10*time.Second, func() bool { _, unsent, _ := s.q.stats(); return unsent == 0 })
			time.Sleep(100 * time.Millisecond)
			// Then it dies, and stays down a while (several failed connects).
			c.stop()
			down, _ := trailLines(20, head)
			s.Ship(down)
			waitFor(t, "several failed connects", 10*time.Second, func() bool { return s.c.failures.Load() >= 4 })
			c.setDeaf(false)
			c.start()
			all := append(append(append([][]byte{}, lines...), unread...), down...)
			msgs := c.waitLines(all, 10*time.Second)
			dups := len(msgs) - len(all)
			t.Logf("%d lines, %d messages received (%d duplicates), %d failures", len(all), len(msgs), dups, s.c.failures.Load())
			// The resumed event follows the backlog, a moment after the
			// lines: wait for one per outage noticed.
			waitFor(t, "the resumed events", 10*time.Second, func() bool {
				return len(ev.of(audit.ShippingResumed)) >= 2 || len(ev.of(audit.ShippingResumed)) >= len(ev.of(audit.ShippingFailed))
			})
			failed, resumed := ev.of(audit.ShippingFailed), ev.of(audit.ShippingResumed)
			// The first stop of the collector is an outage of its own.
			if len(failed) != 2 || len(resumed) != 2 {
				t.Fatalf("%d failed and %d resumed events, want 2 each (one pair per outage, not one per retry)", len(failed), len(resumed))
			}
			if failed[1].Collector != "syslog+tls://"+c.addr || failed[1].Detail == "" || failed[1].Actor != audit.ActorDaemon {
				t.Errorf("failed event: %+v", failed[1])
			}
			if got := resumed[1].Count; got < int64(len(unread)+len(down)) {
				t.Errorf("resumed Count = %d: the 30 unread and 20 queued lines were sent after the outage", got)
			}
		})
	}
}

// Lines the collector acknowledged more than Resend ago are forgotten and
// not sent again.
func TestSyslogForgetsDelivered(t *testing.T) {
	c := newCollector(t, "127.0.0.1", nil)
	s := newTestSyslog(t, c.addr, nil, &events{}, func(c *SyslogConfig) { c.Resend = 50 * time.Millisecond })
	run(t, s)
	lines, _ := trailLines(10, audit.Zero)
	s.Ship(lines)
	c.waitLines(lines, 10*time.Second)
	waitFor(t, "the delivered lines to leave the queue", 5*time.Second, func() bool { d, _, _ := s.q.stats(); return d == 0 })
	c.stop()
	c.start()
	more, _ := trailLines(3, audit.HashLine(lines[9]))
	s.Ship(more)
	c.waitLines(more, 10*time.Second)
	if n := len(c.messages()); n != 13 {
		t.Errorf("%d messages, want 13: delivered lines were sent again", n)
	}
}

// A full queue drops the oldest lines and counts them; Ship never waits
// for the collector.
func TestSyslogOverflow(t *testing.T) {
	c := newCollector(t, "::1", nil)
	c.stop() // down from the start
	ev := &events{}
	s := newTestSyslog(t, c.addr, nil, ev, func(c *SyslogConfig) { c.Queue = 10 })
	run(t, s)
	lines, _ := trailLines(25, audit.Zero)
	for _, l := range lines {
		s.Ship([][]byte{l})
	}
	// A stalled collector does not hold Ship up either: 100,000 lines go
	// into a queue of 10 at once.
	junk := make([][]byte, 100_000)
	for i := range junk {
		junk[i] = lines[24]
	}
	s2 := newTestSyslog(t, c.addr, nil, &events{}, func(c *SyslogConfig) { c.Queue = 10 })
	s2.Ship(junk)
	if d, _, dropped := s2.q.stats(); d != 10 || dropped != 99_990 {
		t.Errorf("queue of 10 after 100000 lines: depth %d, dropped %d", d, dropped)
	}

	waitFor(t, "a failed connect", 5*time.Second, func() bool { return len(ev.of(audit.ShippingFailed)) == 1 })
	if d, _, dropped := s.q.stats(); d != 10 || dropped != 15 {
		t.Fatalf("depth %d, dropped %d; want 10 and 15", d, dropped)
	}
	c.start()
	msgs := c.waitLines(lines[15:], 10*time.Second)
	if missing := missingLines(lines[:15], msgs); missing != 15 {
		t.Errorf("%d of the 15 oldest lines arrived; they were dropped", 15-missing)
	}
	waitFor(t, "the resumed event", 5*time.Second, func() bool { return len(ev.of(audit.ShippingResumed)) == 1 })
	if got := ev.of(audit.ShippingResumed)[0].Count; got != 10 {
		t.Errorf("resumed Count = %d, want 10", got)
	}
}

func TestNewSyslogRefuses(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  SyslogConfig
	}{
		{"no port", SyslogConfig{Address: "logs.example.net"}},
		{"port 0", SyslogConfig{Address: "[::1]:0"}},
		{"TLS without a name", SyslogConfig{Address: "127.0.0.1:6514", TLS: &tls.Config{}}},
		{"facility", SyslogConfig{Address: "127.0.0.1:514", Facility: 24}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewSyslog(tt.cfg); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// A collector whose certificate does not verify is a failure, told once.
func TestSyslogBadCertificate(t *testing.T) {
	server, _ := collectorTLS(t)
	_, other := collectorTLS(t)
	c := newCollector(t, "127.0.0.1", server)
	ev := &events{}
	s := newTestSyslog(t, c.addr, other, ev, nil)
	run(t, s)
	waitFor(t, "failed connects", 5*time.Second, func() bool { return s.c.failures.Load() >= 3 })
	f := ev.of(audit.ShippingFailed)
	if len(f) != 1 {
		t.Fatalf("%d failed events", len(f))
	}
	if want := "TLS handshake"; !bytes.Contains([]byte(f[0].Detail), []byte(want)) {
		t.Errorf("detail %q lacks %q", f[0].Detail, want)
	}
	if n := len(c.messages()); n != 0 {
		t.Errorf("%d messages reached a collector that is not the one configured", n)
	}
}

func ExampleSyslog_message() {
	h := header{facility: 4, hostname: "bastion-1", appName: "bastiond", procID: "4242"}
	line := []byte(`{"v":2,"time":"2026-12-06T05:00:00.123456789Z","event":"signin_failed","actor":"alice","source":"198.51.100.7","reason":"bad_password","prev":""}`)
	fmt.Printf("%s\n", h.message(line))
	// Output:
	// <36>1 2026-12-06T05:00:00.123456Z bastion-1 bastiond 4242 signin_failed [bastiond@32473 hash="3405963ade7ccebc12db086404999d725d4830d815cd7bce14c556d77846b9a5" v="2"] {"v":2,"time":"2026-12-06T05:00:00.123456789Z","event":"signin_failed","actor":"alice","source":"198.51.100.7","reason":"bad_password","prev":""}
}

// Stopping does not wait for a collector that stopped reading.
func TestSyslogStopsWhileStalled(t *testing.T) {
	c := newCollector(t, "127.0.0.1", nil)
	c.setDeaf(true)
	s := newTestSyslog(t, c.addr, nil, &events{}, func(c *SyslogConfig) { c.Timeout = time.Hour })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	big := bytes.Repeat([]byte("x"), 64<<10)
	for range 200 { // 12 MiB: more than the socket buffers hold
		s.Ship([][]byte{big})
	}
	waitFor(t, "a write to block", 10*time.Second, func() bool { _, unsent, _ := s.q.stats(); return unsent < 200 })
	time.Sleep(200 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		t.Fatalf("Run did not return within 5s of its context's end\n%s", buf[:n])
	}
}

// ClientTLS reads the collector's CA and a client certificate from files,
// for a collector that authenticates its senders; without the client
// certificate that collector takes nothing.
func TestSyslogClientCertificate(t *testing.T) {
	dir := t.TempDir()
	server, _ := collectorTLS(t)
	clientCert := testcert.New(t, testcert.Options{Name: "bastion-1", Usage: x509.ExtKeyUsageClientAuth, CA: true})
	pool := x509.NewCertPool()
	pool.AddCert(clientCert.Leaf)
	server.ClientAuth, server.ClientCAs = tls.RequireAndVerifyClientCert, pool
	files := map[string][]byte{"ca.pem": testcert.PEM(server.Certificates[0]), "client.pem": testcert.PEM(clientCert), "client.key": testcert.KeyPEM(t, clientCert)}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c := newCollector(t, "::1", server)
	with, err := ClientTLS(filepath.Join(dir, "ca.pem"), "collector.test", filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	without, err := ClientTLS(filepath.Join(dir, "ca.pem"), "collector.test", "", "")
	if err != nil {
		t.Fatal(err)
	}
	lines, _ := trailLines(3, audit.Zero)
	refused := newTestSyslog(t, c.addr, without, &events{}, nil)
	refused.Ship(lines[:1])
	run(t, refused)
	s := newTestSyslog(t, c.addr, with, &events{}, nil)
	s.Ship(lines)
	run(t, s)
	c.waitLines(lines, 10*time.Second)
	waitFor(t, "the refused sender's failures", 5*time.Second, func() bool { return refused.c.failures.Load() > 0 })
	if n := len(c.messages()); n != 3 {
		t.Errorf("%d messages; want only the 3 of the sender with a certificate", n)
	}
	if _, err := ClientTLS(filepath.Join(dir, "client.key"), "x", "", ""); err == nil {
		t.Error("a key as the CA file was accepted")
	}
	if _, err := ClientTLS("", "x", filepath.Join(dir, "client.pem"), filepath.Join(dir, "ca.pem")); err == nil {
		t.Error("a certificate without its key was accepted")
	}
}
