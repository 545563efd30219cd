package netpolicy

import (
	"encoding/binary"
	"fmt"
	"net/netip"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// The encoding below produces the same kernel expressions that nft 1.0
// generates for the text Render prints, dependencies included (meta nfproto
// before an IPv4 match in the inet family, meta protocol or the ether type in
// the bridge family, meta l4proto before a port). The root tests hold it to
// that: a ruleset applied here and the same text loaded by `nft -f` list
// identically.

// Apply replaces bastiond's own tables with rs in one netlink transaction:
// either all of it is in force afterwards or nothing changed. Tables that rs
// does not name are left alone; so are other people's tables.
func Apply(c *nftables.Conn, rs Ruleset) error {
	for _, t := range rs.Tables {
		kept, err := keptElements(c, t)
		if err != nil {
			return fmt.Errorf("netpolicy: table %s %s: %w", t.Family, t.Name, err)
		}
		if err := queueTable(c, t, kept); err != nil {
			return fmt.Errorf("netpolicy: table %s %s: %w", t.Family, t.Name, err)
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netpolicy: apply: %w", err)
	}
	return nil
}

// Remove deletes the named tables of ours that exist, in one transaction.
func Remove(c *nftables.Conn, tables []Table) error {
	for _, t := range tables {
		nt := &nftables.Table{Family: tableFamily(t.Family), Name: t.Name}
		// Adding first makes the delete valid whether or not it exists.
		c.AddTable(nt)
		c.DelTable(nt)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("netpolicy: remove: %w", err)
	}
	return nil
}

func tableFamily(f Family) nftables.TableFamily {
	if f == FamilyBridge {
		return nftables.TableFamilyBridge
	}
	return nftables.TableFamilyINet
}

// queueTable adds to c's batch: the table (created if missing), its deletion,
// and the table again with all its contents: the atomic replace `nft -f`
// does for "table x; delete table x; table x { ... }".
func queueTable(c *nftables.Conn, t Table, kept map[string][]nftables.SetElement) error {
	nt := &nftables.Table{Family: tableFamily(t.Family), Name: t.Name}
	c.AddTable(nt)
	c.DelTable(nt)
	c.AddTable(nt)
	sets := make(map[string]*nftables.Set, len(t.Sets))
	for _, s := range t.Sets {
		ns, elems, err := encodeSet(nt, s)
		if err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		if err := c.AddSet(ns, nil); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		if err := addElements(c, ns, elems); err != nil {
			return fmt.Errorf("set %s: %w", s.Name, err)
		}
		if err := addElements(c, ns, kept[s.Name]); err != nil {
			return fmt.Errorf("set %s: keep %d entries: %w", s.Name, len(kept[s.Name]), err)
		}
		sets[s.Name] = ns
	}
	for _, ch := range t.Chains {
		nc := c.AddChain(encodeChain(nt, ch))
		for i, r := range ch.Rules {
			e := &encoder{c: c, table: nt, family: t.Family, sets: sets}
			exprs, err := e.rule(r)
			if err != nil {
				return fmt.Errorf("chain %s rule %d (%s): %w", ch.Name, i+1, r, err)
			}
			c.AddRule(&nftables.Rule{Table: nt, Chain: nc, Exprs: exprs, UserData: commentUserData(r.Comment)})
		}
	}
	return nil
}

// elementsPerMessage keeps each element list far below 64 KiB: a netlink
// attribute's length is 16 bits, and one list of a large set would overflow
// it (the kernel then rejects the batch, or worse, reads a truncated set).
// The largest element here, an IPv6 address . port key with a 64-character
// target name as its comment, takes about 104 bytes: 512 of them make 53 KiB
// (TestApplyMessagesLargeInventory holds that margin).
const elementsPerMessage = 512

// addElements queues elems for s in as many messages as needed; they all
// belong to the same transaction.
func addElements(c *nftables.Conn, s *nftables.Set, elems []nftables.SetElement) error {
	per := elementsPerMessage
	if len(elems) > 0 && elems[0].KeyEnd != nil {
		// A range takes its key twice.
		per /= 2
	}
	for len(elems) > 0 {
		n := min(len(elems), per)
		// Interval sets take a start and its end together.
		if n < len(elems) && elems[n].IntervalEnd {
			n++
		}
		if err := c.SetAddElements(s, elems[:n]); err != nil {
			return err
		}
		elems = elems[n:]
	}
	return nil
}

// keptElements reads, from the table in force, the entries of the sets
// marked Keep, each with the time it has left.
func keptElements(c *nftables.Conn, t Table) (map[string][]nftables.SetElement, error) {
	nt := &nftables.Table{Family: tableFamily(t.Family), Name: t.Name}
	kept := map[string][]nftables.SetElement{}
	for _, s := range t.Sets {
		if !s.Keep {
			continue
		}
		cur, err := c.GetSetByName(nt, s.Name)
		if err != nil {
			continue // no such table or set yet: nothing to keep
		}
		elems, err := c.GetSetElements(cur)
		if err != nil {
			return nil, fmt.Errorf("read set %s: %w", s.Name, err)
		}
		// One element per key: masking to SourceBits may fold several
		// into one, which keeps the longest time left.
		at := map[string]int{}
		for _, e := range elems {
			left := e.Expires
			if left <= 0 || (s.Timeout > 0 && left > s.Timeout) {
				left = s.Timeout // the new block time caps what is left
			}
			if left <= 0 {
				continue
			}
			key := maskKey(e.Key, s.SourceBits)
			if i, ok := at[string(key)]; ok {
				kept[s.Name][i].Timeout = max(kept[s.Name][i].Timeout, left)
				continue
			}
			at[string(key)] = len(kept[s.Name])
			kept[s.Name] = append(kept[s.Name], nftables.SetElement{Key: key, Timeout: left})
		}
	}
	return kept, nil
}

// maskKey keeps the first bits bits of an address key (all of it when bits
// is 0 or the key is no address).
func maskKey(key []byte, bits int) []byte {
	a, ok := netip.AddrFromSlice(key)
	if bits == 0 || !ok {
		return key
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return key
	}
	return p.Addr().AsSlice()
}

func encodeChain(t *nftables.Table, ch Chain) *nftables.Chain {
	hooks := map[string]*nftables.ChainHook{
		"input":   nftables.ChainHookInput,
		"forward": nftables.ChainHookForward,
		"output":  nftables.ChainHookOutput,
	}
	// "priority filter" is 0 in the inet family and -200 in the bridge family.
	base := nftables.ChainPriority(0)
	if t.Family == nftables.TableFamilyBridge {
		base = -200
	}
	policy := nftables.ChainPolicyAccept
	if ch.Policy == "drop" {
		policy = nftables.ChainPolicyDrop
	}
	return &nftables.Chain{
		Name:     ch.Name,
		Table:    t,
		Type:     nftables.ChainTypeFilter,
		Hooknum:  hooks[ch.Hook],
		Priority: nftables.ChainPriorityRef(base + nftables.ChainPriority(ch.Priority)),
		Policy:   &policy,
	}
}

func encodeSet(t *nftables.Table, s Set) (*nftables.Set, []nftables.SetElement, error) {
	ns := &nftables.Set{
		Table:      t,
		Name:       s.Name,
		Interval:   s.Interval,
		Dynamic:    s.Dynamic,
		HasTimeout: s.Timeout > 0,
		Timeout:    s.Timeout,
		Size:       uint32(s.Size),
		Counter:    s.Counter,
	}
	switch s.Type {
	case TypeIPv4:
		ns.KeyType = nftables.TypeIPAddr
	case TypeIPv6:
		ns.KeyType = nftables.TypeIP6Addr
	case TypeInetPort:
		ns.KeyType = nftables.TypeInetService
	case TypeIPv4Port:
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetService)
	case TypeIPv6Port:
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetService)
	case TypeIPv4ProtoPort:
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeInetProto, nftables.TypeInetService)
	case TypeIPv6ProtoPort:
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeIP6Addr, nftables.TypeInetProto, nftables.TypeInetService)
	case TypeProtoPort:
		ns.KeyType = nftables.MustConcatSetType(nftables.TypeInetProto, nftables.TypeInetService)
	default:
		return nil, nil, fmt.Errorf("unknown set type %q", s.Type)
	}
	concat := s.Type != TypeIPv4 && s.Type != TypeIPv6 && s.Type != TypeInetPort
	// An interval set keyed by a concatenation (pipapo in the kernel) holds
	// each range as one element, from its key to its key end, both
	// included.
	ns.Concatenation = s.Interval && concat
	var elems []nftables.SetElement
	if s.Interval && !concat && len(s.Elements) > 0 {
		// Interval sets hold [start, end) pairs; nft also marks the start
		// of the address space as an end, and the kernel lists the same.
		zero := make([]byte, len(s.Elements[0].Prefix.Addr().AsSlice()))
		elems = append(elems, nftables.SetElement{Key: zero, IntervalEnd: true})
	}
	for _, e := range s.Elements {
		switch s.Type {
		case TypeInetPort:
			elems = append(elems, nftables.SetElement{Key: be16(e.Port)})
		case TypeIPv4Port, TypeIPv6Port:
			p := e.Prefix.Masked()
			key := append(p.Addr().AsSlice(), be16(e.Port)...)
			el := nftables.SetElement{Key: append(key, 0, 0), Comment: e.Comment} // ports are padded to 4 bytes
			if s.Interval {
				el.KeyEnd = append(append(lastAddr(p).AsSlice(), be16(e.Port)...), 0, 0)
			}
			elems = append(elems, el)
		case TypeIPv4ProtoPort, TypeIPv6ProtoPort, TypeProtoPort:
			proto, ok := protoNumbers[e.Proto]
			if !ok || (e.Proto != "tcp" && e.Proto != "udp") {
				return nil, nil, fmt.Errorf("element %s: protocol %q is not tcp or udp", e.String(s.Type), e.Proto)
			}
			// Each part of a concatenation takes whole 4-byte words.
			tail := append([]byte{proto, 0, 0, 0}, be16(e.Port)...)
			tail = append(tail, 0, 0)
			var key []byte
			p := e.Prefix.Masked()
			if s.Type != TypeProtoPort {
				key = p.Addr().AsSlice()
			}
			el := nftables.SetElement{Key: append(key, tail...), Comment: e.Comment}
			if s.Interval && s.Type != TypeProtoPort {
				el.KeyEnd = append(lastAddr(p).AsSlice(), tail...)
			}
			elems = append(elems, el)
		default:
			p := e.Prefix.Masked()
			elems = append(elems, nftables.SetElement{Key: p.Addr().AsSlice(), Comment: e.Comment})
			if s.Interval {
				if end, ok := prefixEnd(p); ok {
					elems = append(elems, nftables.SetElement{Key: end.AsSlice(), IntervalEnd: true})
				}
			}
		}
	}
	return ns, elems, nil
}

