package recording

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unicode/utf16"
)

func utf16le(s string) []byte {
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return b
}

// readAll returns the records of the recording at path.
func readAll(t *testing.T, path string) (RDPHeader, []RDPRecord) {
	t.Helper()
	r, err := OpenRDP(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var out []RDPRecord
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return r.Header, out
		}
		if err != nil {
			t.Fatal(err)
		}
		rec.Data = bytes.Clone(rec.Data)
		out = append(out, rec)
	}
}

func TestRDPRoundTrip(t *testing.T) {
	dir := t.TempDir()
	h := RDPHeader{Session: "0123456789ab", Target: "vm2", User: "alice", Protocol: 1,
		Confirm: []byte{3, 0, 0, 19}, CertChain: [][]byte{{0x30, 1, 2}}}
	r, err := CreateRDP(dir, h)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CreateRDP(dir, h); err == nil {
		t.Error("a second recording of the same session replaced the first")
	}
	big := bytes.Repeat([]byte{0xaa}, 70000)
	r.Record(RDPServer, []byte("server hello"))
	time.Sleep(20 * time.Millisecond)
	r.Record(RDPClient, []byte("client hello"))
	r.Record(RDPMeta, []byte(`{"width":1024,"height":768}`))
	r.Record(RDPServer, big)
	// Flushed within FlushInterval: readable while the session goes on.
	time.Sleep(FlushInterval + 300*time.Millisecond)
	_, live := readAll(t, r.Path())
	if len(live) != 4 {
		t.Errorf("%d records readable before Close, want 4", len(live))
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(r.Path()); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v", fi.Mode())
	}
	got, recs := readAll(t, filepath.Join(dir, "0123456789ab.rdp.gz"))
	if got.Session != h.Session || got.User != "alice" || got.Version != RDPVersion || !bytes.Equal(got.CertChain[0], h.CertChain[0]) {
		t.Errorf("header %+v", got)
	}
	if len(recs) != 4 || string(recs[0].Data) != "server hello" || recs[1].Kind != RDPClient || !bytes.Equal(recs[3].Data, big) {
		t.Fatalf("records %v", recs)
	}
	if recs[1].At < 20*time.Millisecond || recs[1].At < recs[0].At {
		t.Errorf("times %v, %v", recs[0].At, recs[1].At)
	}
	probe, err := ProbeRDP(r.Path())
	if err != nil || probe.Width != 1024 || probe.Height != 768 || probe.Header.User != "alice" || probe.Duration <= 0 {
		t.Errorf("probe %+v, %v", probe, err)
	}
	sum, err := SummarizeRDP(r.Path())
	if err != nil || sum.Width != 1024 || sum.Height != 768 || sum.ServerBytes != int64(12+len(big)) || sum.ClientBytes != 12 {
		t.Errorf("summary %+v, %v", sum, err)
	}
	if _, err := CreateRDP(dir, RDPHeader{Session: "../x"}); err == nil {
		t.Error("a session ID with a path was accepted")
	}
}

// tsRequest is a DER SEQUENCE of n bytes of content, with a long length
// form when n > 127, holding secret.
func tsRequest(n int, secret string) []byte {
	content := append([]byte(secret), bytes.Repeat([]byte{0xa0}, n-len(secret))...)
	if n < 128 {
		return append([]byte{0x30, byte(n)}, content...)
	}
	return append([]byte{0x30, 0x82, byte(n >> 8), byte(n)}, content...)
}

