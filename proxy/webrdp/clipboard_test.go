package webrdp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// block is a client data block: type, length, body.
func block(typ uint16, body []byte) []byte {
	b := binary.LittleEndian.AppendUint16(nil, typ)
	b = binary.LittleEndian.AppendUint16(b, uint16(4+len(body)))
	return append(b, body...)
}

// networkData is a CS_NET body listing channels.
func networkData(names ...string) []byte {
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(names)))
	for _, n := range names {
		var name [8]byte
		copy(name[:], n)
		b = append(b, name[:]...)
		b = binary.LittleEndian.AppendUint32(b, 0x80800000)
	}
	return b
}

// connectInitial is a TPKT with an MCS Connect Initial whose client data
// blocks are blocks. The bytes before them stand for the BER and PER
// headers, with decoys: a CS_NET-like and a CS_CORE-like run that are not
// the chain.
func connectInitial(blocks ...[]byte) []byte {
	body := []byte{0x02, 0xf0, 0x80, 0x7f, 0x65, 0x82, 0x01, 0x00, 0x04, 0x01, 0x01, 0x04, 0x01, 0x01, 0x01, 0x01, 0xff,
		0x03, 0xc0, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, // decoy CS_NET with no channel
		0x01, 0xc0, 0x30, 0x00, // decoy CS_CORE whose length leads nowhere
		0x00, 0x05, 0x00, 0x14, 0x7c, 0x00, 0x01, 'D', 'u', 'c', 'a'}
	for _, b := range blocks {
		body = append(body, b...)
	}
	pkt := []byte{3, 0, 0, 0}
	binary.BigEndian.PutUint16(pkt[2:], uint16(4+len(body)))
	return append(pkt, body...)
}

func TestRenameClipboard(t *testing.T) {
	core := block(0xc001, bytes.Repeat([]byte{0x11}, 208))
	security := block(0xc002, make([]byte, 8))
	cluster := block(0xc004, make([]byte, 8))
	for _, c := range []struct {
		name    string
		pkt     []byte
		renamed int
		err     bool
	}{
		{"cliprdr among others", connectInitial(core, security, block(0xc003, networkData("rdpdr", "cliprdr", "drdynvc")), cluster), 1, false},
		{"upper case", connectInitial(core, block(0xc003, networkData("CLIPRDR")), security), 1, false},
		{"no clipboard asked", connectInitial(core, block(0xc003, networkData("rdpdr", "rdpsnd"))), 0, false},
		{"no channel at all", connectInitial(core, security), 0, false},
		{"a network block that lies about its count", connectInitial(core, block(0xc003, networkData("cliprdr")[:10])), 0, true},
		{"no block chain", connectInitial(core[:20]), 0, true},
		{"not a Connect Initial", append([]byte{3, 0, 0, 12, 0x02, 0xf0, 0x80, 0x7f, 0x66}, make([]byte, 3)...), 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := bytes.Clone(c.pkt)
			n, err := renameClipboard(c.pkt)
			if (err != nil) != c.err || err != nil && !errors.Is(err, ErrNoConnectInitial) || n != c.renamed {
				t.Fatalf("renamed %d, %v; want %d, error %v", n, err, c.renamed, c.err)
			}
			if len(c.pkt) != len(before) {
				t.Fatal("the length changed")
			}
			diff := 0
			for i := range c.pkt {
				if c.pkt[i] != before[i] {
					diff++
				}
			}
			if c.renamed == 0 && diff != 0 || c.renamed > 0 && (bytes.Contains(bytes.ToLower(c.pkt), []byte("cliprdr")) || diff > 8) {
				t.Errorf("%d bytes changed:\n% x\n% x", diff, before, c.pkt)
			}
			if c.renamed > 0 && (!bytes.Contains(c.pkt, []byte("rdpdr")) && strings.Contains(c.name, "others")) {
				t.Error("another channel was touched")
			}
		})
	}
}

