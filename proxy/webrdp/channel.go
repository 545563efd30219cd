package webrdp

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"go.uber.org/zap"
)

// clipConn is one side of a desktop's relay with its clipboard channel
// read: Read returns what that side sent, framed into PDUs (TPKT or
// fast-path) once the MCS Connect Initial is due, with the clipboard
// channel's messages handed to the clipGate; Write carries what the other
// side sent, and between two of its PDUs, the messages the gate answers
// this side with.
//
// Reads of PDUs on other channels, and of fast-path PDUs, are cut from the
// stream by their lengths alone: their bytes are read straight into the
// caller's buffer once their header has been seen. Only a clipboard TPKT
// is held whole (at most 64 KiB), and a clipboard message the gate reads
// whole (a format list, a list of files: maxClipMessage).
type clipConn struct {
	net.Conn
	from  side
	gate  *clipGate
	chans *channels
	peer  *clipConn // the other side: what it reads is written here

	// Read side, used by one goroutine (the relay's direction).
	buf      []byte // input read ahead: buf[r:w]
	r, w     int
	out      []byte // output not yet returned
	outEnds  bool   // out ends a PDU
	passLeft int    // bytes of the current PDU to pass unread
	framed   bool   // past the negotiation: the stream is PDUs
	produced int64  // bytes returned by Read
	// boundary is the offset in what Read returned of the end of the
	// last whole PDU: the other side's Write may insert PDUs there.
	boundary atomic.Int64
	err      error
	msg      message
	tmpl     [6]byte // the MCS header of this side's last clipboard PDU: choice, initiator, priority
	tmplSet  atomic.Bool
	tmplMu   sync.Mutex

	// Write side.
	wmu     sync.Mutex // guards written and serializes writes
	written int64
}

// channels is what both sides learn of the MCS channels.
type channels struct {
	ciSeen    atomic.Bool  // the Connect Initial has been read
	clipIndex int          // cliprdr's place in the client's list, -1 none (set before ciSeen)
	clipID    atomic.Int32 // its MCS channel ID, 0 until the Connect Response
}

// message is the clipboard message a side is sending, chunk by chunk.
type message struct {
	act   msgAction
	left  int // bytes still to come
	buf   []byte
	file  *fileState
	first bool // the next chunk is the message's first
	flags uint32
}

// MCS DomainMCSPDU choices ([T.125]) of the PDUs that carry channel data.
const (
	mcsSendDataRequest    = 25
	mcsSendDataIndication = 26
	maxChunk              = 1600 // CHANNEL_CHUNK_LENGTH
)

// newClipConns wraps the two sides of a desktop's relay.
func newClipConns(c, s net.Conn, gate *clipGate) (*clipConn, *clipConn) {
	ch := &channels{clipIndex: -1}
	cc := &clipConn{Conn: c, from: client, gate: gate, chans: ch, buf: make([]byte, 0, 1<<16+1024)}
	sc := &clipConn{Conn: s, from: server, gate: gate, chans: ch, buf: make([]byte, 0, 1<<16+1024)}
	cc.peer, sc.peer = sc, cc
	cc.boundary.Store(-1)
	sc.boundary.Store(-1)
	return cc, sc
}

// halfClosable is a clipConn over a connection with a half-close (the
// server's TLS connection), which the relay uses at an end of stream; a
// clipConn without one (the page's WebSocket) must not seem to have it, or
// the relay would take a whole close for a half-close.
type halfClosable struct{ *clipConn }

func (c halfClosable) CloseWrite() error {
	return c.Conn.(interface{ CloseWrite() error }).CloseWrite()
}

// conn is c as the relay should see it: with CloseWrite only if the
// connection under it has one.
func (c *clipConn) conn() net.Conn {
	if _, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return halfClosable{c}
	}
	return c
}