// lastAddr is the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

// prefixEnd is the first address after p, if there is one.
func prefixEnd(p netip.Prefix) (netip.Addr, bool) {
	b := p.Addr().AsSlice()
	host := len(b)*8 - p.Bits()
	// Add 1 at the lowest network bit, carrying upwards.
	for i := len(b) - 1 - host/8; i >= 0; i-- {
		inc := byte(1)
		if i == len(b)-1-host/8 {
			inc = 1 << (host % 8)
		}
		sum := uint16(b[i]) + uint16(inc)
		b[i] = byte(sum)
		if sum < 256 {
			a, _ := netip.AddrFromSlice(b)
			return a, true
		}
	}
	return netip.Addr{}, false
}

// commentUserData encodes a rule comment the way nft stores it: a TLV of
// type 0 (NFTNL_UDATA_RULE_COMMENT) holding the NUL-terminated text.
func commentUserData(comment string) []byte {
	if comment == "" {
		return nil
	}
	b := []byte{0, byte(len(comment) + 1)}
	b = append(b, comment...)
	return append(b, 0)
}

// encoder turns one rule into expressions, tracking which protocol facts
// earlier expressions of the rule have already established, as nft does,
// so that each dependency is emitted once.
type encoder struct {
	c      *nftables.Conn
	table  *nftables.Table
	family Family
	sets   map[string]*nftables.Set
	exprs  []expr.Any

	nfproto byte // established network protocol (unix.NFPROTO_IPV4/6), 0 if none
	l4proto byte // established transport protocol, 0 if none
}

