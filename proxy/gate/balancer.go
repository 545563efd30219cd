package gate

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
)

// A TCP load balancer in front of the bastion opens every connection
// itself, so that the connection's peer is the balancer and not the user.
// The balancers listed in Settings.Balancers say who the user is in a
// PROXY protocol v2 header, sent before anything else: the gate reads it
// before the ClientHello, within the same handshake timeout, and from
// then on the connection's RemoteAddr is the user's address, for the
// per-source cap, the sign-in throttle, the session records and the audit
// trail. A connection from a balancer without a valid header is dropped
// with nothing sent, logged (at most once every logEvery) and counted. A
// balancer's own connections (LOCAL: its health checks) keep its address.
//
// A connection from anyone else is never read for a header: one that
// starts with a PROXY signature is not a ClientHello, and like any other
// it is closed with nothing sent. It is counted apart (not_from_balancer),
// so that an admin who forgot a balancer's address sees it.

// The outcomes of PROXY headers, a label of bastiond_proxy_protocol_headers_total.
const (
	headerProxy = iota
	headerLocal
	headerMalformed
	headerEmpty
	headerStranger
	numHeaderOutcomes
)

var headerOutcomeNames = [numHeaderOutcomes]string{
	headerProxy:     "proxy",
	headerLocal:     "local",
	headerMalformed: "malformed",
	headerEmpty:     "empty",
	headerStranger:  "not_from_balancer",
}

// logEvery is how often at most the gate logs a malformed header from a
// balancer: a broken balancer sends one on every connection.
const logEvery = 10 * time.Second

// fromBalancer reports whether peer is one of balancers.
func fromBalancer(balancers []netip.Prefix, peer netip.Addr) bool {
	peer = peer.Unmap() // an IPv4 peer of a dual-stack socket
	for _, p := range balancers {
		if p.Contains(peer) {
			return true
		}
	}
	return false
}

// peerAddr is the IP address and port of c's peer, if it has one.
func peerAddr(c net.Conn) (netip.AddrPort, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.AddrPort{}, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}

// balancedConn is a connection a balancer opened: its RemoteAddr is the
// user the header names (the balancer's own for LOCAL).
type balancedConn struct {
	net.Conn
	remote   net.Addr
	balancer netip.AddrPort
	local    bool // a LOCAL header
	own      bool // the balancer's own connection (see Via)
}

func (c *balancedConn) RemoteAddr() net.Addr { return c.remote }

// readProxyHeader reads the PROXY header of c, a connection from a
// balancer, and returns c as the connection of the user it names.
func (g *TCP) readProxyHeader(c net.Conn, balancer netip.AddrPort, balancers []netip.Prefix) (*balancedConn, error) {
	h, err := proxyproto.Read(c)
	if err != nil {
		return nil, err
	}
	local := h.Command == proxyproto.Local
	bc := &balancedConn{Conn: c, remote: c.RemoteAddr(), balancer: balancer, local: local,
		own: local || fromBalancer(balancers, h.Source.Addr())}
	if h.Command == proxyproto.Proxy {
		bc.remote = net.TCPAddrFromAddrPort(h.Source)
		g.d.headers[headerProxy].Add(1)
	} else {
		g.d.headers[headerLocal].Add(1)
	}
	return bc, nil
}

// badHeader counts and logs, at most once every logEvery, a balancer's
// connection dropped for its header. One closed before its first byte is
// a balancer's connect-only health check (no check-send-proxy): it is
// counted apart (empty) and logged at debug level only.
func (d *Door) badHeader(balancer netip.AddrPort, err error) {
	if errors.Is(err, io.EOF) {
		d.headers[headerEmpty].Add(1)
		d.cfg.Log.Debug("a balancer's connection closed before its PROXY header", zap.Stringer("balancer", balancer))
		return
	}
	d.headers[headerMalformed].Add(1)
	if !d.headerLog.allow() {
		return
	}
	why, reason := err.Error(), "malformed"
	if errors.Is(err, os.ErrDeadlineExceeded) {
		why, reason = "no whole header within limits.handshake_timeout", "timeout"
	}
	held := d.headerLog.take()
	d.cfg.Log.Warn("a balancer's connection without a valid PROXY protocol v2 header: dropped",
		zap.Stringer("balancer", balancer), zap.String("error", why), zap.Int64("dropped_since_last_log", held))
	// A balancer that sends a bad header is broken, misconfigured, or no
	// longer the balancer: a security event, as often as the log line.
	if d.cfg.Audit != nil {
		detail := why + "; dropped with nothing sent"
		if held > 0 {
			detail += fmt.Sprintf(" (%d more since the last such event)", held)
		}
		d.cfg.Audit.Audit(audit.Event{Event: audit.BalancerHeaderRefused, Actor: audit.ActorAnonymous, Source: balancer.Addr().String(),
			Reason: reason, Detail: detail})
	}
}

// limitedLog lets one log line through every logEvery, counting the
// ones it holds back.
type limitedLog struct {
	mu   sync.Mutex
	last time.Time
	held atomic.Int64
}

func (l *limitedLog) allow() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now := time.Now(); l.last.IsZero() || now.Sub(l.last) >= logEvery {
		l.last = now
		return true
	}
	l.held.Add(1)
	return false
}

// take returns the count of lines held back since the last call.
func (l *limitedLog) take() int64 { return l.held.Swap(0) }

// Via is how a connection came through a balancer.
type Via struct {
	// Balancer is the connection's real peer, which its RemoteAddr is not.
	Balancer netip.AddrPort
	// Own: the balancer opened the connection for itself, a health check:
	// its header was LOCAL, or named one of the balancers as the client.
	// A user's connection through the balancer is not its own.
	Own bool
}

// Balancer reports whether c, a connection the TCP gate passed (or the
// TLS connection over it), came from a balancer, and how.
func Balancer(c net.Conn) (Via, bool) {
	for range 8 { // the wrappers are few: bound the unwrapping anyway
		switch v := c.(type) {
		case *balancedConn:
			return Via{Balancer: v.balancer, Own: v.own}, true
		case *replayConn:
			c = v.Conn
		case *countedConn:
			c = v.Conn
		case interface{ NetConn() net.Conn }: // *tls.Conn
			c = v.NetConn()
		default:
			return Via{}, false
		}
	}
	return Via{}, false
}