// tpkt is a TPKT packet around an X.224 Data TPDU and payload.
func tpkt(payload []byte) []byte {
	b := []byte{3, 0, 0, 0, 2, 0xf0, 0x80}
	b = append(b, payload...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// clientInfo is a Client Info PDU (MCS Send Data Request, basic security
// header with SEC_INFO_PKT) for domain, user and password, with an
// extended info part holding an auto-reconnect cookie.
func clientInfo(domain, user, password string, cookie []byte) []byte {
	var info []byte
	info = binary.LittleEndian.AppendUint32(info, 0)                  // code page
	info = binary.LittleEndian.AppendUint32(info, infoUnicode|0x0100) // flags
	fields := [][]byte{utf16le(domain), utf16le(user), utf16le(password), nil, nil}
	for _, f := range fields {
		info = binary.LittleEndian.AppendUint16(info, uint16(len(f)))
	}
	for _, f := range fields {
		info = append(append(info, f...), 0, 0)
	}
	addr := append(utf16le("203.0.113.10"), 0, 0)
	info = binary.LittleEndian.AppendUint16(info, 2) // AF_INET
	info = binary.LittleEndian.AppendUint16(info, uint16(len(addr)))
	info = append(info, addr...)
	dir := append(utf16le("C:\\"), 0, 0)
	info = binary.LittleEndian.AppendUint16(info, uint16(len(dir)))
	info = append(info, dir...)
	info = append(info, make([]byte, tsTimeZoneLen+8)...)
	info = binary.LittleEndian.AppendUint16(info, uint16(len(cookie)))
	info = append(info, cookie...)
	sec := append([]byte{secInfoPkt, 0, 0, 0}, info...)
	mcs := []byte{0x64, 0, 6, 0x03, 0xeb, 0x70}
	mcs = append(mcs, 0x80|byte(len(sec)>>8), byte(len(sec)))
	return tpkt(append(mcs, sec...))
}

// connectInitial is enough of an MCS Connect Initial for the tap: the BER
// tag, a client core data block with desktop size w x h, and a network data
// block asking for channels.
func connectInitial(w, h int, channels ...string) []byte {
	b := []byte{0x7f, 0x65, 0x82, 0x01, 0x00, 0x04, 0x01, 0x01}
	b = append(b, []byte("....Duca")...)
	core := []byte{0x01, 0xc0, 0xd8, 0x00, 0x04, 0x00, 0x08, 0x00}
	core = binary.LittleEndian.AppendUint16(core, uint16(w))
	core = binary.LittleEndian.AppendUint16(core, uint16(h))
	core = append(core, make([]byte, 12)...) // the rest of the core block, as far as the tap cares
	netData := binary.LittleEndian.AppendUint16([]byte{0x03, 0xc0}, uint16(8+12*len(channels)))
	netData = binary.LittleEndian.AppendUint32(netData, uint32(len(channels)))
	for _, c := range channels {
		var entry [12]byte
		copy(entry[:8], c)
		netData = append(netData, entry[:]...)
	}
	return tpkt(append(append(b, core...), netData...))
}

// feed gives stream to f in chunks of n bytes.
func feed(t *testing.T, f func([]byte) error, stream []byte, n int) {
	t.Helper()
	for len(stream) > 0 {
		k := min(n, len(stream))
		// A copy, as a relay's buffer: the tap must not keep it.
		if err := f(bytes.Clone(stream[:k])); err != nil {
			t.Fatal(err)
		}
		stream = stream[k:]
	}
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestRDPTap: CredSSP messages are not recorded, the Client Info's
// password and cookie are zeroed, the desktop size is noted, and what the
// relay passes on is not changed; whatever the reads' boundaries.
func TestRDPTap(t *testing.T) {
	const password = "Sesame-Öffne-dich-42"
	cookie := bytes.Repeat([]byte{0xc5}, 28)
	info := clientInfo("LAB", "alice", password, cookie)
	rdpClient := concat(connectInitial(1280, 800, "cliprdr", "drdynvc"), tpkt([]byte{4, 1, 0, 1, 0}), info, []byte{0x04, 0x06, 1, 2, 3, 4})
	rdpServer := concat(tpkt([]byte("connect response")), tpkt([]byte("demand active")))
	nlaClient := concat(tsRequest(60, "NTLM negotiate"), tsRequest(300, "authinfo "+password))
	nlaServer := concat(tsRequest(200, "NTLM challenge"), tsRequest(70, "pubkey"))
	for _, tc := range []struct {
		name           string
		protocol       uint32
		client, server []byte
	}{
		{"TLS", 1, rdpClient, rdpServer},
		{"NLA", protocolHybrid, concat(nlaClient, rdpClient), concat(nlaServer, rdpServer)},
		{"NLA with early authorization", protocolHybridEx | protocolHybrid, concat(nlaClient, rdpClient),
			concat(nlaServer, []byte{0, 0, 0, 0}, rdpServer)},
	} {
		for _, chunk := range []int{1, 3, 7, 64, 1 << 16} {
			t.Run(fmt.Sprintf("%s/chunks-of-%d", tc.name, chunk), func(t *testing.T) {
				rec, err := CreateRDP(t.TempDir(), RDPHeader{Session: "s1", Protocol: tc.protocol})
				if err != nil {
					t.Fatal(err)
				}
				tap := NewRDPTap(rec, tc.protocol)
				relayed := bytes.Clone(tc.client)
				feed(t, tap.FromServer, tc.server, chunk)
				feed(t, tap.FromClient, relayed, chunk)
				rec.Close()
				if !bytes.Equal(relayed, tc.client) {
					t.Error("the tap changed the relayed bytes")
				}
				_, recs := readAll(t, rec.Path())
				var client, server []byte
				var meta string
				for _, r := range recs {
					switch r.Kind {
					case RDPClient:
						client = append(client, r.Data...)
					case RDPServer:
						server = append(server, r.Data...)
					case RDPMeta:
						meta = string(r.Data)
					}
				}
				if !bytes.Equal(server, rdpServer) {
					t.Errorf("server side recorded % x\nwant % x", server, rdpServer)
				}
				if len(client) != len(rdpClient) {
					t.Fatalf("client side: %d bytes recorded, want %d", len(client), len(rdpClient))
				}
				for _, secret := range [][]byte{[]byte(password), utf16le(password), cookie, []byte("NTLM")} {
					if bytes.Contains(client, secret) || bytes.Contains(server, secret) {
						t.Errorf("%q is in the recording", secret)
					}
				}
				if !bytes.Contains(client, utf16le("alice")) || !bytes.Contains(client, []byte{0x04, 0x06, 1, 2, 3, 4}) {
					t.Error("the client side lost what is not secret")
				}
				if meta != `{"width":1280,"height":800,"channels":["cliprdr","drdynvc"]}` || !tap.ClientInfoRedacted() {
					t.Errorf("meta %q, client info redacted %v", meta, tap.ClientInfoRedacted())
				}
			})
		}
	}
}

// TestRDPTapUnknown: a client stream that is not RDP as the tap knows it
// is not recorded further.
func TestRDPTapUnknown(t *testing.T) {
	rec, err := CreateRDP(t.TempDir(), RDPHeader{Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	tap := NewRDPTap(rec, 1)
	tap.FromClient(connectInitial(800, 600))
	tap.FromClient([]byte{0xff, 'p', 'a', 's', 's'})
	tap.FromClient(clientInfo("", "alice", "secret", nil))
	rec.Close()
	_, recs := readAll(t, rec.Path())
	for _, r := range recs {
		if bytes.Contains(r.Data, []byte("pass")) || bytes.Contains(r.Data, utf16le("secret")) {
			t.Errorf("recorded %q", r.Data)
		}
	}
}

// TestRedactCapturedClientInfo redacts a Client Info PDU that IronRDP's
// web client (npm 0.7.0) sent through the gateway to vm2's FreeRDP shadow
// server after NLA (the client sends the password there too), captured in
// the lab by the tap itself.
func TestRedactCapturedClientInfo(t *testing.T) {
	pdu, err := os.ReadFile("testdata/clientinfo-ironrdp.bin")
	if err != nil {
		t.Fatal(err)
	}
	password := utf16le(capturedPassword)
	if !bytes.Contains(pdu, password) {
		t.Fatal("the captured PDU does not hold the password it was captured with")
	}
	rec, err := CreateRDP(t.TempDir(), RDPHeader{Session: "s1"})
	if err != nil {
		t.Fatal(err)
	}
	tap := NewRDPTap(rec, 1)
	if err := tap.FromClient(bytes.Clone(pdu)); err != nil {
		t.Fatal(err)
	}
	rec.Close()
	_, recs := readAll(t, rec.Path())
	if len(recs) != 1 || len(recs[0].Data) != len(pdu) {
		t.Fatalf("records %v", recs)
	}
	got := recs[0].Data
	if bytes.Contains(got, password) || !tap.ClientInfoRedacted() {
		t.Error("the password is in the recorded Client Info")
	}
	if !bytes.Contains(got, utf16le(capturedUser)) {
		t.Error("the user name was redacted too")
	}
	// Only the password's bytes (and a cookie's, if any) changed.
	diff := 0
	for i := range pdu {
		if pdu[i] != got[i] {
			diff++
		}
	}
	if diff > len(password)+28 {
		t.Errorf("%d bytes changed", diff)
	}
}

// FuzzRDPTap: any input, from either side, is taken without a panic and
// without changing it; the redaction of a Client Info works in place.
func FuzzRDPTap(f *testing.F) {
	if pdu, err := os.ReadFile("testdata/clientinfo-ironrdp.bin"); err == nil {
		f.Add(pdu)
	}
	f.Add(clientInfo("D", "u", "p", bytes.Repeat([]byte{1}, 28)))
	f.Add(connectInitial(1024, 768))
	f.Add(saveSessionInfo(bytes.Repeat([]byte{2}, 16), false))
	f.Add(concat(tsRequest(40, "x"), []byte{0, 0, 0, 0}, tpkt([]byte("y"))))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		tap := NewRDPTap(discardRecords{}, protocolHybrid)
		tap.FromClient(in)
		tap.FromServer(in)
		if !bytes.Equal(in, b) {
			t.Error("the tap changed its input")
		}
		redactSaveSessionInfo(bytes.Clone(b))
		redactClientInfo(bytes.Clone(b))
	})
}

// The credentials of the captured Client Info: the lab's user and the
// password the lab generated at random for it on the machine it was
// captured on.
const (
	capturedUser     = "lab"
	capturedPassword = "OyjnJG9QxC1MLHEd"
)

// saveSessionInfo is a server's Save Session Info PDU (logon info
// extended) with an auto-reconnect packet holding random.
func saveSessionInfo(random []byte, compressed bool) []byte {
	body := binary.LittleEndian.AppendUint32(nil, infoTypeLogonExtended)
	body = binary.LittleEndian.AppendUint16(body, 4+4+arcPacketLen)
	body = binary.LittleEndian.AppendUint32(body, logonExAutoReconnect)
	body = binary.LittleEndian.AppendUint32(body, arcPacketLen)
	body = binary.LittleEndian.AppendUint32(body, arcPacketLen)
	body = binary.LittleEndian.AppendUint32(body, 1)
	body = binary.LittleEndian.AppendUint32(body, 7) // logon ID
	body = append(body, random...)
	sd := []byte{0xea, 0x03, 0x01, 0x00, 0, 1, 0, 0, pduType2SaveSession, 0, 0, 0}
	if compressed {
		sd[9] = packetCompressed
	}
	sc := binary.LittleEndian.AppendUint16(nil, uint16(6+len(sd)+len(body)))
	sc = append(sc, 0x17, 0, 0xea, 0x03)
	payload := concat(sc, sd, body)
	mcs := []byte{0x68, 0, 1, 0x03, 0xeb, 0x70, 0x80 | byte(len(payload)>>8), byte(len(payload))}
	return tpkt(append(mcs, payload...))
}

// TestRDPTapAutoReconnect: the server's auto-reconnect random is not
// recorded, whether or not the PDU can be read; fast-path updates around
// it are recorded as they are.
func TestRDPTapAutoReconnect(t *testing.T) {
	random := bytes.Repeat([]byte{0xab}, 16)
	fast := []byte{0x00, 0x08, 1, 2, 3, 4, 5, 6}
	for _, compressed := range []bool{false, true} {
		for _, chunk := range []int{1, 5, 1 << 16} {
			rec, err := CreateRDP(t.TempDir(), RDPHeader{Session: "s1", Protocol: 1})
			if err != nil {
				t.Fatal(err)
			}
			tap := NewRDPTap(rec, 1)
			stream := concat(fast, saveSessionInfo(random, compressed), fast)
			feed(t, tap.FromServer, stream, chunk)
			rec.Close()
			_, recs := readAll(t, rec.Path())
			var got []byte
			for _, r := range recs {
				got = append(got, r.Data...)
			}
			if len(got) != len(stream) || bytes.Contains(got, random) || !bytes.HasPrefix(got, fast) || !bytes.HasSuffix(got, fast) {
				t.Errorf("compressed %v, chunks of %d: recorded % x", compressed, chunk, got)
			}
		}
	}
}

// discardRecords is a RecordWriter that keeps nothing.
type discardRecords struct{}

func (discardRecords) Record(byte, []byte) error { return nil }
