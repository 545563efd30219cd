package netpolicy

// The canonical form of an nf_tables netlink transaction, shared by the
// message tests (nlmessage_test.go, nlmessage_root_test.go).
//
// A transaction is decoded from its raw messages into text built from
// libnftnl's own print format (what `nft --debug=netlink` shows), so that the
// same decoder can read what nft sends and what Apply sends, and the root test
// can check the decoder against libnftnl's text for nft's messages. The text
// is libnftnl's, with whitespace normalised, and each line may carry, after
// " ## ", what libnftnl does not print but the kernel acts on: the exact
// length of every data value (libnftnl prints whole 32-bit words, so a port
// key without its padding or a 4-byte compare of a 1-byte value would look
// the same), set key types and lengths, set expressions, chain names and
// policies (nft's --debug=netlink text of a chain lacks its name and policy;
// here they come from nft's own message bytes, as everything does), and any
// attribute the decoder does not know. Layout:
//
//	table inet bastiond add ## flags 0x0
//	table inet bastiond delete
//	set inet bastiond blocklist4 flags 0x30 timeout 600000ms size 65535 ## keytype 7 keylen 4
//	set inet bastiond to_targets4 flags 0x0 ## keytype 7 keylen 4 expr [ counter pkts 0 bytes 0 ]
//	  element 0b0112c6 : 0 [end] userdata = { \x00\x04vm1\x00 } ## key 4b
//	chain inet bastiond input type filter hook input prio 0 policy drop
//	rule inet bastiond input
//	  [ meta load nfproto => reg 1 ]
//	  [ cmp eq reg 1 0x00000002 ] ## 1b
//	  [ meta load l4proto => reg 1 ]
//	  [ cmp eq reg 1 0x00000001 ] ## 1b
//	  [ payload load 1b @ transport header + 0 => reg 1 ]
//	  [ lookup reg 1 set __set%d ]
//	    set flags 0x3 size 3 ## keytype 14 keylen 1
//	      element 00000003 : 0 [end] ## key 1b
//	      element 0000000b : 0 [end] ## key 1b
//	      element 0000000c : 0 [end] ## key 1b
//	  [ immediate reg 0 accept ]
//	  userdata = { \x00\x19errors the network needs\x00 }
//
// Sets are listed by name, each with its elements sorted; chains in message
// order, each followed by its rules in message order. Anonymous sets have
// arbitrary names and ids, so they are shown beneath the lookup that uses
// them. Anything the kernel would reject or resolve differently (a set or
// chain reference that does not resolve, content queued before its table is
// re-created, elements added to an anonymous set after a rule bound it) is
// listed at the end as "! problem" lines.
//
// Normalisations, each because the kernel provably ignores the difference:
//   - Attribute order within a nest, and the NLA_F_NESTED and
//     NLA_F_NET_BYTEORDER bits of attribute types: nf_tables parses every
//     nest with nla_parse_nested_deprecated into an array indexed by the
//     masked type (nla_type()), which checks neither bit.
//   - The type of each item of a set element list: nf_tables_newsetelem walks
//     NFTA_SET_ELEM_LIST_ELEMENTS with nla_for_each_nested and never looks at
//     it (libnftnl and google/nftables both number the items 1, 2, ...).
//     Rule expression lists are checked, since the kernel rejects anything
//     but NFTA_LIST_ELEM there.
//   - Set and transaction ids (NFTA_SET_ID, NFTA_CHAIN_ID, NFTA_RULE_ID):
//     numbers chosen by the sender; references are resolved the way the
//     kernel does (by name first, then by id) and shown by name.
//   - One trailing NUL of string attributes (names): NLA_STRING accepts a
//     string with or without it.
//   - NFTA_SET_USERDATA: the kernel stores it without looking at it; nft uses
//     it to choose how to print keys (byte order, merged intervals). The
//     listing comparison in netlink_root_test.go covers its effect on nft.
//   - Inside an expression's nest, attributes above NFTA_EXPR_DATA: the
//     kernel parses that nest with maxtype NFTA_EXPR_MAX and skips higher
//     types; an absent NFTA_EXPR_DATA is the same as an empty one
//     (nf_tables_expr_parse clears the attribute table then).
//   - NFTA_SET_EXPR and a one-item NFTA_SET_EXPRESSIONS list both become the
//     set's only expression (nf_tables_newset); both print as "expr [ ... ]".
//   - NFTA_TABLE_FLAGS of a table delete: nf_tables_deltable reads only the
//     name or handle (google/nftables sends flags 0 there, nft nothing).
//   - NFTA_DYNSET_FLAGS 0: nft_dynset_init acts only on the bits set, so 0
//     is the same as no attribute (google/nftables sends 0, nft nothing).
//   - NFTA_BITWISE_OP 0 (NFT_BITWISE_BOOL): nft_bitwise_init takes the
//     mask-and-xor operation when the attribute is absent (nft sends it for
//     "ip6 saddr & mask", google/nftables never does).
//   - A counter's NFTA_COUNTER_PACKETS and NFTA_COUNTER_BYTES of 0: the
//     kernel starts from zero and sets only the values sent (nft sends none).
//
// Otherwise an expression attribute libnftnl would print as 0 when absent
// is marked "absent" (the kernel rejects some of those, defaults others),
// and a set's or element's flags print as 0 when absent, as libnftnl and the
// kernel both take them.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// nf_tables attributes golang.org/x/sys/unix does not define (values from
// include/uapi/linux/netfilter/nf_tables.h).
const (
	nftaTableUserdata    = 6
	nftaChainFlags       = 10
	nftaChainID          = 11
	nftaChainUserdata    = 12
	nftaRuleChainID      = 11
	nftaSetDescConcat    = 2
	nftaSetFieldLen      = 1
	nftaSetExpr          = 17
	nftaSetExpressions   = 18
	nftaSetElemKeyEnd    = 10
	nftaDynsetExprs      = 10
	nftaBitwiseOp        = 6
	nftaCtDirection      = 3
	nftaCtSreg           = 4
	nftaLimitRate        = 1
	nftaLimitUnit        = 2
	nftaLimitBurst       = 3
	nftaLimitType        = 4
	nftaLimitFlags       = 5
	nftaVerdictChainID   = 3
	nfnlSubsysNFTables   = unix.NFNL_SUBSYS_NFTABLES
	nlaTypeMask          = ^uint16(unix.NLA_F_NESTED | unix.NLA_F_NET_BYTEORDER)
	canonExtraSeparator  = " ## "
	canonProblemPrefix   = "! "
	canonAnonymousIndent = "    "
)

// nlMsg is one message of an nf_tables batch.
type nlMsg struct {
	Type  uint16 // netlink header type: subsystem << 8 | message
	Flags uint16 // netlink header flags
	Data  []byte // struct nfgenmsg, then the attributes
}

// nlAttr is one netlink attribute.
type nlAttr struct {
	Type  uint16 // without the NLA_F_* bits
	Flags uint16 // NLA_F_NESTED, NLA_F_NET_BYTEORDER
	Data  []byte
}

