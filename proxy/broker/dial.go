package broker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// allowLoopbackForTest relaxes the guard's loopback rule, and only that
// one, so that unit tests can dial listeners on 127.0.0.1 and ::1. Only
// test files set it.
var allowLoopbackForTest bool

// guardError is a dial the guard refused before connect(2).
type guardError struct {
	addr netip.AddrPort
	why  string
}

func (e *guardError) Error() string {
	return fmt.Sprintf("refused by the dial guard: %s %s", e.addr, e.why)
}

// forbidden says why a is never dialled, or "" when it may be.
func forbidden(a netip.Addr, local []netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "is not an address"
	case a.IsLoopback() && !allowLoopbackForTest:
		return "is a loopback address"
	case a.IsUnspecified():
		return "is the unspecified address"
	case a.IsLinkLocalUnicast():
		return "is a link-local address"
	case a.IsMulticast():
		return "is a multicast address"
	case a.Is4() && a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address"
	case slices.Contains(local, a) && !(a.IsLoopback() && allowLoopbackForTest):
		return "is one of the bastion's own addresses"
	}
	return ""
}

// control is the dialer's Control for one target and port: it runs after
// the socket exists and before connect(2), on the very address the kernel
// is about to connect to, and refuses anything not allowed. It also sets
// TCP_USER_TIMEOUT, so that unacknowledged data to a machine that went
// away ends the session instead of hanging.
func (b *Broker) control(allowed []netip.AddrPort, userTimeout time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &guardError{why: "is not an IP address and port: " + address}
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if !slices.Contains(allowed, ap) {
			return &guardError{addr: ap, why: "is not an inventory address and port of this target"}
		}
		local, err := b.localAddrs()
		if err != nil {
			return &guardError{addr: ap, why: "cannot be checked against the bastion's own addresses: " + err.Error()}
		}
		if why := forbidden(ap.Addr(), local); why != "" {
			return &guardError{addr: ap, why: why}
		}
		var serr error
		err = c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
		})
		return errors.Join(err, serr)
	}
}

// dial connects to the first of t's addresses that answers on port, within
// the dial timeout for all of them.
func (b *Broker) dial(ctx context.Context, c *config, t Target, port uint16) (*net.TCPConn, netip.AddrPort, error) {
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	allowed := make([]netip.AddrPort, len(t.Addresses))
	for i, a := range t.Addresses {
		allowed[i] = netip.AddrPortFrom(a.Unmap(), port)
	}
	tt := c.TargetTimeout
	d := net.Dialer{
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: tt / 2, Interval: max(tt/6, time.Second), Count: 3},
		Control:         b.control(allowed, tt),
	}
	var failures []string
	var guard *guardError
	for _, ap := range allowed {
		conn, err := d.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return conn.(*net.TCPConn), ap, nil
		}
		if errors.As(err, &guard) {
			failures = append(failures, guard.Error())
			continue
		}
		failures = append(failures, ap.String()+": "+dialReason(err))
		if ctx.Err() != nil {
			break
		}
	}
	b.metrics.dialErrors.WithLabelValues(t.Name).Inc()
	if guard != nil && len(failures) == len(allowed) && allGuard(failures) {
		return nil, netip.AddrPort{}, &Error{Kind: KindRefused, Msg: fmt.Sprintf("%s is not dialled: %s", t.Name, strings.Join(failures, "; "))}
	}
	return nil, netip.AddrPort{}, &Error{Kind: KindUnreachable, Msg: fmt.Sprintf("%s does not answer on port %d (%s)", t.Name, port, strings.Join(failures, "; "))}
}

func allGuard(failures []string) bool {
	for _, f := range failures {
		if !strings.HasPrefix(f, "refused by the dial guard") {
			return false
		}
	}
	return true
}

// dialReason is the short cause of a failed dial.
func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timed out"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "no route to host"
	case errors.Is(err, context.Canceled):
		return "cancelled"
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// addrCache caches the host's addresses for a second: dials in a burst
// share one netlink dump.
type addrCache struct {
	mu    sync.Mutex
	at    time.Time
	addrs []netip.Addr
}

func (c *addrCache) get() ([]netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.at) < time.Second {
		return slices.Clone(c.addrs), nil
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	c.addrs = c.addrs[:0]
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			c.addrs = append(c.addrs, p.Addr().Unmap())
		}
	}
	c.at = time.Now()
	return slices.Clone(c.addrs), nil
}
