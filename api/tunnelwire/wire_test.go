package tunnelwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

// rawRequest builds request bytes field by field, valid or not.
func rawRequest(version byte, token, target string, port uint16, extra ...byte) []byte {
	body := []byte{byte(len(token))}
	body = append(body, token...)
	body = append(body, byte(len(target)))
	body = append(body, target...)
	body = binary.BigEndian.AppendUint16(body, port)
	body = append(body, extra...)
	b := append([]byte("BTUN"), version)
	b = binary.BigEndian.AppendUint16(b, uint16(len(body)))
	return append(b, body...)
}

func TestRequestMarshal(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Request
		ok   bool
	}{
		{"typical", Request{Token: "bst_0123456789abcdef_secret", Target: "vm1", Port: 3389}, true},
		{"shortest", Request{Token: "t", Target: "a", Port: 1}, true},
		{"longest", Request{Token: strings.Repeat("~", MaxToken), Target: strings.Repeat("z", MaxTarget), Port: 65535}, true},
		{"every target character", Request{Token: "!", Target: "abc-xyz.0123456789", Port: 22}, true},
		{"empty token", Request{Target: "vm1", Port: 22}, false},
		{"token too long", Request{Token: strings.Repeat("x", MaxToken+1), Target: "vm1", Port: 22}, false},
		{"token with a space", Request{Token: "a b", Target: "vm1", Port: 22}, false},
		{"token with a control character", Request{Token: "a\nb", Target: "vm1", Port: 22}, false},
		{"token not ASCII", Request{Token: "é", Target: "vm1", Port: 22}, false},
		{"empty target", Request{Token: "t", Port: 22}, false},
		{"target too long", Request{Token: "t", Target: strings.Repeat("a", MaxTarget+1), Port: 22}, false},
		{"upper-case target", Request{Token: "t", Target: "VM1", Port: 22}, false},
		{"IPv6 address as target", Request{Token: "t", Target: "2001:db8::5", Port: 22}, true},
		{"IPv4 address as target", Request{Token: "t", Target: "10.1.2.3", Port: 22}, true},
		{"IPv6 address in upper case", Request{Token: "t", Target: "2001:DB8::5", Port: 22}, false},
		{"IPv6 address not in its shortest form", Request{Token: "t", Target: "2001:db8:0::5", Port: 22}, false},
		{"IPv6 address in brackets", Request{Token: "t", Target: "[2001:db8::5]", Port: 22}, false},
		{"IPv6 address with a zone", Request{Token: "t", Target: "fe80::1%eth0", Port: 22}, false},
		{"IPv4-mapped address", Request{Token: "t", Target: "::ffff:10.1.2.3", Port: 22}, false},
		{"a colon in a name", Request{Token: "t", Target: "vm1:22", Port: 22}, false},
		{"target with an underscore", Request{Token: "t", Target: "vm_1", Port: 22}, false},
		{"port 0", Request{Token: "t", Target: "vm1"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b, err := c.r.Marshal()
			if !c.ok {
				var pe *ProtocolError
				if !errors.As(err, &pe) || pe.Status != StatusBadRequest {
					t.Fatalf("Marshal: %v, want a bad-request ProtocolError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if want := rawRequest(Version, c.r.Token, c.r.Target, c.r.Port); !bytes.Equal(b, want) {
				t.Fatalf("Marshal: %x, want %x", b, want)
			}
			if len(b) > 7+MaxRequest {
				t.Fatalf("%d bytes, more than the bound", len(b))
			}
			// The relayed bytes that follow stay unread.
			rd := bytes.NewReader(append(b, "payload"...))
			got, err := ReadRequest(rd)
			if err != nil || got != c.r {
				t.Fatalf("ReadRequest: %+v, %v", got, err)
			}
			if rest, _ := io.ReadAll(rd); string(rest) != "payload" {
				t.Fatalf("ReadRequest left %q, want the payload", rest)
			}
		})
	}
}

func TestReadRequest(t *testing.T) {
	good := rawRequest(Version, "tok", "vm1", 22)
	for _, c := range []struct {
		name    string
		data    []byte
		status  Status // of the *ProtocolError; 0 for a plain error
		version uint8
		msg     string
	}{
		{"HTTP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), StatusBadRequest, Version, "not a tunnel request"},
		{"bad magic", append([]byte("BTUX"), good[4:]...), StatusBadRequest, Version, "not a tunnel request"},
		{"unknown version, nothing else", []byte("BTUN\x09"), StatusUnsupportedVersion, 9, "version 9 is not supported"},
		{"version 0", append([]byte("BTUN\x00"), good[5:]...), StatusUnsupportedVersion, 0, "version 0"},
		{"future version with a longer header", append([]byte("BTUN\x02\xff\xff\xff"), make([]byte, 100)...), StatusUnsupportedVersion, 2, "speaks version 1"},
		{"length over the bound", []byte("BTUN\x01\x04\x01"), StatusBadRequest, Version, "1025 bytes long"},
		{"length at its bound with junk", append([]byte("BTUN\x01\x04\x00"), make([]byte, 1024)...), StatusBadRequest, Version, ""},
		{"length too small", []byte("BTUN\x01\x00\x05\x01t\x01a\x00"), StatusBadRequest, Version, "less than 6"},
		{"trailing byte", rawRequest(Version, "tok", "vm1", 22, 0), StatusBadRequest, Version, "1 bytes after the port"},
		{"token past the end", []byte("BTUN\x01\x00\x06\x09abcde"), StatusBadRequest, Version, "token runs past"},
		{"target past the end", []byte("BTUN\x01\x00\x06\x01t\x05abc"), StatusBadRequest, Version, "target runs past"},
		{"no port", []byte("BTUN\x01\x00\x06\x01t\x03vm1"), StatusBadRequest, Version, "no port"},
		{"empty token", rawRequest(Version, "", "vm1", 22), StatusBadRequest, Version, "token"},
		{"token with a space", rawRequest(Version, "a b", "vm1", 22), StatusBadRequest, Version, "token"},
		{"upper-case target", rawRequest(Version, "t", "VM1", 22), StatusBadRequest, Version, `"VM1" is not a target name`},
		{"address as target", rawRequest(Version, "t", "10.0.0.1:22", 22), StatusBadRequest, Version, "not a target name"},
		{"port 0", rawRequest(Version, "t", "vm1", 0), StatusBadRequest, Version, "port 0"},
		{"nothing", nil, 0, 0, "EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ReadRequest(bytes.NewReader(c.data))
			if err == nil {
				t.Fatal("accepted")
			}
			var pe *ProtocolError
			isPE := errors.As(err, &pe)
			switch {
			case c.status == 0 && isPE:
				t.Fatalf("%v: a ProtocolError, want a plain error", err)
			case c.status != 0 && (!isPE || pe.Status != c.status || pe.Version != c.version):
				t.Fatalf("%v (%#v), want status %v version %d", err, pe, c.status, c.version)
			case !strings.Contains(err.Error(), c.msg):
				t.Fatalf("%q does not mention %q", err, c.msg)
			}
		})
	}
}

// TestReadRequestReadsNoMore: the server can answer a request of an
// unknown version even if the client sent a header it cannot parse, and
// it never reads past the request.
func TestReadRequestReadsNoMore(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		read int
	}{
		{"unknown version", []byte("BTUN\x07\x00\x10more"), 5},
		{"bad magic", []byte("HTTP/1.1 200"), 5},
		{"request and payload in one chunk", append(rawRequest(Version, "tok", "vm1", 22), "SSH-2.0-OpenSSH\r\n"...), len(rawRequest(Version, "tok", "vm1", 22))},
		{"over-long length", []byte("BTUN\x01\xff\xff"), 7},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := &countingReader{r: bytes.NewReader(c.data)}
			ReadRequest(r)
			if r.n != c.read {
				t.Fatalf("read %d bytes, want %d", r.n, c.read)
			}
		})
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestReadRequestTruncated: every cut is a bad request (the peer is told),
// except a stream that ends before its first byte.
func TestReadRequestTruncated(t *testing.T) {
	full := rawRequest(Version, "bst_token", "vm1.example", 3389)
	for i := 0; i < len(full); i++ {
		_, err := ReadRequest(bytes.NewReader(full[:i]))
		var pe *ProtocolError
		switch {
		case i == 0:
			if !errors.Is(err, io.EOF) || errors.As(err, &pe) {
				t.Errorf("empty: %v, want io.EOF", err)
			}
		case !errors.As(err, &pe) || pe.Status != StatusBadRequest || !errors.Is(err, io.ErrUnexpectedEOF):
			t.Errorf("cut at %d: %v, want a truncated bad request", i, err)
		}
	}
}

