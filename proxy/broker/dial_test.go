package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// hostAddr is one of this host's own addresses that is neither loopback
// nor link-local, or the zero Addr.
func hostAddr() netip.Addr {
	ifaddrs, _ := net.InterfaceAddrs()
	for _, ia := range ifaddrs {
		p, err := netip.ParsePrefix(ia.String())
		if a := p.Addr(); err == nil && a.Is4() && !a.IsLoopback() && !a.IsLinkLocalUnicast() {
			return a
		}
	}
	return netip.Addr{}
}

func TestDialGuard(t *testing.T) {
	fake := netip.MustParseAddr("192.0.2.77") // what LocalAddrs says is ours
	cases := []struct {
		name     string
		addr     string // the inventory address
		listen   string // where a listener proves nothing connects ("" for none)
		loopback bool   // a case of the loopback rule, which the tests' tuning lifts
		local    bool   // Config.LocalAddrs returns fake (else the default)
		why      string
	}{
		{"loopback v4", "127.0.0.1", "tcp4 127.0.0.1:0", true, false, "127.0.0.1:%d is a loopback address"},
		{"loopback v4 not .1", "127.0.0.2", "", true, false, "is a loopback address"},
		{"loopback v6", "::1", "tcp6 [::1]:0", true, false, "[::1]:%d is a loopback address"},
		{"mapped loopback", "::ffff:127.0.0.1", "tcp4 127.0.0.1:0", true, false, "127.0.0.1:%d is a loopback address"},
		{"unspecified v4", "0.0.0.0", "", false, false, "unspecified"},
		{"unspecified v6", "::", "", false, false, "unspecified"},
		{"this network", "0.1.2.3", "", false, false, "0.0.0.0/8"},
		{"link-local v4", "169.254.1.1", "", false, false, "link-local"},
		{"link-local v6", "fe80::1", "", false, false, "link-local"},
		{"mapped link-local", "::ffff:169.254.1.1", "", false, false, "link-local"},
		{"multicast v4", "224.0.0.1", "", false, false, "multicast"},
		{"multicast v6", "ff02::1", "", false, false, "multicast"},
		{"mapped multicast", "::ffff:239.1.2.3", "", false, false, "multicast"},
		{"broadcast", "255.255.255.255", "", false, false, "broadcast"},
		{"own address from LocalAddrs", fake.String(), "", false, true, "bastion's own addresses"},
		{"own address from the interfaces", "host", "tcp4 host:0", false, false, "bastion's own addresses"},
	}
	// Each rule is checked with the tuning the daemon's brokers have (the
	// zero value, which nothing outside the package can change) and, but
	// for the loopback rule that it lifts, with the tests' tuning: the lift
	// touches no other rule.
	tunings := []struct {
		name string
		tn   tuning
	}{{"daemon", tuning{}}, {"tests", quick()}}
	for _, c := range cases {
		for _, tc := range tunings {
			if c.loopback && tc.tn.allowLoopback {
				continue
			}
			t.Run(c.name+"/"+tc.name, func(t *testing.T) {
				addr, lnAddr := c.addr, c.listen
				if addr == "host" {
					h := hostAddr()
					if !h.IsValid() {
						t.Skip("this host has no address but loopback and link-local")
					}
					addr, lnAddr = h.String(), strings.Replace(lnAddr, "host", h.String(), 1)
				}
				var srv *server
				port := uint16(2222)
				if lnAddr != "" {
					network, a, _ := strings.Cut(lnAddr, " ")
					srv = listen(t, network, a)
					port = srv.addrPort().Port()
				}
				cfg := Config{Targets: []Target{{Name: "vm1", Addresses: []netip.Addr{netip.MustParseAddr(addr)}, Tunnel: []uint16{port}}}}
				if c.local {
					cfg.LocalAddrs = func() ([]netip.Addr, error) { return []netip.Addr{fake}, nil }
				}
				e := newEnvTuned(t, cfg, tc.tn)
				s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", port))
				if err == nil {
					// A broken guard: fail, not hang in Close.
					s.End(ReasonClientClosed)
				}
				why := c.why
				if strings.Contains(why, "%d") {
					why = fmt.Sprintf(why, port)
				}
				wantKind(t, err, KindRefused, "refused by the dial guard: ")
				wantKind(t, err, KindRefused, why)
				if n := testutil.ToFloat64(e.b.metrics.dialErrors.WithLabelValues("vm1")); n != 1 {
					t.Errorf("dial errors %v, want 1", n)
				}
				if srv != nil {
					srv.none(t)
				}
			})
		}
	}

	t.Run("an address outside the inventory", func(t *testing.T) {
		srv := listen(t, "tcp4", "127.0.0.1:0")
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
		// The guard checks the address connect(2) would get, whatever
		// string was dialled: a dial of anything but the target's
		// inventory addresses and port fails before connecting.
		for _, allowed := range []netip.AddrPort{
			netip.MustParseAddrPort("198.18.1.11:22"),                          // another address
			netip.AddrPortFrom(srv.addrPort().Addr(), srv.addrPort().Port()+1), // the address, another port
		} {
			d := net.Dialer{Control: e.b.control([]netip.AddrPort{allowed}, time.Second)}
			_, err := d.Dial("tcp", srv.ln.Addr().String())
			var ge *guardError
			if !errors.As(err, &ge) || !strings.Contains(err.Error(), "is not an inventory address and port of this target") {
				t.Errorf("dial outside %v: %v", allowed, err)
			}
		}
		srv.none(t)
	})
	t.Run("an inventory address on a port not offered", func(t *testing.T) {
		srv := listen(t, "tcp4", "127.0.0.1:0")
		tg := targetAt("vm1", srv.addrPort())
		tg.Tunnel = []uint16{srv.addrPort().Port() + 1}
		e := newEnv(t, Config{Targets: []Target{tg}})
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		wantKind(t, err, KindUnknownTarget, fmt.Sprintf("target vm1 does not offer port %d", srv.addrPort().Port()))
		srv.none(t)
	})
	t.Run("LocalAddrs failing refuses", func(t *testing.T) {
		srv := listen(t, "tcp4", "127.0.0.1:0")
		e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())},
			LocalAddrs: func() ([]netip.Addr, error) { return nil, errors.New("netlink: boom") }})
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		wantKind(t, err, KindRefused, "cannot be checked against the bastion's own addresses")
		srv.none(t)
	})
}