// TestNoClipboardStream: CredSSP messages pass untouched, the Connect
// Initial is rewritten, what follows passes untouched, and every byte is
// returned once, in order, whatever the reads' sizes.
func TestNoClipboardStream(t *testing.T) {
	credssp := append([]byte{0x30, 0x82, 0x01, 0x00}, bytes.Repeat([]byte{0xab}, 256)...)
	short := append([]byte{0x30, 0x05}, 1, 2, 3, 4, 5)
	ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("cliprdr", "drdynvc")))
	after := []byte("\x03\x00\x00\x08\x02\xf0\x80\x28 fast-path and the rest")
	stream := bytes.Join([][]byte{credssp, short, ci, after}, nil)

	a, b := net.Pipe()
	defer a.Close()
	go func() {
		for i := 0; i < len(stream); i += 7 { // in pieces unrelated to the messages
			a.Write(stream[i:min(i+7, len(stream))])
		}
		a.Close()
	}()
	removed := -1
	f := &noClipboard{Conn: b, removed: func(n int) { removed = n }}
	got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return f.Read(p[:min(len(p), 5)]) }))
	if err != nil {
		t.Fatal(err)
	}
	want := bytes.Clone(stream)
	i := bytes.Index(want, []byte("cliprdr"))
	copy(want[i:], noChannel[:7])
	if !bytes.Equal(got, want) || removed != 1 {
		t.Errorf("removed %d; got\n% x\nwant\n% x", removed, got, want)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

// TestGatewayNoClipboard: with the clipboard disabled, the server never
// sees the client ask for it, and a client whose stream cannot be checked
// is cut off.
func TestGatewayNoClipboard(t *testing.T) {
	srv := newRDPServer(t, "tcp4", modeTLS)
	g := newGateway(t, srv, nil)
	g.pin(srv)
	if resp := g.send(request("no-clipboard", anyTLS)); resp.Error != nil {
		t.Fatalf("answer: %+v", resp.Error)
	}
	ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("cliprdr", "rdpsnd")))
	go g.page.Write(ci)
	echo := make([]byte, len(ci))
	g.page.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(g.page, echo); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(echo, []byte("CLIPRDR")) || !bytes.Contains(echo, []byte("NOCLIP")) || !bytes.Contains(echo, []byte("RDPSND")) {
		t.Errorf("the server received % x", echo)
	}
	g.page.Close()
	g.wait()

	srv2 := newRDPServer(t, "tcp4", modeTLS)
	g2 := newGateway(t, srv2, nil)
	g2.pin(srv2)
	if resp := g2.send(request("no-clipboard", anyTLS)); resp.Error != nil {
		t.Fatalf("answer: %+v", resp.Error)
	}
	go g2.page.Write([]byte("\x17\x03\x03 not RDP"))
	go io.Copy(io.Discard, g2.page)
	g2.wait()
	if r := g2.reason(); r == "" {
		t.Error("a stream that hides its Connect Initial was relayed")
	}
}

// FuzzRenameClipboard: whatever a client sends as its Connect Initial, the
// filter does not panic, changes nothing but channel names, and leaves no
// clipboard channel behind when it accepts the PDU.
func FuzzRenameClipboard(f *testing.F) {
	f.Add(connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("rdpdr", "cliprdr", "drdynvc"))))
	f.Add(connectInitial(block(0xc001, make([]byte, 8))))
	f.Add([]byte{3, 0, 0, 9, 0x02, 0xf0, 0x80, 0x7f, 0x65})
	f.Fuzz(func(t *testing.T, pkt []byte) {
		before := bytes.Clone(pkt)
		n, err := renameClipboard(pkt)
		if len(pkt) != len(before) {
			t.Fatal("the length changed")
		}
		changed := 0
		for i := range pkt {
			if pkt[i] != before[i] {
				changed++
			}
		}
		if err != nil && changed > 0 || changed > 8*n {
			t.Fatalf("%d bytes changed for %d channels renamed (error %v)", changed, n, err)
		}
		if err == nil && n > 0 && bytes.Contains(bytes.ToLower(pkt), clipboardChannel) {
			// Only a name the walk renamed counts; another "cliprdr" in the
			// PDU (a client name) is not a channel. Check the walk again.
			if again, _ := renameClipboard(bytes.Clone(pkt)); again != 0 {
				t.Fatalf("a clipboard channel is left after renaming %d", n)
			}
		}
	})
}

// FuzzNoClipboard: any client stream read through the filter comes out
// whole and in order, or ends with an error; never more, never reordered.
func FuzzNoClipboard(f *testing.F) {
	ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("cliprdr")))
	f.Add(append([]byte{0x30, 0x03, 1, 2, 3}, ci...), uint8(5))
	f.Add([]byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Add([]byte{0x03, 0x00, 0xff, 0xff}, uint8(3))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		a, b := net.Pipe()
		go func() { a.Write(stream); a.Close() }()
		fl := &noClipboard{Conn: b}
		step := int(chunk%64) + 1
		got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return fl.Read(p[:min(len(p), step)]) }))
		b.Close()
		if len(got) > len(stream) {
			t.Fatalf("read %d bytes from %d", len(got), len(stream))
		}
		if err == nil && len(got) != len(stream) {
			t.Fatalf("read %d bytes of %d without an error", len(got), len(stream))
		}
		for i := range got {
			if got[i] != stream[i] && !bytes.Contains(noChannel[:], got[i:i+1]) {
				t.Fatalf("byte %d changed to %#x, not part of a channel's new name", i, got[i])
			}
		}
	})
}

// TestAsksClipboard: a player's or watcher's client asks for a clipboard
// channel exactly when the client it follows did, under its name or the one
// the gateway renamed it to.
func TestAsksClipboard(t *testing.T) {
	for _, tc := range []struct {
		channels []string
		want     bool
	}{
		{[]string{"cliprdr", "drdynvc"}, true},
		{[]string{"CLIPRDR"}, true},
		{[]string{"noclip", "drdynvc"}, true},
		{[]string{"drdynvc"}, false},
		{nil, false},
	} {
		if got := AsksClipboard(tc.channels); got != tc.want {
			t.Errorf("AsksClipboard(%q) = %v, want %v", tc.channels, got, tc.want)
		}
	}
}
