package webrdp

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/bastiond/bastiond/proxy/recording"
)

// The PDUs below are built to [MS-RDPBCGR] and [MS-RDPECLIP] by hand: a
// TPKT (4 bytes), the X.224 Data TPDU (02 f0 80), the MCS Send Data
// Request (0x64) or Indication (0x68) with initiator, channel ID, priority
// and a PER length, the CHANNEL_PDU_HEADER (total length, flags), then a
// chunk of the clipboard message (CLIPRDR_HEADER: type, flags, length).

const (
	testClipID  = 1005
	testOtherID = 1004
)

// serverResponse is a TPKT with an MCS Connect Response whose server data
// blocks give the channels ids, in the order the client asked for them.
func serverResponse(ids ...uint16) []byte {
	body := []byte{0x02, 0xf0, 0x80, 0x7f, 0x66, 0x82, 0x00, 0x00, 0x0a, 0x01, 0x00, 0x02, 0x01, 0x00, 0x30, 0x1a,
		0x03, 0x0c, 0x08, 0x00, // decoy SC_NET that leads nowhere
		0x00, 0x05, 0x00, 0x14, 0x7c, 0x00, 0x01, 0x2a, 0x14, 0x76, 0x0a, 0x01, 0x01, 0x00, 0x01, 0xc0, 0x00, 'M', 'c', 'D', 'n'}
	body = append(body, block(0x0c01, make([]byte, 8))...)
	net := binary.LittleEndian.AppendUint16(nil, 1003)
	net = binary.LittleEndian.AppendUint16(net, uint16(len(ids)))
	for _, id := range ids {
		net = binary.LittleEndian.AppendUint16(net, id)
	}
	if len(ids)%2 == 1 {
		net = append(net, 0, 0)
	}
	body = append(body, block(0x0c03, net)...)
	body = append(body, block(0x0c02, make([]byte, 8))...)
	pkt := []byte{3, 0, 0, 0}
	binary.BigEndian.PutUint16(pkt[2:], uint16(4+len(body)))
	return append(pkt, body...)
}

// channelData is one MCS PDU of channel data: from the client a Send Data
// Request, from the server an Indication.
func channelData(from side, id uint16, total int, flags uint32, chunk []byte) []byte {
	choice, initiator := byte(0x64), uint16(6)
	if from == server {
		choice, initiator = 0x68, 2
	}
	ud := binary.LittleEndian.AppendUint32(nil, uint32(total))
	ud = binary.LittleEndian.AppendUint32(ud, flags)
	ud = append(ud, chunk...)
	pkt := []byte{3, 0, 0, 0, 0x02, 0xf0, 0x80, choice, byte(initiator >> 8), byte(initiator), byte(id >> 8), byte(id), 0x70}
	if len(ud) < 0x80 {
		pkt = append(pkt, byte(len(ud)))
	} else {
		pkt = append(pkt, 0x80|byte(len(ud)>>8), byte(len(ud)))
	}
	pkt = append(pkt, ud...)
	binary.BigEndian.PutUint16(pkt[2:], uint16(len(pkt)))
	return pkt
}

// chunked is msg on the clipboard channel in chunks of at most size bytes.
func chunked(from side, msg []byte, size int) []byte {
	var out []byte
	for at := 0; at < len(msg); at += size {
		k := min(size, len(msg)-at)
		var f uint32 = 0x10 // CHANNEL_FLAG_SHOW_PROTOCOL, kept as it is
		if at == 0 {
			f |= channelFlagFirst
		}
		if at+k == len(msg) {
			f |= channelFlagLast
		}
		out = append(out, channelData(from, testClipID, len(msg), f, msg[at:at+k])...)
	}
	return out
}

func utf16z(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, 0, 0)
}

func capsMsg(flags uint32) []byte {
	d := []byte{1, 0, 0, 0, 1, 0, 12, 0, 2, 0, 0, 0}
	return clipMessage(cbClipCaps, 0, binary.LittleEndian.AppendUint32(d, flags))
}

type testFormat struct {
	id   uint32
	name string
}

func formatList(fs ...testFormat) []byte {
	var d []byte
	for _, f := range fs {
		d = binary.LittleEndian.AppendUint32(d, f.id)
		d = append(d, utf16z(f.name)...)
	}
	return clipMessage(cbFormatList, 0, d)
}

type testFile struct {
	name string
	data []byte
	size int64 // listed, if not len(data); -1: not listed (no FD_FILESIZE)
}