func (c *clipConn) Read(p []byte) (int, error) {
	for {
		if len(c.out) > 0 {
			n := copy(p, c.out)
			c.out = c.out[n:]
			c.produced += int64(n)
			if len(c.out) == 0 && c.outEnds {
				c.boundary.Store(c.produced)
			}
			return n, nil
		}
		if c.err != nil {
			return 0, c.err
		}
		if c.passLeft > 0 && c.r == c.w {
			// The body of a PDU that passes: straight into p.
			n, err := c.Conn.Read(p[:min(len(p), c.passLeft)])
			c.passLeft -= n
			c.produced += int64(n)
			if c.passLeft == 0 && c.framed {
				c.boundary.Store(c.produced)
			}
			if err == io.EOF && c.passLeft > 0 && c.framed {
				err = io.ErrUnexpectedEOF
			}
			return n, err
		}
		if c.r < c.w {
			r, pass := c.r, c.passLeft
			if err := c.step(); err != nil {
				c.err = err
				continue
			}
			if len(c.out) > 0 || c.r != r || c.passLeft != pass {
				continue
			}
		}
		if err := c.fill(); err != nil {
			if c.r < c.w && err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.err = err
		}
	}
}

// fill reads more of the side's stream into buf.
func (c *clipConn) fill() error {
	if c.r > 0 {
		n := copy(c.buf[:cap(c.buf)], c.buf[c.r:c.w])
		c.r, c.w = 0, n
	}
	if c.w == cap(c.buf) {
		return fmt.Errorf("%w: a PDU larger than %d bytes", ErrClipboardStream, cap(c.buf))
	}
	n, err := c.Conn.Read(c.buf[c.w:cap(c.buf)])
	c.w += n
	if n > 0 {
		return nil
	}
	return err
}

// step handles what buf holds from its start: it sets out, consumes input,
// or leaves both for more input (the header or PDU is not whole yet).
func (c *clipConn) step() error {
	in := c.buf[c.r:c.w]
	if c.passLeft > 0 {
		k := min(c.passLeft, len(in))
		c.out, c.outEnds = in[:k], c.passLeft == k && c.framed
		c.r += k
		c.passLeft -= k
		return nil
	}
	if !c.framed {
		return c.negotiation(in)
	}
	n, err := pduLen(in)
	if err != nil || n == 0 {
		return err
	}
	if in[0] != 3 {
		c.passLeft = n // fast-path: no channel data
		return nil
	}
	if len(in) < min(n, 16) {
		return nil
	}
	if !c.isClip(in[:min(n, 16)]) {
		c.passLeft = n
		return nil
	}
	if len(in) < n {
		return nil
	}
	c.r += n
	return c.clipPDU(in[:n])
}

// negotiation handles the stream before the MCS Connect Initial: the
// client's CredSSP messages pass by their DER lengths, then its Connect
// Initial is read for the clipboard channel's place in its list. The
// server's bytes pass as they come until the client has sent its Connect
// Initial: the server's answer to it, the Connect Response, is the first
// thing the server sends after that (all that it sent before, the client
// had to receive before sending the Connect Initial).
func (c *clipConn) negotiation(in []byte) error {
	if c.from == server {
		if !c.chans.ciSeen.Load() {
			c.out, c.outEnds = in, false
			c.r = c.w
			return nil
		}
		n, err := pduLen(in)
		if err != nil || n == 0 || len(in) < n {
			return err
		}
		if in[0] != 3 {
			return fmt.Errorf("%w: the server's answer to the Connect Initial is not a TPKT", ErrClipboardStream)
		}
		if err := c.connectResponse(in[:n]); err != nil {
			return err
		}
		c.framed = true
		c.out, c.outEnds = in[:n], true
		c.r += n
		return nil
	}
	switch in[0] {
	case 0x30:
		l, ok, bad := derSize(in)
		if bad {
			return fmt.Errorf("%w: a CredSSP message with a bad length", ErrNoConnectInitial)
		}
		if ok {
			c.passLeft = l
		}
		return nil
	case 0x03:
		n, err := pduLen(in)
		if err != nil || n == 0 || len(in) < n {
			return err
		}
		idx, err := clipboardIndex(in[:n])
		if err != nil {
			return err
		}
		c.chans.clipIndex = idx
		c.chans.ciSeen.Store(true)
		c.framed = true
		c.out, c.outEnds = in[:n], true
		c.r += n
		return nil
	}
	return fmt.Errorf("%w: the client sent 0x%02x", ErrNoConnectInitial, in[0])
}

