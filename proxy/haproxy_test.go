package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/csv"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/internal/metrictest"
	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
	"github.com/bastiond/bastiond/proxy/portal"
)

// TestHAProxy puts Debian's HAProxy in front of the server, as an admin
// would (mode tcp, send-proxy-v2, HTTPS health checks of the readiness
// path), all on loopback, crossing address families so that every
// address is distinct: an IPv4 user (127.0.0.4) reaches HAProxy's IPv4
// front, which carries it to the server over IPv6 (the balancer is ::1);
// an IPv6 user (::1) reaches HAProxy's IPv6 front, which carries it over
// IPv4 from 127.0.0.2. It proves that the users' own addresses reach the
// audit trail, that HAProxy's checks (which send LOCAL headers) see the
// server up and then down while it drains, quietly, and that a PROXY
// header from anyone else gets zero bytes.
func TestHAProxy(t *testing.T) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		t.Skip("haproxy is not installed (test/deps.sh test installs Debian's)")
	}
	balancer4 := netip.MustParseAddr("127.0.0.2")
	s := newTestServer(t, Config{HandshakeTimeout: 2 * time.Second,
		Balancers: []netip.Prefix{netip.PrefixFrom(balancer4, 32), netip.MustParsePrefix("::1/128")}})
	sink := audited(t, s)
	ln4, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Skipf("no IPv4 loopback: %v", err)
	}
	ln6, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		ln4.Close()
		t.Skipf("no IPv6 loopback: %v", err)
	}
	serve(t, s, []net.Listener{ln4, ln6}, nil)

	dir := t.TempDir()
	front4, front6 := freePort(t, "tcp4", "127.0.0.3"), freePort(t, "tcp6", "::1")
	stats := filepath.Join(dir, "stats.sock")
	check := fmt.Sprintf("check check-ssl check-sni %s verify none inter 100ms fall 2 rise 1", testName)
	cfg := strings.Join([]string{
		"global",
		"  stats socket " + stats + " level admin",
		"defaults",
		"  mode tcp",
		"  timeout connect 2s",
		"  timeout client 10s",
		"  timeout server 10s",
		"  option httpchk",
		"  http-check send meth GET uri " + portal.ReadyPath + " ver HTTP/1.1 hdr Host " + testName,
		"  http-check expect status 200",
		"frontend fe4",
		"  bind " + front4,
		"  default_backend be_over6",
		"frontend fe6",
		"  bind " + front6,
		"  default_backend be_over4",
		"backend be_over6",
		"  server s6 " + ln6.Addr().String() + " send-proxy-v2 " + check,
		"backend be_over4",
		"  server s4 " + ln4.Addr().String() + " source " + balancer4.String() + " send-proxy-v2 " + check,
		"",
	}, "\n")
	cfgFile := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	cmd := exec.Command(bin, "-db", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill() // the process this test started, by its PID
		cmd.Wait()
		if t.Failed() {
			t.Logf("haproxy said:\n%s", out.String())
		}
	})

	for _, srv := range []string{"s4", "s6"} {
		waitStatus(t, stats, srv, "UP")
	}
	if n := metrictest.Value(t, s.TCPMetrics(), "bastiond_proxy_protocol_headers_total", "result", "local"); n == 0 {
		t.Error("HAProxy's checks came without LOCAL headers")
	}

	t.Run("the users' own addresses reach the audit trail", func(t *testing.T) {
		for _, u := range []struct{ name, front, from string }{
			{"IPv4 user, carried over IPv6", front4, "127.0.0.4"},
			{"IPv6 user, carried over IPv4", front6, "::1"},
		} {
			c := userClient(u.front, u.from)
			resp, err := c.PostForm("https://"+testName+"/login", url.Values{"user": {"alice"}})
			if err != nil {
				t.Fatalf("%s: %v", u.name, err)
			}
			resp.Body.Close()
			audittest.Check(t, u.name, sink.Take(),
				audittest.Want{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Source: u.from, Reason: "form"})
			// Through the balancer, the readiness path is not there for a
			// user (::1 is a balancer too here: its header names one).
			if code, _ := get(t, c, portal.ReadyPath); u.from != "::1" && code != 404 {
				t.Errorf("%s: the readiness path answered %d", u.name, code)
			}
		}
	})

	t.Run("a PROXY header from anyone else gets zero bytes", func(t *testing.T) {
		hdr := proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
			Source: netip.MustParseAddrPort("203.0.113.7:5000"), Destination: netip.MustParseAddrPort("198.51.100.1:443")})
		before := metrictest.Value(t, s.TCPMetrics(), "bastiond_proxy_protocol_headers_total", "result", "not_from_balancer")
		// 127.0.0.1 is not a balancer; the IPv6 loopback is one here (the
		// gate's tests cover an IPv6 stranger).
		if n := silence(t, ln4.Addr().String(), append(hdr, gatetest.ClientHello(t, &tls.Config{ServerName: testName})...)); n != 0 {
			t.Errorf("the server sent %d bytes", n)
		}
		if n := metrictest.Value(t, s.TCPMetrics(), "bastiond_proxy_protocol_headers_total", "result", "not_from_balancer") - before; n != 1 {
			t.Errorf("not_from_balancer counted %v times", n)
		}
	})

	t.Run("HAProxy sees the server down while it drains", func(t *testing.T) {
		failed := metrictest.Value(t, s.TCPMetrics(), "bastiond_proxy_protocol_headers_total", "result", "malformed")
		s.NotReady("draining")
		for _, srv := range []string{"s4", "s6"} {
			st := waitStatus(t, stats, srv, "DOWN")
			if st["check_status"] != "L7STS" || st["check_code"] != "503" {
				t.Errorf("%s: check %s %s, want L7STS 503", srv, st["check_status"], st["check_code"])
			}
		}
		s.NotReady("")
		for _, srv := range []string{"s4", "s6"} {
			waitStatus(t, stats, srv, "UP")
		}
		if n := metrictest.Value(t, s.TCPMetrics(), "bastiond_proxy_protocol_headers_total", "result", "malformed"); n != failed {
			t.Errorf("%v malformed headers from HAProxy", n-failed)
		}
	})
}

