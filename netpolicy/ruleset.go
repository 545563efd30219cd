package netpolicy

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Ruleset is the whole firewall state bastiond owns: its own tables, nothing
// else. It is a plain value: Compile makes it, Render prints it in nft syntax,
// and the applier turns it into one netlink batch. Rules are built from a
// closed set of typed matches and statements so that each maps one-to-one to
// kernel expressions and back, which is what lets the daemon read the kernel's
// tables and say exactly how they differ.
type Ruleset struct {
	Tables []Table
	// Notes are what an auditor must know that the rules alone do not say
	// (whose egress is restricted, and when it is not): Render prints them
	// first, as nft comments.
	Notes []string
}

// Family is an nftables table family.
type Family string

const (
	FamilyInet   Family = "inet"
	FamilyBridge Family = "bridge"
)

// Table is one nftables table.
type Table struct {
	Family Family
	Name   string
	Sets   []Set
	Chains []Chain
}

// SetType is an nftables set key type.
type SetType string

const (
	TypeIPv4     SetType = "ipv4_addr"
	TypeIPv6     SetType = "ipv6_addr"
	TypeIPv4Port SetType = "ipv4_addr . inet_service"
	TypeIPv6Port SetType = "ipv6_addr . inet_service"
	TypeInetPort SetType = "inet_service"
	// Keys of the guard and egress sets: a destination, its transport
	// protocol and port, so that one rule covers TCP and UDP alike.
	TypeIPv4ProtoPort SetType = "ipv4_addr . inet_proto . inet_service"
	TypeIPv6ProtoPort SetType = "ipv6_addr . inet_proto . inet_service"
	TypeProtoPort     SetType = "inet_proto . inet_service"
	maxDynamicSet             = 65535
)

// Set is a named set.
type Set struct {
	Name string
	Type SetType
	// Interval sets hold prefixes.
	Interval bool
	// Dynamic sets are filled by rules (add @set); Timeout expires entries.
	Dynamic bool
	Timeout time.Duration
	// Size bounds a dynamic set; a full set stops growing, so a flood of
	// sources cannot exhaust memory.
	Size     int
	Elements []Element
	// Keep carries a dynamic set's entries, with their remaining time,
	// across a re-apply (the blocklist must survive a reload).
	Keep bool
	// SourceBits, when set, is the prefix length the rules mask a source
	// to before they add it to the set or look it up: the keys are such
	// prefixes. Kept entries are masked the same way, so that whole
	// addresses kept from an older ruleset stay blocked. Not rendered: nft
	// has no attribute for it.
	SourceBits int
	// Counter gives every element its own packet and byte counter, counted
	// whenever a rule's lookup matches the element.
	Counter bool
}

// Element is a set member: a prefix (a single address is a /32 or /128), a
// port, or an address, a transport protocol and a port.
type Element struct {
	Prefix netip.Prefix
	Port   uint16
	Proto  string // tcp or udp, in the sets keyed by protocol
	// Comment names what the element stands for (the target, in the
	// sets that count per target).
	Comment string
}

// Chain is a base chain.
type Chain struct {
	Name     string
	Hook     string // input, forward, output
	Priority int    // relative to the filter priority (0)
	Policy   string // accept or drop
	Rules    []Rule
}

// Rule is: every match holds -> the statements run -> the verdict.
type Rule struct {
	Match   []Match
	Stmts   []Stmt
	Verdict string // accept, drop, or "" (continue)
	Comment string
}

// Match is one condition of a rule.
type Match interface{ nft() string }

// Stmt is a statement of a rule, run in order once the matches hold.
type Stmt interface{ nft() string }