// derSize is the whole size of the DER element at the start of b.
func derSize(b []byte) (n int, ok, bad bool) {
	if len(b) < 2 {
		return 0, false, false
	}
	if b[1] < 0x80 {
		return 2 + int(b[1]), true, false
	}
	k := int(b[1] & 0x7f)
	if k == 0 || k > 3 {
		return 0, false, true
	}
	if len(b) < 2+k {
		return 0, false, false
	}
	for _, x := range b[2 : 2+k] {
		n = n<<8 | int(x)
	}
	return 2 + k + n, true, false
}

// pduLen is the length of the TPKT or fast-path PDU at the start of b, 0
// when more bytes are needed to tell.
func pduLen(b []byte) (int, error) {
	switch {
	case len(b) == 0:
		return 0, nil
	case b[0] == 3:
		if len(b) < 4 {
			return 0, nil
		}
		n := int(binary.BigEndian.Uint16(b[2:]))
		if n < 7 {
			return 0, fmt.Errorf("%w: a TPKT of %d bytes", ErrClipboardStream, n)
		}
		return n, nil
	case b[0]&3 == 0:
		if len(b) < 2 {
			return 0, nil
		}
		if b[1]&0x80 == 0 {
			if b[1] < 2 {
				return 0, fmt.Errorf("%w: a fast-path PDU of %d bytes", ErrClipboardStream, b[1])
			}
			return int(b[1]), nil
		}
		if len(b) < 3 {
			return 0, nil
		}
		n := int(b[1]&0x7f)<<8 | int(b[2])
		if n < 3 {
			return 0, fmt.Errorf("%w: a fast-path PDU of %d bytes", ErrClipboardStream, n)
		}
		return n, nil
	}
	return 0, fmt.Errorf("%w: 0x%02x starts neither a TPKT nor a fast-path PDU", ErrClipboardStream, b[0])
}

// isClip says whether the TPKT starting with h (its first 16 bytes, or all
// of it) is channel data on the clipboard channel.
func (c *clipConn) isClip(h []byte) bool {
	id := c.chans.clipID.Load()
	if id == 0 || len(h) < 13 || !bytes.Equal(h[4:7], []byte{0x02, 0xf0, 0x80}) {
		return false
	}
	choice := h[7] >> 2
	return (choice == mcsSendDataRequest || choice == mcsSendDataIndication) && int32(binary.BigEndian.Uint16(h[10:])) == id
}

// clipPDU handles a whole TPKT of the clipboard channel.
func (c *clipConn) clipPDU(pkt []byte) error {
	if len(pkt) < 14 {
		return fmt.Errorf("%w: a PDU of %d bytes", ErrClipboardStream, len(pkt))
	}
	size, at := int(pkt[13]), 14
	if size&0x80 != 0 {
		if len(pkt) < 15 {
			return fmt.Errorf("%w: a PDU cut short", ErrClipboardStream)
		}
		size, at = (size&0x3f)<<8|int(pkt[14]), 15
	}
	if at+size != len(pkt) || size < 8 {
		return fmt.Errorf("%w: channel data of %d bytes in a PDU of %d", ErrClipboardStream, size, len(pkt))
	}
	c.tmplMu.Lock()
	c.tmpl = [6]byte{pkt[7], pkt[8], pkt[9], pkt[12]}
	c.tmplMu.Unlock()
	c.tmplSet.Store(true)
	ud := pkt[at:]
	total := int(binary.LittleEndian.Uint32(ud))
	flags := binary.LittleEndian.Uint32(ud[4:])
	chunk := ud[8:]
	if flags&channelFlagCompressed != 0 {
		return fmt.Errorf("%w: compressed channel data, which the bastion cannot read", ErrClipboardStream)
	}
	m := &c.msg
	if flags&channelFlagFirst != 0 {
		if total < clipHeaderSize || len(chunk) < clipHeaderSize || total > 1<<30 {
			return fmt.Errorf("%w: a message of %d bytes whose first chunk has %d", ErrClipboardStream, total, len(chunk))
		}
		*m = message{left: total, first: true, flags: flags &^ (channelFlagFirst | channelFlagLast)}
		m.act, m.file = c.gate.begin(c.from, chunk)
		m.buf = m.buf[:0]
	} else if m.left == 0 {
		return fmt.Errorf("%w: a chunk outside any message", ErrClipboardStream)
	}
	if len(chunk) > m.left {
		return fmt.Errorf("%w: chunks longer than their message", ErrClipboardStream)
	}
	m.left -= len(chunk)
	last := flags&channelFlagLast != 0
	if last != (m.left == 0) {
		return fmt.Errorf("%w: a message whose chunks do not add up to its length", ErrClipboardStream)
	}
	body := chunk
	if m.first {
		body = chunk[clipHeaderSize:]
	}
	switch m.act {
	case actPass:
		c.out, c.outEnds = pkt, true
	case actHash:
		if m.first {
			body = body[min(4, len(body)):] // the stream ID
		}
		c.gate.hashed(m.file, body)
		if last {
			c.gate.hashEnd(c.from, m.file)
		}
		c.out, c.outEnds = pkt, true
	case actInspect, actRewrite:
		if len(m.buf)+len(chunk) > maxClipMessage {
			return fmt.Errorf("%w: a clipboard message over %d bytes", ErrClipboardStream, maxClipMessage)
		}
		m.buf = append(m.buf, chunk...)
		if m.act == actInspect {
			c.out, c.outEnds = pkt, true
		}
		if last {
			msg := m.buf
			if dl := clipHeaderSize + int(binary.LittleEndian.Uint32(msg[4:])); dl >= clipHeaderSize && dl < len(msg) {
				msg = msg[:dl]
			}
			nm, err := c.gate.whole(c.from, msg)
			if err != nil {
				return err
			}
			if m.act == actRewrite {
				c.out, c.outEnds = c.frame(nm, m.flags, &c.tmpl), true
			}
			m.buf = nil
		}
	case actDrop:
	}
	m.first = false
	c.flushInjected()
	return nil
}

