package netpolicy

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Reading counters is a scrape's whole cost, so it does not go through
// google/nftables' GetSetElements, which decodes every attribute of every
// element into fresh values (some 2 KiB of garbage an element: 215 MB for
// 10,000 targets). The dump below reads each answer as it comes and takes
// only what a counter needs, the element's comment (the target's name) and
// its counter expression, allocating nothing per element.

// Set element attributes the x/sys/unix constants lack (linux/netfilter/nf_tables.h).
const (
	nftaSetElemExprs    = 11 // NFTA_SET_ELEM_EXPRESSIONS: more than one expression
	nftaListElem        = 1  // NFTA_LIST_ELEM
	nftaExprName        = 1  // NFTA_EXPR_NAME
	nftaExprData        = 2  // NFTA_EXPR_DATA
	nftaCounterBytes    = 1  // NFTA_COUNTER_BYTES
	nftaCounterPackets  = 2  // NFTA_COUNTER_PACKETS
	udataSetElemComment = 0  // NFTNL_UDATA_SET_ELEM_COMMENT
)

// elementCounter is told of each element of a dumped set that carries a
// comment and a counter. comment is only valid during the call.
type elementCounter func(comment []byte, packets, bytes uint64)

// dumpBuffer is one read of a dump's answers; the kernel fills a dump's
// datagrams up to some 32 KiB (NLMSG_GOODSIZE and its growth), far below.
const dumpBuffer = 256 << 10

// dumpSetCounters asks the kernel for the elements of one set and calls
// each for every counted element, reading the answers into buf one
// datagram at a time (mdlayher/netlink's Receive would hold the whole dump).
func (g genConn) dumpSetCounters(buf []byte, family nftables.TableFamily, table, set string, each elementCounter) error {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, table)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	attrs, err := ae.Encode()
	if err != nil {
		return err
	}
	req, err := g.c.Send(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{byte(family), unix.NFNETLINK_V0, 0, 0}, attrs...), // struct nfgenmsg
	})
	if err != nil {
		return fmt.Errorf("netpolicy: read set %s: %w", set, err)
	}
	raw, err := g.c.SyscallConn()
	if err != nil {
		return err
	}
	for {
		var n int
		var rerr error
		if err := raw.Read(func(fd uintptr) bool {
			var flags int
			n, _, flags, _, rerr = unix.Recvmsg(int(fd), buf, nil, unix.MSG_DONTWAIT)
			if rerr == nil && flags&unix.MSG_TRUNC != 0 {
				rerr = fmt.Errorf("an answer over %d bytes", len(buf))
			}
			return rerr != unix.EAGAIN // false: wait until readable
		}); err != nil {
			return fmt.Errorf("netpolicy: read set %s: %w", set, err)
		}
		if rerr != nil {
			return fmt.Errorf("netpolicy: read set %s: %w", set, rerr)
		}
		done, err := readDatagram(buf[:n], req.Header.Sequence, each)
		if err != nil {
			return fmt.Errorf("netpolicy: read set %s: %w", set, err)
		}
		if done {
			return nil
		}
	}
}

// readDatagram walks the netlink messages of one read: set elements until
// the dump's NLMSG_DONE (done) or an error answer.
func readDatagram(b []byte, seq uint32, each elementCounter) (done bool, err error) {
	for len(b) >= unix.NLMSG_HDRLEN {
		n := int(binary.NativeEndian.Uint32(b[0:4]))
		typ := binary.NativeEndian.Uint16(b[4:6])
		if n < unix.NLMSG_HDRLEN || n > len(b) {
			return false, fmt.Errorf("a malformed netlink message")
		}
		msg, msgSeq := b[unix.NLMSG_HDRLEN:n], binary.NativeEndian.Uint32(b[8:12])
		b = b[min(len(b), nlmsgAlign(n)):]
		if msgSeq != seq {
			continue // a late answer to something else
		}
		switch typ {
		case unix.NLMSG_DONE:
			return true, nil
		case unix.NLMSG_ERROR:
			if len(msg) >= 4 {
				if code := int32(binary.NativeEndian.Uint32(msg[0:4])); code != 0 {
					return true, unix.Errno(-code)
				}
			}
			continue
		}
		if len(msg) >= 4 {
			readElementList(msg[4:], each) // after struct nfgenmsg
		}
	}
	return false, nil
}