// parseAttrs splits b into attributes, strictly: every length must fit what
// is left, and the attributes with their padding must fill b exactly. A
// length that overflowed its 16 bits fails here or leaves stray attributes
// that the decoder reports.
func parseAttrs(b []byte) ([]nlAttr, error) {
	var out []nlAttr
	for len(b) > 0 {
		if len(b) < 4 {
			return out, fmt.Errorf("%d stray bytes after the attributes", len(b))
		}
		n := int(binary.NativeEndian.Uint16(b[0:2]))
		t := binary.NativeEndian.Uint16(b[2:4])
		if n < 4 || n > len(b) {
			return out, fmt.Errorf("attribute type %d claims %d bytes, %d left", t&nlaTypeMask, n, len(b))
		}
		out = append(out, nlAttr{Type: t & nlaTypeMask, Flags: t &^ nlaTypeMask, Data: b[4:n]})
		padded := (n + 3) &^ 3
		if padded > len(b) {
			return out, fmt.Errorf("attribute type %d lacks its padding", t&nlaTypeMask)
		}
		b = b[padded:]
	}
	return out, nil
}

// attrs gives access by type to the attributes of one nest and remembers
// which were read, so that the rest can be shown.
type attrs struct {
	m    map[uint16]nlAttr
	used map[uint16]bool
	errs []string
}

func newAttrs(b []byte) *attrs {
	a := &attrs{m: map[uint16]nlAttr{}, used: map[uint16]bool{}}
	list, err := parseAttrs(b)
	if err != nil {
		a.errs = append(a.errs, "malformed: "+err.Error())
	}
	for _, x := range list {
		if _, dup := a.m[x.Type]; dup {
			a.errs = append(a.errs, fmt.Sprintf("attribute %d twice", x.Type))
		}
		a.m[x.Type] = x
	}
	return a
}

func (a *attrs) has(t uint16) bool { _, ok := a.m[t]; return ok }

func (a *attrs) bytes(t uint16) ([]byte, bool) {
	x, ok := a.m[t]
	if ok {
		a.used[t] = true
	}
	return x.Data, ok
}

func (a *attrs) u32(t uint16) (uint32, bool) {
	b, ok := a.bytes(t)
	if !ok {
		return 0, false
	}
	if len(b) != 4 {
		a.errs = append(a.errs, fmt.Sprintf("attribute %d has %d bytes, want 4", t, len(b)))
		return 0, false
	}
	return binary.BigEndian.Uint32(b), true
}

func (a *attrs) u64(t uint16) (uint64, bool) {
	b, ok := a.bytes(t)
	if !ok {
		return 0, false
	}
	if len(b) != 8 {
		a.errs = append(a.errs, fmt.Sprintf("attribute %d has %d bytes, want 8", t, len(b)))
		return 0, false
	}
	return binary.BigEndian.Uint64(b), true
}

func (a *attrs) str(t uint16) (string, bool) {
	b, ok := a.bytes(t)
	return strings.TrimSuffix(string(b), "\x00"), ok
}

func (a *attrs) nested(t uint16) (*attrs, bool) {
	b, ok := a.bytes(t)
	if !ok {
		return newAttrs(nil), false
	}
	return newAttrs(b), true
}

// skipAbove marks attributes of types above max as read: for nests the
// kernel parses with that maxtype, which skips them.
func (a *attrs) skipAbove(max uint16) {
	for t := range a.m {
		if t > max {
			a.used[t] = true
		}
	}
}

// rest lists what was not read, and what was malformed.
func (a *attrs) rest() []string {
	out := append([]string(nil), a.errs...)
	var types []int
	for t := range a.m {
		if !a.used[t] {
			types = append(types, int(t))
		}
	}
	sort.Ints(types)
	for _, t := range types {
		out = append(out, fmt.Sprintf("?attr%d=%x", t, a.m[uint16(t)].Data))
	}
	return out
}

// nlTx is a decoded transaction.
type nlTx struct {
	tables   []*txTable
	chains   []*txChain // message order
	sets     []*txSet   // message order, anonymous ones included
	rules    []*txRule  // message order
	problems []string
}

type txTable struct {
	family, name string
	ops          []txLine
	exists       bool // as of the message being decoded
	content      bool // content queued since the last add
}

type txChain struct {
	family, table, name string
	typ, hook           string
	prio                int32
	text, extra         string
}

type txSet struct {
	family, table, name string
	anon                bool
	id                  uint32
	hasID               bool
	bound               bool   // a rule uses it (anonymous sets)
	hdr                 string // libnftnl's header after name and table: flags, timeout, ...
	extra               string
	elems               []txLine
}

type txRule struct {
	family, table, chain string
	exprs                []txLine
	userdata             string
	hasUserdata          bool
	extra                string
}

// txLine is one line of libnftnl text and what it does not show.
type txLine struct {
	text, extra string
	anon        *txSet // for a lookup: the anonymous set it uses
}

func (l txLine) render(full bool) string {
	if full && l.extra != "" {
		return l.text + canonExtraSeparator + l.extra
	}
	return l.text
}

func joinExtra(parts ...string) string {
	var out []string
	for _, p := range parts {
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, " ")
}

var familyNames = map[uint8]string{
	unix.NFPROTO_INET: "inet", unix.NFPROTO_IPV4: "ip", unix.NFPROTO_ARP: "arp",
	unix.NFPROTO_NETDEV: "netdev", unix.NFPROTO_BRIDGE: "bridge", unix.NFPROTO_IPV6: "ip6",
}

func familyName(f uint8) string {
	if n, ok := familyNames[f]; ok {
		return n
	}
	return fmt.Sprintf("family%d", f)
}

// decodeBatch decodes the messages between a batch's begin and end.
func decodeBatch(msgs []nlMsg) *nlTx {
	tx := &nlTx{}
	for i, m := range msgs {
		if len(m.Data) < 4 {
			tx.problem("message %d: %d bytes, no nfgenmsg", i, len(m.Data))
			continue
		}
		if m.Type>>8 != nfnlSubsysNFTables {
			tx.problem("message %d: type %#x is not an nf_tables message", i, m.Type)
			continue
		}
		fam := familyName(m.Data[0])
		a := newAttrs(m.Data[4:])
		switch op := m.Type & 0xff; op {
		case unix.NFT_MSG_NEWTABLE, unix.NFT_MSG_DELTABLE:
			tx.decodeTable(fam, op == unix.NFT_MSG_NEWTABLE, a)
		case unix.NFT_MSG_NEWCHAIN:
			tx.decodeChain(fam, a)
		case unix.NFT_MSG_NEWSET:
			tx.decodeSet(fam, a)
		case unix.NFT_MSG_NEWSETELEM:
			tx.decodeElements(fam, a)
		case unix.NFT_MSG_NEWRULE:
			tx.decodeRule(fam, a)
		default:
			tx.problem("message %d: unexpected nf_tables message %d", i, op)
		}
	}
	for _, s := range tx.sets {
		if s.anon && !s.bound {
			tx.problem("anonymous set %d in %s %s is used by no rule", s.id, s.family, s.table)
		}
	}
	return tx
}

func (tx *nlTx) problem(format string, args ...any) {
	tx.problems = append(tx.problems, fmt.Sprintf(format, args...))
}