// frame cuts msg into the MCS PDUs of channel data that carry it, with the
// MCS header tmpl and channel flags.
func (c *clipConn) frame(msg []byte, flags uint32, tmpl *[6]byte) []byte {
	c.tmplMu.Lock()
	h := *tmpl
	c.tmplMu.Unlock()
	id := uint16(c.chans.clipID.Load())
	var out []byte
	for at := 0; at < len(msg) || at == 0; {
		k := min(maxChunk, len(msg)-at)
		f := flags
		if at == 0 {
			f |= channelFlagFirst
		}
		if at+k == len(msg) {
			f |= channelFlagLast
		}
		udLen := 8 + k
		pkt := []byte{3, 0, 0, 0, 0x02, 0xf0, 0x80, h[0], h[1], h[2], byte(id >> 8), byte(id), h[3]}
		pkt = append(pkt, 0x80|byte(udLen>>8), byte(udLen))
		pkt = binary.LittleEndian.AppendUint32(pkt, uint32(len(msg)))
		pkt = binary.LittleEndian.AppendUint32(pkt, f)
		pkt = append(pkt, msg[at:at+k]...)
		binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
		out = append(out, pkt...)
		at += k
		if k == 0 {
			break
		}
	}
	return out
}

// flushInjected writes to this side the messages the gate queued for it,
// if the other side's PDUs written here end at a PDU's end; otherwise the
// next Write that reaches one does.
func (c *clipConn) flushInjected() {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.flushLocked()
}

func (c *clipConn) flushLocked() {
	if c.written != c.peer.boundary.Load() {
		return
	}
	q := c.gate.takeInjected(c.from)
	if len(q) == 0 {
		return
	}
	// The PDUs go as the other side's would: its MCS header.
	tmpl := &c.peer.tmpl
	if !c.peer.tmplSet.Load() {
		choice := byte(mcsSendDataIndication << 2)
		if c.from == server {
			choice = mcsSendDataRequest << 2
		}
		tmpl = &[6]byte{choice, 0, 0, 0x70}
	}
	for _, m := range q {
		if _, err := c.Conn.Write(c.peer.frame(m, 0, tmpl)); err != nil {
			return // the relay's next write sees it
		}
	}
}

func (c *clipConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	n, err := c.Conn.Write(p)
	c.written += int64(n)
	if err == nil && c.gate.pending(c.from) {
		c.flushLocked()
	}
	return n, err
}

