package gate

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/internal/source"
	"github.com/bastiond/bastiond/proxy/gate/proxyproto"
	"github.com/bastiond/bastiond/proxy/internal/servername"
)

// TCP is the first thing a TCP connection on 443 meets. It reads the
// ClientHello itself, before any TLS state exists, and hands on only the
// connections that name the bastion's server name. Anything else (no server
// name, another name, not TLS at all, too slow) is closed with nothing sent:
// no certificate, no alert, so a scanner learns nothing about what answers.
type TCP struct {
	ln  net.Listener
	d   *Door
	out chan net.Conn

	once   sync.Once
	closed chan struct{}
	err    error // the listener's accept error, set before closed is closed

	acceptMu sync.Mutex // held by the accept loop while it is in Accept, for Pause

	mu      sync.Mutex
	sources map[netip.Prefix]int // open connections per source (source.Of)
	conns   int                  // the sum of sources
	refused int64                // connections closed at their source's cap
}

// TCP puts a gate in front of ln. Its Accept returns the connections
// that passed, with the bytes it read of them given back to their first
// reads.
func (d *Door) TCP(ln net.Listener) *TCP {
	g := &TCP{ln: ln, d: d, out: make(chan net.Conn), closed: make(chan struct{}), sources: map[netip.Prefix]int{}}
	d.mu.Lock()
	d.tcp = append(d.tcp, g) // before the loop starts: Pause must reach every Accept
	d.mu.Unlock()
	go g.acceptLoop()
	return g
}

func (g *TCP) acceptLoop() {
	var delay time.Duration
	for {
		if resume := g.d.pausedUntil(); resume != nil {
			// Paused: new connections wait in the kernel's backlog.
			select {
			case <-resume:
			case <-g.closed:
				return
			}
		}
		g.acceptMu.Lock()
		if g.d.paused.Load() { // paused since
			g.acceptMu.Unlock()
			continue
		}
		c, err := g.ln.Accept()
		g.acceptMu.Unlock()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue // Pause interrupted Accept
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: back off as
				// net/http does, rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				g.d.cfg.Log.Warn("accept", zap.Error(err), zap.Duration("retry_in", delay))
				time.Sleep(delay)
				continue
			}
			g.shut(err)
			return
		}
		delay = 0
		cfg := g.d.settings()
		setClientTimeout(c, cfg.ClientTimeout, g.d.cfg.Log)
		if peer, ok := peerAddr(c); ok && len(cfg.Balancers) > 0 && fromBalancer(cfg.Balancers, peer.Addr()) {
			// Counted against the cap of the user its header names.
			go g.screenBalanced(c, peer)
			continue
		}
		tc, ok := g.admit(c)
		if !ok {
			c.Close() // over the per-source cap: nothing sent
			continue
		}
		go g.screen(tc)
	}
}

// setClientTimeout makes the kernel end c once the user stops answering
// for about timeout: keepalive probes from timeout/2 of silence on, and
// TCP_USER_TIMEOUT for data left unacknowledged (without it, a vanished
// user's socket retransmits for some 15 minutes).
func setClientTimeout(c net.Conn, timeout time.Duration, log *zap.Logger) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}
	err := tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: timeout / 2, Interval: max(timeout/6, time.Second), Count: 3})
	if rc, rerr := tc.SyscallConn(); err == nil && rerr == nil {
		cerr := rc.Control(func(fd uintptr) {
			err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(timeout.Milliseconds()))
		})
		err = errors.Join(err, cerr)
	}
	if err != nil {
		log.Debug("cannot set the client timeout on a connection", zap.Stringer("remote", c.RemoteAddr()), zap.Error(err))
	}
}

// screenBalanced reads the PROXY header of c, a connection from the
// balancer peer, within the handshake timeout, counts it against the cap
// of the user the header names and screens it; a connection without a
// valid header is closed with nothing sent.
func (g *TCP) screenBalanced(c net.Conn, peer netip.AddrPort) {
	cfg := g.d.settings()
	deadline := time.Now().Add(cfg.HandshakeTimeout) // the header's and the ClientHello's
	c.SetReadDeadline(deadline)
	bc, err := g.readProxyHeader(c, peer, cfg.Balancers)
	if err != nil {
		g.d.badHeader(peer, err)
		c.Close()
		return
	}
	tc, ok := g.admit(bc)
	if !ok {
		c.Close() // the user is over the per-source cap: nothing sent
		return
	}
	g.screenUntil(tc, deadline, bc.own)
}

