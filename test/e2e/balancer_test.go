package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
)

// TestBalancer runs the daemon behind a balancer, the lab's client
// (IPv4 and IPv6) standing in for it: listen.proxy_protocol.from lists the
// client's addresses. It proves, on the real daemon and firewall, that the
// balancer is neither metered by firewall.conn_rate nor trapped by a probe
// of a closed port; that the users its headers name are the sources of the
// audit trail; that a PROXY header from another address gets zero bytes;
// and that on SIGTERM the readiness path says "draining" for
// drain_delay while 443 still answers.
func TestBalancer(t *testing.T) {
	NeedLab(t)
	client4, client6 := LabValue(t, "CLIENT4"), LabValue(t, "CLIENT6")
	pub4, pub6 := LabValue(t, "BASTION_PUB4"), LabValue(t, "BASTION_PUB6")
	pp := fmt.Sprintf("  proxy_protocol: {from: [%s/32, \"%s/128\"], drain_delay: 5s}\n", client4, client6)
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return strings.Replace(LabConfig(dir, "firewall:\n  conn_rate: 5\n"), "  admin_group: users\n", "  admin_group: users\n"+pp, 1)
	})
	t.Cleanup(func() {
		d.Stop()
		InBastion(t, BinPath("bastiond"), "-cleanup")
	})
	ns := LabValue(t, "NS_CLIENT")
	front := netip.MustParseAddrPort("198.51.100.1:443")

	t.Run("the balancer is neither metered nor trapped", func(t *testing.T) {
		if out, _ := d.Ctl(nil, "policy", "show"); !strings.Contains(out, "@balancers4 tcp dport 443") {
			t.Errorf("policy show has no balancer rule:\n%s", out)
		}
		for _, pub := range []string{pub4, pub6} {
			for i := range 40 { // twice the burst of conn_rate 5: bounded
				if got := Probe(t, ns, pub, 443, ""); got != "open" {
					t.Fatalf("%s: connection %d from the balancer: %s", pub, i+1, got)
				}
			}
			ExpectProbe(t, ns, pub, 22, "filtered") // a closed port: no trap for a balancer
			ExpectProbe(t, ns, pub, 443, "open")
		}
		for _, set := range []string{"blocklist4", "blocklist6"} {
			if out, err := InBastion(t, "nft", "list", "set", "inet", "bastiond", set); err != nil || strings.Contains(out, "elements") {
				t.Errorf("%s: %v\n%s", set, err, out)
			}
		}
	})

	t.Run("the users the headers name are the audit trail's sources", func(t *testing.T) {
		for _, pub := range []string{pub4, pub6} {
			for _, user := range []string{"198.51.100.77", "2001:db8:77::7"} {
				hdr := proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
					Source: netip.AddrPortFrom(netip.MustParseAddr(user), 40000), Destination: front})
				resp, err := balancerClient(t, ns, pub, hdr).PostForm("https://"+ServerName+"/login", url.Values{"user": {"alice"}})
				if err != nil {
					t.Fatalf("%s via %s: %v", user, pub, err)
				}
				resp.Body.Close()
				want := fmt.Sprintf(`"source":%q`, user)
				for end := time.Now().Add(5 * time.Second); ; time.Sleep(100 * time.Millisecond) {
					if n := countMatching(auditLines(t, d), `"event":"signin_refused"`, want); n > 0 {
						break
					}
					if time.Now().After(end) {
						t.Fatalf("no signin_refused from %s in the audit file", user)
					}
				}
			}
		}
	})

	t.Run("a PROXY header from another address gets zero bytes", func(t *testing.T) {
		for _, tc := range []struct{ from, pub string }{{"203.0.113.66/24", pub4}, {"2001:db8:cafe::66/64", pub6}} {
			from := ClientAddr(t, tc.from)
			c, err := DialFrom(t, from.String(), tc.pub, 443)
			if err != nil {
				t.Fatal(err)
			}
			c.Write(proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Local}))
			c.SetReadDeadline(time.Now().Add(15 * time.Second))
			n, err := io.Copy(io.Discard, c)
			if n != 0 || isTimeout(err) {
				t.Errorf("from %s: %d bytes, %v", from, n, err)
			}
		}
	})

	t.Run("readiness: ready, then draining on SIGTERM while 443 answers", func(t *testing.T) {
		local := balancerClient(t, ns, pub4, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Local}))
		user := balancerClient(t, ns, pub6, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
			Source: netip.MustParseAddrPort("[2001:db8:77::7]:40000"), Destination: front}))
		if code, body := fetch(t, local, "/.well-known/bastiond/ready"); code != 200 || body != "ready\n" {
			t.Errorf("the balancer's check: %d %q", code, body)
		}
		_, unknown := fetch(t, user, "/no/such/path")
		if code, body := fetch(t, user, "/.well-known/bastiond/ready"); code != 404 || body != unknown {
			t.Errorf("a user through the balancer: %d %q", code, body)
		}
		d.Signal(syscall.SIGTERM)
		d.WaitLog("telling the balancers, still serving", 5*time.Second)
		local6 := balancerClient(t, ns, pub6, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Local}))
		for _, c := range []*http.Client{local, local6} {
			if code, body := fetch(t, c, "/.well-known/bastiond/ready"); code != 503 || body != "draining\n" {
				t.Errorf("draining: %d %q", code, body)
			}
		}
		if err := d.Wait(40 * time.Second); err != nil {
			t.Errorf("the daemon's exit: %v", err)
		}
	})
}

// balancerClient is an HTTPS client whose connections start, from the
// client namespace ns, to pub:443 with hdr, as a balancer's do.
func balancerClient(t testing.TB, ns, pub string, hdr []byte) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{ServerName: ServerName, InsecureSkipVerify: true},
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var c net.Conn
			err := InNetns(ns, func() (err error) {
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, "tcp", net.JoinHostPort(pub, "443"))
				return err
			})
			if err == nil {
				_, err = c.Write(hdr)
			}
			return c, err
		},
	}}
}

func fetch(t testing.TB, c *http.Client, path string) (int, string) {
	t.Helper()
	resp, err := c.Get("https://" + ServerName + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// countMatching counts the lines holding every one of subs.
func countMatching(lines [][]byte, subs ...string) int {
	n := 0
	for _, l := range lines {
		ok := true
		for _, s := range subs {
			ok = ok && strings.Contains(string(l), s)
		}
		if ok {
			n++
		}
	}
	return n
}
