package netpolicy

import (
	"fmt"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// sendBuffer bounds one transaction. A transaction must travel in a single
// sendmsg to stay atomic, and 10,000 targets make a batch of a few MiB, far
// over the default socket buffer; like nft, raise it with SO_SNDBUFFORCE
// (CAP_NET_ADMIN, which programming nftables needs anyway). The kernel only
// allocates what a message really uses.
const sendBuffer = 64 << 20

func bigSendBuffer(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		// The kernel acknowledges every message of the batch before we
		// read any answer, so the receive side needs the room too.
		for _, opt := range [][2]int{{unix.SO_SNDBUFFORCE, unix.SO_SNDBUF}, {unix.SO_RCVBUFFORCE, unix.SO_RCVBUF}} {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[0], sendBuffer); err != nil {
				// Without CAP_NET_ADMIN: as large as allowed.
				serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt[1], sendBuffer)
			}
		}
	}); err != nil {
		return err
	}
	return serr
}

// Kernel is a connection to the nftables of one network namespace, and the
// memory of what bastiond last put in force there.
type Kernel struct {
	mu      sync.Mutex // guards the fields below, and serializes netlink use
	conn    *nftables.Conn
	gen     genConn
	applied *Ruleset // last ruleset applied
	snap    snapshot // the kernel's state right after that
	// matched is the ruleset generation at which the kernel was last seen
	// to hold snap (valid when matchedOK).
	matched   uint32
	matchedOK bool

	since   time.Time                 // first apply: when the counters started
	counted map[string]TargetCounters // what replaced tables had counted, by target
	repairs uint64                    // drift repaired by Reconcile
	// repaired is told of each repair (OnRepair).
	repaired func(differences []string)
}

// Open connects to the nftables of the caller's network namespace.
func Open() (*Kernel, error) {
	return open(0)
}

// OpenNetNS connects to the nftables of the namespace whose descriptor is fd.
func OpenNetNS(fd int) (*Kernel, error) {
	return open(fd)
}

// open connects to the namespace whose descriptor is fd, or to the caller's
// when fd is 0.
func open(fd int) (*Kernel, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(bigSendBuffer)}
	if fd != 0 {
		opts = append(opts, nftables.WithNetNSFd(fd))
	}
	c, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("netpolicy: netlink: %w", err)
	}
	g, err := dialGen(fd)
	if err != nil {
		return nil, err
	}
	return &Kernel{conn: c, gen: g}, nil
}

// Apply puts rs in force atomically (see the package function Apply) and
// remembers it for Verify and Reconcile.
func (k *Kernel) Apply(rs Ruleset) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.applyLocked(rs)
}

func (k *Kernel) applyLocked(rs Ruleset) error {
	counted := k.carriedCounters(rs)
	if err := Apply(k.conn, rs); err != nil {
		return err
	}
	k.counted = counted
	if k.since.IsZero() {
		k.since = time.Now()
	}
	// The generation before the read: a change made during the read moves
	// it on, and the next check reads everything again.
	gen, genErr := k.gen.generation()
	snap, err := read(k.conn, rs)
	if err != nil {
		return err
	}
	k.applied, k.snap = &rs, snap
	k.matched, k.matchedOK = gen, genErr == nil
	return nil
}

// Cleanup removes every table bastiond may own, and nothing else. It is the
// explicit opt-out of the fail-closed default (`bastiond -cleanup`).
func (k *Kernel) Cleanup() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.applied, k.snap, k.counted, k.since, k.matchedOK = nil, nil, nil, time.Time{}, false
	return Remove(k.conn, []Table{{Family: FamilyInet, Name: HostTable}, {Family: FamilyBridge, Name: VNetTable}})
}

// Applied returns the ruleset last applied, if any.
func (k *Kernel) Applied() (Ruleset, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.applied == nil {
		return Ruleset{}, false
	}
	return *k.applied, true
}