func (tx *nlTx) table(family, name string) *txTable {
	for _, t := range tx.tables {
		if t.family == family && t.name == name {
			return t
		}
	}
	t := &txTable{family: family, name: name}
	tx.tables = append(tx.tables, t)
	return t
}

// contentFor checks that the table a message adds to exists at that point
// of the transaction (it was added, and not deleted since).
func (tx *nlTx) contentFor(family, name, what string) {
	t := tx.table(family, name)
	if len(t.ops) > 0 && !t.exists {
		tx.problem("%s queued while table %s %s is deleted", what, family, name)
	}
	t.content = true
}

func (tx *nlTx) decodeTable(family string, add bool, a *attrs) {
	name, _ := a.str(unix.NFTA_TABLE_NAME)
	t := tx.table(family, name)
	var extra []string
	// nf_tables_deltable reads only the name (or handle): flags sent
	// with a delete are normalised away.
	if f, ok := a.u32(unix.NFTA_TABLE_FLAGS); ok && add {
		extra = append(extra, fmt.Sprintf("flags %#x", f))
	}
	if b, ok := a.bytes(nftaTableUserdata); ok {
		extra = append(extra, fmt.Sprintf("userdata %x", b))
	}
	extra = append(extra, a.rest()...)
	op := "delete"
	if add {
		op = "add"
	}
	if t.content && (!add || !t.exists) {
		tx.problem("table %s %s: %s after content was queued for it", family, name, op)
	}
	if !add {
		t.content = false
	}
	t.exists = add
	t.ops = append(t.ops, txLine{text: fmt.Sprintf("table %s %s %s", family, name, op), extra: joinExtra(extra...)})
}

var hookNames = []string{"prerouting", "input", "forward", "output", "postrouting", "ingress"}

func (tx *nlTx) decodeChain(family string, a *attrs) {
	c := &txChain{family: family}
	c.table, _ = a.str(unix.NFTA_CHAIN_TABLE)
	c.name, _ = a.str(unix.NFTA_CHAIN_NAME)
	tx.contentFor(family, c.table, "chain "+c.name)
	text := fmt.Sprintf("chain %s %s %s", family, c.table, c.name)
	var extra []string
	if typ, ok := a.str(unix.NFTA_CHAIN_TYPE); ok {
		c.typ = typ
		text += " type " + typ
	}
	if h, ok := a.nested(unix.NFTA_CHAIN_HOOK); ok {
		if n, ok := h.u32(unix.NFTA_HOOK_HOOKNUM); ok {
			c.hook = fmt.Sprintf("hook%d", n)
			if int(n) < len(hookNames) {
				c.hook = hookNames[n]
			}
			text += " hook " + c.hook
		}
		if p, ok := h.u32(unix.NFTA_HOOK_PRIORITY); ok {
			c.prio = int32(p)
			text += fmt.Sprintf(" prio %d", c.prio)
		}
		if dev, ok := h.str(unix.NFTA_HOOK_DEV); ok {
			text += " dev " + dev
		}
		for _, r := range h.rest() {
			extra = append(extra, "hook:"+r)
		}
	}
	if p, ok := a.u32(unix.NFTA_CHAIN_POLICY); ok {
		switch p {
		case 0:
			text += " policy drop"
		case 1:
			text += " policy accept"
		default:
			text += fmt.Sprintf(" policy %d", p)
		}
	}
	if f, ok := a.u32(nftaChainFlags); ok {
		extra = append(extra, fmt.Sprintf("flags %#x", f))
	}
	a.bytes(nftaChainID) // a transaction id; rules here name their chain (decodeRule)
	if b, ok := a.bytes(nftaChainUserdata); ok {
		extra = append(extra, fmt.Sprintf("userdata %x", b))
	}
	extra = append(extra, a.rest()...)
	c.text, c.extra = text, joinExtra(extra...)
	tx.chains = append(tx.chains, c)
}

func (tx *nlTx) decodeSet(family string, a *attrs) {
	s := &txSet{family: family}
	s.table, _ = a.str(unix.NFTA_SET_TABLE)
	s.name, _ = a.str(unix.NFTA_SET_NAME)
	tx.contentFor(family, s.table, "set "+s.name)
	flags, _ := a.u32(unix.NFTA_SET_FLAGS)
	s.anon = flags&unix.NFT_SET_ANONYMOUS != 0
	s.id, s.hasID = a.u32(unix.NFTA_SET_ID)
	// libnftnl's header: "%s %s %x" name table flags, then the optional
	// timeout, gc_interval, policy and size.
	hdr := fmt.Sprintf("%x", flags)
	if v, ok := a.u64(unix.NFTA_SET_TIMEOUT); ok {
		hdr += fmt.Sprintf(" timeout %dms", v)
	}
	if v, ok := a.u32(unix.NFTA_SET_GC_INTERVAL); ok {
		hdr += fmt.Sprintf(" gc_interval %dms", v)
	}
	if v, ok := a.u32(unix.NFTA_SET_POLICY); ok {
		hdr += fmt.Sprintf(" policy %d", v)
	}
	var extra []string
	if d, ok := a.nested(unix.NFTA_SET_DESC); ok {
		if v, ok := d.u32(unix.NFTA_SET_DESC_SIZE); ok {
			hdr += fmt.Sprintf(" size %d", v)
		}
		if c, ok := d.bytes(nftaSetDescConcat); ok {
			list, err := parseAttrs(c)
			var lens []string
			for _, f := range list {
				fa := newAttrs(f.Data)
				n, _ := fa.u32(nftaSetFieldLen)
				lens = append(lens, strconv.Itoa(int(n)))
				extra = append(extra, fa.rest()...)
			}
			if err != nil {
				lens = append(lens, "malformed: "+err.Error())
			}
			extra = append(extra, "concat "+strings.Join(lens, ","))
		}
		for _, r := range d.rest() {
			extra = append(extra, "desc:"+r)
		}
	}
	s.hdr = hdr
	if v, ok := a.u32(unix.NFTA_SET_KEY_TYPE); ok {
		extra = append(extra, fmt.Sprintf("keytype %d", v))
	}
	if v, ok := a.u32(unix.NFTA_SET_KEY_LEN); ok {
		extra = append(extra, fmt.Sprintf("keylen %d", v))
	}
	if v, ok := a.u32(unix.NFTA_SET_DATA_TYPE); ok {
		extra = append(extra, fmt.Sprintf("datatype %#x", v))
	}
	if v, ok := a.u32(unix.NFTA_SET_DATA_LEN); ok {
		extra = append(extra, fmt.Sprintf("datalen %d", v))
	}
	if v, ok := a.u32(unix.NFTA_SET_OBJ_TYPE); ok {
		extra = append(extra, fmt.Sprintf("objtype %d", v))
	}
	if b, ok := a.bytes(nftaSetExpr); ok {
		extra = append(extra, tx.expr("", "", b).String())
	}
	if b, ok := a.bytes(nftaSetExpressions); ok {
		extra = append(extra, exprStrings(tx.exprList("", "", b))...)
	}
	a.bytes(unix.NFTA_SET_USERDATA) // normalised: opaque to the kernel
	extra = append(extra, a.rest()...)
	s.extra = joinExtra(extra...)
	if !s.anon {
		for _, o := range tx.sets {
			if !o.anon && o.family == family && o.table == s.table && o.name == s.name {
				tx.problem("set %s %s %s declared twice", family, s.table, s.name)
			}
		}
	}
	tx.sets = append(tx.sets, s)
}