// screen reads the ClientHello of c within the handshake timeout and passes
// c on when it names the server.
func (g *TCP) screen(c net.Conn) {
	g.screenUntil(c, time.Now().Add(g.d.settings().HandshakeTimeout), false)
}

// screenUntil reads the ClientHello of c before deadline and passes c on
// when it names the server. A balancer's own connection (quiet) is not
// logged, nor counted as a failed handshake: a health check is no scanner.
func (g *TCP) screenUntil(c net.Conn, deadline time.Time, quiet bool) {
	cfg := g.d.settings()
	c.SetReadDeadline(deadline)
	raw, hello, err := readClientHello(c)
	if err != nil || !servername.Same(hello.serverName, cfg.ServerName) {
		if _, balanced := Balancer(c); !balanced && proxyproto.HasSignature(raw) {
			g.d.headers[headerStranger].Add(1) // a balancer's second header is not a stranger's
		}
		if !quiet {
			g.d.cfg.Log.Debug("closed without an answer", zap.Stringer("remote", c.RemoteAddr()),
				zap.String("server_name", hello.serverName), zap.Bool("proxy_header", proxyproto.HasSignature(raw)), zap.Error(err))
		}
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{}) // the TLS stack sets its own
	failed := g.d.cfg.HandshakeFailed
	if quiet {
		failed = func() {}
	}
	select {
	case g.out <- &replayConn{Conn: c, head: raw, failed: failed}:
	case <-g.closed:
		c.Close()
	}
}

// admit counts c against its source's cap, and returns c wrapped so that
// closing it gives the place back. A source is an IPv4 address or an IPv6
// /64 (source.Of): a client rotating addresses inside its /64 is one source.
func (g *TCP) admit(c net.Conn) (net.Conn, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return c, true // not an IP peer: nothing to count
	}
	src, limit := source.Of(ap.Addr()), g.d.settings().MaxConnsPerSource
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.sources[src] >= limit {
		g.refused++
		if ce := g.d.cfg.Log.Check(zap.DebugLevel, "per-source connection cap reached"); ce != nil {
			ce.Write(zap.Stringer("source", src), zap.Stringer("remote", ap), zap.Int("cap", limit))
		}
		return nil, false
	}
	g.sources[src]++
	g.conns++
	return &countedConn{Conn: c, release: func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		g.conns--
		if g.sources[src]--; g.sources[src] <= 0 {
			delete(g.sources, src)
		}
	}}, true
}

// gateCounts are the size of a gate's per-source table and what its cap
// refused, for the metrics.
type gateCounts struct {
	sources, conns int
	refused        int64
}

func (g *TCP) counts() gateCounts {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gateCounts{sources: len(g.sources), conns: g.conns, refused: g.refused}
}

var (
	tcpSourcesDesc = prometheus.NewDesc("bastiond_tcp_sources",
		"Sources (IPv4 addresses, IPv6 /64s) with TCP connections open on 443, the size of the per-source table.", nil, nil)
	tcpConnsDesc = prometheus.NewDesc("bastiond_tcp_connections",
		"TCP connections open on 443, counted against their source's cap (limits.connections_per_source).", nil, nil)
	tcpRefusedDesc = prometheus.NewDesc("bastiond_tcp_refused_total",
		"TCP connections on 443 closed with nothing sent because a cap was reached (reason: connection_per_source).",
		[]string{"reason"}, nil)
	proxyHeadersDesc = prometheus.NewDesc("bastiond_proxy_protocol_headers_total",
		"Connections on 443/tcp by what they began with, of PROXY protocol v2: from a balancer (listen.proxy_protocol.from), "+
			"a header naming a user (proxy), the balancer's own connection (local: a health check), a broken or missing header "+
			"(malformed: dropped), nothing at all (empty: a connect-only check); from anyone else, a PROXY header (not_from_balancer: "+
			"dropped with nothing sent).",
		[]string{"result"}, nil)
)

