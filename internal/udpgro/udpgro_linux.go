package udpgro

import (
	"encoding/binary"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

const (
	// groMessages is how many trains one read takes.
	groMessages = 8
	// groBuffer holds the largest train (64 KiB of UDP payload).
	groBuffer = 1 << 16
	// groOOB holds the control messages quic-go asks the socket for
	// (ECN, packet info) and the segment size.
	groOOB = 128
)

// Reader reads a UDP socket with UDP_GRO on and hands out single
// datagrams. One goroutine reads; Trains may be called from any.
type Reader struct {
	bc   *ipv4.PacketConn
	ms   []ipv4.Message // the trains the last read returned, in their own buffers
	n    int            // how many of ms hold a train
	next int            // the train being cut
	off  int            // where in it the next datagram starts
	seg  int            // its segment size; the whole train when it has none
	oob  []byte         // its control messages without the segment size

	trains atomic.Int64 // trains of several datagrams read
}

// Trains is how many trains of several datagrams r has read: none means
// that the kernel hands over single datagrams (the sender sends no trains,
// or the path cut them).
func (r *Reader) Trains() int64 { return r.trains.Load() }

// New turns UDP_GRO on for c and returns its reader, or nil when
// the kernel refuses or BASTIOND_DISABLE_GRO says not to.
func New(c *net.UDPConn) *Reader {
	if off, _ := strconv.ParseBool(os.Getenv("BASTIOND_DISABLE_GRO")); off {
		return nil
	}
	rc, err := c.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 1) }); err != nil || serr != nil {
		return nil
	}
	r := &Reader{bc: ipv4.NewPacketConn(c), ms: make([]ipv4.Message, groMessages), oob: make([]byte, 0, groOOB)}
	// One allocation for all the trains: 512 KiB per socket, once.
	bufs := make([]byte, groMessages*groBuffer)
	oobs := make([]byte, groMessages*groOOB)
	for i := range r.ms {
		r.ms[i].Buffers = [][]byte{bufs[i*groBuffer : (i+1)*groBuffer]}
		r.ms[i].OOB = oobs[i*groOOB : (i+1)*groOOB]
	}
	return r
}

// Read fills out with datagrams: those left of the trains read before,
// else those of a new read of the socket, which waits for one. Each
// message of out must have a single buffer, as quic-go's do; a datagram
// longer than it is cut short and flagged MSG_TRUNC, as the kernel does.
func (r *Reader) Read(out []ipv4.Message) (int, error) {
	if r.next >= r.n {
		n, err := r.bc.ReadBatch(r.ms, 0)
		if err != nil {
			return 0, err
		}
		r.n, r.next = n, 0
		r.start()
	}
	k := 0
	for k < len(out) && r.next < r.n {
		m := &r.ms[r.next]
		end := min(r.off+r.seg, m.N)
		d := &out[k]
		d.N = copy(d.Buffers[0], m.Buffers[0][r.off:end])
		d.Flags = m.Flags
		if d.N < end-r.off {
			d.Flags |= unix.MSG_TRUNC
		}
		d.NN = 0
		if len(r.oob) <= len(d.OOB) { // half a control message would be worse than none
			d.NN = copy(d.OOB, r.oob)
		}
		d.Addr = m.Addr
		k++
		if r.off = end; r.off >= m.N {
			r.next++
			r.start()
		}
	}
	return k, nil
}

// Holds says whether datagrams of a train already read wait to be
// handed out: a reader that reads from elsewhere too (the gate, from
// its successor's link) passes them on first. A nil Reader holds none.
func (r *Reader) Holds() bool { return r != nil && r.next < r.n }

// start prepares the train at r.next, if there is one: its segment size,
// and its control messages without it.
func (r *Reader) start() {
	r.off, r.seg, r.oob = 0, 0, r.oob[:0]
	if r.next >= r.n {
		return
	}
	m := &r.ms[r.next]
	oob := m.OOB[:m.NN]
	for len(oob) >= unix.SizeofCmsghdr {
		h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
		l := int(h.Len)
		if l < unix.SizeofCmsghdr || l > len(oob) {
			break // malformed: keep what came before
		}
		space := min(unix.CmsgSpace(l-unix.SizeofCmsghdr), len(oob))
		if h.Level == unix.IPPROTO_UDP && h.Type == unix.UDP_GRO && l >= unix.CmsgLen(4) {
			r.seg = int(binary.NativeEndian.Uint32(oob[unix.CmsgLen(0):]))
		} else {
			r.oob = append(r.oob, oob[:space]...)
		}
		oob = oob[space:]
	}
	if r.seg <= 0 || r.seg >= m.N {
		r.seg = m.N // a single datagram (an empty one included)
	} else {
		r.trains.Add(1)
	}
	if m.N == 0 {
		r.seg = 0
	}
}
