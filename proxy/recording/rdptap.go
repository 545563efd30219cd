package recording

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
)

// Security protocols of a Connection Confirm ([MS-RDPBCGR] 2.2.1.2.1), as
// in rdcleanpath (which this package does not import).
const (
	protocolHybrid   uint32 = 2
	protocolHybridEx uint32 = 8
)

// RDPTap records the relayed stream of one RDP session, keeping secrets out:
//
//   - CredSSP (NLA): when the server selected it, each direction starts with
//     TSRequest messages, DER SEQUENCEs (first byte 0x30), which carry the
//     NTLM exchange and, encrypted, the user's password. They are skipped
//     whole, by their DER length, as is the server's 4-byte Early User
//     Authorization Result (HYBRID_EX). Recording starts at the first byte
//     that begins neither: a TPKT (0x03) or, later, a fast-path PDU.
//   - The client's PDUs are framed (TPKT or fast-path) until its Client Info
//     PDU (an MCS Send Data Request whose security header has SEC_INFO_PKT):
//     there the TS_INFO_PACKET's password and the extended info's
//     auto-reconnect cookie are zeroed in the copy recorded (their lengths
//     stay); if the packet cannot be parsed, everything after its security
//     header is zeroed. From the Connect Initial before it, the desktop size
//     is recorded (an RDPMeta record). A client stream that is neither TPKT
//     nor fast-path before its Client Info is not recorded any further.
//   - The server's PDUs are framed too, and a slow-path Save Session Info PDU
//     has its auto-reconnect random (ARC_SC_PRIVATE_PACKET) zeroed: with it a
//     client could reconnect to the session without credentials.
//
// The relayed bytes are never changed: the tap reads them and writes a copy.
// FromClient and FromServer are each called by one goroutine at a time
// (the relay's direction).
type RDPTap struct {
	rec    RecordWriter
	client tapDirection
	server tapDirection
	// infoSeen says the Client Info PDU was found and redacted.
	infoSeen bool
}

// tapDirection is one direction's parsing state.
type tapDirection struct {
	state tapState
	after tapState // the state once the TSRequests end
	skip  int      // bytes of the current message still to drop
	hdr   []byte   // the start of a TSRequest's DER header, read so far
	pend  []byte   // the start of a client PDU, read so far (client, tapFramed)
}

type tapState uint8

const (
	tapNLA    tapState = iota // TSRequests
	tapEarly                  // the server's Early User Authorization Result
	tapFramed                 // client PDUs framed and inspected
	tapRaw                    // recorded as read
	tapOff                    // not recorded
)

// maxDERHeader bounds a TSRequest's DER header: tag, 0x84, 4 length bytes.
const maxDERHeader = 6

// RecordWriter takes the records of an RDP recording: an *RDPRecorder.
type RecordWriter interface {
	Record(kind byte, p []byte) error
}

var _ RecordWriter = (*RDPRecorder)(nil)

// NewRDPTap returns the tap of a session whose server selected protocol,
// writing to rec.
func NewRDPTap(rec RecordWriter, protocol uint32) *RDPTap {
	t := &RDPTap{rec: rec, client: tapDirection{state: tapFramed}, server: tapDirection{state: tapFramed}}
	if protocol&(protocolHybrid|protocolHybridEx) != 0 {
		t.client.state, t.client.after = tapNLA, tapFramed
		t.server.state, t.server.after = tapNLA, tapFramed
		if protocol&protocolHybridEx != 0 {
			t.server.after = tapEarly
		}
	}
	return t
}

// ClientInfoRedacted says whether the tap found the Client Info PDU.
func (t *RDPTap) ClientInfoRedacted() bool { return t.infoSeen }

