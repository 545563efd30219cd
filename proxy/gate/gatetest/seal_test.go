package gatetest_test

import (
	"bytes"
	"testing"

	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
)

// TestSealInitialOpens checks the flood's forger against the gate's
// reader: what SealInitial seals, OpenInitial opens, with the same
// connection IDs, token and CRYPTO data, before and after a Retry.
func TestSealInitialOpens(t *testing.T) {
	data := bytes.Repeat([]byte("hello"), 150)
	for _, c := range []struct {
		name              string
		dcid, scid, token []byte
		off               uint64
	}{
		{"first flight", []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{9, 9, 9, 9}, nil, 0},
		{"after a Retry", bytes.Repeat([]byte{7}, 20), nil, bytes.Repeat([]byte{0xaa}, 90), 750},
	} {
		t.Run(c.name, func(t *testing.T) {
			keys, err := gatetest.ClientInitialKeys(c.dcid)
			if err != nil {
				t.Fatal(err)
			}
			pkt := keys.SealInitial([]byte("junk"), c.dcid, c.scid, c.token, 3, gatetest.CryptoFrame(nil, c.off, data), 1200)
			if !bytes.Equal(pkt[:4], []byte("junk")) || len(pkt) != 4+1200 {
				t.Fatalf("%d bytes, prefix %q", len(pkt), pkt[:4])
			}
			hdr, frames, err := quicinitial.OpenInitial(pkt[4:])
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(hdr.DCID, c.dcid) || !bytes.Equal(hdr.SCID, c.scid) || !bytes.Equal(hdr.Token, c.token) {
				t.Errorf("header %x %x %x", hdr.DCID, hdr.SCID, hdr.Token)
			}
			if len(frames) != 1 || frames[0].Offset != c.off || !bytes.Equal(frames[0].Data, data) {
				t.Errorf("frames %+v", frames)
			}
		})
	}
}

// TestParseRetry reads the connection ID and token of a Retry, and refuses
// what is not one.
func TestParseRetry(t *testing.T) {
	tag := bytes.Repeat([]byte{0xee}, 16)
	pkt := append([]byte{0xf0, 0, 0, 0, 1, 2, 0xd, 0xd, 3, 5, 6, 7}, "token"...)
	r, err := gatetest.ParseRetry(append(pkt, tag...))
	if err != nil || !bytes.Equal(r.SCID, []byte{5, 6, 7}) || string(r.Token) != "token" {
		t.Errorf("%x %q %v", r.SCID, r.Token, err)
	}
	for name, b := range map[string][]byte{
		"an Initial":   append([]byte{0xc0}, pkt[1:]...),
		"no tag":       pkt[:11],
		"short header": {0x40, 1, 2, 3, 4, 5, 6, 7},
	} {
		if _, err := gatetest.ParseRetry(b); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