func suffix(extra string) string {
	if extra == "" {
		return ""
	}
	return "{" + extra + "}"
}

// resolveSet finds the set a message refers to as the kernel does
// (nft_set_lookup_global): by name among the table's sets, else by id among
// the sets this transaction added to the table.
func (tx *nlTx) resolveSet(family, table, name string, id uint32, hasID bool) *txSet {
	for _, s := range tx.sets {
		if !s.anon && s.family == family && s.table == table && s.name == name {
			return s
		}
	}
	if hasID {
		for _, s := range tx.sets {
			if s.hasID && s.id == id && s.family == family && s.table == table {
				return s
			}
		}
	}
	return nil
}

func (tx *nlTx) decodeElements(family string, a *attrs) {
	table, _ := a.str(unix.NFTA_SET_ELEM_LIST_TABLE)
	name, _ := a.str(unix.NFTA_SET_ELEM_LIST_SET)
	id, hasID := a.u32(unix.NFTA_SET_ELEM_LIST_SET_ID)
	tx.contentFor(family, table, "elements of set "+name)
	s := tx.resolveSet(family, table, name, id, hasID)
	if s == nil {
		tx.problem("elements for set %q (id %d) of %s %s, which is not in the transaction", name, id, family, table)
		s = &txSet{}
	}
	if s.anon && s.bound {
		tx.problem("elements added to anonymous set %d of %s %s after a rule bound it", s.id, family, table)
	}
	list, ok := a.bytes(unix.NFTA_SET_ELEM_LIST_ELEMENTS)
	if !ok {
		tx.problem("element message for set %q without elements", name)
	}
	items, err := parseAttrs(list)
	if err != nil {
		tx.problem("elements of set %q: malformed: %v", name, err)
	}
	for _, it := range items {
		s.elems = append(s.elems, decodeElement(newAttrs(it.Data)))
	}
	if r := a.rest(); len(r) > 0 {
		tx.problem("element message for set %q: %s", name, strings.Join(r, " "))
	}
}

// decodeElement prints an element as libnftnl does: the key in host-endian
// 32-bit words, " : " and the data, the flags, "[end]", the userdata.
func decodeElement(a *attrs) txLine {
	var extra []string
	key, keyExtra := dataValue(a, unix.NFTA_SET_ELEM_KEY)
	text := "element " + hexWords(key, false)
	if a.has(nftaSetElemKeyEnd) {
		// A range of a set keyed by a concatenation: libnftnl prints
		// its end after the key.
		end, endExtra := dataValue(a, nftaSetElemKeyEnd)
		text += " - " + hexWords(end, false)
		keyExtra = joinExtra(keyExtra, "end "+endExtra)
	}
	text += " :"
	if d, ok := a.bytes(unix.NFTA_SET_ELEM_DATA); ok {
		v, x := decodeData(d)
		text += " " + v
		extra = append(extra, "data:"+x)
	}
	flags, _ := a.u32(unix.NFTA_SET_ELEM_FLAGS)
	text += fmt.Sprintf(" %d [end]", flags)
	if u, ok := a.bytes(unix.NFTA_SET_ELEM_USERDATA); ok && len(u) > 0 {
		text += " userdata = { " + escapeUserdata(u) + " }"
	}
	extra = append(extra, keyExtra)
	if v, ok := a.u64(unix.NFTA_SET_ELEM_TIMEOUT); ok {
		extra = append(extra, fmt.Sprintf("timeout %dms", v))
	}
	if v, ok := a.u64(unix.NFTA_SET_ELEM_EXPIRATION); ok {
		extra = append(extra, fmt.Sprintf("expiration %dms", v))
	}
	if b, ok := a.bytes(unix.NFTA_SET_ELEM_EXPR); ok {
		extra = append(extra, (&nlTx{}).expr("", "", b).String())
	}
	if b, ok := a.bytes(nftaSetElemExprs); ok {
		extra = append(extra, exprStrings((&nlTx{}).exprList("", "", b))...)
	}
	if o, ok := a.str(unix.NFTA_SET_ELEM_OBJREF); ok {
		extra = append(extra, "objref "+o)
	}
	extra = append(extra, a.rest()...)
	return txLine{text: text, extra: joinExtra(extra...)}
}

// dataValue reads a nest holding NFTA_DATA_VALUE: the value and its exact
// length.
func dataValue(a *attrs, t uint16) ([]byte, string) {
	n, ok := a.nested(t)
	if !ok {
		return nil, fmt.Sprintf("no attribute %d", t)
	}
	v, ok := n.bytes(unix.NFTA_DATA_VALUE)
	extra := []string{fmt.Sprintf("%db", len(v))}
	if !ok {
		extra = []string{"no value"}
	}
	return v, "key " + joinExtra(append(extra, n.rest()...)...)
}

var verdictNames = map[int32]string{
	0: "drop", 1: "accept", 2: "stolen", 3: "queue", 4: "repeat", 5: "stop",
	-1: "continue", -2: "break", -3: "jump", -4: "goto", -5: "return",
}

// decodeData prints an nft_data nest: a value in words, or a verdict.
func decodeData(b []byte) (text, extra string) {
	a := newAttrs(b)
	if v, ok := a.bytes(unix.NFTA_DATA_VALUE); ok {
		return hexWords(v, true), joinExtra(append([]string{fmt.Sprintf("%db", len(v))}, a.rest()...)...)
	}
	if vn, ok := a.nested(unix.NFTA_DATA_VERDICT); ok {
		code, _ := vn.u32(unix.NFTA_VERDICT_CODE)
		name, ok := verdictNames[int32(code)]
		if !ok {
			name = "unknown"
		}
		if ch, ok := vn.str(unix.NFTA_VERDICT_CHAIN); ok {
			name += " -> " + ch
		}
		if id, ok := vn.u32(nftaVerdictChainID); ok {
			name += fmt.Sprintf(" -> chain id %d", id)
		}
		return name, joinExtra(append(vn.rest(), a.rest()...)...)
	}
	return "", joinExtra(append([]string{"no value"}, a.rest()...)...)
}

// hexWords prints b as libnftnl does: 32-bit words in host byte order, the
// last one zero-filled; with 0x for data registers, without for set keys.
func hexWords(b []byte, prefix bool) string {
	var out []string
	for i := 0; i < len(b); i += 4 {
		var w [4]byte
		copy(w[:], b[i:])
		if prefix {
			out = append(out, fmt.Sprintf("0x%08x", binary.NativeEndian.Uint32(w[:])))
		} else {
			out = append(out, fmt.Sprintf("%08x", binary.NativeEndian.Uint32(w[:])))
		}
	}
	return strings.Join(out, " ")
}

// escapeUserdata prints bytes as libnftnl does: printable ASCII as is,
// the rest as \xNN.
func escapeUserdata(b []byte) string {
	var s strings.Builder
	for _, c := range b {
		if c >= 0x20 && c < 0x7f {
			s.WriteByte(c)
		} else {
			fmt.Fprintf(&s, "\\x%02x", c)
		}
	}
	return s.String()
}