// FromServer records p, read from the server. Its PDUs are framed to find
// the slow-path ones (TPKT) among the fast-path updates: a Save Session
// Info PDU's auto-reconnect random is zeroed in the copy recorded. Each
// call records what complete PDUs it has, in one record.
func (t *RDPTap) FromServer(p []byte) error {
	d := &t.server
	p = d.skipNegotiation(p)
	switch {
	case len(p) == 0 || d.state == tapOff:
		return nil
	case d.state == tapRaw:
		return t.rec.Record(RDPServer, p)
	}
	d.pend = append(d.pend, p...)
	done := 0
	for {
		n, err := frameLen(d.pend[done:])
		if err != nil {
			// Lost: what follows is recorded as it comes (the server's side
			// carries no password; at worst an auto-reconnect random).
			d.state = tapRaw
			done = len(d.pend)
			break
		}
		if n == 0 || done+n > len(d.pend) {
			break
		}
		if d.pend[done] == 3 {
			redactSaveSessionInfo(d.pend[done : done+n])
		}
		done += n
	}
	var err error
	if done > 0 {
		err = t.rec.Record(RDPServer, d.pend[:done])
	}
	d.pend = append(d.pend[:0], d.pend[done:]...)
	return err
}

// FromClient records p, read from the client.
func (t *RDPTap) FromClient(p []byte) error {
	d := &t.client
	p = d.skipNegotiation(p)
	switch {
	case len(p) == 0 || d.state == tapOff:
		return nil
	case d.state == tapRaw:
		return t.rec.Record(RDPClient, p)
	}
	d.pend = append(d.pend, p...)
	for d.state == tapFramed {
		n, err := frameLen(d.pend)
		if err != nil {
			// Not RDP as this tap knows it: record no more of what the
			// client sends rather than risk its secrets.
			d.state, d.pend = tapOff, nil
			return nil
		}
		if n == 0 || n > len(d.pend) {
			break
		}
		pdu := d.pend[:n]
		if err := t.inspectClient(pdu); err != nil {
			return err
		}
		if err := t.rec.Record(RDPClient, pdu); err != nil {
			return err
		}
		d.pend = d.pend[n:]
	}
	if d.state == tapRaw && len(d.pend) > 0 {
		err := t.rec.Record(RDPClient, d.pend)
		d.pend = nil
		return err
	}
	// Keep the partial PDU at the start of the buffer.
	d.pend = append(d.pend[:0:0], d.pend...)
	return nil
}

// skipNegotiation drops the CredSSP messages (and the Early User
// Authorization Result) at the start of p and returns the rest.
func (d *tapDirection) skipNegotiation(p []byte) []byte {
	for len(p) > 0 {
		switch {
		case d.skip > 0:
			n := min(d.skip, len(p))
			d.skip -= n
			p = p[n:]
		case d.state == tapEarly:
			d.skip, d.state = 4, tapFramed
		case d.state != tapNLA:
			return p
		case len(d.hdr) == 0 && p[0] != 0x30:
			d.state = d.after
		default:
			d.hdr = append(d.hdr, p[0])
			p = p[1:]
			l, ok, bad := derLength(d.hdr)
			switch {
			case bad:
				d.state, d.hdr = tapOff, nil
				return nil
			case ok:
				d.skip, d.hdr = l, d.hdr[:0]
			}
		}
	}
	return p
}

// derLength reads the content length of a DER header h (tag, length):
// ok once h is whole, bad if it cannot be a TSRequest's.
func derLength(h []byte) (n int, ok, bad bool) {
	if len(h) < 2 {
		return 0, false, false
	}
	if h[1] < 0x80 {
		return int(h[1]), true, false
	}
	k := int(h[1] & 0x7f)
	if k == 0 || k > maxDERHeader-2 {
		return 0, false, true // indefinite or absurd
	}
	if len(h) < 2+k {
		return 0, false, false
	}
	for _, c := range h[2 : 2+k] {
		n = n<<8 | int(c)
	}
	if n < 0 || n > 1<<24 {
		return 0, false, true
	}
	return n, true, false
}

var errFraming = errors.New("neither TPKT nor fast-path")

// frameLen is the length of the PDU at the start of b: a TPKT packet
// ([T.123]: version 3, reserved, length big-endian) or a fast-path PDU
// ([MS-RDPBCGR] 2.2.8.1.2: action 0 in the low bits, length in one or two
// bytes). 0 means more bytes are needed to tell.
func frameLen(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	switch {
	case b[0] == 3:
		if len(b) < 4 {
			return 0, nil
		}
		n := int(binary.BigEndian.Uint16(b[2:4]))
		if n < 7 {
			return 0, errFraming
		}
		return n, nil
	case b[0]&3 == 0:
		if len(b) < 2 {
			return 0, nil
		}
		if b[1]&0x80 == 0 {
			if b[1] < 2 {
				return 0, errFraming
			}
			return int(b[1]), nil
		}
		if len(b) < 3 {
			return 0, nil
		}
		n := int(b[1]&0x7f)<<8 | int(b[2])
		if n < 3 {
			return 0, errFraming
		}
		return n, nil
	}
	return 0, errFraming
}

