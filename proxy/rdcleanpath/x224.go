package rdcleanpath

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Security protocols, the bits of requestedProtocols in a Connection
// Request and the value of selectedProtocol in a Confirm ([MS-RDPBCGR]
// 2.2.1.1.1).
const (
	ProtocolRDP      uint32 = 0 // standard RDP security: refused by this gateway (the browser client cannot do it)
	ProtocolSSL      uint32 = 1
	ProtocolHybrid   uint32 = 2 // CredSSP (NLA)
	ProtocolRDSTLS   uint32 = 4
	ProtocolHybridEx uint32 = 8
)

var protocolNames = []struct {
	bit  uint32
	name string
}{
	{ProtocolSSL, "TLS"},
	{ProtocolHybrid, "CredSSP (NLA)"},
	{ProtocolRDSTLS, "RDSTLS"},
	{ProtocolHybridEx, "CredSSP with Early User Authorization"},
}

// ProtocolName names the security protocols p, joined with " | " when p
// has several; unknown bits are shown in hex.
func ProtocolName(p uint32) string {
	if p == ProtocolRDP {
		return "standard RDP security"
	}
	var names []string
	for _, n := range protocolNames {
		if p&n.bit != 0 {
			names = append(names, n.name)
			p &^= n.bit
		}
	}
	if p != 0 {
		names = append(names, fmt.Sprintf("0x%x", p))
	}
	return strings.Join(names, " | ")
}

// Types of the negotiation structure after a TPDU ([MS-RDPBCGR] 2.2.1.1.1,
// 2.2.1.2.1, 2.2.1.2.2).
const (
	RDPNegReq     uint8 = 0x01
	RDPNegRsp     uint8 = 0x02
	RDPNegFailure uint8 = 0x03
)

const (
	// MaxTPKT bounds a TPKT packet the gateway reads during the
	// negotiation: a Connection Confirm is 19 bytes.
	MaxTPKT = 1024

	tpktHeaderLen = 4
	tpktVersion   = 3
	// x224FixedLen is the fixed part of a Connection Request or Confirm
	// TPDU: length indicator, code, DST-REF, SRC-REF, class option.
	x224FixedLen = 7
	// maxLI is the largest X.224 length indicator (255 is reserved), so
	// that a Connection Request or Confirm is at most 259 bytes; that caps
	// the cookie line.
	maxLI = 254
	// negLen is the length of an RDP_NEG_REQ, RDP_NEG_RSP or
	// RDP_NEG_FAILURE.
	negLen = 8

	codeCR = 0xe0 // Connection Request, credit 0
	codeCC = 0xd0 // Connection Confirm, credit 0

	// negCorrelationInfo is the flag of an RDP_NEG_REQ followed by an
	// RDP_NEG_CORRELATION_INFO, which the browser client never sends.
	negCorrelationInfo = 0x08

	cookiePrefix = "Cookie: mstshash="
	// linePrefix begins a routing token ("Cookie: msts=…") as well as a
	// cookie.
	linePrefix = "Cookie: "
)

// ReadTPKT reads one TPKT packet from r and returns it whole, header
// included: version 3, a reserved byte, a big-endian length that counts the
// 4-byte header, at least 7 (the header and the smallest X.224 TPDU) and at
// most max (MaxTPKT when max <= 0). It reads exactly the packet's bytes.
func ReadTPKT(r io.Reader, max int) ([]byte, error) {
	if max <= 0 {
		max = MaxTPKT
	}
	var hdr [tpktHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("rdcleanpath: read TPKT header: %w", err)
	}
	if hdr[0] != tpktVersion {
		return nil, fmt.Errorf("rdcleanpath: not a TPKT packet (version byte 0x%02x)", hdr[0])
	}
	n := int(binary.BigEndian.Uint16(hdr[2:]))
	if n < tpktHeaderLen+3 {
		return nil, fmt.Errorf("rdcleanpath: TPKT length %d below 7", n)
	}
	if n > max {
		return nil, fmt.Errorf("rdcleanpath: TPKT packet of %d bytes exceeds %d", n, max)
	}
	pkt := make([]byte, n)
	copy(pkt, hdr[:])
	if _, err := io.ReadFull(r, pkt[tpktHeaderLen:]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("rdcleanpath: read TPKT packet: %w", err)
	}
	return pkt, nil
}

// tpdu checks that pkt is a whole TPKT packet holding exactly one
// Connection Request or Confirm TPDU with the given code, in class 0, and
// returns its variable part.
func tpdu(pkt []byte, code byte) ([]byte, error) {
	switch {
	case len(pkt) < tpktHeaderLen+x224FixedLen:
		return nil, fmt.Errorf("truncated: %d bytes", len(pkt))
	case pkt[0] != tpktVersion:
		return nil, fmt.Errorf("not a TPKT packet (version byte 0x%02x)", pkt[0])
	case pkt[1] != 0:
		return nil, fmt.Errorf("TPKT reserved byte 0x%02x", pkt[1])
	case int(binary.BigEndian.Uint16(pkt[2:])) != len(pkt):
		return nil, fmt.Errorf("TPKT length %d in a packet of %d bytes", binary.BigEndian.Uint16(pkt[2:]), len(pkt))
	}
	x := pkt[tpktHeaderLen:]
	switch {
	case int(x[0]) != len(x)-1 || x[0] > maxLI:
		return nil, fmt.Errorf("X.224 length indicator %d in a TPDU of %d bytes", x[0], len(x))
	case x[1] != code:
		return nil, fmt.Errorf("X.224 TPDU code 0x%02x, want 0x%02x", x[1], code)
	case x[6] != 0:
		return nil, fmt.Errorf("X.224 class option 0x%02x, want class 0", x[6])
	}
	return x[x224FixedLen:], nil
}