// freePort returns host:port of a port of network on host that was free
// a moment ago.
func freePort(t *testing.T, network, host string) string {
	t.Helper()
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("cannot listen on %s: %v", host, err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// userClient is an HTTPS client of the bastion that connects to front
// from the address from.
func userClient(front, from string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", front)
		},
		DisableKeepAlives: true,
	}}
}

// waitStatus waits, for at most 10s, until HAProxy's stats say server is
// status, and returns its stats row.
func waitStatus(t *testing.T, sock, server, status string) map[string]string {
	t.Helper()
	var row map[string]string
	for range 200 {
		row = haproxyStat(t, sock, server)
		if row["status"] == status {
			return row
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("HAProxy's %s is %q (check %s %s), not %s, after 10s", server, row["status"], row["check_status"], row["check_code"], status)
	return nil
}

// haproxyStat is the row of server in HAProxy's "show stat", by column,
// or nil.
func haproxyStat(t *testing.T, sock, server string) map[string]string {
	t.Helper()
	c, err := net.DialTimeout("unix", sock, time.Second)
	if err != nil {
		return nil // not listening yet
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	io.WriteString(c, "show stat\n")
	b, err := io.ReadAll(bufio.NewReader(c))
	if err != nil {
		t.Fatalf("haproxy stats: %v", err)
	}
	rows, err := csv.NewReader(strings.NewReader(strings.TrimPrefix(string(b), "# "))).ReadAll()
	if err != nil || len(rows) < 2 {
		t.Fatalf("haproxy stats: %v: %q", err, b)
	}
	for _, r := range rows[1:] {
		if len(r) > 1 && r[1] == server {
			m := map[string]string{}
			for i, k := range rows[0] {
				if i < len(r) {
					m[k] = r[i]
				}
			}
			return m
		}
	}
	return nil
}