// Security header flags ([MS-RDPBCGR] 2.2.8.1.1.2.1).
const (
	secInfoPkt = 0x0040
)

// MCS PDU types (T.125 DomainMCSPDU choice, in the top six bits).
const (
	mcsSendDataRequest = 25
)

// inspectClient looks at one client PDU before it is recorded: the desktop
// size of the Connect Initial, the secrets of the Client Info. pdu is the
// tap's own copy, redacted in place.
func (t *RDPTap) inspectClient(pdu []byte) error {
	if pdu[0] != 3 {
		// Fast-path input: the connection is active, so the Client Info
		// is behind.
		t.client.state = tapRaw
		return nil
	}
	// TPKT (4) + X.224 Data TPDU (LI 2, code 0xf0, EOT 0x80).
	if len(pdu) < 8 || pdu[4] != 2 || pdu[5] != 0xf0 {
		return nil
	}
	mcs := pdu[7:]
	if len(mcs) >= 2 && mcs[0] == 0x7f && mcs[1] == 0x65 {
		// MCS Connect Initial: the client core data's desktop size.
		if w, h, ok := coreDesktopSize(mcs); ok {
			m, _ := json.Marshal(rdpMeta{Width: w, Height: h, Channels: netChannels(mcs)})
			return t.rec.Record(RDPMeta, m)
		}
		return nil
	}
	if mcs[0]>>2 != mcsSendDataRequest || len(mcs) < 8 {
		return nil
	}
	// type (1), initiator (2), channel (2), priority and segmentation (1),
	// length (PER: 1 byte, or 2 with the top bit set).
	off := 7
	if mcs[6]&0x80 != 0 {
		off = 8
	}
	if len(mcs) < off+4 {
		return nil
	}
	data := mcs[off:]
	if binary.LittleEndian.Uint16(data[0:2])&secInfoPkt == 0 {
		return nil
	}
	// The basic security header (flags, flagsHi); with TLS no MAC follows.
	info := data[4:]
	if !redactClientInfo(info) {
		clear(info)
	}
	t.infoSeen = true
	t.client.state = tapRaw
	return nil
}

// coreDesktopSize finds the client core data (TS_UD_CS_CORE, type 0xC001)
// in a Connect Initial and returns its desktop size.
func coreDesktopSize(b []byte) (w, h int, ok bool) {
	for i := 0; i+12 <= len(b); i++ {
		// type 0xC001, length, version 0x0008000X.
		if b[i] == 0x01 && b[i+1] == 0xc0 && b[i+5] == 0 && b[i+6] == 8 && b[i+7] == 0 {
			w = int(binary.LittleEndian.Uint16(b[i+8:]))
			h = int(binary.LittleEndian.Uint16(b[i+10:]))
			if w > 0 && h > 0 {
				return w, h, true
			}
		}
	}
	return 0, 0, false
}

// netChannels finds the client network data (CS_NET, [MS-RDPBCGR]
// 2.2.1.3.4) in a Connect Initial and returns the names of the static
// channels it asks for, in order: a player must ask for as many, in the same
// places, for the server's channel IDs to mean the same to it.
func netChannels(b []byte) []string {
	for i := 0; i+8 <= len(b); i++ {
		// type 0xC003, length 8 + 12 per channel, channelCount (at most 31).
		if b[i] != 0x03 || b[i+1] != 0xc0 {
			continue
		}
		size := int(binary.LittleEndian.Uint16(b[i+2:]))
		count := int(binary.LittleEndian.Uint32(b[i+4:]))
		if count > 31 || size != 8+12*count || i+size > len(b) {
			continue
		}
		names := make([]string, 0, count)
		for k := range count {
			name := b[i+8+12*k : i+8+12*k+8]
			if n := bytes.IndexByte(name, 0); n >= 0 {
				name = name[:n]
			}
			names = append(names, string(name))
		}
		return names
	}
	return nil
}

// Client Info flags ([MS-RDPBCGR] 2.2.1.11.1.1).
const infoUnicode = 0x00000010

