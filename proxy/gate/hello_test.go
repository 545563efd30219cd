package gate

import (
	"bytes"
	"crypto/tls"
	"testing"

	"github.com/bastiond/bastiond/proxy/gate/gatetest"
)

func TestParseClientHello(t *testing.T) {
	hello := gatetest.ClientHello(t, &tls.Config{ServerName: gatetest.ServerName, NextProtos: []string{"h2", "http/1.1"}})
	raw, h, err := readClientHello(bytes.NewReader(append(hello, "trailing"...)))
	if err != nil {
		t.Fatal(err)
	}
	if h.serverName != gatetest.ServerName || len(h.alpn) != 2 || h.alpn[0] != "h2" || h.alpn[1] != "http/1.1" {
		t.Errorf("parsed %+v", h)
	}
	if !bytes.Equal(raw, hello) {
		t.Errorf("read %d bytes, want exactly the hello's %d", len(raw), len(hello))
	}
	for name, bad := range map[string][]byte{
		"record too long": {22, 3, 1, 0x40, 0x01},
		"not handshake":   {23, 3, 3, 0, 4, 1, 0, 0, 0},
		"not a hello":     {22, 3, 1, 0, 4, 2, 0, 0, 0},
		"huge hello":      {22, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff},
	} {
		if _, _, err := readClientHello(bytes.NewReader(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzClientHello: the reader never panics, never reads past its bound, and
// whatever it accepts a second parse reads the same.
func FuzzClientHello(f *testing.F) {
	for _, cfg := range []*tls.Config{
		{ServerName: gatetest.ServerName},
		{InsecureSkipVerify: true},
		{ServerName: gatetest.ServerName, NextProtos: []string{"h2", "http/1.1"}, MaxVersion: tls.VersionTLS12},
	} {
		f.Add(gatetest.ClientHello(f, cfg))
	}
	f.Add([]byte{22, 3, 1, 0, 4, 1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		raw, h, err := readClientHello(bytes.NewReader(data))
		if len(raw) > len(data) || len(raw) > maxHelloBytes+5*maxHelloRecords {
			t.Fatalf("read %d of %d bytes", len(raw), len(data))
		}
		if err != nil {
			return
		}
		_, h2, err := readClientHello(bytes.NewReader(raw))
		if err != nil || h2.serverName != h.serverName || len(h2.alpn) != len(h.alpn) {
			t.Fatalf("second read differs: %+v %v vs %+v", h2, err, h)
		}
	})
}
