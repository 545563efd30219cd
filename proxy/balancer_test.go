package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
	"github.com/bastiond/bastiond/proxy/portal"
)

// viaHeader is an HTTPS client to addr whose every connection starts
// with hdr (nil: none), as a balancer's do.
func viaHeader(addr string, hdr []byte) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil && hdr != nil {
				_, err = c.Write(hdr)
			}
			return c, err
		},
		DisableKeepAlives: true,
	}}
}

// get asks path of the front door with c and returns the status and body.
func get(t *testing.T, c *http.Client, path string) (int, string) {
	t.Helper()
	resp, err := c.Get("https://" + testName + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func loopbackOf(network string) netip.Addr {
	if network == "tcp6" {
		return netip.IPv6Loopback()
	}
	return netip.MustParseAddr("127.0.0.1")
}

// TestReadiness: GET portal.ReadyPath answers a balancer's own connection
// (LOCAL, or a header naming a balancer) with 200 "ready", and 503 with
// why once the server is not ready (draining, upgrading); a user who
// comes through the balancer, and anyone who comes straight, gets the 404
// of a path that does not exist, byte for byte.
func TestReadiness(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			peer := loopbackOf(network)
			s := newTestServer(t, Config{HandshakeTimeout: 2 * time.Second,
				Balancers: []netip.Prefix{netip.PrefixFrom(peer, peer.BitLen()), netip.MustParsePrefix("192.0.2.0/24")}})
			addr := listenOn(t, s, network)
			front := netip.MustParseAddrPort("198.51.100.1:443")
			local := viaHeader(addr, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Local}))
			self := viaHeader(addr, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
				Source: netip.AddrPortFrom(netip.MustParseAddr("192.0.2.9"), 40000), Destination: front}))
			_, unknown := get(t, local, "/no/such/path")

			for name, c := range map[string]*http.Client{"LOCAL": local, "PROXY naming a balancer": self} {
				if code, body := get(t, c, portal.ReadyPath); code != 200 || body != "ready\n" {
					t.Errorf("%s: %d %q, want 200 ready", name, code, body)
				}
			}
			for _, user := range []string{"203.0.113.7:5000", "[2001:db8:cafe::7]:5000"} {
				c := viaHeader(addr, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
					Source: netip.MustParseAddrPort(user), Destination: front}))
				if code, body := get(t, c, portal.ReadyPath); code != 404 || body != unknown {
					t.Errorf("a user %s through the balancer: %d %q, want the 404 of an unknown path", user, code, body)
				}
			}
			s.NotReady("draining")
			if code, body := get(t, local, portal.ReadyPath); code != 503 || body != "draining\n" {
				t.Errorf("not ready: %d %q, want 503 draining", code, body)
			}
			s.NotReady("")
			if code, _ := get(t, local, portal.ReadyPath); code != 200 {
				t.Errorf("ready again: %d", code)
			}
			// A reload that drops the balancer: its connections are
			// refused its header, and the path is gone.
			c := *s.cfg.Load()
			c.Balancers = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
			if err := s.SetConfig(c); err != nil {
				t.Fatal(err)
			}
			if code, body := get(t, viaHeader(addr, nil), portal.ReadyPath); code != 404 || body != unknown {
				t.Errorf("straight, not a balancer: %d %q, want the 404 of an unknown path", code, body)
			}
		})
	}
}

// TestReadyState: paused for a hand-over or retired, the server is
// "upgrading"; shut down, "draining"; NotReady's reason comes first.
func TestReadyState(t *testing.T) {
	s := newTestServer(t, Config{})
	if got := s.readyState(); got != "ready" {
		t.Errorf("new: %q", got)
	}
	s.Pause()
	if got := s.readyState(); got != "upgrading" {
		t.Errorf("paused: %q", got)
	}
	s.Resume()
	s.Shutdown(context.Background())
	if got := s.readyState(); got != "draining" {
		t.Errorf("shut down: %q", got)
	}
	s.NotReady("maintenance")
	if got := s.readyState(); got != "maintenance" {
		t.Errorf("NotReady: %q", got)
	}
}

// TestBalancedSource: behind a balancer, the user the header names is the
// source of the audit trail's events (and of the sign-in throttle, which
// reads the same address), IPv4 and IPv6 users over both families.
func TestBalancedSource(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			peer := loopbackOf(network)
			s := newTestServer(t, Config{Balancers: []netip.Prefix{netip.PrefixFrom(peer, peer.BitLen())}})
			sink := audited(t, s)
			addr := listenOn(t, s, network)
			for _, user := range []string{"203.0.113.7", "2001:db8:cafe::7"} {
				c := viaHeader(addr, proxyproto.Append(nil, proxyproto.Header{Command: proxyproto.Proxy,
					Source: netip.AddrPortFrom(netip.MustParseAddr(user), 5000), Destination: netip.MustParseAddrPort("[2001:db8::1]:443")}))
				resp, err := c.PostForm("https://"+testName+"/login", url.Values{"user": {"alice"}})
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				audittest.Check(t, "a sign-in form without its token from "+user, sink.Take(),
					audittest.Want{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Source: user, Reason: "form"})
			}
		})
	}
}

// listenOn serves s on a loopback listener of network and returns its
// address.
func listenOn(t *testing.T, s *Server, network string) string {
	t.Helper()
	addr := "127.0.0.1:0"
	if network == "tcp6" {
		addr = "[::1]:0"
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	serve(t, s, []net.Listener{ln}, nil)
	return ln.Addr().String()
}