// Matches.
type (
	// IIF matches the input interface by name.
	IIF struct{ Name string }
	// IIFLoopback matches the loopback interface.
	IIFLoopback struct{}
	// CtState matches connection-tracking states.
	CtState struct{ States []string }
	// NFProto matches the packet's address family (ipv4, ipv6).
	NFProto struct{ V6 bool }
	// DPort matches a TCP or UDP destination port, or any of several.
	DPort struct {
		Proto  string // tcp or udp
		Ports  []uint16
		Negate bool
	}
	// SPort matches a TCP or UDP source port, or any of several.
	SPort struct {
		Proto string // tcp or udp
		Ports []uint16
	}
	// TCPNoSYN matches TCP segments without the SYN flag: never the
	// first segment of a connection this host opens.
	TCPNoSYN struct{}
	// L4Proto matches any of the transport protocols.
	L4Proto struct{ Protos []string }
	// SAddrIn matches the source address against a named set, or with
	// Bits the source address masked to its first Bits bits (see
	// SourceBits).
	SAddrIn struct {
		V6     bool
		Set    string
		Negate bool
		Bits   int
	}
	// DAddrIn matches the destination address against a named set.
	DAddrIn struct {
		V6  bool
		Set string
	}
	// AddrProtoPortIn matches destination address . transport protocol .
	// destination port against a named set: TCP and UDP with one rule.
	AddrProtoPortIn struct {
		V6  bool
		Set string
	}
	// ProtoPortIn matches transport protocol . destination port against a
	// named set.
	ProtoPortIn struct{ Set string }
	// SKUID matches the user id of the socket a packet leaves from (the
	// output hook only); a packet without one (sent by the kernel itself)
	// never matches, Negate or not.
	SKUID struct {
		UID    uint32
		Negate bool
	}
	// ICMPType matches ICMP or ICMPv6 types.
	ICMPType struct {
		V6    bool
		Types []string
	}
	// ARPSAddr matches ARP packets whose sender address is Addr.
	ARPSAddr struct{ Addr netip.Addr }
	// NDTarget matches IPv6 neighbour advertisements for Addr.
	NDTarget struct{ Addr netip.Addr }
	// SourceOver holds when the source exceeds a per-source rate, tracked
	// in the dynamic set Set (an nftables meter) under the source address,
	// or with Bits under the address masked to its first Bits bits.
	SourceOver struct {
		V6          bool
		Set         string
		PerSecond   int // or per minute when PerMinute is set
		PerMinute   bool
		BurstPacket int
		Bits        int
	}
)

// Statements.
type (
	// Limit lets packets through at Rate per second, with a burst.
	Limit struct{ PerSecond, Burst int }
	// AddSource adds the source address to a dynamic set, or with Bits
	// the address masked to its first Bits bits.
	AddSource struct {
		V6   bool
		Set  string
		Bits int
	}
	// Counter counts packets and bytes.
	Counter struct{}
	// Log writes the packet to the kernel log with Prefix (at level warn).
	Log struct{ Prefix string }
	// LimitPerMinute lets packets through at Rate per minute, with a burst.
	LimitPerMinute struct{ Rate, Burst int }
)

func (m IIF) nft() string       { return fmt.Sprintf("iifname %q", m.Name) }
func (IIFLoopback) nft() string { return `iif "lo"` }
func (m CtState) nft() string   { return "ct state " + strings.Join(m.States, ",") }
func (m NFProto) nft() string {
	if m.V6 {
		return "meta nfproto ipv6"
	}
	return "meta nfproto ipv4"
}
func (m L4Proto) nft() string { return "meta l4proto " + braceList(m.Protos) }
func (m DPort) nft() string {
	op := ""
	if m.Negate {
		op = "!= "
	}
	return fmt.Sprintf("%s dport %s%s", m.Proto, op, portList(m.Ports))
}
func (TCPNoSYN) nft() string { return "tcp flags & syn == 0" }
func (m SPort) nft() string  { return fmt.Sprintf("%s sport %s", m.Proto, portList(m.Ports)) }
func (m SAddrIn) nft() string {
	op := ""
	if m.Negate {
		op = "!= "
	}
	return fmt.Sprintf("%s %s@%s", saddr(m.V6, m.Bits), op, m.Set)
}
func (m DAddrIn) nft() string { return fmt.Sprintf("%s daddr @%s", ipKeyword(m.V6), m.Set) }
func (m AddrProtoPortIn) nft() string {
	return fmt.Sprintf("%s daddr . meta l4proto . th dport @%s", ipKeyword(m.V6), m.Set)
}
func (m ProtoPortIn) nft() string { return "meta l4proto . th dport @" + m.Set }
func (m SKUID) nft() string {
	if m.Negate {
		return fmt.Sprintf("meta skuid != %d", m.UID)
	}
	return fmt.Sprintf("meta skuid %d", m.UID)
}
func (m ICMPType) nft() string {
	kw := "icmp"
	if m.V6 {
		kw = "icmpv6"
	}
	return fmt.Sprintf("%s type %s", kw, braceList(m.Types))
}
func (m ARPSAddr) nft() string { return "arp saddr ip " + m.Addr.String() }