func (e *encoder) rule(r Rule) ([]expr.Any, error) {
	for _, m := range r.Match {
		if err := e.match(m); err != nil {
			return nil, err
		}
	}
	for _, s := range r.Stmts {
		if err := e.stmt(s); err != nil {
			return nil, err
		}
	}
	switch r.Verdict {
	case "accept":
		e.add(&expr.Verdict{Kind: expr.VerdictAccept})
	case "drop":
		e.add(&expr.Verdict{Kind: expr.VerdictDrop})
	case "":
	default:
		return nil, fmt.Errorf("unknown verdict %q", r.Verdict)
	}
	return e.exprs, nil
}

func (e *encoder) add(x ...expr.Any) { e.exprs = append(e.exprs, x...) }

func (e *encoder) cmp(op expr.CmpOp, data []byte) {
	e.add(&expr.Cmp{Op: op, Register: 1, Data: data})
}

func (e *encoder) meta(key expr.MetaKey) { e.metaTo(key, 1) }

func (e *encoder) metaTo(key expr.MetaKey, reg uint32) { e.add(&expr.Meta{Key: key, Register: reg}) }

func (e *encoder) payload(base expr.PayloadBase, offset, length, reg uint32) {
	e.add(&expr.Payload{DestRegister: reg, Base: base, Offset: offset, Len: length})
}