// ConnectionRequest is what the gateway reads of a client's X.224
// Connection Request ([MS-RDPBCGR] 2.2.1.1).
type ConnectionRequest struct {
	// Cookie is NAME of a "Cookie: mstshash=NAME" line, "" when absent.
	Cookie string
	// RoutingToken is the line in place of a cookie when it is another
	// "Cookie: …" (a load balancer's routing token, "Cookie: msts=…"),
	// without its CRLF.
	RoutingToken []byte
	// Protocols are the requestedProtocols of the RDP_NEG_REQ; 0 (standard
	// RDP security) when it is absent.
	Protocols uint32
	// Flags are the RDP_NEG_REQ's flags.
	Flags uint8
	// HasNegotiation says whether an RDP_NEG_REQ is present.
	HasNegotiation bool
}

// ParseConnectionRequest reads the client's Connection Request, pkt, a
// whole TPKT packet: the X.224 Connection Request TPDU (class 0, DST-REF 0),
// then optionally a cookie or routing token line ending in CRLF, then
// optionally an RDP_NEG_REQ, and nothing else. An RDP_NEG_CORRELATION_INFO
// is refused.
func ParseConnectionRequest(pkt []byte) (ConnectionRequest, error) {
	cr, err := parseConnectionRequest(pkt)
	if err != nil {
		return ConnectionRequest{}, fmt.Errorf("rdcleanpath: X.224 Connection Request: %w", err)
	}
	return cr, nil
}

func parseConnectionRequest(pkt []byte) (ConnectionRequest, error) {
	var cr ConnectionRequest
	v, err := tpdu(pkt, codeCR)
	if err != nil {
		return cr, err
	}
	if dst := binary.BigEndian.Uint16(pkt[tpktHeaderLen+2:]); dst != 0 {
		return cr, fmt.Errorf("DST-REF 0x%04x, want 0", dst)
	}
	if bytes.HasPrefix(v, []byte(linePrefix)) {
		i := bytes.Index(v, []byte("\r\n"))
		if i < 0 {
			return cr, errors.New("cookie without CRLF")
		}
		line := v[:i]
		if j := bytes.IndexFunc(line, func(r rune) bool { return r < 0x20 || r == 0x7f }); j >= 0 {
			return cr, fmt.Errorf("control character 0x%02x in the cookie", line[j])
		}
		if !utf8.Valid(line) {
			return cr, errors.New("cookie is not UTF-8")
		}
		if name, ok := bytes.CutPrefix(line, []byte(cookiePrefix)); ok {
			cr.Cookie = string(name)
		} else {
			cr.RoutingToken = bytes.Clone(line)
		}
		v = v[i+2:]
	}
	if len(v) == 0 {
		return cr, nil
	}
	switch {
	case v[0] != RDPNegReq:
		return cr, fmt.Errorf("negotiation type 0x%02x, want RDP_NEG_REQ (0x01)", v[0])
	case len(v) < negLen:
		return cr, fmt.Errorf("truncated RDP_NEG_REQ (%d bytes)", len(v))
	case binary.LittleEndian.Uint16(v[2:]) != negLen:
		return cr, fmt.Errorf("RDP_NEG_REQ length %d, want 8", binary.LittleEndian.Uint16(v[2:]))
	case v[1]&negCorrelationInfo != 0:
		return cr, errors.New("RDP_NEG_CORRELATION_INFO is not supported")
	case len(v) > negLen:
		return cr, fmt.Errorf("%d bytes after the RDP_NEG_REQ", len(v)-negLen)
	}
	cr.HasNegotiation = true
	cr.Flags = v[1]
	cr.Protocols = binary.LittleEndian.Uint32(v[4:])
	return cr, nil
}

