package webrdp

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"time"
	"unicode/utf16"
)

// unicodeInput is the fast-path input PDUs ([MS-RDPBCGR] 2.2.8.1.2) that a
// client in unicode keyboard mode sends for text: one
// TS_FP_UNICODE_KEYBOARD_EVENT pressed and one released per UTF-16 code
// unit, at most 14 events per PDU (numEvents has 4 bits).
func unicodeInput(text string) []byte {
	const (
		eventUnicode = 0x4 << 5 // FASTPATH_INPUT_EVENT_UNICODE in the event header's top 3 bits
		release      = 0x01     // FASTPATH_INPUT_KBDFLAGS_RELEASE
	)
	units := utf16.Encode([]rune(text))
	var out []byte
	for len(units) > 0 {
		n := min(len(units), 7)
		var events []byte
		for _, u := range units[:n] {
			for _, flags := range []byte{0, release} {
				events = append(events, eventUnicode|flags)
				events = binary.LittleEndian.AppendUint16(events, u)
			}
		}
		units = units[n:]
		// fpInputHeader: action FASTPATH (0), numEvents, no encryption;
		// then a one-byte length (the whole PDU, under 0x80).
		out = append(out, byte(len(events)/3)<<2, byte(2+len(events)))
		out = append(out, events...)
	}
	return out
}

// TestGatewayPassesUnicodeInput: the characters a browser in unicode
// keyboard mode sends (fast-path unicode keyboard events) reach the server
// byte for byte, whether the role allows the clipboard or not (the filter
// of the clipboard's channel rewrites the Connect Initial and nothing
// after it), over IPv4 and IPv6.
func TestGatewayPassesUnicodeInput(t *testing.T) {
	input := unicodeInput("é ß € ü ñ 中 Ω @ ê\r")
	// The test server echoes what it receives with ASCII letters upper-
	// cased; these events hold none, so their echo is the input unchanged.
	for _, c := range input {
		if 'a' <= c && c <= 'z' {
			t.Fatalf("the input holds the byte %q, which the echo would change", c)
		}
	}
	for _, network := range []string{"tcp4", "tcp6"} {
		for _, ticket := range []string{"good", "no-clipboard"} {
			t.Run(network+"/"+ticket, func(t *testing.T) {
				srv := newRDPServer(t, network, modeTLS)
				g := newGateway(t, srv, nil)
				g.pin(srv)
				if resp := g.send(request(ticket, anyTLS)); resp.Error != nil {
					t.Fatalf("answer: %+v", resp.Error)
				}
				stream := input
				if ticket == "no-clipboard" {
					// The filter wants the Connect Initial first; input follows.
					ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("rdpsnd")))
					stream = append(ci, input...)
				}
				go g.page.Write(stream)
				echo := make([]byte, len(stream))
				g.page.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(g.page, echo); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(echo, asciiUpper(stream)) {
					t.Errorf("the server received\n% x\nwant\n% x", echo, asciiUpper(stream))
				}
				if got := echo[len(stream)-len(input):]; !bytes.Equal(got, input) {
					t.Errorf("the server received\n% x\nwant\n% x", got, input)
				}
				g.page.Close()
				g.wait()
			})
		}
	}
}
