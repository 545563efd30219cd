package netpolicy

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"github.com/mdlayher/netlink/nltest"
	"golang.org/x/sys/unix"
)

// recordConn returns an nftables connection that reaches no kernel: reads
// fail with ENOENT, as they do before the first apply (Apply then has no set
// entries to keep), and every batch it sends is appended to *batches,
// begin and end messages included, and acknowledged.
func recordConn(t testing.TB, batches *[][]netlink.Message) *nftables.Conn {
	t.Helper()
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if len(req) == 0 {
			return nil, nil // a receive with nothing queued
		}
		if req[0].Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) {
			return nltest.Error(int(unix.ENOENT), req)
		}
		*batches = append(*batches, req)
		var acks []netlink.Message
		for _, m := range req {
			if m.Header.Flags&netlink.Acknowledge != 0 {
				acks = append(acks, netlink.Message{
					Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence, PID: m.Header.PID},
					Data:   make([]byte, 4),
				})
			}
		}
		return acks, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// applyMessages runs Apply without a kernel and returns the messages of the
// one transaction it sends, checked to be a whole batch.
func applyMessages(t testing.TB, rs Ruleset) []netlink.Message {
	t.Helper()
	var batches [][]netlink.Message
	if err := Apply(recordConn(t, &batches), rs); err != nil {
		t.Fatal(err)
	}
	if len(batches) != 1 {
		t.Fatalf("Apply sent %d batches, want one transaction", len(batches))
	}
	b := batches[0]
	if len(b) < 2 || b[len(b)-1].Header.Type != netlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
		t.Fatalf("the batch of %d messages does not end with NFNL_MSG_BATCH_END", len(b))
	}
	return b[1 : len(b)-1]
}

func toNlMsgs(msgs []netlink.Message) []nlMsg {
	out := make([]nlMsg, len(msgs))
	for i, m := range msgs {
		out[i] = nlMsg{Type: uint16(m.Header.Type), Flags: uint16(m.Header.Flags), Data: m.Data}
	}
	return out
}

// checkHeaderFlags checks what the canonical form cannot take from nft's
// dump: the netlink header flags, of which libmnl prints only request, multi,
// ack and echo. Those that change what the kernel does are held to what nft
// sends (src/mnl.c): rules are appended (without NLM_F_APPEND the kernel
// puts each rule first, reversing the chain), nothing replaces, and
// nothing is exclusive (a second apply would fail with EEXIST).
var nftHeaderFlags = map[uint16]netlink.HeaderFlags{
	unix.NFT_MSG_NEWTABLE:   netlink.Create,
	unix.NFT_MSG_NEWCHAIN:   netlink.Create,
	unix.NFT_MSG_NEWSET:     netlink.Create,
	unix.NFT_MSG_NEWSETELEM: netlink.Create,
	unix.NFT_MSG_NEWRULE:    netlink.Create | netlink.Append,
}

func checkHeaderFlags(msgs []netlink.Message) []string {
	var bad []string
	for i, m := range msgs {
		f := m.Header.Flags
		op := uint16(m.Header.Type) & 0xff
		if want := nftHeaderFlags[op]; f&want != want {
			bad = append(bad, fmt.Sprintf("message %d (nf_tables %d): flags %v lack %v", i, op, f, nftHeaderFlags[op]))
		}
		if f&(netlink.Excl|netlink.Replace) != 0 {
			bad = append(bad, fmt.Sprintf("message %d (nf_tables %d): flags %v", i, op, f))
		}
	}
	return bad
}

// TestApplyMessagesMatchNft holds the messages Apply sends, byte for byte as
// far as the kernel can tell, to those nft sends for the same ruleset text:
// testdata/NAME.netlink, recorded from nft by TestNftNetlinkGolden (root).
// It needs neither root nor nft.
func TestApplyMessagesMatchNft(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the .netlink goldens were recorded on a little-endian host (host-order words, ct state, iif)")
	}
	for _, tc := range goldenCases {
		t.Run(tc.name, func(t *testing.T) {
			rs, err := Compile(labInput(tc.edit))
			if err != nil {
				t.Fatal(err)
			}
			msgs := applyMessages(t, rs)
			for _, p := range checkHeaderFlags(msgs) {
				t.Error(p)
			}
			got := decodeBatch(toNlMsgs(msgs)).render(true)
			golden := filepath.Join("testdata", tc.name+".netlink")
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (go test -run TestNftNetlinkGolden -update, as root, creates it)", err)
			}
			if w := stripComments(string(want)); got != w {
				t.Errorf("Apply sends another transaction than nft does for testdata/%s.nft (- nft, %s; + Apply);\n"+
					"if that .nft golden changed, rerun TestNftNetlinkGolden -update as root:\n%s",
					tc.name, golden, lineDiff(w, got))
			}
		})
	}
}