// tsTimeZoneLen is the size of TS_TIME_ZONE_INFORMATION.
const tsTimeZoneLen = 172

// redactClientInfo zeroes the password of a TS_INFO_PACKET and the
// auto-reconnect cookie of its extended info, in place. It reports false
// if the packet's fixed part or strings do not fit in b.
func redactClientInfo(b []byte) bool {
	if len(b) < 18 {
		return false
	}
	u16 := func(at int) int { return int(binary.LittleEndian.Uint16(b[at:])) }
	nul := 1
	if binary.LittleEndian.Uint32(b[4:])&infoUnicode != 0 {
		nul = 2
	}
	cbDomain, cbUser, cbPassword, cbShell, cbDir := u16(8), u16(10), u16(12), u16(14), u16(16)
	off := 18 + cbDomain + nul + cbUser + nul
	if off+cbPassword+nul > len(b) {
		return false
	}
	clear(b[off : off+cbPassword])
	off += cbPassword + nul + cbShell + nul + cbDir + nul
	if off > len(b) {
		return false
	}
	// TS_EXTENDED_INFO_PACKET, optional: family, cbClientAddress, address,
	// cbClientDir, dir, time zone, session ID, performance flags,
	// cbAutoReconnectCookie, cookie, ...
	ext := b[off:]
	if len(ext) == 0 {
		return true
	}
	if len(ext) < 4 {
		clear(ext)
		return true
	}
	at := 4 + int(binary.LittleEndian.Uint16(ext[2:]))
	if at+2 > len(ext) {
		clear(ext)
		return true
	}
	at += 2 + int(binary.LittleEndian.Uint16(ext[at:]))
	at += tsTimeZoneLen + 4 + 4
	if at == len(ext) {
		return true
	}
	if at+2 > len(ext) {
		clear(ext)
		return true
	}
	n := int(binary.LittleEndian.Uint16(ext[at:]))
	at += 2
	if at+n > len(ext) {
		clear(ext[at-2:])
		return true
	}
	clear(ext[at : at+n])
	return true
}

// Slow-path server PDUs ([MS-RDPBCGR] 2.2.8.1.1.1.1, 2.2.10.1).
const (
	mcsSendDataIndication = 26
	pduTypeData           = 7
	pduType2SaveSession   = 0x26
	infoTypeLogonExtended = 3
	logonExAutoReconnect  = 1
	packetCompressed      = 0x20
	arcPacketLen          = 28
)

// redactSaveSessionInfo zeroes, in a server's TPKT PDU, the auto-reconnect
// random of a Save Session Info PDU (logon info extended, with the
// ARC_SC_PRIVATE_PACKET): with it, a client could reconnect to the session
// without credentials. A Save Session Info PDU that is compressed or does not
// parse has its whole payload zeroed. Other PDUs are left alone.
func redactSaveSessionInfo(pdu []byte) {
	if len(pdu) < 8 || pdu[4] != 2 || pdu[5] != 0xf0 {
		return
	}
	mcs := pdu[7:]
	if mcs[0]>>2 != mcsSendDataIndication || len(mcs) < 8 {
		return
	}
	off := 7
	if mcs[6]&0x80 != 0 {
		off = 8
	}
	// Share Control Header (6) + Share Data Header (12), no security
	// header with TLS.
	sc := mcs[off:]
	if len(sc) < 18 || binary.LittleEndian.Uint16(sc[2:])&0xf != pduTypeData || sc[14] != pduType2SaveSession {
		return
	}
	body := sc[18:]
	if sc[15]&packetCompressed != 0 || len(body) < 4 {
		clear(body)
		return
	}
	if binary.LittleEndian.Uint32(body) != infoTypeLogonExtended {
		return // plain logon info: names, no secret
	}
	// infoType (4), Length (2), FieldsPresent (4), cbFieldData (4), ARC_SC_PRIVATE_PACKET:
	// cbLen (4), Version (4), LogonId (4), ArcRandomBits (16).
	if len(body) < 14 {
		clear(body[4:])
		return
	}
	if binary.LittleEndian.Uint32(body[6:])&logonExAutoReconnect == 0 {
		return
	}
	arc := body[14:]
	if len(arc) < arcPacketLen {
		clear(body[4:])
		return
	}
	clear(arc[12:arcPacketLen])
}
