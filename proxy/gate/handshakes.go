package gate

import (
	"errors"
	"net/netip"
	"sync"

	"github.com/bastiond/bastiond/internal/source"
)

// HandshakesPerSource is how many QUIC handshakes one source (an IPv4
// address, an IPv6 /64) may have under way at once: from the answer to its
// Retry, when quic-go starts the TLS handshake, to the handshake's end. A
// real client's handshake takes a couple of round trips, so even many
// users behind one NAT rarely have more than a few under way; a source that
// answers Retries and then stalls, so that the bastion does the TLS
// handshake's work (its key exchange and signature, then its
// retransmissions) and holds it until the handshake timeout, gets this many
// at a time. Its next first flights are dropped by the gate, unanswered (no
// Retry), and an answer to a Retry it had before is refused before any TLS
// state exists (CONNECTION_REFUSED), as at the per-source connection cap. Without
// it, a flood of 2,000 such connections a second from a hundred addresses
// kept the bastion's two cores busy with TLS and made a user's handshake
// wait more than a second (BENCHMARKS.md, issue 24).
const HandshakesPerSource = 16

// handshakesFull reports whether the source of a has as many handshakes
// under way as it may.
func (l *limits) handshakesFull(a netip.Addr) bool {
	src := source.Of(a)
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.shaking[src] >= HandshakesPerSource
}

// errQUICHandshakesFull refuses a QUIC connection over its source's cap of
// handshakes under way.
var errQUICHandshakesFull = errors.New("gate: quic: too many handshakes under way from this source")

// handshakeKey is the context key of a connection's handshake.
type handshakeKey struct{}

// handshake is a connection's place among its source's handshakes under
// way, given back once, when the handshake completes or the connection
// ends, whichever is first.
type handshake struct {
	once sync.Once
	l    *limits
	src  netip.Prefix
}

func (h *handshake) done() {
	h.once.Do(func() {
		h.l.mu.Lock()
		defer h.l.mu.Unlock()
		if h.l.shaking[h.src]--; h.l.shaking[h.src] <= 0 {
			delete(h.l.shaking, h.src)
		}
	})
}