// The target address sits 8 bytes into the ICMPv6 header; nft 1.0 has no
// keyword for it and lists it as this raw payload match.
func (m NDTarget) nft() string {
	a := m.Addr.As16()
	return fmt.Sprintf("icmpv6 type nd-neighbor-advert @th,64,128 0x%x", a[:])
}
func (m SourceOver) nft() string {
	unit := "second"
	if m.PerMinute {
		unit = "minute"
	}
	return fmt.Sprintf("add @%s { %s limit rate over %d/%s burst %d packets }",
		m.Set, saddr(m.V6, m.Bits), m.PerSecond, unit, m.BurstPacket)
}

func (s Limit) nft() string {
	return fmt.Sprintf("limit rate %d/second burst %d packets", s.PerSecond, s.Burst)
}
func (s AddSource) nft() string {
	return fmt.Sprintf("add @%s { %s }", s.Set, saddr(s.V6, s.Bits))
}
func (Counter) nft() string { return "counter" }
func (s Log) nft() string   { return fmt.Sprintf("log prefix %q", s.Prefix) }
func (s LimitPerMinute) nft() string {
	return fmt.Sprintf("limit rate %d/minute burst %d packets", s.Rate, s.Burst)
}

// saddr is the source address, masked to its first bits when bits is set
// ("ip6 saddr & ffff:ffff:ffff:ffff::" for an IPv6 /64).
func saddr(v6 bool, bits int) string {
	if bits == 0 {
		return ipKeyword(v6) + " saddr"
	}
	return ipKeyword(v6) + " saddr & " + sourceMask(v6, bits).String()
}

// sourceMask is the netmask of a /bits prefix in the family v6 says.
func sourceMask(v6 bool, bits int) netip.Addr {
	ones := netip.AddrFrom4([4]byte{255, 255, 255, 255})
	if v6 {
		ones = netip.AddrFrom16([16]byte{255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255})
	}
	p, _ := ones.Prefix(bits)
	return p.Addr()
}

func ipKeyword(v6 bool) string {
	if v6 {
		return "ip6"
	}
	return "ip"
}

func portList(ports []uint16) string {
	s := make([]string, len(ports))
	for i, p := range ports {
		s[i] = strconv.Itoa(int(p))
	}
	return braceList(s)
}

// braceList renders one item bare and several as an anonymous set.
func braceList(items []string) string {
	if len(items) == 1 {
		return items[0]
	}
	return "{ " + strings.Join(items, ", ") + " }"
}

// Render prints the ruleset in nft syntax: what `bastionctl policy show`
// prints and what `nft -f` would load.
func (rs Ruleset) Render() string {
	var b strings.Builder
	for _, n := range rs.Notes {
		b.WriteString("# " + n + "\n")
	}
	if len(rs.Notes) > 0 {
		b.WriteString("\n")
	}
	for i, t := range rs.Tables {
		if i > 0 {
			b.WriteString("\n")
		}
		t.render(&b)
	}
	return b.String()
}

func (t Table) render(b *strings.Builder) {
	fmt.Fprintf(b, "table %s %s {\n", t.Family, t.Name)
	for _, s := range t.Sets {
		s.render(b)
		b.WriteString("\n")
	}
	for i, c := range t.Chains {
		if i > 0 {
			b.WriteString("\n")
		}
		c.render(b)
	}
	b.WriteString("}\n")
}