func (tx *nlTx) decodeRule(family string, a *attrs) {
	r := &txRule{family: family}
	r.table, _ = a.str(unix.NFTA_RULE_TABLE)
	tx.contentFor(family, r.table, "rule")
	var extra []string
	if ch, ok := a.str(unix.NFTA_RULE_CHAIN); ok {
		r.chain = ch
	} else if id, ok := a.u32(nftaRuleChainID); ok {
		extra = append(extra, fmt.Sprintf("chain id %d", id))
	}
	found := false
	for _, c := range tx.chains {
		if c.family == family && c.table == r.table && c.name == r.chain {
			found = true
		}
	}
	if !found {
		tx.problem("rule for chain %s %s %q, which is not in the transaction", family, r.table, r.chain)
	}
	list, _ := a.bytes(unix.NFTA_RULE_EXPRESSIONS)
	items, err := parseAttrs(list)
	if err != nil {
		tx.problem("rule in %s: expressions malformed: %v", r.chain, err)
	}
	for _, it := range items {
		if it.Type != unix.NFTA_LIST_ELEM {
			// nf_tables_newrule rejects any other type.
			tx.problem("rule in %s: expression list item of type %d", r.chain, it.Type)
		}
		t, x, anon := tx.ruleExpr(family, r.table, it.Data)
		r.exprs = append(r.exprs, txLine{text: "[ " + t + " ]", extra: x, anon: anon})
	}
	if u, ok := a.bytes(unix.NFTA_RULE_USERDATA); ok {
		r.userdata, r.hasUserdata = escapeUserdata(u), len(u) > 0
	}
	if p, ok := a.u64(unix.NFTA_RULE_POSITION); ok {
		extra = append(extra, fmt.Sprintf("position %d", p))
	}
	a.bytes(unix.NFTA_RULE_ID) // a transaction id; only NFTA_RULE_POSITION_ID (shown below) would use it
	extra = append(extra, a.rest()...)
	r.extra = joinExtra(extra...)
	tx.rules = append(tx.rules, r)
}

// expr decodes one expression nest (NFTA_EXPR_NAME, NFTA_EXPR_DATA) into
// libnftnl's text for it and what that text leaves out.
func (tx *nlTx) expr(family, table string, b []byte) exprItem {
	t, x, _ := tx.ruleExpr(family, table, b)
	return exprItem{t, x}
}

// exprItem is a decoded expression: libnftnl's text and what it leaves out.
type exprItem struct{ text, extra string }

func (e exprItem) String() string { return "expr [ " + e.text + " ]" + suffix(e.extra) }

func exprStrings(items []exprItem) []string {
	out := make([]string, len(items))
	for i, e := range items {
		out[i] = e.String()
	}
	return out
}

// exprList decodes a list of expressions (NFTA_*_EXPRESSIONS), whose items
// the kernel requires to be NFTA_LIST_ELEM.
func (tx *nlTx) exprList(family, table string, b []byte) []exprItem {
	items, err := parseAttrs(b)
	var out []exprItem
	if err != nil {
		out = append(out, exprItem{text: "malformed", extra: err.Error()})
	}
	for _, it := range items {
		e := tx.expr(family, table, it.Data)
		if it.Type != unix.NFTA_LIST_ELEM {
			e.extra = joinExtra(e.extra, fmt.Sprintf("list item of type %d", it.Type))
		}
		out = append(out, e)
	}
	return out
}

var (
	metaKeys = []string{"len", "protocol", "priority", "mark", "iif", "oif", "iifname", "oifname",
		"iiftype", "oiftype", "skuid", "skgid", "nftrace", "rtclassid", "secmark", "nfproto", "l4proto",
		"bri_iifname", "bri_oifname", "pkttype", "cpu", "iifgroup", "oifgroup", "cgroup", "prandom",
		"secpath", "iifkind", "oifkind", "bri_iifpvid", "bri_iifvproto", "time", "day", "hour", "sdif",
		"sdifname", "bri_broute"}
	ctKeys = []string{"state", "direction", "status", "mark", "secmark", "expiration", "helper",
		"l3protocol", "src", "dst", "protocol", "proto_src", "proto_dst", "label", "packets", "bytes",
		"avgpkt", "zone", "event", "src_ip", "dst_ip", "src_ip6", "dst_ip6", "id"}
	cmpOps       = []string{"eq", "neq", "lt", "lte", "gt", "gte"}
	payloadBases = []string{"link", "network", "transport", "inner"}
	dynsetOps    = []string{"add", "update", "delete"}
	limitUnits   = map[uint64]string{1: "second", 60: "minute", 3600: "hour", 86400: "day", 604800: "week"}
)

func nameOf(names []string, v uint32) string {
	if int(v) < len(names) {
		return names[v]
	}
	return "unknown"
}

