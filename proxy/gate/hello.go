package gate

import (
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/cryptobyte"
)

// clientHello is what the gate needs from a TLS ClientHello, read before any
// TLS state exists.
type clientHello struct {
	serverName string // the host_name of the server_name extension, "" if none
	alpn       []string
}

// maxHelloBytes bounds the ClientHello the gate reads. Real ones are a few
// hundred bytes, about 1.8 KiB with a post-quantum key share; a peer that
// announces more is not a browser or a tunnel client.
const maxHelloBytes = 16 << 10

// maxHelloRecords bounds the records a ClientHello may be split into (real
// clients use one): a hello dribbled out a byte per record is an attack.
const maxHelloRecords = 32

var errNotTLS = errors.New("not a TLS ClientHello")

// readClientHello reads TLS records from r until it holds one whole
// ClientHello handshake message (which may span several records), and
// returns every byte it read, for the TLS stack to read again, with the
// parsed hello. It reads nothing past the records the hello needs.
func readClientHello(r io.Reader) ([]byte, clientHello, error) {
	var raw, msg []byte
	for records := 1; ; records++ {
		if records > maxHelloRecords {
			return raw, clientHello{}, fmt.Errorf("ClientHello in over %d records", maxHelloRecords)
		}
		var hdr [5]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return raw, clientHello{}, err
		}
		raw = append(raw, hdr[:]...)
		n := int(hdr[3])<<8 | int(hdr[4])
		if hdr[0] != 22 || hdr[1] != 3 || n == 0 || n > 1<<14 { // handshake, TLS 1.x, RFC 8446 5.1 limits
			return raw, clientHello{}, errNotTLS
		}
		if len(msg)+n > maxHelloBytes {
			return raw, clientHello{}, fmt.Errorf("ClientHello over %d bytes", maxHelloBytes)
		}
		frag := make([]byte, n)
		if _, err := io.ReadFull(r, frag); err != nil {
			return raw, clientHello{}, err
		}
		raw = append(raw, frag...)
		msg = append(msg, frag...)
		if len(msg) < 4 {
			continue
		}
		if msg[0] != 1 { // client_hello
			return raw, clientHello{}, errNotTLS
		}
		body := int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3])
		if body > maxHelloBytes {
			return raw, clientHello{}, fmt.Errorf("ClientHello of %d bytes", body)
		}
		if len(msg) < 4+body {
			continue
		}
		if len(msg) > 4+body {
			// Another handshake message behind the hello in the same
			// flight is a protocol violation (RFC 8446 5.1).
			return raw, clientHello{}, errNotTLS
		}
		h, err := parseClientHello(msg[4:])
		return raw, h, err
	}
}

// parseClientHello parses the body of a ClientHello (RFC 8446 4.1.2).
func parseClientHello(body []byte) (clientHello, error) {
	s := cryptobyte.String(body)
	var (
		version           uint16
		random, sessionID []byte
		suites, comp      cryptobyte.String
	)
	if !s.ReadUint16(&version) || !s.ReadBytes(&random, 32) || !s.ReadUint8LengthPrefixed((*cryptobyte.String)(&sessionID)) ||
		!s.ReadUint16LengthPrefixed(&suites) || !s.ReadUint8LengthPrefixed(&comp) {
		return clientHello{}, errNotTLS
	}
	var h clientHello
	if s.Empty() {
		return h, nil // no extensions: no server name
	}
	var exts cryptobyte.String
	if !s.ReadUint16LengthPrefixed(&exts) || !s.Empty() {
		return clientHello{}, errNotTLS
	}
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return clientHello{}, errNotTLS
		}
		if seen[typ] {
			return clientHello{}, fmt.Errorf("%w: extension %d twice", errNotTLS, typ)
		}
		seen[typ] = true
		switch typ {
		case 0: // server_name (RFC 6066 3)
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
				return clientHello{}, errNotTLS
			}
			for !list.Empty() {
				var nameType uint8
				var name cryptobyte.String
				if !list.ReadUint8(&nameType) || !list.ReadUint16LengthPrefixed(&name) || len(name) == 0 {
					return clientHello{}, errNotTLS
				}
				if nameType == 0 && h.serverName == "" {
					h.serverName = string(name)
				}
			}
		case 16: // application_layer_protocol_negotiation (RFC 7301 3.1)
			var list cryptobyte.String
			if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
				return clientHello{}, errNotTLS
			}
			for !list.Empty() {
				var proto cryptobyte.String
				if !list.ReadUint8LengthPrefixed(&proto) || len(proto) == 0 {
					return clientHello{}, errNotTLS
				}
				h.alpn = append(h.alpn, string(proto))
			}
		}
	}
	return h, nil
}