// TestReadRequestReaderErrors: a read error is passed on as it is, and a
// ProtocolError from the conn (a WebSocket without the subprotocol) stays
// one.
func TestReadRequestReaderErrors(t *testing.T) {
	timeout := errors.New("i/o timeout")
	if _, err := ReadRequest(io.MultiReader(bytes.NewReader([]byte("BT")), errReader{timeout})); !errors.Is(err, timeout) {
		t.Errorf("got %v, want the reader's error", err)
	}
	pe := &ProtocolError{Status: StatusBadRequest, Msg: "subprotocol"}
	var got *ProtocolError
	if _, err := ReadRequest(errReader{pe}); !errors.As(err, &got) || got != pe {
		t.Errorf("got %v, want the conn's ProtocolError", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func TestResponseRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Response
		want Response // what is read back
	}{
		{"ok", Response{Status: StatusOK, Message: "s-0123"}, Response{Status: StatusOK, Message: "s-0123", Version: Version}},
		{"empty message", Response{Status: StatusCapacity}, Response{Status: StatusCapacity, Version: Version}},
		{"longest message", Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage)},
			Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage), Version: Version}},
		{"long message cut", Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage+10)},
			Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage), Version: Version}},
		{"cut at a character boundary", Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage-1) + "é"},
			Response{Status: StatusDenied, Message: strings.Repeat("m", MaxMessage-1), Version: Version}},
		{"not UTF-8 repaired", Response{Status: StatusUnreachable, Message: "bad \xff byte"},
			Response{Status: StatusUnreachable, Message: "bad \uFFFD byte", Version: Version}},
		{"unknown status", Response{Status: 200, Message: "future"}, Response{Status: 200, Message: "future", Version: Version}},
		{"unsupported version from a newer server", Response{Status: StatusUnsupportedVersion, Message: "upgrade", Version: 3},
			Response{Status: StatusUnsupportedVersion, Message: "upgrade", Version: 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteResponse(&buf, c.r); err != nil {
				t.Fatal(err)
			}
			buf.WriteString("relayed")
			got, err := ReadResponse(&buf)
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
			if buf.String() != "relayed" {
				t.Fatalf("ReadResponse left %q", buf.String())
			}
		})
	}
}