// needNet establishes the network protocol v6 or v4.
func (e *encoder) needNet(v6 bool) {
	want := byte(unix.NFPROTO_IPV4)
	if v6 {
		want = unix.NFPROTO_IPV6
	}
	if e.nfproto == want {
		return
	}
	e.netDep(v6)
	e.nfproto = want
}

func (e *encoder) netDep(v6 bool) {
	if e.family == FamilyBridge {
		e.meta(expr.MetaKeyPROTOCOL)
		e.cmp(expr.CmpOpEq, etherType(v6))
		return
	}
	e.meta(expr.MetaKeyNFPROTO)
	if v6 {
		e.cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV6})
	} else {
		e.cmp(expr.CmpOpEq, []byte{unix.NFPROTO_IPV4})
	}
}

func etherType(v6 bool) []byte {
	if v6 {
		return be16(unix.ETH_P_IPV6)
	}
	return be16(unix.ETH_P_IP)
}

// needL4 establishes the transport protocol.
func (e *encoder) needL4(proto byte) {
	if e.l4proto == proto {
		return
	}
	e.meta(expr.MetaKeyL4PROTO)
	e.cmp(expr.CmpOpEq, []byte{proto})
	e.l4proto = proto
}

// anonSet creates a constant anonymous set for a list match and returns a
// lookup of register 1 in it.
func (e *encoder) anonSet(keyType nftables.SetDatatype, keys [][]byte) (expr.Any, error) {
	s := &nftables.Set{Table: e.table, Anonymous: true, Constant: true, KeyType: keyType}
	elems := make([]nftables.SetElement, len(keys))
	for i, k := range keys {
		elems[i] = nftables.SetElement{Key: k}
	}
	if err := e.c.AddSet(s, elems); err != nil {
		return nil, err
	}
	return &expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID}, nil
}

// eqOrIn compares register 1 with one value, or looks it up in an
// anonymous set of several.
func (e *encoder) eqOrIn(keyType nftables.SetDatatype, keys [][]byte, negate bool) error {
	if len(keys) == 1 {
		op := expr.CmpOpEq
		if negate {
			op = expr.CmpOpNeq
		}
		e.cmp(op, keys[0])
		return nil
	}
	l, err := e.anonSet(keyType, keys)
	if err != nil {
		return err
	}
	l.(*expr.Lookup).Invert = negate
	e.add(l)
	return nil
}

func (e *encoder) namedSet(name string) (*nftables.Set, error) {
	s, ok := e.sets[name]
	if !ok {
		return nil, fmt.Errorf("no set %q in the table", name)
	}
	return s, nil
}

func saddrOffset(v6 bool) (offset, length uint32) {
	if v6 {
		return 8, 16
	}
	return 12, 4
}

// source loads the source address into register 1, masked to its first
// bits when bits is set: a bitwise AND with the netmask, as nft encodes
// "ip6 saddr & ffff:ffff:ffff:ffff::".
func (e *encoder) source(v6 bool, bits int) {
	e.needNet(v6)
	off, n := saddrOffset(v6)
	e.payload(expr.PayloadBaseNetworkHeader, off, n, 1)
	if bits == 0 {
		return
	}
	e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: n,
		Mask: sourceMask(v6, bits).AsSlice(), Xor: make([]byte, n)})
}

var protoNumbers = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP, "icmp": unix.IPPROTO_ICMP, "ipv6-icmp": unix.IPPROTO_ICMPV6}

var icmpTypes = map[string]byte{
	"echo-reply": 0, "destination-unreachable": 3, "echo-request": 8, "time-exceeded": 11, "parameter-problem": 12,
}

var icmpv6Types = map[string]byte{
	"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3, "parameter-problem": 4,
	"echo-request": 128, "echo-reply": 129, "nd-router-solicit": 133, "nd-router-advert": 134,
	"nd-neighbor-solicit": 135, "nd-neighbor-advert": 136,
}