// sentElements decodes the element messages of a transaction: the keys sent
// to each set ("family table set" -> hex keys, interval ends marked), and
// every problem with them, attribute lengths first: each nest must be
// filled exactly by its attributes, so a length that wrapped around its
// 16 bits shows as malformed or stray attributes.
func sentElements(msgs []nlMsg) (map[string][]string, []string) {
	keys := map[string][]string{}
	var problems []string
	for i, m := range msgs {
		if m.Type&0xff != unix.NFT_MSG_NEWSETELEM {
			continue
		}
		a := newAttrs(m.Data[4:])
		table, _ := a.str(unix.NFTA_SET_ELEM_LIST_TABLE)
		set, _ := a.str(unix.NFTA_SET_ELEM_LIST_SET)
		a.u32(unix.NFTA_SET_ELEM_LIST_SET_ID)
		list, _ := a.bytes(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
		if r := a.rest(); len(r) > 0 {
			problems = append(problems, fmt.Sprintf("message %d (set %s, %d bytes): %s", i, set, len(m.Data), strings.Join(r, " ")))
		}
		items, err := parseAttrs(list)
		if err != nil {
			problems = append(problems, fmt.Sprintf("message %d (set %s): element list: %v", i, set, err))
		}
		id := fmt.Sprintf("%s %s %s", familyName(m.Data[0]), table, set)
		for _, it := range items {
			e := newAttrs(it.Data)
			key, _ := dataValue(e, unix.NFTA_SET_ELEM_KEY)
			k := fmt.Sprintf("%x", key)
			if f, _ := e.u32(unix.NFTA_SET_ELEM_FLAGS); f&unix.NFT_SET_ELEM_INTERVAL_END != 0 {
				k += "/end"
			}
			e.bytes(unix.NFTA_SET_ELEM_USERDATA)
			if r := e.rest(); len(r) > 0 {
				problems = append(problems, fmt.Sprintf("message %d (set %s): element %s: %s", i, set, k, strings.Join(r, " ")))
			}
			keys[id] = append(keys[id], k)
		}
	}
	return keys, problems
}

// wantKeys is what a set of the ruleset must receive, worked out from the
// elements themselves rather than with the encoder's code: keys in network
// byte order, ports after the address padded to 4 bytes; for interval sets
// the start of each prefix (their ends are the encoder's business and the
// golden tests').
func wantKeys(s Set) []string {
	var out []string
	for _, e := range s.Elements {
		var k []byte
		switch s.Type {
		case TypeInetPort:
			k = binary.BigEndian.AppendUint16(nil, e.Port)
		case TypeIPv4Port, TypeIPv6Port:
			k = binary.BigEndian.AppendUint16(e.Prefix.Addr().AsSlice(), e.Port)
			k = append(k, 0, 0)
		case TypeIPv4ProtoPort, TypeIPv6ProtoPort:
			k = append(e.Prefix.Addr().AsSlice(), map[string]byte{"tcp": 6, "udp": 17}[e.Proto], 0, 0, 0)
			k = binary.BigEndian.AppendUint16(k, e.Port)
			k = append(k, 0, 0)
		default:
			k = e.Prefix.Masked().Addr().AsSlice()
		}
		out = append(out, fmt.Sprintf("%x", k))
	}
	return out
}

// TestApplyMessagesLargeInventory sends large rulesets without a kernel and
// checks that every element of every set is in the transaction, once, and
// that no attribute length overflowed. One list of a large set used to
// overflow its 16-bit length: the kernel read a truncated list and kept
// 1,892 of 15,000 elements without an error. The second case has the
// longest target names the configuration allows (64 characters), which the
// element comments carry: the largest elements, the fullest messages.
func TestApplyMessagesLargeInventory(t *testing.T) {
	tests := []struct {
		name    string
		targets int
		rename  func(i int) string
	}{
		{"10000 targets", 10_000, nil},
		{"2000 targets with 64-character names", 2_000, func(i int) string {
			return strings.Repeat("a", 58) + fmt.Sprintf("-%05d", i)
		}},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			in := bigInput(tc.targets)
			if tc.rename != nil {
				for i := range in.Targets {
					in.Targets[i].Name = tc.rename(i)
				}
			}
			rs, err := Compile(in)
			if err != nil {
				t.Fatal(err)
			}
			msgs := toNlMsgs(applyMessages(t, rs))
			sent, problems := sentElements(msgs)
			for _, p := range problems {
				t.Error(p)
			}
			for _, p := range decodeBatch(msgs).problems {
				t.Error(p)
			}
			total, largest := 0, 0
			for _, m := range msgs {
				largest = max(largest, len(m.Data))
			}
			for _, tb := range rs.Tables {
				for _, s := range tb.Sets {
					total += len(s.Elements)
					checkSentKeys(t, fmt.Sprintf("%s %s %s", tb.Family, tb.Name, s.Name), wantKeys(s), sent)
				}
			}
			if total < 10*tc.targets {
				t.Errorf("only %d set elements for %d targets; the test wants a large ruleset", total, tc.targets)
			}
			t.Logf("%d set elements in %d messages, the largest %d bytes", total, len(msgs), largest)
		})
	}
}

