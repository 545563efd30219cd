// Package udpgro reads UDP sockets with generic receive offload for
// quic-go. A peer's quic-go sends a train of datagrams of one size to one
// address in one system call (GSO, UDP_SEGMENT); without UDP_GRO on the
// receiving socket, the kernel cuts the train back into datagrams on the
// way in, and each of them costs a socket buffer, a wakeup share and a
// slot of recvmmsg. With UDP_GRO the socket hands over the train whole (up
// to 64 KiB, with its segment size in a control message), and on a local
// path (loopback, a veth pair, a bridge) it is never cut at all. quic-go
// (v0.65) sets UDP_SEGMENT but not UDP_GRO, and reads one datagram per
// slot; a Reader cuts the trains into quic-go's slots itself, so that
// everything above it sees single datagrams. The bastion's QUIC gate reads
// through a Reader, the tunnel client through a Conn.
//
// BASTIOND_DISABLE_GRO=true turns it off, as QUIC_GO_DISABLE_GSO does
// quic-go's GSO, should a kernel or a path get it wrong.
package udpgro
