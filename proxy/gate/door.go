// Package gate is what a stranger meets on port 443 before any TLS or QUIC
// state exists for it: the TCP gate and the QUIC gate read the client's
// ClientHello themselves (hello.go; for QUIC, by decrypting its Initial
// packets with proxy/gate/quicinitial) and pass on only the connections
// that name the bastion's server name, closing or dropping everything else
// with nothing sent. It also bounds what one source may hold: TCP and QUIC
// connections per source, QUIC connections that have not shown a valid
// token yet, and streams waiting for their tunnel request (limits.go).
//
// A Door holds the gates of one server process and their shared state: the
// settings in force, the pause of a binary upgrade (see proxy/handover),
// and the metrics.
package gate

import (
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/handover"
)

// Settings are what the gates read of the front door's configuration, for
// each new connection, so that a reload applies to the next ones.
type Settings struct {
	// ServerName is the name a ClientHello must give.
	ServerName string
	// HandshakeTimeout bounds the reading of a ClientHello.
	HandshakeTimeout time.Duration
	// ClientTimeout ends a TCP connection whose user stops answering.
	ClientTimeout time.Duration
	// MaxConnsPerSource caps the TCP connections, and apart from them the
	// QUIC connections, of one source.
	MaxConnsPerSource int
	// MaxPendingTunnels caps the QUIC streams, over every connection,
	// waiting for their tunnel request.
	MaxPendingTunnels int
	// Balancers are the TCP load balancers that must open each of their
	// connections with a PROXY protocol v2 header (balancer.go). Empty:
	// none, and no connection is read for a header.
	Balancers []netip.Prefix
}

// Config is what a Door needs.
type Config struct {
	// Log is required.
	Log *zap.Logger
	// Settings returns the settings in force. Required.
	Settings func() Settings
	// ALPN is the application protocol a QUIC ClientHello must offer.
	// Required.
	ALPN string
	// IDs are the QUIC connection IDs of this process's generation: a
	// QUIC gate routes datagrams by them. Required.
	IDs *handover.ConnIDs
	// Audit receives the gates' security events: a balancer's connection
	// dropped for its PROXY header. Optional.
	Audit audit.Sink
	// HandshakeFailed is told of a TLS handshake that named the server and
	// then failed. Optional.
	HandshakeFailed func()
	// PendingPerSource caps the QUIC streams of one source waiting for
	// their tunnel request, and MaxUnauthConns the QUIC connections
	// without a valid token yet; zero is the default, 64 and 2048.
	PendingPerSource, MaxUnauthConns int
}

// Door is the gates of one server process.
type Door struct {
	cfg    Config
	limits *limits
	paused atomic.Bool // set by Pause, for the gates to read without mu

	headers   [numHeaderOutcomes]atomic.Int64 // PROXY headers, by outcome
	headerLog limitedLog                      // of malformed headers

	mu     sync.Mutex // guards the fields below
	resume chan struct{}
	tcp    []*TCP  // never removed: their counters only grow
	quic   []*QUIC // the same
}

// New returns a Door with cfg.
func New(cfg Config) *Door {
	if cfg.HandshakeFailed == nil {
		cfg.HandshakeFailed = func() {}
	}
	return &Door{cfg: cfg, limits: newLimits(cfg.PendingPerSource, cfg.MaxUnauthConns)}
}

func (d *Door) settings() Settings { return d.cfg.Settings() }

// Pause stops taking new connections without closing anything: the TCP
// gates stop calling Accept (the kernel queues connections in the backlog)
// and the QUIC gates drop the Initial packets that could open a new
// connection (DCID not issued by this process's generation). Datagrams of
// live connections, handshakes under way and everything of live sessions
// go on. Once Pause returns, no Accept is under way: a connection accepted
// in the meantime was taken before. Resume undoes it.
func (d *Door) Pause() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resume != nil {
		return
	}
	d.resume = make(chan struct{})
	d.paused.Store(true)
	for _, g := range d.tcp {
		g.pause()
	}
}

// Resume takes new connections again after Pause.
func (d *Door) Resume() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.resume == nil {
		return
	}
	for _, g := range d.tcp {
		g.setAcceptDeadline(time.Time{})
	}
	d.paused.Store(false)
	close(d.resume)
	d.resume = nil
}

// Paused reports whether the door is paused.
func (d *Door) Paused() bool { return d.paused.Load() }

// pausedUntil returns, while d is paused, a channel that Resume closes,
// and nil otherwise.
func (d *Door) pausedUntil() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.resume
}

func (d *Door) tcpGates() []*TCP {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.tcp)
}

func (d *Door) quicGates() []*QUIC {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.quic)
}