// clipboardIndex reads the client's MCS Connect Initial (a whole TPKT) for
// the place of the clipboard channel in its list of channels: -1 for none.
func clipboardIndex(pkt []byte) (int, error) {
	if len(pkt) < 9 || !bytes.Equal(pkt[4:7], []byte{0x02, 0xf0, 0x80}) || pkt[7] != 0x7f || pkt[8] != 0x65 {
		return -1, fmt.Errorf("%w: the first TPKT is not an MCS Connect Initial", ErrNoConnectInitial)
	}
	for i := 9; i+4 <= len(pkt); i++ {
		if pkt[i] != 0x01 || pkt[i+1] != 0xc0 {
			continue
		}
		network, ok := blockChain(pkt, i)
		if !ok {
			continue
		}
		if network < 0 {
			return -1, nil
		}
		count := int(binary.LittleEndian.Uint32(pkt[network+4:]))
		if size := int(binary.LittleEndian.Uint16(pkt[network+2:])); count > 31 || size != 8+12*count {
			return -1, fmt.Errorf("%w: its network data lists %d channels in %d bytes", ErrNoConnectInitial, count, size)
		}
		for k := range count {
			name := pkt[network+8+12*k : network+8+12*k+8]
			if bytes.EqualFold(bytes.TrimRight(name, "\x00"), clipboardChannel) {
				return k, nil
			}
		}
		return -1, nil
	}
	return -1, fmt.Errorf("%w: no client data blocks in its Connect Initial", ErrNoConnectInitial)
}

// connectResponse reads the server's MCS Connect Response for the ID of
// the clipboard channel: its network data (SC_NET, [MS-RDPBCGR] 2.2.1.4.4)
// lists the channels' IDs in the order the client asked for them.
func (c *clipConn) connectResponse(pkt []byte) error {
	idx := c.chans.clipIndex
	if idx < 0 {
		return nil
	}
	for i := 7; i+4 <= len(pkt); i++ {
		if pkt[i] != 0x01 || pkt[i+1] != 0x0c {
			continue
		}
		at, ok := i, true
		network := -1
		for at != len(pkt) {
			if at+4 > len(pkt) {
				ok = false
				break
			}
			typ := binary.LittleEndian.Uint16(pkt[at:])
			size := int(binary.LittleEndian.Uint16(pkt[at+2:]))
			if typ&0xff00 != 0x0c00 || size < 4 || at+size > len(pkt) {
				ok = false
				break
			}
			if typ == 0x0c03 {
				network = at
			}
			at += size
		}
		if !ok || network < 0 {
			continue
		}
		size := int(binary.LittleEndian.Uint16(pkt[network+2:]))
		count := int(binary.LittleEndian.Uint16(pkt[network+6:]))
		if size < 8+2*count || idx >= count {
			return fmt.Errorf("%w: the server's network data has %d channels", ErrClipboardStream, count)
		}
		id := binary.LittleEndian.Uint16(pkt[network+8+2*idx:])
		if id == 0 {
			return fmt.Errorf("%w: the server gave the clipboard channel no ID", ErrClipboardStream)
		}
		c.chans.clipID.Store(int32(id))
		return nil
	}
	return fmt.Errorf("%w: no server network data in the Connect Response", ErrClipboardStream)
}

// clipboardFiles puts the clipboard's file filter (clipGate) on a desktop's
// two sides, when its grant allows the clipboard and files are to be
// refused or audited; done audits the files cut off by the session's end.
// It goes outside the recording's tap: the recording keeps what each side
// sent.
func (g *gateway) clipboardFiles(sess Session, grant Grant, client, server net.Conn) (c, s net.Conn, done func()) {
	if !grant.Clipboard || grant.FileTransfer && g.p.FileTransfer == nil {
		return client, server, func() {}
	}
	gate := newClipGate(grant.FileTransfer, func(ev FileEvent) {
		if ev.Refused {
			g.log.Info("rdp file transfer refused: the role disables it", zap.String("direction", ev.Direction), zap.String("name", ev.Name))
		}
		if g.p.FileTransfer != nil {
			g.p.FileTransfer(sess, ev)
		}
	})
	cc, sc := newClipConns(client, server, gate)
	return cc.conn(), sc.conn(), gate.close
}
