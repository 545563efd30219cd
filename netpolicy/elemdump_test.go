package netpolicy

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// The element dump is read by hand (elemdump.go); these are answers as the
// kernel writes them, built here attribute by attribute. The root tests
// (counters_root_test.go) read the kernel's own.

func counterExpr(t *testing.T, packets, bytes uint64) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.ByteOrder = binary.BigEndian // the kernel's for counters
	ae.String(nftaExprName, "counter")
	ae.Nested(nftaExprData, func(ae *netlink.AttributeEncoder) error {
		ae.Uint64(nftaCounterBytes, bytes)
		ae.Uint64(nftaCounterPackets, packets)
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// element is one NFTA_LIST_ELEM: a key, a comment if any, and the counter
// either alone (NFTA_SET_ELEM_EXPR) or in a list (NFTA_SET_ELEM_EXPRESSIONS).
func element(t *testing.T, comment string, counter []byte, list bool) func(*netlink.AttributeEncoder) error {
	return func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
			ae.Bytes(unix.NFTA_DATA_VALUE, []byte{192, 0, 2, 1, 0, 22, 0, 0})
			return nil
		})
		if comment != "" {
			ae.Bytes(unix.NFTA_SET_ELEM_USERDATA, append([]byte{9, 2, 'x', 0}, commentUserData(comment)...)) // another TLV first
		}
		switch {
		case counter == nil:
		case list:
			ae.Nested(nftaSetElemExprs, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(nftaListElem|unix.NLA_F_NESTED, counter)
				return nil
			})
		default:
			ae.Bytes(unix.NFTA_SET_ELEM_EXPR|unix.NLA_F_NESTED, counter)
		}
		return nil
	}
}

func message(t *testing.T, seq uint32, typ uint16, body []byte) []byte {
	t.Helper()
	m := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	m = binary.NativeEndian.AppendUint16(m, typ)
	m = binary.NativeEndian.AppendUint16(m, unix.NLM_F_MULTI)
	m = binary.NativeEndian.AppendUint32(m, seq)
	m = binary.NativeEndian.AppendUint32(m, 0)
	m = append(m, body...)
	for len(m)%unix.NLMSG_ALIGNTO != 0 {
		m = append(m, 0)
	}
	return m
}

func elementsMessage(t *testing.T, seq uint32, elems ...func(*netlink.AttributeEncoder) error) []byte {
	t.Helper()
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, "bastiond")
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, "to_targets4")
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		for _, e := range elems {
			ae.Nested(nftaListElem, e)
		}
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return message(t, seq, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM, append([]byte{unix.NFPROTO_INET, 0, 0, 0}, b...))
}

func TestReadDatagram(t *testing.T) {
	got := map[string]Traffic{}
	count := func(comment []byte, packets, bytes uint64) {
		tr := got[string(comment)]
		tr.add(packets, bytes)
		got[string(comment)] = tr
	}
	const seq = 7
	first := elementsMessage(t, seq,
		element(t, "vm1", counterExpr(t, 3, 180), false),
		element(t, "vm2", counterExpr(t, 1, 60), true),
		element(t, "", counterExpr(t, 5, 500), false), // no comment: not a target's
		element(t, "vm3", nil, false),                 // no counter
	)
	first = append(first, elementsMessage(t, seq+1, element(t, "vm1", counterExpr(t, 100, 100), false))...) // another request's
	if done, err := readDatagram(first, seq, count); done || err != nil {
		t.Fatalf("first datagram: done %v, %v", done, err)
	}
	last := append(elementsMessage(t, seq, element(t, "vm1", counterExpr(t, 2, 120), false)), message(t, seq, unix.NLMSG_DONE, []byte{0, 0, 0, 0})...)
	if done, err := readDatagram(last, seq, count); !done || err != nil {
		t.Fatalf("last datagram: done %v, %v", done, err)
	}
	want := map[string]Traffic{"vm1": {Packets: 5, Bytes: 300}, "vm2": {Packets: 1, Bytes: 60}}
	if len(got) != len(want) || got["vm1"] != want["vm1"] || got["vm2"] != want["vm2"] {
		t.Errorf("counted %v, want %v", got, want)
	}

	code := -int32(unix.ENOENT)
	errAnswer := message(t, seq, unix.NLMSG_ERROR, binary.NativeEndian.AppendUint32(nil, uint32(code)))
	if done, err := readDatagram(errAnswer, seq, count); !done || err != unix.ENOENT {
		t.Errorf("an error answer: done %v, %v", done, err)
	}
	if _, err := readDatagram(first[:len(first)-9], seq, count); err == nil {
		t.Error("a cut message was read")
	}
}

func TestUserDataComment(t *testing.T) {
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{commentUserData("vm1"), "vm1"},
		{append([]byte{1, 1, 0}, commentUserData("a-b")...), "a-b"},
		{[]byte{0, 9, 'x'}, ""}, // longer than the data
		{nil, ""},
	} {
		if got := string(userDataComment(c.in)); got != c.want {
			t.Errorf("userDataComment(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
