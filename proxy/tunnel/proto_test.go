package tunnel

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestRequestRoundTrip(t *testing.T) {
	for _, r := range []Request{
		{Token: "bst_0123456789abcdef_secret", Target: "vm1", Port: 22},
		{Token: strings.Repeat("x", MaxToken), Target: strings.Repeat("a", MaxTarget), Port: 65535},
		{Token: "t", Target: "db-1.prod", Port: 1},
	} {
		b, err := r.Marshal()
		if err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		// The relayed bytes that follow the header stay in the reader.
		rd := bytes.NewReader(append(b, "payload"...))
		got, err := ReadRequest(rd)
		if err != nil || got != r {
			t.Errorf("round trip of %+v: %+v, %v", r, got, err)
		}
		if rest, _ := io.ReadAll(rd); string(rest) != "payload" {
			t.Errorf("ReadRequest consumed the payload: %q left", rest)
		}
	}
}

func TestRequestInvalid(t *testing.T) {
	for _, c := range []struct {
		name string
		r    Request
	}{
		{"empty token", Request{Target: "vm1", Port: 22}},
		{"token too long", Request{Token: strings.Repeat("x", MaxToken+1), Target: "vm1", Port: 22}},
		{"token with a space", Request{Token: "a b", Target: "vm1", Port: 22}},
		{"upper-case target", Request{Token: "t", Target: "VM1", Port: 22}},
		{"target with a colon", Request{Token: "t", Target: "::1", Port: 22}},
		{"target too long", Request{Token: "t", Target: strings.Repeat("a", MaxTarget+1), Port: 22}},
		{"port 0", Request{Token: "t", Target: "vm1"}},
	} {
		if _, err := c.r.Marshal(); err == nil {
			t.Errorf("%s: marshalled", c.name)
		}
	}
}

func TestReadRequestErrors(t *testing.T) {
	good, _ := Request{Token: "tok", Target: "vm1", Port: 22}.Marshal()
	mutate := func(f func(b []byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	for _, c := range []struct {
		name   string
		data   []byte
		status Status // 0: not a ProtocolError (truncated)
	}{
		{"bad magic", mutate(func(b []byte) []byte { b[0] = 'X'; return b }), StatusBadRequest},
		{"HTTP", []byte("GET / HTTP/1.1\r\n\r\n"), StatusBadRequest},
		{"future version", mutate(func(b []byte) []byte { b[4] = 2; return b }), StatusUnsupportedVersion},
		{"length over the bound", mutate(func(b []byte) []byte { b[5], b[6] = 0x04, 0x01; return b }), StatusBadRequest},
		{"trailing byte inside the length", mutate(func(b []byte) []byte { b[6]++; return append(b, 0) }), StatusBadRequest},
		{"field longer than the body", mutate(func(b []byte) []byte { b[7] = 200; return b }), StatusBadRequest},
		{"port 0", mutate(func(b []byte) []byte { b[len(b)-1], b[len(b)-2] = 0, 0; return b }), StatusBadRequest},
	} {
		_, err := ReadRequest(bytes.NewReader(c.data))
		var pe *ProtocolError
		if !errors.As(err, &pe) || pe.Status != c.status {
			t.Errorf("%s: %v, want a %v ProtocolError", c.name, err, c.status)
		}
	}
	for i := range len(good) {
		if _, err := ReadRequest(bytes.NewReader(good[:i])); err == nil || errors.As(err, new(*ProtocolError)) {
			t.Errorf("truncated at %d: %v, want a read error", i, err)
		}
	}
}

func TestResponseRoundTrip(t *testing.T) {
	for _, r := range []Response{
		{StatusOK, "3f2a9c01b7de"},
		{StatusCapacity, "bastion at capacity"},
		{StatusDenied, ""},
		{StatusUnsupportedVersion, "this bastion speaks version 1"},
	} {
		var b bytes.Buffer
		WriteResponse(&b, r)
		b.WriteString("after")
		got, err := ReadResponse(&b)
		if err != nil || got != r {
			t.Errorf("%+v: %+v %v", r, got, err)
		}
		if b.String() != "after" {
			t.Errorf("ReadResponse consumed %q", "after")
		}
	}
	var b bytes.Buffer
	WriteResponse(&b, Response{StatusDenied, strings.Repeat("é", MaxMessage)})
	got, err := ReadResponse(&b)
	if err != nil || len(got.Message) > MaxMessage {
		t.Errorf("long message: %d bytes, %v", len(got.Message), err)
	}
	if _, err := ReadResponse(strings.NewReader("HTTP/1.1 400 Bad Request\r\n")); !errors.Is(err, ErrNotTunnel) {
		t.Errorf("an HTTP answer: %v", err)
	}
	if e := (&Error{Status: StatusCapacity, Message: "bastion at capacity", Target: "vm1", Port: 3389}).Error(); e != "bastion refused the tunnel to vm1:3389: bastion at capacity" {
		t.Errorf("Error() = %q", e)
	}
}

func FuzzReadRequest(f *testing.F) {
	for _, r := range []Request{{"bst_0123456789abcdef_x", "vm1", 22}, {"t", "a.b-c", 3389}} {
		b, _ := r.Marshal()
		f.Add(b)
	}
	f.Add([]byte("BTUN\x02\x00\x00"))
	f.Add([]byte("GET / HTTP/1.1\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		b, err := r.Marshal()
		if err != nil {
			t.Fatalf("parsed %+v does not marshal: %v", r, err)
		}
		if !bytes.Equal(b, data[:len(b)]) {
			t.Fatalf("round trip: %x != %x", b, data[:len(b)])
		}
	})
}

func FuzzReadResponse(f *testing.F) {
	for _, r := range []Response{{StatusOK, "abc"}, {StatusDenied, "not allowed"}} {
		f.Add(r.marshal())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ReadResponse(bytes.NewReader(data))
		if err != nil {
			return
		}
		again, err := ReadResponse(bytes.NewReader(r.marshal()))
		if err != nil || again != r {
			t.Fatalf("round trip of %+v: %+v %v", r, again, err)
		}
	})
}