func TestReadResponseErrors(t *testing.T) {
	for _, c := range []struct {
		name string
		data []byte
		msg  string
	}{
		{"HTTP", []byte("HTTP/1.1 400 Bad Request\r\n"), "did not answer in the tunnel protocol"},
		{"other version", []byte("BTUN\x02\x00\x00\x00"), "version 2 with status ok"},
		{"version 0", []byte("BTUN\x00\x09\x00\x00"), "version 0"},
		{"message too long", []byte("BTUN\x01\x01\x04\x01"), "1025 bytes"},
		{"message not UTF-8", []byte("BTUN\x01\x01\x00\x02\xc3\x28"), "not UTF-8"},
		{"closed before answering", nil, "unexpected EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := ReadResponse(bytes.NewReader(c.data)); err == nil || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("got %v, want an error mentioning %q", err, c.msg)
			}
		})
	}
	var buf bytes.Buffer
	WriteResponse(&buf, Response{Status: StatusDenied, Message: "no role allows it"})
	full := buf.Bytes()
	for i := 0; i < len(full); i++ {
		if _, err := ReadResponse(bytes.NewReader(full[:i])); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", i, err)
		}
	}
}

func TestErrorSentences(t *testing.T) {
	for _, c := range []struct {
		name string
		e    Error
		want string
	}{
		{"message", Error{Status: StatusCapacity, Message: "bastion at capacity", Target: "vm1", Port: 3389, Version: 1},
			"bastion refused the tunnel to vm1:3389: bastion at capacity"},
		{"no message", Error{Status: StatusUnauthorized, Target: "vm2", Port: 22, Version: 1},
			"bastion refused the tunnel to vm2:22: the token is not valid (expired or revoked?): run bastionctl login"},
		{"unknown status", Error{Status: 77, Target: "vm2", Port: 22, Version: 1}, "bastion refused the tunnel to vm2:22: status 77"},
		{"newer bastion", Error{Status: StatusUnsupportedVersion, Message: "x", Target: "vm1", Port: 22, Version: 2},
			"bastion refused the tunnel to vm1:22: the bastion speaks tunnel protocol version 2 and this bastionctl only version 1: upgrade bastionctl"},
		{"older bastion", Error{Status: StatusUnsupportedVersion, Message: "x", Target: "vm1", Port: 22, Version: 0},
			"bastion refused the tunnel to vm1:22: the bastion is older (tunnel protocol version 0, this bastionctl speaks version 1): ask its admin to upgrade it, or use an older bastionctl"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.e.Error(); got != c.want {
				t.Fatalf("got  %q\nwant %q", got, c.want)
			}
		})
	}
	for s := StatusOK; s <= StatusUnsupportedVersion; s++ {
		if strings.HasPrefix(s.String(), "status ") || s.sentence() == "" {
			t.Errorf("status %d has no name or sentence", s)
		}
	}
}