// ConnectionRequestPDU builds a Connection Request as mstsc does: a TPKT
// packet holding the X.224 TPDU, the line "Cookie: mstshash=COOKIE\r\n"
// (left out when cookie is ""), and an RDP_NEG_REQ asking for protocols.
// Control characters and invalid UTF-8 are dropped from cookie, and it is
// cut to fit the TPDU's one-byte length.
func ConnectionRequestPDU(cookie string, protocols uint32) []byte {
	cookie = strings.ToValidUTF8(cookie, "")
	cookie = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, cookie)
	const maxCookie = maxLI + 1 - x224FixedLen - negLen - len(cookiePrefix) - len("\r\n")
	if len(cookie) > maxCookie {
		n := maxCookie
		for !utf8.RuneStart(cookie[n]) {
			n--
		}
		cookie = cookie[:n]
	}
	var b []byte
	b = append(b, tpktVersion, 0, 0, 0)     // length below
	b = append(b, 0, codeCR, 0, 0, 0, 0, 0) // LI below, DST-REF, SRC-REF, class 0
	if cookie != "" {
		b = append(b, cookiePrefix+cookie+"\r\n"...)
	}
	b = append(b, RDPNegReq, 0)
	b = binary.LittleEndian.AppendUint16(b, negLen)
	b = binary.LittleEndian.AppendUint32(b, protocols)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	b[tpktHeaderLen] = byte(len(b) - tpktHeaderLen - 1)
	return b
}

// ConnectionConfirm is what the gateway reads of a server's X.224
// Connection Confirm ([MS-RDPBCGR] 2.2.1.2).
type ConnectionConfirm struct {
	// Negotiation is the type of the negotiation structure: RDPNegRsp,
	// RDPNegFailure, or 0 when absent (a server that knows only standard
	// RDP security).
	Negotiation uint8
	// Flags are the RDP_NEG_RSP's flags.
	Flags uint8
	// Protocol is the selectedProtocol of an RDP_NEG_RSP.
	Protocol uint32
	// FailureCode is the failureCode of an RDP_NEG_FAILURE.
	FailureCode uint32
}

// ParseConnectionConfirm reads the server's Connection Confirm, pkt, a
// whole TPKT packet: the X.224 Connection Confirm TPDU (class 0) and an
// RDP_NEG_RSP or RDP_NEG_FAILURE, or nothing.
func ParseConnectionConfirm(pkt []byte) (ConnectionConfirm, error) {
	var cc ConnectionConfirm
	v, err := tpdu(pkt, codeCC)
	if err == nil && len(v) > 0 {
		switch {
		case len(v) != negLen:
			err = fmt.Errorf("negotiation structure of %d bytes, want 8", len(v))
		case v[0] != RDPNegRsp && v[0] != RDPNegFailure:
			err = fmt.Errorf("negotiation type 0x%02x, want RDP_NEG_RSP (0x02) or RDP_NEG_FAILURE (0x03)", v[0])
		case binary.LittleEndian.Uint16(v[2:]) != negLen:
			err = fmt.Errorf("negotiation structure length %d, want 8", binary.LittleEndian.Uint16(v[2:]))
		}
	}
	if err != nil {
		return ConnectionConfirm{}, fmt.Errorf("rdcleanpath: X.224 Connection Confirm: %w", err)
	}
	if len(v) == 0 {
		return cc, nil
	}
	cc.Negotiation, cc.Flags = v[0], v[1]
	if cc.Negotiation == RDPNegRsp {
		cc.Protocol = binary.LittleEndian.Uint32(v[4:])
	} else {
		cc.FailureCode = binary.LittleEndian.Uint32(v[4:])
	}
	return cc, nil
}

// Errors Err wraps: the server refused the client's security protocols
// (an RDP_NEG_FAILURE), or it chose standard RDP security.
var (
	ErrNegotiationFailed = errors.New("RDP security negotiation failed")
	ErrStandardSecurity  = errors.New("the RDP server offers only standard RDP security")
)

// failures describe the failure codes of an RDP_NEG_FAILURE
// ([MS-RDPBCGR] 2.2.1.2.2).
var failures = map[uint32]struct{ name, text string }{
	1: {"SSL_REQUIRED_BY_SERVER", "the server requires TLS"},
	2: {"SSL_NOT_ALLOWED_BY_SERVER", "the server does not allow TLS"},
	3: {"SSL_CERT_NOT_ON_SERVER", "the server has no certificate for TLS"},
	4: {"INCONSISTENT_FLAGS", "the server found the request's flags inconsistent"},
	5: {"HYBRID_REQUIRED_BY_SERVER", "the server requires NLA (CredSSP)"},
	6: {"SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER", "the server requires TLS with a client certificate"},
}

// Err says whether the gateway can go on: nil for a response that selects
// TLS or a CredSSP protocol; an error wrapping ErrNegotiationFailed, naming
// the failure code, for a failure; an error wrapping ErrStandardSecurity
// for a response that selects standard RDP security or a Confirm without
// negotiation.
func (c ConnectionConfirm) Err() error {
	switch {
	case c.Negotiation == RDPNegRsp && c.Protocol != ProtocolRDP:
		return nil
	case c.Negotiation == RDPNegFailure:
		if f, ok := failures[c.FailureCode]; ok {
			return fmt.Errorf("rdcleanpath: %w: %s (failure code %d, %s)", ErrNegotiationFailed, f.text, c.FailureCode, f.name)
		}
		return fmt.Errorf("rdcleanpath: %w: failure code %d", ErrNegotiationFailed, c.FailureCode)
	}
	return fmt.Errorf("rdcleanpath: %w, which the browser client cannot use: enable TLS or NLA on the server", ErrStandardSecurity)
}