func fileList(fs ...testFile) []byte {
	d := binary.LittleEndian.AppendUint32(nil, uint32(len(fs)))
	for _, f := range fs {
		fd := make([]byte, fileDescriptorSize)
		binary.LittleEndian.PutUint32(fd, 0x4|0x20|0x40) // attributes, write time, size
		size := f.size
		if size == 0 {
			size = int64(len(f.data))
		}
		if size < 0 {
			binary.LittleEndian.PutUint32(fd, 0x4|0x20)
			size = 0
		}
		binary.LittleEndian.PutUint32(fd[64:], uint32(size>>32))
		binary.LittleEndian.PutUint32(fd[68:], uint32(size))
		copy(fd[72:], utf16z(f.name))
		d = append(d, fd...)
	}
	return clipMessage(cbFormatDataResponse, cbResponseOK, d)
}

func dataRequest(id uint32) []byte {
	return clipMessage(cbFormatDataRequest, 0, binary.LittleEndian.AppendUint32(nil, id))
}

func contentsRequest(stream, lindex, flags uint32, pos uint64, cb uint32) []byte {
	d := binary.LittleEndian.AppendUint32(nil, stream)
	d = binary.LittleEndian.AppendUint32(d, lindex)
	d = binary.LittleEndian.AppendUint32(d, flags)
	d = binary.LittleEndian.AppendUint64(d, pos) // low, high
	d = binary.LittleEndian.AppendUint32(d, cb)
	return clipMessage(cbFileContentsRequest, 0, d)
}

func contentsResponse(stream uint32, data []byte) []byte {
	return clipMessage(cbFileContentsResp, cbResponseOK, append(binary.LittleEndian.AppendUint32(nil, stream), data...))
}

// feedConn is one end of the relay: Read gives in, at most max bytes at a
// time, then errDrained; Write collects.
type feedConn struct {
	net.Conn
	in  []byte
	max int
	out bytes.Buffer
}

var errDrained = errors.New("drained")

func (f *feedConn) Read(p []byte) (int, error) {
	if len(f.in) == 0 {
		return 0, errDrained
	}
	n := copy(p[:min(len(p), f.max)], f.in)
	f.in = f.in[n:]
	return n, nil
}

func (f *feedConn) Write(p []byte) (int, error) { return f.out.Write(p) }

// harness relays a page and a machine through the clipboard's filter, one
// direction at a time.
type harness struct {
	page, machine *feedConn
	cc, sc        *clipConn
	events        []FileEvent
	readSize      int
	sent          [2][]byte // what each side sent
}

func newHarness(allow bool, maxRead, readSize int) *harness {
	h := &harness{page: &feedConn{max: maxRead}, machine: &feedConn{max: maxRead}, readSize: readSize}
	gate := newClipGate(allow, func(ev FileEvent) { h.events = append(h.events, ev) })
	h.cc, h.sc = newClipConns(h.page, h.machine, gate)
	return h
}

// send relays b from one side to the other as the broker's relay would.
func (h *harness) send(from side, b []byte) error {
	src, dst := h.cc, h.sc
	if from == server {
		src, dst = h.sc, h.cc
	}
	src.Conn.(*feedConn).in = append(src.Conn.(*feedConn).in, b...)
	h.sent[from] = append(h.sent[from], b...)
	buf := make([]byte, h.readSize)
	for range 1 << 20 {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if errors.Is(err, errDrained) {
			src.err = nil // more may be sent later
			return nil
		}
		if err != nil {
			return err
		}
	}
	return errors.New("relay did not drain")
}

// connect runs the Connect Initial and Response, with the clipboard the
// second channel.
func (h *harness) connect(t testing.TB) {
	t.Helper()
	ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("rdpdr", "cliprdr")))
	// CredSSP both ways, the server's Early User Authorization Result,
	// then the Connect Initial.
	for _, m := range []struct {
		from side
		b    []byte
	}{{client, tsRequestLike(300)}, {server, tsRequestLike(200)}, {client, tsRequestLike(90)},
		{server, append(tsRequestLike(60), 0, 0, 0, 0)}, {client, ci}} {
		if err := h.send(m.from, m.b); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.send(server, serverResponse(testOtherID, testClipID)); err != nil {
		t.Fatal(err)
	}
	if id := h.cc.chans.clipID.Load(); id != testClipID {
		t.Fatalf("clipboard channel %d, want %d", id, testClipID)
	}
}