// TCPMetrics is the collector of the TCP gates' per-source tables: their
// size, the connections they count, and what their caps refused.
func (d *Door) TCPMetrics() prometheus.Collector { return tcpCollector{d} }

type tcpCollector struct{ d *Door }

func (c tcpCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- tcpSourcesDesc
	ch <- tcpConnsDesc
	ch <- tcpRefusedDesc
	ch <- proxyHeadersDesc
}

func (c tcpCollector) Collect(ch chan<- prometheus.Metric) {
	var sum gateCounts
	for _, g := range c.d.tcpGates() { // gates are never removed: the counter only grows
		n := g.counts()
		sum.sources += n.sources
		sum.conns += n.conns
		sum.refused += n.refused
	}
	ch <- prometheus.MustNewConstMetric(tcpSourcesDesc, prometheus.GaugeValue, float64(sum.sources))
	ch <- prometheus.MustNewConstMetric(tcpConnsDesc, prometheus.GaugeValue, float64(sum.conns))
	ch <- prometheus.MustNewConstMetric(tcpRefusedDesc, prometheus.CounterValue, float64(sum.refused), "connection_per_source")
	for i, name := range headerOutcomeNames {
		ch <- prometheus.MustNewConstMetric(proxyHeadersDesc, prometheus.CounterValue, float64(c.d.headers[i].Load()), name)
	}
}

// countedConn gives its source's place back once, when closed.
type countedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *countedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// Accept returns the next connection that passed the gate.
func (g *TCP) Accept() (net.Conn, error) {
	select {
	case c := <-g.out:
		return c, nil
	case <-g.closed:
		return nil, g.err
	}
}

func (g *TCP) shut(err error) {
	g.once.Do(func() {
		g.err = err
		close(g.closed)
	})
}

// Close stops accepting; connections being screened are closed.
func (g *TCP) Close() error {
	err := g.ln.Close()
	g.shut(net.ErrClosed)
	return err
}

func (g *TCP) Addr() net.Addr { return g.ln.Addr() }

// pause interrupts the loop's Accept and waits for it to return: a
// connection it returns meanwhile was taken before Pause returned, and the
// loop calls Accept no more. A listener without deadlines cannot be
// interrupted: its loop pauses after its next Accept.
func (g *TCP) pause() {
	if !g.setAcceptDeadline(aLongTimeAgo) {
		return
	}
	g.acceptMu.Lock()
	g.acceptMu.Unlock() //nolint:staticcheck // empty: a barrier
}

// setAcceptDeadline sets the deadline of Accept, if the listener has
// deadlines, as a *net.TCPListener has, and reports whether it has.
func (g *TCP) setAcceptDeadline(t time.Time) bool {
	d, ok := g.ln.(interface{ SetDeadline(time.Time) error })
	if ok {
		d.SetDeadline(t)
	}
	return ok
}

// Handshook tells the gate that c, a connection its Accept returned,
// completed its TLS handshake: closing it then is not a failed one. Call
// it from the tls.Config's VerifyConnection. Other connections are left
// alone. Wrappers with a NetConn method (gather.Conn) are looked through.
func Handshook(c net.Conn) {
	for range 8 { // the wrappers are few: bound the unwrapping anyway
		switch v := c.(type) {
		case *replayConn:
			v.handshook.Store(true)
			return
		case interface{ NetConn() net.Conn }:
			c = v.NetConn()
		default:
			return
		}
	}
}

// replayConn gives the TLS stack back the bytes the gate read. It also
// tells a TLS handshake that failed (the client named us, then gave up or
// spoke wrong) from one that completed, for the metrics.
type replayConn struct {
	net.Conn
	head      []byte
	handshook atomic.Bool
	failed    func()
	once      sync.Once
}

func (c *replayConn) Close() error {
	c.once.Do(func() {
		if !c.handshook.Load() {
			c.failed()
		}
	})
	return c.Conn.Close()
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