func (e *encoder) match(m Match) error {
	switch m := m.(type) {
	case IIFLoopback:
		e.meta(expr.MetaKeyIIF)
		e.cmp(expr.CmpOpEq, binary.NativeEndian.AppendUint32(nil, 1)) // lo is ifindex 1 in every namespace
	case IIF:
		if len(m.Name) >= unix.IFNAMSIZ {
			return fmt.Errorf("interface name %q too long", m.Name)
		}
		name := make([]byte, unix.IFNAMSIZ)
		copy(name, m.Name)
		e.meta(expr.MetaKeyIIFNAME)
		e.cmp(expr.CmpOpEq, name)
	case CtState:
		var bits uint32
		for _, s := range m.States {
			b, ok := map[string]uint32{"invalid": 1, "established": 2, "related": 4, "new": 8, "untracked": 64}[s]
			if !ok {
				return fmt.Errorf("unknown ct state %q", s)
			}
			bits |= b
		}
		e.add(&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
				Mask: binary.NativeEndian.AppendUint32(nil, bits), Xor: make([]byte, 4)})
		e.cmp(expr.CmpOpNeq, make([]byte, 4))
	case NFProto:
		e.netDep(m.V6)
		e.nfproto = unix.NFPROTO_IPV4
		if m.V6 {
			e.nfproto = unix.NFPROTO_IPV6
		}
	case L4Proto:
		keys := make([][]byte, len(m.Protos))
		for i, p := range m.Protos {
			n, ok := protoNumbers[p]
			if !ok {
				return fmt.Errorf("unknown protocol %q", p)
			}
			keys[i] = []byte{n}
		}
		e.meta(expr.MetaKeyL4PROTO)
		if err := e.eqOrIn(nftables.TypeInetProto, keys, false); err != nil {
			return err
		}
		if len(keys) == 1 {
			e.l4proto = keys[0][0]
		}
	case DPort:
		if m.Proto != "th" {
			e.needL4(protoNumbers[m.Proto])
		}
		keys := make([][]byte, len(m.Ports))
		for i, p := range m.Ports {
			keys[i] = be16(p)
		}
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, 1)
		return e.eqOrIn(nftables.TypeInetService, keys, m.Negate)
	case TCPNoSYN:
		e.needL4(unix.IPPROTO_TCP)
		e.payload(expr.PayloadBaseTransportHeader, 13, 1, 1)
		e.add(&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x02}, Xor: []byte{0}})
		e.cmp(expr.CmpOpEq, []byte{0})
	case SPort:
		e.needL4(protoNumbers[m.Proto])
		keys := make([][]byte, len(m.Ports))
		for i, p := range m.Ports {
			keys[i] = be16(p)
		}
		e.payload(expr.PayloadBaseTransportHeader, 0, 2, 1)
		return e.eqOrIn(nftables.TypeInetService, keys, false)
	case SAddrIn:
		s, err := e.namedSet(m.Set)
		if err != nil {
			return err
		}
		e.source(m.V6, m.Bits)
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID, Invert: m.Negate})
	case DAddrIn:
		s, err := e.namedSet(m.Set)
		if err != nil {
			return err
		}
		e.needNet(m.V6)
		off, n := saddrOffset(m.V6)
		e.payload(expr.PayloadBaseNetworkHeader, off+n, n, 1) // the destination follows the source
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	case AddrProtoPortIn:
		s, err := e.namedSet(m.Set)
		if err != nil {
			return err
		}
		e.needNet(m.V6)
		// A concatenation fills consecutive 4-byte registers from
		// register 1 (NFT_REG32_00 is 8; register 2 is 12, the word after
		// an IPv6 address), as nft allocates them.
		protoReg, portReg := uint32(9), uint32(10)
		if m.V6 {
			protoReg, portReg = 2, 13
			e.payload(expr.PayloadBaseNetworkHeader, 24, 16, 1)
		} else {
			e.payload(expr.PayloadBaseNetworkHeader, 16, 4, 1)
		}
		e.metaTo(expr.MetaKeyL4PROTO, protoReg)
		if s.Interval {
			// The ranges of an interval set compare keys as big-endian
			// numbers: nft turns the host-order protocol into network
			// order first, and so does this.
			e.add(&expr.Byteorder{SourceRegister: protoReg, DestRegister: protoReg, Op: expr.ByteorderHton, Len: 1, Size: 2})
		}
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, portReg)
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	case ProtoPortIn:
		s, err := e.namedSet(m.Set)
		if err != nil {
			return err
		}
		e.meta(expr.MetaKeyL4PROTO)
		e.payload(expr.PayloadBaseTransportHeader, 2, 2, 9)
		e.add(&expr.Lookup{SourceRegister: 1, SetName: s.Name, SetID: s.ID})
	case SKUID:
		op := expr.CmpOpEq
		if m.Negate {
			op = expr.CmpOpNeq
		}
		e.meta(expr.MetaKeySKUID)
		e.cmp(op, binary.NativeEndian.AppendUint32(nil, m.UID))
	case ICMPType:
		types, proto, keyType := icmpTypes, byte(unix.IPPROTO_ICMP), nftables.TypeICMPType
		if m.V6 {
			types, proto, keyType = icmpv6Types, unix.IPPROTO_ICMPV6, nftables.TypeICMP6Type
		}
		keys := make([][]byte, len(m.Types))
		for i, t := range m.Types {
			n, ok := types[t]
			if !ok {
				return fmt.Errorf("unknown ICMP type %q", t)
			}
			keys[i] = []byte{n}
		}
		e.needNet(m.V6)
		e.needL4(proto)
		e.payload(expr.PayloadBaseTransportHeader, 0, 1, 1)
		return e.eqOrIn(keyType, keys, false)
	case ARPSAddr:
		if e.family != FamilyBridge || !m.Addr.Is4() {
			return fmt.Errorf("arp saddr needs the bridge family and an IPv4 address")
		}
		e.payload(expr.PayloadBaseLLHeader, 12, 2, 1)
		e.cmp(expr.CmpOpEq, be16(unix.ETH_P_ARP))
		e.payload(expr.PayloadBaseNetworkHeader, 14, 4, 1)
		e.cmp(expr.CmpOpEq, m.Addr.AsSlice())
	case NDTarget:
		if e.family != FamilyBridge || !m.Addr.Is6() {
			return fmt.Errorf("ND target match needs the bridge family and an IPv6 address")
		}
		e.payload(expr.PayloadBaseLLHeader, 12, 2, 1)
		e.cmp(expr.CmpOpEq, be16(unix.ETH_P_IPV6))
		e.needL4(unix.IPPROTO_ICMPV6)
		e.payload(expr.PayloadBaseTransportHeader, 0, 1, 1)
		e.cmp(expr.CmpOpEq, []byte{icmpv6Types["nd-neighbor-advert"]})
		e.payload(expr.PayloadBaseTransportHeader, 8, 16, 1)
		e.cmp(expr.CmpOpEq, m.Addr.AsSlice())
	case SourceOver:
		s, err := e.namedSet(m.Set)
		if err != nil {
			return err
		}
		e.source(m.V6, m.Bits)
		unit := expr.LimitTimeSecond
		if m.PerMinute {
			unit = expr.LimitTimeMinute
		}
		e.add(&expr.Dynset{SrcRegKey: 1, SetName: s.Name, SetID: s.ID, Operation: unix.NFT_DYNSET_OP_ADD,
			Exprs: []expr.Any{&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(m.PerSecond), Unit: unit, Burst: uint32(m.BurstPacket), Over: true}}})
	default:
		return fmt.Errorf("no netlink encoding for %T", m)
	}
	return nil
}

func (e *encoder) stmt(s Stmt) error {
	switch s := s.(type) {
	case Limit:
		e.add(&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(s.PerSecond), Unit: expr.LimitTimeSecond, Burst: uint32(s.Burst)})
	case AddSource:
		set, err := e.namedSet(s.Set)
		if err != nil {
			return err
		}
		e.source(s.V6, s.Bits)
		e.add(&expr.Dynset{SrcRegKey: 1, SetName: set.Name, SetID: set.ID, Operation: unix.NFT_DYNSET_OP_ADD})
	case Counter:
		e.add(&expr.Counter{})
	case LimitPerMinute:
		e.add(&expr.Limit{Type: expr.LimitTypePkts, Rate: uint64(s.Rate), Unit: expr.LimitTimeMinute, Burst: uint32(s.Burst)})
	case Log:
		e.add(&expr.Log{Key: 1 << unix.NFTA_LOG_PREFIX, Data: []byte(s.Prefix)})
	default:
		return fmt.Errorf("no netlink encoding for %T", s)
	}
	return nil
}

func be16(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