// tsRequestLike is a DER SEQUENCE of n content bytes with a long length.
func tsRequestLike(n int) []byte {
	return append([]byte{0x30, 0x82, byte(n >> 8), byte(n)}, bytes.Repeat([]byte{0xa0}, n)...)
}

// clipMessages reads a stream from the connection on for its clipboard
// messages, reassembled, and the other PDUs' bytes.
func clipMessages(t *testing.T, stream []byte) (msgs [][]byte, other []byte) {
	t.Helper()
	var cur []byte
	for len(stream) > 0 {
		n, err := pduLen(stream)
		if err != nil || n == 0 || n > len(stream) {
			t.Fatalf("output not framed: %v (%d of %d)", err, n, len(stream))
		}
		pkt := stream[:n]
		stream = stream[n:]
		if pkt[0] != 3 || len(pkt) < 14 || binary.BigEndian.Uint16(pkt[10:]) != testClipID {
			other = append(other, pkt...)
			continue
		}
		at, size := 14, int(pkt[13])
		if size&0x80 != 0 {
			at, size = 15, (size&0x3f)<<8|int(pkt[14])
		}
		if at+size != len(pkt) {
			t.Fatalf("a clipboard PDU of %d bytes says %d", len(pkt), size)
		}
		ud := pkt[at:]
		flags := binary.LittleEndian.Uint32(ud[4:])
		if flags&channelFlagFirst != 0 {
			cur = nil
		}
		cur = append(cur, ud[8:]...)
		if flags&channelFlagLast != 0 {
			if int(binary.LittleEndian.Uint32(ud)) != len(cur) {
				t.Fatalf("a message of %d bytes says %d", len(cur), binary.LittleEndian.Uint32(ud))
			}
			msgs = append(msgs, cur)
		}
	}
	return msgs, other
}

func formatsOf(t *testing.T, msg []byte) []testFormat {
	t.Helper()
	fs, err := parseFormats(msg[clipHeaderSize:], true, false)
	if err != nil {
		t.Fatal(err)
	}
	var out []testFormat
	for _, f := range fs {
		out = append(out, testFormat{f.id, f.name})
	}
	return out
}

var (
	textFormats = []testFormat{{13, ""}, {0xc004, "HTML Format"}}
	// Preferred DropEffect says copy or move: not a file, kept.
	fileFormats = []testFormat{{0xc0a1, "FileGroupDescriptorW"}, {0xc0a2, "FileContents"}, {0xc0a3, "Preferred DropEffect"}}
	allFormats  = append(slices.Clone(textFormats), fileFormats...)
)

// readSizes are the ways the tests cut the streams: what the peer's
// connection returns per read, and the relay's buffer.
var readSizes = []struct{ name string }{{"1x1"}, {"7x5"}, {"1500x4096"}, {"65536x32768"}}

func sizes(name string) (int, int) {
	var a, b int
	fmt.Sscanf(name, "%dx%d", &a, &b)
	return a, b
}

func sum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// offerFiles has from copy files, the other side fetch the list and the
// contents in ranges of rangeSize, and returns the stream each side sent.
func offerFiles(t *testing.T, h *harness, from side, files []testFile, rangeSize int) {
	t.Helper()
	to := 1 - from
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(h.send(from, chunked(from, formatList(allFormats...), 1600)))
	must(h.send(to, chunked(to, dataRequest(0xc0a1), 1600)))
	must(h.send(from, chunked(from, fileList(files...), 1600)))
	stream := uint32(10)
	for i, f := range files {
		for pos := 0; pos < len(f.data); pos += rangeSize {
			k := min(rangeSize, len(f.data)-pos)
			stream++
			must(h.send(to, chunked(to, contentsRequest(stream, uint32(i), fileContentsRange, uint64(pos), uint32(rangeSize)), 1600)))
			must(h.send(from, chunked(from, contentsResponse(stream, f.data[pos:pos+k]), 1600)))
		}
	}
}