// requestEdges are requests at the size and name limits and one step past
// them, with whether ReadRequest accepts each.
var requestEdges = []struct {
	name string
	data []byte
	ok   bool
}{
	{"longest token", rawRequest(Version, strings.Repeat("~", MaxToken), "vm1", 22), true},
	{"token one byte over", rawRequest(Version, strings.Repeat("~", MaxToken+1), "vm1", 22), false},
	{"longest target", rawRequest(Version, "t", strings.Repeat("a", MaxTarget), 22), true},
	{"target one byte over", rawRequest(Version, "t", strings.Repeat("a", MaxTarget+1), 22), false},
	{"both longest", rawRequest(Version, strings.Repeat("!", MaxToken), strings.Repeat("9", MaxTarget), 65535), true},
	{"empty token", rawRequest(Version, "", "vm1", 22), false},
	{"empty target", rawRequest(Version, "t", "", 22), false},
	{"port 0", rawRequest(Version, "t", "vm1", 0), false},
	{"NUL in the token", rawRequest(Version, "to\x00ken", "vm1", 22), false},
	{"escape in the token", rawRequest(Version, "\x1b]52;c;AAAA\x07", "vm1", 22), false},
	{"DEL in the token", rawRequest(Version, "token\x7f", "vm1", 22), false},
	{"space in the token", rawRequest(Version, "to ken", "vm1", 22), false},
	{"newline in the target", rawRequest(Version, "t", "vm1\nINFO forged", 22), false},
	{"escape in the target", rawRequest(Version, "t", "vm1\x1b[2J", 22), false},
	{"upper case target", rawRequest(Version, "t", "VM1", 22), false},
	{"UTF-8 target", rawRequest(Version, "t", "vm\u00e9", 22), false},
	{"address target with a colon, not canonical", rawRequest(Version, "t", "2001:DB8::1", 22), false},
	{"length at the maximum", append(append(magic[:], Version), binary.BigEndian.AppendUint16(nil, MaxRequest)...), false},
	{"length one over the maximum", append(append(magic[:], Version), binary.BigEndian.AppendUint16(nil, MaxRequest+1)...), false},
	{"length one under the minimum", append(append(magic[:], Version), binary.BigEndian.AppendUint16(nil, minRequestBody-1)...), false},
	{"empty", nil, false},
	{"magic and version only", append(magic[:], Version), false},
}