func TestDialFailures(t *testing.T) {
	t.Run("every address is named", func(t *testing.T) {
		d4, d6 := deadAddr(t, "tcp4", "127.0.0.1:0"), deadAddr(t, "tcp6", "[::1]:0")
		tg := Target{Name: "vm1", Addresses: []netip.Addr{d4.Addr(), d6.Addr()}, Tunnel: []uint16{d4.Port()}}
		e := newEnv(t, Config{Targets: []Target{tg}})
		_, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", d4.Port()))
		want := fmt.Sprintf("vm1 (127.0.0.1:%d, [::1]:%d) is not reachable: connection refused", d4.Port(), d4.Port())
		wantKind(t, err, KindUnreachable, want)
		if n := testutil.ToFloat64(e.b.metrics.dialErrors.WithLabelValues("vm1")); n != 1 {
			t.Errorf("dial errors %v, want 1", n)
		}
	})
	t.Run("the next address is tried", func(t *testing.T) {
		srv := listen(t, "tcp6", "[::1]:0")
		dead := deadAddr(t, "tcp4", "127.0.0.1:0")
		tg := Target{Name: "vm1", Addresses: []netip.Addr{dead.Addr(), srv.addrPort().Addr()}, Tunnel: []uint16{srv.addrPort().Port()}}
		e := newEnv(t, Config{Targets: []Target{tg}})
		s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
		if err != nil {
			t.Fatal(err)
		}
		srv.next(t)
		if s.Info().Address != srv.addrPort() {
			t.Errorf("dialled %v, want %v", s.Info().Address, srv.addrPort())
		}
		if _, ok := s.Target().(*net.TCPConn); !ok {
			t.Errorf("Target is a %T", s.Target())
		}
		s.End(ReasonClientClosed)
	})
	t.Run("a cancelled context aborts", func(t *testing.T) {
		// 198.18.0.0/15 is for benchmarks: nothing answers, and without a
		// route the dial fails at once; either way ctx decides.
		tg := Target{Name: "vm1", Addresses: []netip.Addr{netip.MustParseAddr("198.18.7.7")}, SSH: 22}
		e := newEnv(t, Config{Targets: []Target{tg}, DialTimeout: time.Minute})
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := e.b.Open(ctx, Request{User: "alice", Target: "vm1", Protocol: SSH})
		wantKind(t, err, KindUnreachable, "vm1")
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%v does not wrap context.Canceled", err)
		}
		e.b.mu.Lock()
		defer e.b.mu.Unlock()
		if e.b.used != 0 {
			t.Errorf("%d units held after a cancelled dial", e.b.used)
		}
	})
}

func TestForbidden(t *testing.T) {
	local := []netip.Addr{netip.MustParseAddr("10.1.2.3"), netip.MustParseAddr("2001:db8::1")}
	subnets := []netip.Prefix{netip.MustParsePrefix("198.18.0.0/26"), netip.MustParsePrefix("2001:db8:b5::/64")}
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"198.18.0.5", false},
		{"::ffff:198.18.0.5", false},
		{"198.18.0.64", true},
		{"2001:db8:b5::5", false},
		{"2001:db8:b5:1::5", true},
		{"10.1.2.4", true},
		{"2001:db8::2", true},
		{"198.18.1.11", true},
		{"10.1.2.3", false},
		{"::ffff:10.1.2.3", false},
		{"2001:db8::1", false},
		{"127.0.0.53", false},
		{"::ffff:127.0.0.1", false},
		{"::1", false},
		{"0.0.0.0", false},
		{"::", false},
		{"169.254.169.254", false},
		{"fe80::1%eth0", false},
		{"224.0.0.251", false},
		{"ff05::2", false},
		{"255.255.255.255", false},
	} {
		t.Run(c.addr, func(t *testing.T) {
			why := forbidden(netip.MustParseAddr(c.addr), local, subnets)
			if (why == "") != c.ok {
				t.Errorf("forbidden(%s) = %q", c.addr, why)
			}
		})
	}
}