func TestClipboardFilesAllowed(t *testing.T) {
	a := bytes.Repeat([]byte("abcdefghij"), 500) // 5000 bytes
	b := []byte("0123456789")
	for _, rs := range readSizes {
		for _, from := range []side{client, server} {
			t.Run(rs.name+"/"+from.direction(), func(t *testing.T) {
				maxRead, readSize := sizes(rs.name)
				h := newHarness(true, maxRead, readSize)
				h.connect(t)
				must := func(err error) {
					t.Helper()
					if err != nil {
						t.Fatal(err)
					}
				}
				must(h.send(server, chunked(server, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600)))
				must(h.send(client, chunked(client, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600)))
				// Other traffic around: a fast-path PDU and another channel's data.
				must(h.send(client, []byte{0x44, 0x05, 1, 2, 3}))
				must(h.send(server, channelData(server, testOtherID, 3, 3, []byte{9, 9, 9})))
				offerFiles(t, h, from, []testFile{{name: "a.txt", data: a}, {name: "b.bin", data: b}}, 4096)
				// b's second half first: out of order.
				to := 1 - from
				must(h.send(to, chunked(to, contentsRequest(99, 1, fileContentsRange, 5, 5), 1600)))
				must(h.send(from, chunked(from, contentsResponse(99, b[5:]), 1600)))
				// A new format list ends the offer.
				must(h.send(from, chunked(from, formatList(textFormats...), 1600)))
				want := []FileEvent{
					{Direction: from.direction(), Name: "a.txt", Size: 5000, Bytes: 5000, SHA256: sum(a), Complete: true},
					{Direction: from.direction(), Name: "b.bin", Size: 10, Bytes: 10, SHA256: sum(b), Complete: true},
				}
				if !slices.Equal(h.events, want) {
					t.Fatalf("events\n%+v\nwant\n%+v", h.events, want)
				}
				// Nothing changed: each side received what the other sent.
				if !bytes.Equal(h.machine.out.Bytes(), h.sent[client]) {
					t.Fatal("the machine did not receive what the page sent")
				}
				if !bytes.Equal(h.page.out.Bytes(), h.sent[server]) {
					t.Fatal("the page did not receive what the machine sent")
				}
			})
		}
	}
}

func TestClipboardFilesIncomplete(t *testing.T) {
	a := bytes.Repeat([]byte{7}, 9000)
	h := newHarness(true, 4096, 32768)
	h.connect(t)
	h.send(server, chunked(server, capsMsg(cbUseLongFormatNames), 1600))
	h.send(client, chunked(client, capsMsg(cbUseLongFormatNames), 1600))
	h.send(server, chunked(server, formatList(allFormats...), 1600))
	h.send(client, chunked(client, dataRequest(0xc0a1), 1600))
	h.send(server, chunked(server, fileList(testFile{name: "big.iso", data: a}), 1600))
	h.send(client, chunked(client, contentsRequest(1, 0, fileContentsRange, 0, 4096), 1600))
	h.send(server, chunked(server, contentsResponse(1, a[:4096]), 1600))
	// A range read again, overlapping: hashed from where the hash is.
	h.send(client, chunked(client, contentsRequest(3, 0, fileContentsRange, 2048, 4096), 1600))
	h.send(server, chunked(server, contentsResponse(3, a[2048:6144]), 1600))
	// A range skipped: the rest is out of order.
	h.send(client, chunked(client, contentsRequest(2, 0, fileContentsRange, 8192, 808), 1600))
	h.send(server, chunked(server, contentsResponse(2, a[8192:]), 1600))
	if len(h.events) != 0 {
		t.Fatalf("events before the offer's end: %+v", h.events)
	}
	h.sc.gate.close()
	want := []FileEvent{{Direction: Download, Name: "big.iso", Size: 9000, Bytes: 6144, SHA256: sum(a[:6144])}}
	if !slices.Equal(h.events, want) {
		t.Fatalf("events\n%+v\nwant\n%+v", h.events, want)
	}
}

