package webrdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
)

// The clipboard of a desktop whose role disables it is refused at the
// gateway, not left to the page: the client's MCS Connect Initial lists the
// static virtual channels it wants, and the gateway renames "cliprdr" in
// that list before the server reads it, so that the server never opens a
// clipboard channel whatever the client does with it. The name keeps its
// length: no other byte of the stream moves.

// clipboardChannel is the static virtual channel of the RDP clipboard
// ([MS-RDPECLIP]); noChannel replaces its name.
var (
	clipboardChannel = []byte("cliprdr")
	noChannel        = [8]byte{'n', 'o', 'c', 'l', 'i', 'p'}
)

// AsksClipboard says whether channels, the static channels a client asked
// for, include the clipboard's (under its name, or the one the gateway
// gave it when a role disables the clipboard).
func AsksClipboard(channels []string) bool {
	for _, c := range channels {
		if strings.EqualFold(c, string(clipboardChannel)) || c == string(bytes.TrimRight(noChannel[:], "\x00")) {
			return true
		}
	}
	return false
}

// maxHandshakeMessage bounds a message of the client before its MCS
// Connect Initial (a CredSSP exchange, then that PDU).
const maxHandshakeMessage = 64 << 10

// ErrNoConnectInitial is a client stream in which the gateway cannot find
// the MCS Connect Initial it must filter: the session is ended rather than
// run with a clipboard its role does not allow.
var ErrNoConnectInitial = errors.New("webrdp: no MCS Connect Initial where one was due")

// noClipboard is the client side of a desktop without a clipboard: it
// passes the client's CredSSP messages through, rewrites its MCS Connect
// Initial, then gets out of the way. Reads return the same bytes, in the
// same number, as the client sent, but for the channel's name.
type noClipboard struct {
	net.Conn
	pending []byte // read ahead and rewritten, not yet returned
	done    bool   // the Connect Initial has gone through
	// removed is called once with the number of channels renamed.
	removed func(n int)
}

func (c *noClipboard) Read(p []byte) (int, error) {
	if len(c.pending) == 0 && !c.done {
		msg, err := c.next()
		if err != nil {
			return 0, err
		}
		c.pending = msg
	}
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// next reads the client's next whole message: a CredSSP TSRequest (DER),
// passed as it is, or the TPKT that must be the MCS Connect Initial,
// rewritten. The stream may end cleanly only between messages.
func (c *noClipboard) next() ([]byte, error) {
	var head [4]byte
	if _, err := io.ReadFull(c.Conn, head[:2]); err != nil {
		return nil, err
	}
	msg, err := c.rest(head)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return msg, err
}

// rest reads the message whose first two bytes are in head.
func (c *noClipboard) rest(head [4]byte) ([]byte, error) {
	switch head[0] {
	case 0x30: // a CredSSP TSRequest: DER SEQUENCE
		return c.readDER(head[:2])
	case 0x03: // TPKT
		if _, err := io.ReadFull(c.Conn, head[2:]); err != nil {
			return nil, err
		}
		size := int(binary.BigEndian.Uint16(head[2:]))
		if size < 7 || size > maxHandshakeMessage {
			return nil, fmt.Errorf("%w: a TPKT of %d bytes", ErrNoConnectInitial, size)
		}
		msg := make([]byte, size)
		copy(msg, head[:])
		if _, err := io.ReadFull(c.Conn, msg[4:]); err != nil {
			return nil, err
		}
		n, err := renameClipboard(msg)
		if err != nil {
			return nil, err
		}
		c.done = true
		if c.removed != nil {
			c.removed(n)
		}
		return msg, nil
	}
	return nil, fmt.Errorf("%w: the client sent 0x%02x", ErrNoConnectInitial, head[0])
}

// readDER reads the rest of a DER element whose first two bytes are head.
func (c *noClipboard) readDER(head []byte) ([]byte, error) {
	size, lenBytes := int(head[1]), 0
	if head[1]&0x80 != 0 {
		lenBytes = int(head[1] & 0x7f)
		if lenBytes == 0 || lenBytes > 3 {
			return nil, fmt.Errorf("%w: a CredSSP message with a length of %d bytes", ErrNoConnectInitial, lenBytes)
		}
		l := make([]byte, lenBytes)
		if _, err := io.ReadFull(c.Conn, l); err != nil {
			return nil, err
		}
		size = 0
		for _, b := range l {
			size = size<<8 | int(b)
		}
		head = append(append([]byte(nil), head...), l...)
	}
	if len(head)+size > maxHandshakeMessage {
		return nil, fmt.Errorf("%w: a CredSSP message of %d bytes", ErrNoConnectInitial, size)
	}
	msg := make([]byte, len(head)+size)
	copy(msg, head)
	if _, err := io.ReadFull(c.Conn, msg[len(head):]); err != nil {
		return nil, err
	}
	return msg, nil
}

// renameClipboard renames the clipboard channel in pkt, a TPKT that must
// hold an MCS Connect Initial ([MS-RDPBCGR] 2.2.1.3), and returns how many
// channels it renamed. The client's data blocks end the PDU: the gateway
// finds the chain of block headers, from the core data (CS_CORE) on, whose
// lengths lead exactly to its end, and in it the network data (CS_NET,
// 2.2.1.3.4), whose length must be that of its channel count. Without such
// a chain the stream is not what it must be, and is refused.
func renameClipboard(pkt []byte) (int, error) {
	// TPKT (4), X.224 Data TPDU (02 f0 80), then BER: 7f 65 is the
	// Connect-Initial application tag.
	if len(pkt) < 9 || !bytes.Equal(pkt[4:7], []byte{0x02, 0xf0, 0x80}) || pkt[7] != 0x7f || pkt[8] != 0x65 {
		return 0, fmt.Errorf("%w: the first TPKT is not an MCS Connect Initial", ErrNoConnectInitial)
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
			return 0, nil // no channel asked for
		}
		count := int(binary.LittleEndian.Uint32(pkt[network+4:]))
		if size := int(binary.LittleEndian.Uint16(pkt[network+2:])); count > 31 || size != 8+12*count {
			return 0, fmt.Errorf("%w: its network data lists %d channels in %d bytes", ErrNoConnectInitial, count, size)
		}
		renamed := 0
		for k := range count {
			name := pkt[network+8+12*k : network+8+12*k+8]
			if bytes.EqualFold(bytes.TrimRight(name, "\x00"), clipboardChannel) {
				copy(name, noChannel[:])
				renamed++
			}
		}
		return renamed, nil
	}
	return 0, fmt.Errorf("%w: no client data blocks in its Connect Initial", ErrNoConnectInitial)
}

// blockChain walks the client data blocks of pkt from start: each header
// is a type (0xc0NN) and a length. It reports whether they end exactly at
// the end of pkt, and where the network data block is (-1: none).
func blockChain(pkt []byte, start int) (network int, ok bool) {
	network = -1
	for at := start; at != len(pkt); {
		if at+4 > len(pkt) {
			return -1, false
		}
		typ := binary.LittleEndian.Uint16(pkt[at:])
		size := int(binary.LittleEndian.Uint16(pkt[at+2:]))
		if typ&0xff00 != 0xc000 || size < 4 || at+size > len(pkt) {
			return -1, false
		}
		if typ == 0xc003 {
			if size < 8 {
				return -1, false
			}
			network = at
		}
		at += size
	}
	return network, true
}