func (s Set) render(b *strings.Builder) {
	fmt.Fprintf(b, "\tset %s {\n\t\ttype %s\n", s.Name, s.Type)
	if s.Size > 0 {
		fmt.Fprintf(b, "\t\tsize %d\n", s.Size)
	}
	var flags []string
	if s.Dynamic {
		flags = append(flags, "dynamic")
	}
	if s.Interval {
		flags = append(flags, "interval")
	}
	if s.Timeout > 0 {
		flags = append(flags, "timeout")
	}
	if len(flags) > 0 {
		fmt.Fprintf(b, "\t\tflags %s\n", strings.Join(flags, ","))
	}
	if s.Timeout > 0 {
		fmt.Fprintf(b, "\t\ttimeout %s\n", nftDuration(s.Timeout))
	}
	if s.Counter {
		b.WriteString("\t\tcounter\n")
	}
	if len(s.Elements) > 0 {
		els := make([]string, len(s.Elements))
		for i, e := range s.Elements {
			els[i] = e.String(s.Type)
		}
		fmt.Fprintf(b, "\t\telements = { %s }\n", strings.Join(els, ",\n\t\t\t     "))
	}
	b.WriteString("\t}\n")
}

// String renders the element for a set of type t.
func (e Element) String(t SetType) string {
	if e.Comment != "" {
		return fmt.Sprintf("%s comment %q", e.key(t), e.Comment)
	}
	return e.key(t)
}

func (e Element) key(t SetType) string {
	switch t {
	case TypeInetPort:
		return strconv.Itoa(int(e.Port))
	case TypeIPv4Port, TypeIPv6Port:
		return prefixString(e.Prefix) + " . " + strconv.Itoa(int(e.Port))
	case TypeIPv4ProtoPort, TypeIPv6ProtoPort:
		return prefixString(e.Prefix) + " . " + e.Proto + " . " + strconv.Itoa(int(e.Port))
	case TypeProtoPort:
		return e.Proto + " . " + strconv.Itoa(int(e.Port))
	}
	return prefixString(e.Prefix)
}

// prefixString is p as nft writes it: an address alone for a single one.
func prefixString(p netip.Prefix) string {
	if p.IsSingleIP() {
		return p.Addr().String()
	}
	return p.String()
}

func (c Chain) render(b *strings.Builder) {
	fmt.Fprintf(b, "\tchain %s {\n\t\ttype filter hook %s priority %s; policy %s;\n", c.Name, c.Hook, priority(c.Priority), c.Policy)
	for _, r := range c.Rules {
		b.WriteString("\t\t" + r.String() + "\n")
	}
	b.WriteString("\t}\n")
}

// String renders the rule as one nft line.
func (r Rule) String() string {
	parts := make([]string, 0, len(r.Match)+len(r.Stmts)+2)
	for _, m := range r.Match {
		parts = append(parts, m.nft())
	}
	for _, s := range r.Stmts {
		parts = append(parts, s.nft())
	}
	if r.Verdict != "" {
		parts = append(parts, r.Verdict)
	}
	if r.Comment != "" {
		parts = append(parts, fmt.Sprintf("comment %q", r.Comment))
	}
	return strings.Join(parts, " ")
}

func priority(p int) string {
	switch {
	case p == 0:
		return "filter"
	case p > 0:
		return fmt.Sprintf("filter + %d", p)
	}
	return fmt.Sprintf("filter - %d", -p)
}

// nftDuration prints d the way nft does (1h10m, 10m, 30s).
func nftDuration(d time.Duration) string {
	var b strings.Builder
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}} {
		if n := d / u.unit; n > 0 {
			fmt.Fprintf(&b, "%d%s", n, u.name)
			d -= n * u.unit
		}
	}
	if b.Len() == 0 {
		return "0s"
	}
	return b.String()
}

// sortedPorts returns ports sorted and without duplicates.
func sortedPorts(ports []uint16) []uint16 {
	out := append([]uint16(nil), ports...)
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	n := 0
	for i, p := range out {
		if i == 0 || p != out[n-1] {
			out[n] = p
			n++
		}
	}
	return out[:n]
}