func TestClipboardFilesRefused(t *testing.T) {
	for _, rs := range readSizes {
		for _, from := range []side{client, server} {
			t.Run(rs.name+"/"+from.direction(), func(t *testing.T) {
				maxRead, readSize := sizes(rs.name)
				h := newHarness(false, maxRead, readSize)
				h.connect(t)
				start := h.page.out.Len()
				to := 1 - from
				out := func(s side) *bytes.Buffer { // what s received
					if s == client {
						return &h.page.out
					}
					return &h.machine.out
				}
				must := func(err error) {
					t.Helper()
					if err != nil {
						t.Fatal(err)
					}
				}
				must(h.send(server, chunked(server, capsMsg(cbUseLongFormatNames|cbStreamFileclip|0x10), 1600)))
				must(h.send(client, chunked(client, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600)))
				mark := [2]int{h.page.out.Len(), h.machine.out.Len()}
				// A long list, over several chunks.
				long := slices.Clone(allFormats)
				for i := range 80 {
					long = append(long, testFormat{uint32(0xc100 + i), fmt.Sprintf("Private Format %02d", i)})
				}
				must(h.send(from, chunked(from, formatList(long...), 1600)))
				// The other side asks for the files anyway, and for their list.
				must(h.send(to, chunked(to, dataRequest(0xc0a1), 1600)))
				must(h.send(to, chunked(to, contentsRequest(7, 0, fileContentsRange, 0, 4096), 1600)))
				must(h.send(to, chunked(to, contentsRequest(8, 0, fileContentsSize, 0, 8), 1600)))
				// And the offering side sends contents unasked.
				must(h.send(from, chunked(from, contentsResponse(7, []byte("secret")), 1600)))
				// Text still passes.
				must(h.send(to, chunked(to, dataRequest(13), 1600)))
				text := clipMessage(cbFormatDataResponse, cbResponseOK, utf16z("hello"))
				must(h.send(from, chunked(from, text, 1600)))

				caps, _ := clipMessages(t, h.page.out.Bytes()[start:mark[0]])
				if len(caps) != 1 || binary.LittleEndian.Uint32(caps[0][20:])&cbStreamFileclip != 0 ||
					binary.LittleEndian.Uint32(caps[0][20:]) != cbUseLongFormatNames|0x10 {
					t.Fatalf("the page got the caps %x", caps)
				}
				// The side asking got the list without the files, the
				// gateway's failures, then the text.
				got, _ := clipMessages(t, out(to).Bytes()[mark[to]:])
				if len(got) != 5 {
					t.Fatalf("%s received %d messages: %x", to.direction(), len(got), got)
				}
				if fs := formatsOf(t, got[0]); !slices.Equal(fs, append(append(slices.Clone(textFormats), fileFormats[2]), long[len(allFormats):]...)) {
					t.Fatalf("the list passed as %v", fs)
				}
				for i, w := range [][]byte{
					clipMessage(cbFormatDataResponse, cbResponseFail, nil),
					clipMessage(cbFileContentsResp, cbResponseFail, []byte{7, 0, 0, 0}),
					clipMessage(cbFileContentsResp, cbResponseFail, []byte{8, 0, 0, 0}),
					text,
				} {
					if !bytes.Equal(got[1+i], w) {
						t.Fatalf("message %d: %x, want %x", 1+i, got[1+i], w)
					}
				}
				// The offering side got only the request for text.
				back, _ := clipMessages(t, out(from).Bytes()[mark[from]:])
				if len(back) != 1 || !bytes.Equal(back[0], dataRequest(13)) {
					t.Fatalf("%s received %x", from.direction(), back)
				}
				wantEvents := []FileEvent{{Refused: true, Direction: from.direction(), Size: -1}}
				if !slices.Equal(h.events, wantEvents) {
					t.Fatalf("events %+v, want %+v", h.events, wantEvents)
				}
			})
		}
	}
}

// TestClipboardFileSizeUnlisted: a file listed without its size is whole
// when a range comes back shorter than asked.
func TestClipboardFileSizeUnlisted(t *testing.T) {
	a := FilesPattern(5000)
	h := newHarness(true, 4096, 32768)
	h.connect(t)
	h.send(server, chunked(server, capsMsg(cbUseLongFormatNames), 1600))
	h.send(client, chunked(client, capsMsg(cbUseLongFormatNames), 1600))
	offerFiles(t, h, client, []testFile{{name: "n.txt", data: a, size: -1}}, 4096)
	// The last range asked for 4096 and got 904: the end.
	want := []FileEvent{{Direction: Upload, Name: "n.txt", Size: 5000, Bytes: 5000, SHA256: sum(a), Complete: true}}
	if !slices.Equal(h.events, want) {
		t.Fatalf("events\n%+v\nwant\n%+v", h.events, want)
	}
}