// checkSentKeys checks that each of want was sent to set id exactly once,
// and nothing else (interval ends aside).
func checkSentKeys(t *testing.T, id string, want []string, sent map[string][]string) {
	t.Helper()
	got := map[string]int{}
	for _, k := range sent[id] {
		if !strings.HasSuffix(k, "/end") {
			got[k]++
		}
	}
	missing := 0
	for _, k := range want {
		if got[k] == 0 {
			if missing++; missing <= 3 {
				t.Errorf("set %s: key %s was not sent", id, k)
			}
		}
		got[k]--
	}
	if missing > 0 {
		t.Errorf("set %s: %d of %d keys not sent", id, missing, len(want))
	}
	var extra []string
	for k, n := range got {
		if n != 0 {
			extra = append(extra, fmt.Sprintf("%s (%+d)", k, n))
		}
	}
	sort.Strings(extra)
	if len(extra) > 0 {
		t.Errorf("set %s: %d keys sent more or less often than once: %s", id, len(extra), strings.Join(extra[:min(len(extra), 5)], ", "))
	}
}

// TestMessageOverflowIsCaught shows that sentElements sees the overflow
// TestApplyMessagesLargeInventory guards against: 15,000 elements in one
// message, as the library sends them when asked to.
func TestMessageOverflowIsCaught(t *testing.T) {
	var batches [][]netlink.Message
	c := recordConn(t, &batches)
	tb := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "t"})
	s := &nftables.Set{Table: tb, Name: "s", KeyType: nftables.TypeIPAddr}
	var elems []nftables.SetElement
	for i := range 15_000 {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		elems = append(elems, nftables.SetElement{Key: a.AsSlice(), Comment: "target"})
	}
	if err := c.AddSet(s, elems); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	b := batches[0]
	sent, problems := sentElements(toNlMsgs(b[1 : len(b)-1]))
	if len(problems) == 0 && len(sent["inet t s"]) == len(elems) {
		t.Fatal("15,000 elements in one attribute went unnoticed")
	}
	t.Logf("caught: %d of %d keys decoded; first problem: %.200s", len(sent["inet t s"]), len(elems), strings.Join(problems, "; "))
}

const anyAttr = 0xffff

// editAttrs rebuilds the attributes b with f applied to the data of the
// first attribute reached through path (attribute types, anyAttr matching
// any) for which f returns non-nil; lengths are recomputed on the way up.
func editAttrs(b []byte, path []uint16, f func([]byte) []byte) ([]byte, bool) {
	list, err := parseAttrs(b)
	if err != nil {
		return b, false
	}
	var out []byte
	done := false
	for _, a := range list {
		data := a.Data
		if !done && (path[0] == anyAttr || path[0] == a.Type) {
			if len(path) == 1 {
				if d := f(a.Data); d != nil {
					data, done = d, true
				}
			} else if d, ok := editAttrs(a.Data, path[1:], f); ok {
				data, done = d, true
			}
		}
		out = binary.NativeEndian.AppendUint16(out, uint16(4+len(data)))
		out = binary.NativeEndian.AppendUint16(out, a.Type|a.Flags)
		out = append(out, data...)
		for len(out)%4 != 0 {
			out = append(out, 0)
		}
	}
	return out, done
}

