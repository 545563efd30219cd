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

	"github.com/bastiond/bastiond/internal/addrport"
)

// guardError is a dial the guard refused before connect(2).
type guardError struct {
	addr netip.AddrPort
	why  string
}

func (e *guardError) Error() string {
	return fmt.Sprintf("refused by the dial guard: %s %s", e.addr, e.why)
}

var thisNetwork = netip.MustParsePrefix("0.0.0.0/8")

// forbidden says why a is never dialled, whatever the inventory says, or ""
// when it may be. local are the host's own addresses, subnets its own
// subnets (the dedicated bastion subnet, where no machine lives).
func forbidden(a netip.Addr, local []netip.Addr, subnets []netip.Prefix) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "is not an address"
	case a.IsLoopback():
		return "is a loopback address"
	case a.IsUnspecified():
		return "is the unspecified address"
	case thisNetwork.Contains(a):
		return "is in 0.0.0.0/8 (this host on this network)"
	case a.IsLinkLocalUnicast():
		return "is a link-local address"
	case a.IsMulticast():
		return "is a multicast address"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		return "is the broadcast address"
	case slices.ContainsFunc(local, func(l netip.Addr) bool { return l.Unmap() == a }):
		return "is one of the bastion's own addresses"
	}
	for _, p := range subnets {
		if p.Contains(a) {
			return "is in the bastion's own subnet " + p.String()
		}
	}
	return ""
}

// control is the dialer's Control for one target and port. The runtime calls
// it after the socket exists and before connect(2), with the very address
// the kernel is about to connect to; an error here means connect(2) is never
// called. So whatever built the address string (a resolver, a future
// refactor), what is checked is what would be dialled: one of allowed (the
// target's inventory addresses on the port asked for) and none of the
// forbidden classes. It also sets TCP_USER_TIMEOUT, so that unacknowledged
// data to a machine that went away ends the session instead of hanging.
func (b *Broker) control(allowed []netip.AddrPort, userTimeout time.Duration) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &guardError{why: "is not an IP address and port: " + address}
		}
		ap = addrport.Unmap(ap)
		if !slices.Contains(allowed, ap) {
			return &guardError{addr: ap, why: "is not an inventory address and port of this target"}
		}
		local, err := b.localAddrs()
		if err != nil {
			return &guardError{addr: ap, why: "cannot be checked against the bastion's own addresses: " + err.Error()}
		}
		// The tests' tuning lifts the loopback rule, and with it the own
		// address rule for loopback addresses only (127.0.0.1 and ::1 are
		// the host's own); every other rule holds.
		if why := forbidden(ap.Addr(), local, b.cfg.Load().Subnets); why != "" && !(b.allowLoopback && ap.Addr().IsLoopback()) {
			return &guardError{addr: ap, why: why}
		}
		var serr error
		err = c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(userTimeout.Milliseconds()))
		})
		if err == nil && serr != nil {
			err = fmt.Errorf("set TCP_USER_TIMEOUT: %w", serr)
		}
		return err
	}
}

// dialFailure is why one address was not connected.
type dialFailure struct {
	addr   netip.AddrPort
	reason string
	guard  bool
}

// dial connects to the first of t's addresses that answers on port, within
// c.DialTimeout for all of them together. Refusals are *Error.
func (b *Broker) dial(ctx context.Context, c *config, t Target, port uint16) (*net.TCPConn, netip.AddrPort, error) {
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.DialTimeout)
	defer cancel()
	// Close, once its grace is over, aborts dials in flight.
	defer context.AfterFunc(b.stopCtx, cancel)()

	allowed := make([]netip.AddrPort, 0, len(t.Addresses))
	for _, a := range t.Addresses {
		if ap := netip.AddrPortFrom(a.Unmap(), port); !slices.Contains(allowed, ap) {
			allowed = append(allowed, ap)
		}
	}
	tt := c.TargetTimeout
	d := net.Dialer{
		// Seconds are the kernel's unit; the runtime rounds up.
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: tt / 2, Interval: max(tt/6, time.Second), Count: 3},
		Control:         b.control(allowed, tt),
	}
	var failures []dialFailure
	for _, ap := range allowed {
		conn, err := d.DialContext(ctx, "tcp", ap.String())
		if err == nil {
			return conn.(*net.TCPConn), ap, nil
		}
		if ge := (*guardError)(nil); errors.As(err, &ge) {
			failures = append(failures, dialFailure{addr: ap, reason: ge.Error(), guard: true})
			continue
		}
		failures = append(failures, dialFailure{addr: ap, reason: dialReason(err)})
		if ctx.Err() != nil {
			break
		}
	}
	switch {
	case b.stopCtx.Err() != nil:
		return nil, netip.AddrPort{}, &Error{Kind: KindClosed, Msg: "the bastion is shutting down"}
	case parent.Err() != nil:
		// The caller gave up (the user went away): not the target's fault.
		return nil, netip.AddrPort{}, &Error{Kind: KindUnreachable, Msg: fmt.Sprintf("%s: the connection was abandoned", t.Name),
			Err: context.Cause(parent)}
	}
	b.metrics.dialErrors.WithLabelValues(t.Name).Inc()
	return nil, netip.AddrPort{}, dialError(t.Name, failures)
}

// dialError words the failure of every address: a guard refusal names the
// rule, anything else reads "vm1 (198.18.1.11:22, [2001:db8::11]:22) is
// not reachable: connection refused".
func dialError(name string, failures []dialFailure) *Error {
	if len(failures) == 0 {
		return &Error{Kind: KindUnreachable, Msg: fmt.Sprintf("%s has no address in the inventory", name)}
	}
	allGuard, same := true, true
	addrs := make([]string, len(failures))
	reasons := make([]string, len(failures))
	for i, f := range failures {
		allGuard = allGuard && f.guard
		same = same && f.reason == failures[0].reason
		addrs[i] = f.addr.String()
		reasons[i] = f.reason
	}
	if allGuard {
		return &Error{Kind: KindRefused, Msg: strings.Join(reasons, "; ")}
	}
	msg := fmt.Sprintf("%s (%s) is not reachable: ", name, strings.Join(addrs, ", "))
	if same {
		msg += failures[0].reason
	} else {
		for i, f := range failures {
			if !f.guard {
				reasons[i] = f.addr.String() + ": " + f.reason
			}
		}
		msg += strings.Join(reasons, "; ")
	}
	return &Error{Kind: KindUnreachable, Msg: msg}
}

// dialReason is the short cause of a failed dial.
func dialReason(err error) string {
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return "timed out"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
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
	mu    sync.Mutex // guards the fields below
	at    time.Time
	addrs []netip.Addr
}

func (c *addrCache) get() ([]netip.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < time.Second {
		return c.addrs, nil // never modified: a refresh makes a new slice
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.Addr, 0, len(ifaddrs))
	for _, ia := range ifaddrs {
		if p, err := netip.ParsePrefix(ia.String()); err == nil {
			addrs = append(addrs, p.Addr().Unmap())
		}
	}
	c.addrs, c.at = addrs, time.Now()
	return addrs, nil
}