func TestClipboardShortNames(t *testing.T) {
	h := newHarness(false, 4096, 32768)
	h.connect(t)
	// No capabilities: short names, 32 bytes each (ASCII here).
	short := func(id uint32, name string) []byte {
		b := binary.LittleEndian.AppendUint32(nil, id)
		var n [32]byte
		copy(n[:], name)
		return append(b, n[:]...)
	}
	list := clipMessage(cbFormatList, cbASCIINames, bytes.Join([][]byte{short(1, ""), short(cfHDROP, ""), short(0xc0a1, "FileGroupDescriptor"), short(13, "")}, nil))
	if err := h.send(server, chunked(server, list, 1600)); err != nil {
		t.Fatal(err)
	}
	got, _ := clipMessages(t, h.page.out.Bytes()[len(h.sent[server])-len(chunked(server, list, 1600)):])
	want := clipMessage(cbFormatList, cbASCIINames, append(short(1, ""), short(13, "")...))
	if len(got) != 1 || !bytes.Equal(got[0], want) {
		t.Fatalf("the page got %x, want %x", got, want)
	}
}

func TestClipboardUnreadable(t *testing.T) {
	for _, c := range []struct {
		name string
		pdu  []byte
	}{
		{"compressed", channelData(client, testClipID, 12, 3|channelFlagCompressed, capsMsg(0)[:12])},
		{"chunks longer than the message", channelData(client, testClipID, 8, 3, capsMsg(0))},
		{"a first chunk without its header", channelData(client, testClipID, 40, 1, []byte{7, 0})},
		{"a chunk outside any message", channelData(client, testClipID, 24, 2, capsMsg(0))},
		{"the last chunk early", channelData(client, testClipID, 400, 3, capsMsg(0))},
		{"a bad short list", chunked(client, clipMessage(cbFormatList, 0, make([]byte, 35)), 1600)},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(true, 4096, 32768)
			h.connect(t)
			if err := h.send(client, c.pdu); !errors.Is(err, ErrClipboardStream) {
				t.Fatalf("got %v, want ErrClipboardStream", err)
			}
		})
	}
}

// FuzzClipboardStream relays a script of sends (side, length, bytes)
// after the connection: nothing panics, and with file transfer allowed,
// whatever the filter does not refuse passes unchanged.
func FuzzClipboardStream(f *testing.F) {
	script := func(sends ...[]byte) []byte {
		var b []byte
		for i, s := range sends {
			b = append(b, byte(i%2))
			b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
			b = append(b, s...)
		}
		return b
	}
	a := bytes.Repeat([]byte("xyz"), 700)
	f.Add(script(chunked(client, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600),
		chunked(server, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600),
		chunked(client, formatList(allFormats...), 1600), chunked(server, dataRequest(0xc0a1), 1600),
		chunked(client, fileList(testFile{name: "a", data: a}), 1600), chunked(server, contentsRequest(1, 0, 2, 0, 4096), 1600),
		chunked(client, contentsResponse(1, a), 1600)), true)
	f.Add(script(chunked(client, formatList(allFormats...), 1600), chunked(server, contentsRequest(1, 0, 2, 0, 4096), 1600),
		[]byte{0x44, 0x05, 1, 2, 3}, channelData(server, testOtherID, 3, 3, []byte{9, 9, 9})), false)
	f.Fuzz(func(t *testing.T, b []byte, allow bool) {
		h := newHarness(allow, 777, 4096)
		h.connect(t)
		for len(b) >= 3 {
			from := side(b[0] & 1)
			n := min(int(binary.BigEndian.Uint16(b[1:])), len(b)-3)
			if err := h.send(from, b[3:3+n]); err != nil {
				return
			}
			b = b[3+n:]
		}
		if !allow {
			return
		}
		// Whole PDUs only are compared: a partial one is still held.
		if m, s := h.machine.out.Bytes(), h.sent[client]; !bytes.Equal(m, s[:len(m)]) {
			t.Fatal("the machine received other bytes than the page sent")
		}
		if p, s := h.page.out.Bytes(), h.sent[server]; !bytes.Equal(p, s[:len(p)]) {
			t.Fatal("the page received other bytes than the machine sent")
		}
	})
}