func nlmsgAlign(n int) int { return (n + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1) }

// readElementList walks one NFT_MSG_NEWSETELEM answer.
func readElementList(b []byte, each elementCounter) {
	for attr := range attributes(b) {
		if attr.typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		for elem := range attributes(attr.data) {
			if elem.typ != nftaListElem {
				continue
			}
			readElement(elem.data, each)
		}
	}
}

func readElement(b []byte, each elementCounter) {
	var comment []byte
	var packets, bytes uint64
	counted := false
	for attr := range attributes(b) {
		switch attr.typ {
		case unix.NFTA_SET_ELEM_USERDATA:
			comment = userDataComment(attr.data)
		case unix.NFTA_SET_ELEM_EXPR:
			packets, bytes, counted = counterOf(attr.data)
		case nftaSetElemExprs:
			for e := range attributes(attr.data) {
				if e.typ == nftaListElem {
					if p, by, ok := counterOf(e.data); ok {
						packets, bytes, counted = p, by, true
					}
				}
			}
		}
	}
	if counted && len(comment) > 0 {
		each(comment, packets, bytes)
	}
}

// counterOf reads a counter expression (NFTA_EXPR_NAME "counter").
func counterOf(b []byte) (packets, bytes uint64, ok bool) {
	var data []byte
	for attr := range attributes(b) {
		switch attr.typ {
		case nftaExprName:
			if string(trimNUL(attr.data)) != "counter" {
				return 0, 0, false
			}
			ok = true
		case nftaExprData:
			data = attr.data
		}
	}
	if !ok {
		return 0, 0, false
	}
	for attr := range attributes(data) {
		if len(attr.data) != 8 {
			continue
		}
		switch attr.typ {
		case nftaCounterBytes:
			bytes = binary.BigEndian.Uint64(attr.data)
		case nftaCounterPackets:
			packets = binary.BigEndian.Uint64(attr.data)
		}
	}
	return packets, bytes, true
}

// userDataComment finds the comment in an element's user data: the TLVs
// nft writes (type, length, value), the comment NUL-terminated.
func userDataComment(b []byte) []byte {
	for len(b) >= 2 {
		typ, n := b[0], int(b[1])
		if len(b) < 2+n {
			return nil
		}
		if typ == udataSetElemComment {
			return trimNUL(b[2 : 2+n])
		}
		b = b[2+n:]
	}
	return nil
}

func trimNUL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == 0 {
		return b[:n-1]
	}
	return b
}

// attribute is one netlink attribute, its type without the nested and
// byte-order flags.
type attribute struct {
	typ  uint16
	data []byte
}

// attributes iterates over the attributes in b, stopping at the first that
// does not fit (the kernel writes none such).
func attributes(b []byte) func(yield func(attribute) bool) {
	return func(yield func(attribute) bool) {
		for len(b) >= unix.SizeofNlAttr {
			n := int(binary.NativeEndian.Uint16(b[0:2]))
			if n < unix.SizeofNlAttr || n > len(b) {
				return
			}
			a := attribute{typ: binary.NativeEndian.Uint16(b[2:4]) &^ (unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER), data: b[unix.SizeofNlAttr:n]}
			if !yield(a) {
				return
			}
			b = b[min(len(b), nlaAlign(n)):]
		}
	}
}

func nlaAlign(n int) int { return (n + unix.NLA_ALIGNTO - 1) &^ (unix.NLA_ALIGNTO - 1) }