// ruleExpr decodes one expression; a lookup in an anonymous set also
// returns that set.
func (tx *nlTx) ruleExpr(family, table string, b []byte) (text, extra string, anon *txSet) {
	e := newAttrs(b)
	kind, _ := e.str(unix.NFTA_EXPR_NAME)
	d, _ := e.nested(unix.NFTA_EXPR_DATA)
	e.skipAbove(unix.NFTA_EXPR_DATA)
	var x []string
	// libnftnl prints an absent attribute as 0; the kernel rejects some
	// (payload offset, ...) and defaults others, so absence is shown.
	var absent []string
	u32 := func(t uint16) uint32 {
		v, ok := d.u32(t)
		if !ok && !d.has(t) {
			absent = append(absent, strconv.Itoa(int(t)))
		}
		return v
	}
	u64 := func(t uint16) uint64 {
		v, ok := d.u64(t)
		if !ok && !d.has(t) {
			absent = append(absent, strconv.Itoa(int(t)))
		}
		return v
	}
	switch kind {
	case "meta":
		if d.has(unix.NFTA_META_DREG) || !d.has(unix.NFTA_META_SREG) {
			text = fmt.Sprintf("meta load %s => reg %d", nameOf(metaKeys, u32(unix.NFTA_META_KEY)), u32(unix.NFTA_META_DREG))
		} else {
			text = fmt.Sprintf("meta set %s with reg %d", nameOf(metaKeys, u32(unix.NFTA_META_KEY)), u32(unix.NFTA_META_SREG))
		}
	case "cmp":
		v, vx := "", ""
		if raw, ok := d.bytes(unix.NFTA_CMP_DATA); ok {
			v, vx = decodeData(raw)
		}
		text = fmt.Sprintf("cmp %s reg %d %s", nameOf(cmpOps, u32(unix.NFTA_CMP_OP)), u32(unix.NFTA_CMP_SREG), v)
		x = append(x, vx)
	case "payload":
		base := nameOf(payloadBases, u32(unix.NFTA_PAYLOAD_BASE))
		if d.has(unix.NFTA_PAYLOAD_SREG) {
			text = fmt.Sprintf("payload write reg %d => %db @ %s header + %d csum_type %d csum_off %d csum_flags 0x%x",
				u32(unix.NFTA_PAYLOAD_SREG), u32(unix.NFTA_PAYLOAD_LEN), base, u32(unix.NFTA_PAYLOAD_OFFSET),
				u32(unix.NFTA_PAYLOAD_CSUM_TYPE), u32(unix.NFTA_PAYLOAD_CSUM_OFFSET), u32(unix.NFTA_PAYLOAD_CSUM_FLAGS))
		} else {
			text = fmt.Sprintf("payload load %db @ %s header + %d => reg %d",
				u32(unix.NFTA_PAYLOAD_LEN), base, u32(unix.NFTA_PAYLOAD_OFFSET), u32(unix.NFTA_PAYLOAD_DREG))
			for _, t := range []uint16{unix.NFTA_PAYLOAD_CSUM_TYPE, unix.NFTA_PAYLOAD_CSUM_OFFSET, unix.NFTA_PAYLOAD_CSUM_FLAGS} {
				if v, ok := d.u32(t); ok {
					x = append(x, fmt.Sprintf("csum%d=%d", t, v))
				}
			}
		}
	case "lookup":
		setName, _ := d.str(unix.NFTA_LOOKUP_SET)
		id, hasID := d.u32(unix.NFTA_LOOKUP_SET_ID)
		text = fmt.Sprintf("lookup reg %d set %s", u32(unix.NFTA_LOOKUP_SREG), setName)
		if v, ok := d.u32(unix.NFTA_LOOKUP_DREG); ok {
			text += fmt.Sprintf(" dreg %d", v)
		}
		if v, ok := d.u32(unix.NFTA_LOOKUP_FLAGS); ok {
			text += fmt.Sprintf(" 0x%x", v)
		}
		anon, x = tx.bindSet(family, table, setName, id, hasID, x)
	case "immediate":
		v, vx := "", ""
		if raw, ok := d.bytes(unix.NFTA_IMMEDIATE_DATA); ok {
			v, vx = decodeData(raw)
		}
		text = fmt.Sprintf("immediate reg %d %s", u32(unix.NFTA_IMMEDIATE_DREG), v)
		x = append(x, vx)
	case "ct":
		key := nameOf(ctKeys, u32(unix.NFTA_CT_KEY))
		if d.has(unix.NFTA_CT_DREG) || !d.has(nftaCtSreg) {
			text = fmt.Sprintf("ct load %s => reg %d", key, u32(unix.NFTA_CT_DREG))
		} else {
			text = fmt.Sprintf("ct set %s with reg %d", key, u32(nftaCtSreg))
		}
		if dir, ok := d.bytes(nftaCtDirection); ok {
			text += fmt.Sprintf(" , dir %s", map[bool]string{true: "original", false: "reply"}[len(dir) == 1 && dir[0] == 0])
		}
	case "bitwise":
		mask, mx := "", ""
		if raw, ok := d.bytes(unix.NFTA_BITWISE_MASK); ok {
			mask, mx = decodeData(raw)
		}
		xor, xx := "", ""
		if raw, ok := d.bytes(unix.NFTA_BITWISE_XOR); ok {
			xor, xx = decodeData(raw)
		}
		text = fmt.Sprintf("bitwise reg %d = ( reg %d & %s ) ^ %s", u32(unix.NFTA_BITWISE_DREG), u32(unix.NFTA_BITWISE_SREG), mask, xor)
		x = append(x, fmt.Sprintf("len %d mask %s xor %s", u32(unix.NFTA_BITWISE_LEN), mx, xx))
		if v, ok := d.u32(nftaBitwiseOp); ok && v != 0 {
			x = append(x, fmt.Sprintf("op %d", v))
		}
	case "dynset":
		setName, _ := d.str(unix.NFTA_DYNSET_SET_NAME)
		id, hasID := d.u32(unix.NFTA_DYNSET_SET_ID)
		text = fmt.Sprintf("dynset %s reg_key %d set %s", nameOf(dynsetOps, u32(unix.NFTA_DYNSET_OP)), u32(unix.NFTA_DYNSET_SREG_KEY), setName)
		if v, ok := d.u32(unix.NFTA_DYNSET_SREG_DATA); ok {
			text += fmt.Sprintf(" sreg_data %d", v)
		}
		if v, ok := d.u64(unix.NFTA_DYNSET_TIMEOUT); ok {
			if v != 0 {
				text += fmt.Sprintf(" timeout %dms", v)
			} else {
				x = append(x, "timeout 0ms")
			}
		}
		// libnftnl prints one "expr [ ... ]" whether the rule sent
		// NFTA_DYNSET_EXPR or a list; the list shows as such beside it.
		var exprs []exprItem
		if raw, ok := d.bytes(unix.NFTA_DYNSET_EXPR); ok {
			exprs = append(exprs, tx.expr(family, table, raw))
		}
		if raw, ok := d.bytes(nftaDynsetExprs); ok {
			exprs = append(exprs, tx.exprList(family, table, raw)...)
			x = append(x, "expression list")
		}
		for _, e := range exprs {
			text += " expr [ " + e.text + " ]"
			x = append(x, suffix(e.extra))
		}
		// nft_dynset_init treats flags 0 as no flags: only others show.
		if v, ok := d.u32(unix.NFTA_DYNSET_FLAGS); ok && v != 0 {
			x = append(x, fmt.Sprintf("flags %#x", v))
		}
		var a *txSet
		a, x = tx.bindSet(family, table, setName, id, hasID, x)
		if a != nil {
			x = append(x, "dynset on an anonymous set")
		}
	case "limit":
		unit, ok := limitUnits[u64(nftaLimitUnit)]
		if !ok {
			unit = "error"
		}
		typ := "packets"
		if u32(nftaLimitType) == 1 {
			typ = "bytes"
		}
		text = fmt.Sprintf("limit rate %d/%s burst %d type %s flags 0x%x", u64(nftaLimitRate), unit, u32(nftaLimitBurst), typ, u32(nftaLimitFlags))
	case "log":
		// libnftnl prints the prefix, the group (with snaplen and
		// qthreshold) and the level, each only when sent.
		text = "log"
		if v, ok := d.str(unix.NFTA_LOG_PREFIX); ok {
			// libnftnl's text loses the prefix's spaces to the
			// whitespace normalisation; the exact prefix goes after ##.
			text += " prefix " + normSpace(v)
			x = append(x, fmt.Sprintf("prefix %q", v))
		}
		if v, ok := d.bytes(unix.NFTA_LOG_GROUP); ok && len(v) == 2 {
			text += fmt.Sprintf(" group %d snaplen %d qthreshold %d", binary.BigEndian.Uint16(v), u32(unix.NFTA_LOG_SNAPLEN), uint16(u32(unix.NFTA_LOG_QTHRESHOLD)))
		}
		if v, ok := d.u32(unix.NFTA_LOG_LEVEL); ok {
			text += fmt.Sprintf(" level %d", v)
		}
		if v, ok := d.u32(unix.NFTA_LOG_FLAGS); ok {
			x = append(x, fmt.Sprintf("flags %#x", v))
		}
	case "byteorder":
		op := map[uint32]string{unix.NFT_BYTEORDER_NTOH: "ntoh", unix.NFT_BYTEORDER_HTON: "hton"}[u32(unix.NFTA_BYTEORDER_OP)]
		text = fmt.Sprintf("byteorder reg %d = %s(reg %d, %d, %d)", u32(unix.NFTA_BYTEORDER_DREG), op, u32(unix.NFTA_BYTEORDER_SREG),
			u32(unix.NFTA_BYTEORDER_SIZE), u32(unix.NFTA_BYTEORDER_LEN))
	case "counter":
		// Absent start values are zero: nft_counter_do_init sets only
		// those sent on zeroed per-cpu counters (nft sends none,
		// google/nftables zeros).
		pkts, _ := d.u64(nftaCounterPackets)
		bytes, _ := d.u64(nftaCounterBytes)
		text = fmt.Sprintf("counter pkts %d bytes %d", pkts, bytes)
	default:
		text = kind
		x = append(x, "expression not decoded")
		for t, v := range d.m {
			d.used[t] = true
			x = append(x, fmt.Sprintf("%d=%x", t, v.Data))
		}
		sort.Strings(x)
	}
	if len(absent) > 0 {
		x = append(x, "absent "+strings.Join(absent, ","))
	}
	x = append(x, d.rest()...)
	x = append(x, e.rest()...)
	return text, joinExtra(x...), anon
}

