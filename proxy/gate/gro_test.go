package gate

import (
	"bytes"
	"encoding/binary"
	"net"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

// sendTrain sends dgrams from c to to in one sendmsg with UDP_SEGMENT (as
// quic-go's GSO does): all but the last must have the length of the first.
func sendTrain(t *testing.T, c *net.UDPConn, to net.Addr, dgrams [][]byte) {
	t.Helper()
	oob := make([]byte, unix.CmsgSpace(2))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&oob[0]))
	h.Level, h.Type = unix.IPPROTO_UDP, unix.UDP_SEGMENT
	h.SetLen(unix.CmsgLen(2))
	binary.NativeEndian.PutUint16(oob[unix.CmsgLen(0):], uint16(len(dgrams[0])))
	if _, _, err := c.WriteMsgUDP(bytes.Join(dgrams, nil), oob, to.(*net.UDPAddr)); err != nil {
		t.Skipf("no UDP GSO here: %v", err)
	}
}

// TestGROReader: a train sent with GSO reaches the gate's reader whole,
// in one read, and leaves it as the datagrams it was made of, in order,
// through quic-go's small slots, with its control messages but without
// the segment size; a datagram longer than its slot is cut and flagged, as
// the kernel does; a plain datagram after it passes as it is.
func TestGROReader(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			d := testDoor(t, Settings{})
			pc := gatetest.LoopbackUDP(t, network)
			g := d.QUIC(pc, nil)
			if g.gro == nil {
				t.Skip("the kernel refuses UDP_GRO")
			}
			conn := g.Conn().(udpGate)
			sender := gatetest.LoopbackUDP(t, network)
			// Short-header packets (first bit clear), which the gate
			// passes unread.
			var train [][]byte
			for i := range 20 {
				train = append(train, append([]byte{0x40, byte(i)}, bytes.Repeat([]byte{byte(i)}, 1198)...))
			}
			train = append(train, append([]byte{0x40, 20}, bytes.Repeat([]byte{20}, 498)...))
			sendTrain(t, sender, pc.LocalAddr(), train)
			plain := append([]byte{0x40, 21}, bytes.Repeat([]byte{21}, 298)...)
			if _, err := sender.WriteTo(plain, pc.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			want := append(train, plain)

			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			var got [][]byte
			var trunc []bool
			for call := 0; len(got) < len(want) && call < 2*len(want); call++ {
				size := 1452
				if call == 0 {
					size = 1000 // the first slots are too short for a datagram
				}
				ms := make([]ipv4.Message, 8)
				for i := range ms {
					ms[i].Buffers = [][]byte{make([]byte, size)}
					ms[i].OOB = make([]byte, 64)
				}
				n, err := conn.ReadBatch(ms, 0)
				if err != nil {
					t.Fatalf("after %d datagrams: %v", len(got), err)
				}
				for _, m := range ms[:n] {
					got = append(got, m.Buffers[0][:m.N])
					trunc = append(trunc, m.Flags&unix.MSG_TRUNC != 0)
					if m.Addr.String() != sender.LocalAddr().String() {
						t.Errorf("datagram from %v, want %v", m.Addr, sender.LocalAddr())
					}
					cmsgs, err := unix.ParseSocketControlMessage(m.OOB[:m.NN])
					if err != nil {
						t.Errorf("control messages: %v", err)
					}
					for _, c := range cmsgs {
						if c.Header.Level == unix.IPPROTO_UDP && c.Header.Type == unix.UDP_GRO {
							t.Error("the segment size reached quic-go")
						}
					}
				}
			}
			if len(got) != len(want) {
				t.Fatalf("%d datagrams, want %d", len(got), len(want))
			}
			for i := range want {
				w, cut := want[i], i < 8
				if cut {
					w = w[:1000]
				}
				if !bytes.Equal(got[i], w) || trunc[i] != cut {
					t.Errorf("datagram %d: %d bytes starting %x (truncated %v), want %d starting %x (truncated %v)",
						i, len(got[i]), got[i][:min(2, len(got[i]))], trunc[i], len(w), w[:2], cut)
				}
			}
			if g.gro.Trains() != 1 {
				t.Errorf("%d trains read, want 1: the kernel cut the train (is UDP_GRO on?)", g.gro.Trains())
			}
		})
	}
}

// TestGRODisabled: BASTIOND_DISABLE_GRO=true leaves the socket as quic-go
// would have it.
func TestGRODisabled(t *testing.T) {
	t.Setenv("BASTIOND_DISABLE_GRO", "true")
	d := testDoor(t, Settings{})
	pc := gatetest.LoopbackUDP(t, "udp4")
	g := d.QUIC(pc, nil)
	if g.gro != nil {
		t.Fatal("GRO is on")
	}
	rc, err := pc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO) })
	if serr == nil && v != 0 {
		t.Errorf("UDP_GRO is %d on the socket", v)
	}
}