// BenchmarkClipboardPassthrough reads desktop traffic that is not the
// clipboard's (fast-path updates, another channel's data) through the
// filter, against the same reads without it: the filter's cost is the
// framing, with no allocation. "file" is a file's contents through the
// clipboard channel, hashed as they pass.
func BenchmarkClipboardPassthrough(b *testing.B) {
	var other []byte
	for i := range 64 {
		other = append(other, append([]byte{0x00, 0x83, 0xe8}, bytes.Repeat([]byte{byte(i)}, 1000-3)...)...)
		if i%4 == 0 {
			other = append(other, channelData(server, testOtherID, 1400, 3, make([]byte, 1400))...)
		}
	}
	file := FilesPattern(1 << 20)
	for _, c := range []struct {
		name   string
		filter bool
		file   bool
	}{{"plain", false, false}, {"filtered", true, false}, {"file", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			h := newHarness(true, 1<<20, 32768)
			h.connect(b)
			stream := other
			if c.file {
				h.send(server, chunked(server, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600))
				h.send(client, chunked(client, capsMsg(cbUseLongFormatNames|cbStreamFileclip), 1600))
				h.send(server, chunked(server, formatList(allFormats...), 1600))
				h.send(client, chunked(client, dataRequest(0xc0a1), 1600))
				h.send(server, chunked(server, fileList(testFile{name: "big", size: 1 << 40}), 1600)) // 4 GiB listed
				stream = nil
				for pos := 0; pos < len(file); pos += 65536 {
					stream = append(stream, chunked(server, contentsResponse(uint32(pos), file[pos:pos+65536]), 1600)...)
				}
			}
			buf := make([]byte, 32768)
			b.SetBytes(int64(len(stream)))
			b.ReportAllocs()
			pos := uint64(0)
			for b.Loop() {
				if c.file {
					b.StopTimer()
					// The page asks for the next MiB, range by range.
					for at := 0; at < len(file); at += 65536 {
						h.send(client, chunked(client, contentsRequest(uint32(at), 0, fileContentsRange, pos+uint64(at), 65536), 1600))
					}
					pos += uint64(len(file))
					b.StartTimer()
				}
				h.machine.in = stream
				h.page.out.Reset()
				for {
					var n int
					var err error
					if c.filter {
						n, err = h.sc.Read(buf)
					} else {
						n, err = h.machine.Read(buf)
					}
					h.page.Write(buf[:n])
					if err != nil {
						h.sc.err = nil
						break
					}
				}
				if h.page.out.Len() != len(stream) {
					b.Fatalf("%d bytes out of %d", h.page.out.Len(), len(stream))
				}
			}
		})
	}
}

// FilesPattern is n bytes of a test file.
func FilesPattern(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i * 31 % 251)
	}
	return p
}

// serveClip is the machine of modeClip: it answers the Connect Initial
// with the clipboard as channel testClipID, offers files, then keeps what
// it reads until the end of the stream (s.got).
func (s *rdpServer) serveClip(c net.Conn) {
	tpkt := func() error {
		var head [4]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return err
		}
		_, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint16(head[2:]))-4)
		return err
	}
	if tpkt() != nil { // the Connect Initial
		return
	}
	caps := capsMsg(cbUseLongFormatNames | cbStreamFileclip)
	c.Write(append(serverResponse(testOtherID, testClipID), chunked(server, caps, 1600)...))
	if tpkt() != nil { // the page's capabilities
		return
	}
	c.Write(chunked(server, formatList(allFormats...), 1600))
	rest, _ := io.ReadAll(c)
	s.mu.Lock()
	s.got = rest
	s.mu.Unlock()
	close(s.clipDone)
}

// readTPKT reads one TPKT from r.
func readTPKT(t *testing.T, r io.Reader) []byte {
	t.Helper()
	head := make([]byte, 4)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint16(head[2:]) < 4 {
		t.Fatalf("not a TPKT: % x", head)
	}
	pkt := make([]byte, int(binary.BigEndian.Uint16(head[2:])))
	copy(pkt, head)
	if _, err := io.ReadFull(r, pkt[4:]); err != nil {
		t.Fatal(err)
	}
	return pkt
}