// TestReadRequestEdges: requests at the limits are read, those one byte
// past them refused as bad requests, and nothing beyond 7+MaxRequest bytes
// is ever read.
func TestReadRequestEdges(t *testing.T) {
	for _, c := range requestEdges {
		t.Run(c.name, func(t *testing.T) {
			r := &countingReader{r: bytes.NewReader(append(slices.Clip(c.data), make([]byte, 2*MaxRequest)...))}
			_, err := ReadRequest(r)
			if (err == nil) != c.ok {
				t.Errorf("ReadRequest: %v, want ok %v", err, c.ok)
			}
			var pe *ProtocolError
			if err != nil && len(c.data) > 0 && (!errors.As(err, &pe) || pe.Status != StatusBadRequest) {
				t.Errorf("ReadRequest: %v, want a bad request", err)
			}
			if r.n > 7+MaxRequest {
				t.Errorf("read %d bytes", r.n)
			}
		})
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, r := range []Request{
		{Token: "bst_0123456789abcdef_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", Target: "vm1", Port: 22},
		{Token: "t", Target: "db-1.prod.example", Port: 3389},
		{Token: strings.Repeat("~", MaxToken), Target: strings.Repeat("a", MaxTarget), Port: 65535},
	} {
		b, err := r.Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, "SSH-2.0-OpenSSH_9.6\r\n"...))
	}
	for _, c := range requestEdges {
		f.Add(c.data)
	}
	f.Add([]byte("BTUN\x09\x00\x00"))
	f.Add([]byte("BTUN\x01\x04\x00"))
	f.Add([]byte("GET /tunnel HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		req, err := ReadRequest(r)
		if r.n > 7+MaxRequest {
			t.Fatalf("read %d bytes", r.n)
		}
		if err != nil {
			var pe *ProtocolError
			if errors.As(err, &pe) && pe.Status != StatusBadRequest && pe.Status != StatusUnsupportedVersion {
				t.Fatalf("ProtocolError with status %v", pe.Status)
			}
			return
		}
		b, err := req.Marshal()
		if err != nil {
			t.Fatalf("a request read cannot be marshalled: %+v: %v", req, err)
		}
		if !bytes.Equal(b, data[:r.n]) {
			t.Fatalf("marshalled %x, read %x", b, data[:r.n])
		}
		again, err := ReadRequest(bytes.NewReader(b))
		if err != nil || again != req {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, req)
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	for _, r := range []Response{
		{Status: StatusOK, Message: "7f3a9c0e2b1d4a68"},
		{Status: StatusCapacity, Message: "bastion at capacity"},
		{Status: StatusUnsupportedVersion, Message: "tunnel protocol version 2 is not supported", Version: 1},
		{Status: StatusUnsupportedVersion, Version: 7},
		{Status: StatusDenied, Message: "alice may not open tunnels to vm2 port 5985 — ask an admin"},
	} {
		var buf bytes.Buffer
		WriteResponse(&buf, r)
		f.Add(buf.Bytes())
	}
	f.Add([]byte("HTTP/1.1 400 Bad Request\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &countingReader{r: bytes.NewReader(data)}
		resp, err := ReadResponse(r)
		if r.n > 8+MaxMessage {
			t.Fatalf("read %d bytes", r.n)
		}
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if err := WriteResponse(&buf, resp); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf.Bytes(), data[:r.n]) {
			t.Fatalf("written %x, read %x", buf.Bytes(), data[:r.n])
		}
		again, err := ReadResponse(&buf)
		if err != nil || again != resp {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, resp)
		}
	})
}

func TestCanonicalTarget(t *testing.T) {
	for _, c := range []struct{ typed, want string }{
		{"vm1", "vm1"},
		{"VM1", "vm1"},
		{"10.1.2.3", "10.1.2.3"},
		{"::ffff:10.1.2.3", "10.1.2.3"},
		{"[2001:db8::5]", "2001:db8::5"},
		{"2001:DB8:0::5", "2001:db8::5"},
		{"[2001:db8::5", "[2001:db8::5"},
		{"fe80::1%eth0", "fe80::1%eth0"},
	} {
		t.Run(c.typed, func(t *testing.T) {
			if got := CanonicalTarget(c.typed); got != c.want {
				t.Errorf("CanonicalTarget(%q) = %q, want %q", c.typed, got, c.want)
			}
		})
	}
}