// bindSet resolves the set an expression uses; an anonymous one is returned
// to be shown beneath the expression.
func (tx *nlTx) bindSet(family, table, setName string, id uint32, hasID bool, x []string) (*txSet, []string) {
	if family == "" { // an expression of a set or element, which uses no set
		return nil, x
	}
	s := tx.resolveSet(family, table, setName, id, hasID)
	switch {
	case s == nil:
		tx.problem("%s %s: set %q (id %d) is not in the transaction", family, table, setName, id)
		return nil, x
	case !s.anon:
		return nil, x
	case s.bound:
		tx.problem("%s %s: anonymous set %d used twice", family, table, s.id)
	}
	s.bound = true
	return s, x
}

// render prints the transaction in the canonical form; with full false,
// only what libnftnl's text shows (see parseNftDebug), for checking the
// decoder against libnftnl.
func (tx *nlTx) render(full bool) string {
	var b strings.Builder
	line := func(indent string, l txLine) { b.WriteString(indent + l.render(full) + "\n") }
	setHeader := func(indent string, s *txSet) {
		l := txLine{text: fmt.Sprintf("set %s %s %s flags 0x%s", s.family, s.table, s.name, s.hdr), extra: s.extra}
		if s.anon {
			l.text = "set flags 0x" + s.hdr
		}
		if !full {
			// libnftnl prints neither the family nor "flags".
			l.text = fmt.Sprintf("set %s %s %s", s.table, s.name, s.hdr)
		}
		line(indent, l)
		els := make([]string, len(s.elems))
		for i, e := range s.elems {
			els[i] = indent + "  " + e.render(full) + "\n"
		}
		sort.Strings(els)
		b.WriteString(strings.Join(els, ""))
	}
	ruleLines := func(r *txRule) {
		line("", txLine{text: fmt.Sprintf("rule %s %s %s", r.family, r.table, r.chain), extra: r.extra})
		for _, e := range r.exprs {
			line("  ", e)
			if e.anon != nil {
				setHeader(canonAnonymousIndent, e.anon)
			}
		}
		if r.hasUserdata {
			line("  ", txLine{text: "userdata = { " + r.userdata + " }"})
		}
	}
	if !full {
		for _, c := range tx.chains {
			fmt.Fprintf(&b, "chain %s type %s hook %s prio %d\n", c.family, c.typ, c.hook, c.prio)
		}
		named := namedSets(tx.sets, "", "")
		for _, s := range named {
			setHeader("", s)
		}
		for _, r := range tx.rules {
			ruleLines(r)
		}
		return b.String()
	}
	for _, t := range tx.tables {
		for _, op := range t.ops {
			line("", op)
		}
		for _, s := range namedSets(tx.sets, t.family, t.name) {
			setHeader("", s)
		}
		for _, c := range tx.chains {
			if c.family != t.family || c.table != t.name {
				continue
			}
			line("", txLine{text: c.text, extra: c.extra})
			for _, r := range tx.rules {
				if r.family == c.family && r.table == c.table && r.chain == c.name {
					ruleLines(r)
				}
			}
		}
	}
	for _, p := range tx.problems {
		b.WriteString(canonProblemPrefix + p + "\n")
	}
	return b.String()
}

// namedSets returns the named sets of one table (of all, with family ""),
// sorted by table and name.
func namedSets(sets []*txSet, family, table string) []*txSet {
	var out []*txSet
	for _, s := range sets {
		if !s.anon && (family == "" || s.family == family && s.table == table) {
			out = append(out, s)
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].table != out[j].table {
			return out[i].table < out[j].table
		}
		return out[i].name < out[j].name
	})
	return out
}

// normSpace collapses runs of blanks, as the canonical form does.
func normSpace(s string) string { return strings.Join(strings.Fields(s), " ") }

var (
	nftChainLine = regexp.MustCompile(`^(\S+) \S+ \S+ use \d+ type (\S+) hook (\S+) prio (-?\d+)`)
	nftFamilies  = map[string]bool{"ip": true, "ip6": true, "inet": true, "arp": true, "bridge": true, "netdev": true}
)

// parseNftDebug reads what `nft --debug=netlink -f` prints while it builds
// its batch (libnftnl's text of each chain, set, element list and rule) into
// a transaction holding only what that text shows: render(false) of it is
// comparable with render(false) of the decoded messages.
func parseNftDebug(out string) (*nlTx, error) {
	tx := &nlTx{}
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<26)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	var anonQueue []*txSet
	var lastAnon *txSet
	var rule *txRule
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		next := ""
		if i+1 < len(lines) {
			next = lines[i+1]
		}
		f := strings.Fields(l)
		switch {
		case strings.TrimSpace(l) == "":
			rule = nil
		case strings.HasPrefix(l, "  [ "):
			if rule == nil {
				return nil, fmt.Errorf("line %d: expression outside a rule: %q", i+1, l)
			}
			e := txLine{text: normSpace(l)}
			if strings.HasPrefix(e.text, "[ lookup ") && strings.Contains(e.text, " set __set") {
				if len(anonQueue) == 0 {
					return nil, fmt.Errorf("line %d: lookup of an anonymous set that was not declared", i+1)
				}
				e.anon, anonQueue = anonQueue[0], anonQueue[1:]
			}
			rule.exprs = append(rule.exprs, e)
		case strings.HasPrefix(l, "  userdata = {"):
			if rule == nil {
				return nil, fmt.Errorf("line %d: userdata outside a rule", i+1)
			}
			rule.userdata = strings.TrimSuffix(strings.TrimPrefix(normSpace(l), "userdata = { "), " }")
			rule.hasUserdata = true
			rule = nil
		case nftChainLine.MatchString(l):
			m := nftChainLine.FindStringSubmatch(l)
			prio, _ := strconv.Atoi(m[4])
			tx.chains = append(tx.chains, &txChain{family: m[1], typ: m[2], hook: m[3], prio: int32(prio)})
		case len(f) == 3 && nftFamilies[f[0]] && strings.HasPrefix(next, "  ["):
			rule = &txRule{family: f[0], table: f[1], chain: f[2]}
			tx.rules = append(tx.rules, rule)
		case len(f) >= 3 && strings.HasPrefix(next, "\telement "):
			// An element list: "set table 0", then the elements on one line.
			i++
			var s *txSet
			if strings.HasPrefix(f[0], "__set") {
				s = lastAnon
			} else {
				for _, o := range tx.sets {
					if o.table == f[1] && o.name == f[0] {
						s = o
					}
				}
			}
			if s == nil {
				return nil, fmt.Errorf("line %d: elements of undeclared set %s", i, f[0])
			}
			for _, e := range strings.Split(strings.TrimPrefix(next, "\t"), "\telement ") {
				s.elems = append(s.elems, txLine{text: normSpace("element " + strings.TrimPrefix(e, "element "))})
			}
		case len(f) >= 3:
			flags, err := strconv.ParseUint(f[2], 16, 32)
			if err != nil {
				return nil, fmt.Errorf("line %d: not a set declaration: %q", i+1, l)
			}
			s := &txSet{table: f[1], name: f[0], anon: flags&unix.NFT_SET_ANONYMOUS != 0, hdr: strings.Join(f[2:], " ")}
			tx.sets = append(tx.sets, s)
			if s.anon {
				anonQueue = append(anonQueue, s)
				lastAnon = s
			}
		default:
			return nil, fmt.Errorf("line %d: not understood: %q", i+1, l)
		}
	}
	if len(anonQueue) > 0 {
		return nil, fmt.Errorf("%d anonymous sets used by no lookup", len(anonQueue))
	}
	return tx, nil
}