// TestGatewayFiles: through Serve, over IPv4 and IPv6, a desktop whose
// role allows the clipboard but not files gets the machine's format list
// without its files, its request for a file's contents is answered with a
// failure by the gateway and never reaches the machine, and the refusal is
// told once; with files allowed, the list passes as the machine sent it.
// Recorded, the recording keeps what each side sent.
func TestGatewayFiles(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		for _, c := range []struct{ files, recorded bool }{{false, false}, {true, false}, {false, true}} {
			files := c.files
			t.Run(fmt.Sprintf("%s/files=%v/recorded=%v", network, files, c.recorded), func(t *testing.T) {
				srv := newRDPServer(t, network, modeClip)
				srv.clipDone = make(chan struct{})
				var mu sync.Mutex
				var events []FileEvent
				dir := t.TempDir()
				var path string
				g := newGateway(t, srv, func(p *Params) {
					p.FileTransfer = func(sess Session, ev FileEvent) {
						mu.Lock()
						events = append(events, ev)
						mu.Unlock()
					}
					if c.recorded {
						p.Record = func(sess Session, h recording.RDPHeader) (*recording.RDPRecorder, error) {
							rec, err := recording.CreateRDP(dir, h)
							if err == nil {
								path = rec.Path()
							}
							return rec, err
						}
					}
				})
				g.pin(srv)
				ticket := "no-files"
				if files {
					ticket = "good"
				}
				if resp := g.send(request(ticket, anyTLS)); resp.Error != nil {
					t.Fatalf("answer: %+v", resp.Error)
				}
				ci := connectInitial(block(0xc001, make([]byte, 8)), block(0xc003, networkData("rdpdr", "cliprdr")))
				go g.page.Write(ci)
				g.page.SetReadDeadline(time.Now().Add(10 * time.Second))
				caps := capsMsg(cbUseLongFormatNames | cbStreamFileclip)
				readTPKT(t, g.page) // the Connect Response
				if msgs, _ := clipMessages(t, readTPKT(t, g.page)); len(msgs) != 1 ||
					binary.LittleEndian.Uint32(msgs[0][20:])&cbStreamFileclip == 0 != !files {
					t.Fatalf("the page got the capabilities %x", msgs)
				}
				if _, err := g.page.Write(chunked(client, caps, 1600)); err != nil {
					t.Fatal(err)
				}
				offered := formatList(allFormats...)
				if !files {
					offered = formatList(append(slices.Clone(textFormats), fileFormats[2])...)
				}
				list := readTPKT(t, g.page)
				if msgs, _ := clipMessages(t, list); len(msgs) != 1 || !bytes.Equal(msgs[0], offered) {
					t.Fatalf("the page got the list %x, want %x", msgs, offered)
				}
				req := chunked(client, contentsRequest(5, 0, fileContentsRange, 0, 4096), 1600)
				text := chunked(client, dataRequest(13), 1600)
				if _, err := g.page.Write(append(slices.Clone(req), text...)); err != nil {
					t.Fatal(err)
				}
				if !files {
					fail := readTPKT(t, g.page)
					if msgs, _ := clipMessages(t, fail); len(msgs) != 1 ||
						!bytes.Equal(msgs[0], clipMessage(cbFileContentsResp, cbResponseFail, []byte{5, 0, 0, 0})) {
						t.Fatalf("the page got %x, want a failed File Contents Response", msgs)
					}
				}
				g.page.Close()
				if o := g.wait(); o.Class != ClassClientClosed {
					t.Errorf("outcome %+v (the session: %q)", o, g.reason())
				}
				select {
				case <-srv.clipDone:
				case <-time.After(10 * time.Second):
					t.Fatal("the machine did not see the end of the stream")
				}
				srv.mu.Lock()
				got := srv.got
				srv.mu.Unlock()
				want := text
				if files {
					want = append(slices.Clone(req), text...)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("the machine received % x\nwant % x", got, want)
				}
				if c.recorded {
					r, err := recording.OpenRDP(path)
					if err != nil {
						t.Fatal(err)
					}
					defer r.Close()
					var up []byte
					for {
						rec, err := r.Next()
						if err != nil {
							break
						}
						if rec.Kind == recording.RDPClient {
							up = append(up, rec.Data...)
						}
					}
					if !bytes.Contains(up, req) || !bytes.Contains(up, text) {
						t.Errorf("the recording lacks what the page sent: % x", up)
					}
				}
				mu.Lock()
				defer mu.Unlock()
				if files && len(events) != 0 || !files && !slices.Equal(events, []FileEvent{{Refused: true, Direction: Download, Size: -1}}) {
					t.Errorf("events %+v", events)
				}
			})
		}
	}
}

// TestClipConnHalfClose: the relay sees a half-close where the connection
// under the filter has one (the server's TLS connection), and none where it
// has not (the page's WebSocket), as without the filter.
func TestClipConnHalfClose(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	tc := tls.Client(a, &tls.Config{InsecureSkipVerify: true})
	cc, sc := newClipConns(b, tc, newClipGate(true, nil))
	type closeWriter interface{ CloseWrite() error }
	if _, ok := cc.conn().(closeWriter); ok {
		t.Error("the page's side has a CloseWrite its connection has not")
	}
	if _, ok := sc.conn().(closeWriter); !ok {
		t.Error("the server's side lost its CloseWrite")
	}
}