// TestMessageCanonicalFormSeesChanges feeds the comparison of
// TestApplyMessagesMatchNft with Apply's messages changed in ways libnftnl's
// text alone would not show or that change what the kernel does, and
// checks that each fails it.
func TestMessageCanonicalFormSeesChanges(t *testing.T) {
	rs, err := Compile(labInput(nil))
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("testdata", "bridged.netlink"))
	if err != nil {
		t.Fatal(err)
	}
	golden := stripComments(string(want))
	be32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	ruleExpr := []uint16{unix.NFTA_RULE_EXPRESSIONS, anyAttr, unix.NFTA_EXPR_DATA}
	tests := []struct {
		name string
		msg  uint16
		path []uint16
		f    func([]byte) []byte
	}{
		{"1-byte compare sent as 4 bytes", unix.NFT_MSG_NEWRULE,
			append(ruleExpr, unix.NFTA_CMP_DATA, unix.NFTA_DATA_VALUE),
			func(b []byte) []byte {
				if len(b) == 1 {
					return append(b, 0, 0, 0)
				}
				return nil
			}},
		{"port key without its padding", unix.NFT_MSG_NEWSETELEM,
			[]uint16{unix.NFTA_SET_ELEM_LIST_ELEMENTS, anyAttr, unix.NFTA_SET_ELEM_KEY, unix.NFTA_DATA_VALUE},
			func(b []byte) []byte {
				if len(b) == 12 { // IPv4 address . protocol . port
					return b[:10]
				}
				return nil
			}},
		{"port loaded into the wrong register", unix.NFT_MSG_NEWRULE,
			append(ruleExpr, unix.NFTA_PAYLOAD_DREG),
			func(b []byte) []byte {
				if binary.BigEndian.Uint32(b) == 10 {
					return be32(2)
				}
				return nil
			}},
		{"destination offset for the source", unix.NFT_MSG_NEWRULE,
			append(ruleExpr, unix.NFTA_PAYLOAD_OFFSET),
			func(b []byte) []byte {
				if binary.BigEndian.Uint32(b) == 12 {
					return be32(16)
				}
				return nil
			}},
		{"rule comment changed", unix.NFT_MSG_NEWRULE,
			[]uint16{unix.NFTA_RULE_USERDATA},
			func(b []byte) []byte { return append(append([]byte(nil), b[:len(b)-2]...), 'X', 0) }},
		{"set without its timeout flag", unix.NFT_MSG_NEWSET,
			[]uint16{unix.NFTA_SET_FLAGS},
			func(b []byte) []byte {
				if v := binary.BigEndian.Uint32(b); v&unix.NFT_SET_TIMEOUT != 0 {
					return be32(v &^ unix.NFT_SET_TIMEOUT)
				}
				return nil
			}},
		{"element marked as an interval end", unix.NFT_MSG_NEWSETELEM,
			[]uint16{unix.NFTA_SET_ELEM_LIST_ELEMENTS, anyAttr},
			func(b []byte) []byte {
				if !newAttrs(b).has(unix.NFTA_SET_ELEM_USERDATA) {
					return nil
				}
				flags := binary.NativeEndian.AppendUint16(nil, 8)
				flags = binary.NativeEndian.AppendUint16(flags, unix.NFTA_SET_ELEM_FLAGS)
				return append(append(flags, be32(unix.NFT_SET_ELEM_INTERVAL_END)...), b...)
			}},
		{"set counter dropped", unix.NFT_MSG_NEWSET,
			[]uint16{nftaSetExpr},
			func(b []byte) []byte { return []byte{} }},
		{"chain policy accept", unix.NFT_MSG_NEWCHAIN,
			[]uint16{unix.NFTA_CHAIN_POLICY},
			func(b []byte) []byte {
				if binary.BigEndian.Uint32(b) == 0 {
					return be32(1)
				}
				return nil
			}},
	}
	for _, tc := range tests {
		t.Run(strings.ReplaceAll(tc.name, " ", "_"), func(t *testing.T) {
			msgs := toNlMsgs(applyMessages(t, rs))
			edited := false
			for i, m := range msgs {
				if edited || m.Type&0xff != tc.msg {
					continue
				}
				attrs, ok := editAttrs(m.Data[4:], tc.path, tc.f)
				if ok {
					msgs[i].Data = append(append([]byte(nil), m.Data[:4]...), attrs...)
					edited = true
				}
			}
			if !edited {
				t.Fatal("nothing to change in Apply's messages")
			}
			got := decodeBatch(msgs).render(true)
			if got == golden {
				t.Fatal("the changed transaction still matches testdata/bridged.netlink")
			}
			t.Logf("TestApplyMessagesMatchNft would report (- nft, + Apply):\n%s", lineDiff(golden, got))
		})
	}
}