var ansiEscape = regexp.MustCompile("\x1b\\[[0-9;]*m")

// parseMnlDump rebuilds the messages nft sent from what `nft --debug=mnl`
// prints (libmnl's mnl_nlmsg_fprintf: the netlink header field by field,
// then the payload four bytes a line, attribute headers apart) and returns
// those of its batch. The header flags are not all printed (create, append,
// ...), so Flags stays 0.
func parseMnlDump(out string) ([]nlMsg, error) {
	type dumped struct {
		length int
		msg    nlMsg
	}
	var msgs []*dumped
	var cur *dumped
	hexBytes := func(s string) ([]byte, error) {
		var b []byte
		for _, h := range strings.Fields(s) {
			v, err := strconv.ParseUint(h, 16, 8)
			if err != nil {
				return nil, err
			}
			b = append(b, byte(v))
		}
		if len(b) != 4 {
			return nil, fmt.Errorf("%d bytes in a line", len(b))
		}
		return b, nil
	}
	sc := bufio.NewScanner(strings.NewReader(ansiEscape.ReplaceAllString(out, "")))
	sc.Buffer(nil, 1<<26)
	for n := 1; sc.Scan(); n++ {
		// "|value|<tab>|label|", and for data "<tab>" and the characters.
		parts := strings.SplitN(sc.Text(), "\t", 3)
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "|") {
			continue // separators and anything else nft prints
		}
		value := strings.Trim(parts[0], "| ")
		label := normSpace(strings.Trim(parts[1], "|"))
		if label != "message length" && cur == nil {
			continue
		}
		var err error
		switch label {
		case "message length":
			v, e := strconv.Atoi(value)
			cur, err = &dumped{length: v}, e
			msgs = append(msgs, cur)
		case "type | flags":
			// "02576 | R---": only request, multi, ack and echo are shown.
			typ, _, _ := strings.Cut(value, "|")
			v, e := strconv.Atoi(strings.TrimSpace(typ))
			cur.msg.Type, err = uint16(v), e
		case "sequence number", "port ID":
		case "extra header", "data", "":
			var b []byte
			b, err = hexBytes(value)
			cur.msg.Data = append(cur.msg.Data, b...)
		case "len |flags| type":
			// "00013|--|00001": N and B are NLA_F_NESTED, NLA_F_NET_BYTEORDER.
			f := strings.Split(value, "|")
			if len(f) != 3 {
				err = fmt.Errorf("attribute header %q", value)
				break
			}
			length, e1 := strconv.Atoi(f[0])
			typ, e2 := strconv.Atoi(f[2])
			if e1 != nil || e2 != nil {
				err = fmt.Errorf("attribute header %q", value)
				break
			}
			if strings.Contains(f[1], "N") {
				typ |= unix.NLA_F_NESTED
			}
			if strings.Contains(f[1], "B") {
				typ |= unix.NLA_F_NET_BYTEORDER
			}
			cur.msg.Data = binary.NativeEndian.AppendUint16(cur.msg.Data, uint16(length))
			cur.msg.Data = binary.NativeEndian.AppendUint16(cur.msg.Data, uint16(typ))
		default:
			err = fmt.Errorf("unknown field %q", label)
		}
		if err != nil {
			return nil, fmt.Errorf("mnl dump line %d: %v", n, err)
		}
	}
	var batch []nlMsg
	in := false
	for i, d := range msgs {
		if got := 16 + len(d.msg.Data); got != d.length {
			// libmnl prints nothing for a 4-byte chunk it takes for an
			// attribute header of type 0: such a dump cannot be rebuilt.
			return nil, fmt.Errorf("mnl dump message %d (type %d): rebuilt %d bytes of %d", i, d.msg.Type, got, d.length)
		}
		switch {
		case d.msg.Type == unix.NFNL_MSG_BATCH_BEGIN:
			if in || batch != nil {
				return nil, fmt.Errorf("mnl dump: more than one batch")
			}
			in = true
		case d.msg.Type == unix.NFNL_MSG_BATCH_END:
			in = false
		case in:
			batch = append(batch, d.msg)
		}
	}
	if batch == nil || in {
		return nil, fmt.Errorf("mnl dump: no complete batch in %d messages", len(msgs))
	}
	return batch, nil
}

// stripComments drops the # lines of a golden file.
func stripComments(s string) string {
	var out []string
	for _, l := range strings.SplitAfter(s, "\n") {
		if !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "")
}

// lineDiff is a small line diff (longest common subsequence) of want and
// got, with two lines of context around each change.
func lineDiff(want, got string) string {
	a := strings.Split(strings.TrimSuffix(want, "\n"), "\n")
	b := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	lcs := lcsTable(a, b)
	type op struct {
		kind byte
		text string
	}
	var ops []op
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		switch {
		case i < len(a) && j < len(b) && a[i] == b[j]:
			ops = append(ops, op{' ', a[i]})
			i++
			j++
		case i < len(a) && (j == len(b) || lcs[i+1][j] >= lcs[i][j+1]):
			ops = append(ops, op{'-', a[i]})
			i++
		default:
			ops = append(ops, op{'+', b[j]})
			j++
		}
	}
	const context = 2
	var out strings.Builder
	last := -1
	for k, o := range ops {
		near := false
		for d := -context; d <= context; d++ {
			if k+d >= 0 && k+d < len(ops) && ops[k+d].kind != ' ' {
				near = true
			}
		}
		if !near {
			continue
		}
		if last >= 0 && k > last+1 {
			out.WriteString("  ...\n")
		}
		last = k
		fmt.Fprintf(&out, "%c %s\n", o.kind, o.text)
	}
	return out.String()
}
