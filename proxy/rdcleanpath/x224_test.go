package rdcleanpath

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// liveRequest is the Connection Request of the npm 0.7.0 IronRDP client
// with CredSSP on (docs/rdcleanpath.md), for a user name of
// six letters.
const liveRequest = "0300002c27e00000000000" + // TPKT, X.224 CR
	"436f6f6b69653a206d737473686173683d" + "726470757372" + "0d0a" + // Cookie: mstshash=rdpusr\r\n
	"010008000b000000" // RDP_NEG_REQ: SSL | HYBRID | HYBRID_EX

// The IronRDP vectors below are from Devolutions/IronRDP
// crates/ironrdp-testsuite-core/tests/pdu/x224.rs.
const cookieUser = "436f6f6b69653a206d737473686173683d55736572" + "0d0a" // Cookie: mstshash=User\r\n

func TestParseConnectionRequest(t *testing.T) {
	for _, tc := range []struct {
		name, hex string
		want      ConnectionRequest
	}{
		{"live 0.7.0 client", liveRequest,
			ConnectionRequest{Cookie: "rdpusr", Protocols: 0x0b, HasNegotiation: true}},
		{"ironrdp/rdp_security_without_cookie", "0300000b06e00000000000",
			ConnectionRequest{}},
		{"ironrdp/rdp_security_with_cookie", "030000221de00000000000" + cookieUser,
			ConnectionRequest{Cookie: "User"}},
		{"ironrdp/ssl_security_with_cookie", "0300002a25e00000000000" + cookieUser + "0100080003000000",
			ConnectionRequest{Cookie: "User", Protocols: ProtocolSSL | ProtocolHybrid, HasNegotiation: true}},
		{"ironrdp/ssl_security_with_flags", "0300002a25e00000000000" + cookieUser + "0103080003000000",
			ConnectionRequest{Cookie: "User", Protocols: ProtocolSSL | ProtocolHybrid, Flags: 3, HasNegotiation: true}},
		// IronRDP's routing_token_decode line, in a request of ours.
		{"routing token", "0300003732e00000000000" +
			"436f6f6b69653a206d7374733d333634303230353232382e31353632392e30303030" + "0d0a" + "0100080001000000",
			ConnectionRequest{RoutingToken: []byte("Cookie: msts=3640205228.15629.0000"), Protocols: ProtocolSSL, HasNegotiation: true}},
		{"negotiation without cookie", "03000013 0ee00000123400 0100080008000000",
			ConnectionRequest{Protocols: ProtocolHybridEx, HasNegotiation: true}},
		{"empty cookie", "0300002621e00000000000" + "436f6f6b69653a206d737473686173683d" + "0d0a" + "0100080000000000",
			ConnectionRequest{HasNegotiation: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseConnectionRequest(unhex(t, tc.hex))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestParseConnectionRequestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "truncated: 0 bytes"},
		{"short", "0300000a05e000000000", "truncated: 10 bytes"},
		{"TPKT version", "0400000b06e00000000000", "not a TPKT packet (version byte 0x04)"},
		{"TPKT reserved", "0301000b06e00000000000", "TPKT reserved byte 0x01"},
		{"TPKT length", "0300000c06e00000000000", "TPKT length 12 in a packet of 11 bytes"},
		{"trailing byte", "0300000c06e0000000000000", "X.224 length indicator 6 in a TPDU of 8 bytes"},
		{"length indicator", "0300000b07e00000000000", "X.224 length indicator 7 in a TPDU of 7 bytes"},
		{"a Confirm", "0300000b06d00000000000", "X.224 TPDU code 0xd0, want 0xe0"},
		{"credit", "0300000b06e10000000000", "X.224 TPDU code 0xe1, want 0xe0"},
		{"class 4", "0300000b06e00000000040", "X.224 class option 0x40, want class 0"},
		{"DST-REF", "0300000b06e00001000000", "DST-REF 0x0001, want 0"},
		// IronRDP's nego_request_unexpected_rdp_msg_type.
		{"ironrdp/unexpected type", "0300002a25e00000000000" + cookieUser + "0300080003000000",
			"negotiation type 0x03, want RDP_NEG_REQ (0x01)"},
		// IronRDP's cookie_without_cr_lf_error_decode, in a packet.
		{"ironrdp/cookie without CRLF", "030000201be00000000000" + "436f6f6b69653a206d737473686173683d55736572",
			"cookie without CRLF"},
		{"cookie with LF only", "030000211ce00000000000" + "436f6f6b69653a206d737473686173683d55736572" + "0a",
			"cookie without CRLF"},
		{"cookie with a control character", "030000221de00000000000" + "436f6f6b69653a206d737473686173683d550073" + "72" + "0d0a",
			"control character 0x00 in the cookie"},
		{"cookie not UTF-8", "030000221de00000000000" + "436f6f6b69653a206d737473686173683dff736572" + "0d0a",
			"cookie is not UTF-8"},
		{"garbage instead of a cookie", "0300001712e00000000000" + "6e6f74206120636f6f6b6965",
			"negotiation type 0x6e, want RDP_NEG_REQ (0x01)"},
		{"truncated RDP_NEG_REQ", "030000120de00000000000" + "01000800000000",
			"truncated RDP_NEG_REQ (7 bytes)"},
		{"length indicator too large", "0300001313e00000000000" + "0100090003000000",
			"X.224 length indicator 19"},
		{"RDP_NEG_REQ length field", "030000130ee00000000000" + "0100090003000000",
			"RDP_NEG_REQ length 9, want 8"},
		{"correlation info", "0300003732e00000000000" + "0108080003000000" + "06002400" + strings.Repeat("00", 32),
			"RDP_NEG_CORRELATION_INFO is not supported"},
		{"correlation info flag", "030000130ee00000000000" + "0108080003000000",
			"RDP_NEG_CORRELATION_INFO is not supported"},
		{"bytes after RDP_NEG_REQ", "030000140fe00000000000" + "0100080003000000" + "00",
			"1 bytes after the RDP_NEG_REQ"},
		{"two cookies", "030000413ce00000000000" + cookieUser + cookieUser + "0100080003000000",
			"negotiation type 0x43, want RDP_NEG_REQ (0x01)"},
		{"length indicator 255", "03000104" + "ff" + "e00000000000" + strings.Repeat("00", 249),
			"X.224 length indicator 255 in a TPDU of 256 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cr, err := ParseConnectionRequest(unhex(t, tc.hex))
			if err == nil {
				t.Fatalf("parsed %+v", cr)
			}
			if !strings.HasPrefix(err.Error(), "rdcleanpath: X.224 Connection Request: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestConnectionRequestPDU(t *testing.T) {
	if got, want := ConnectionRequestPDU("rdpusr", ProtocolSSL|ProtocolHybrid|ProtocolHybridEx), unhex(t, liveRequest); !bytes.Equal(got, want) {
		t.Errorf("got  %x\nwant %x (the live client's)", got, want)
	}
	// IronRDP's ssl_security_with_cookie.
	if got, want := ConnectionRequestPDU("User", ProtocolSSL|ProtocolHybrid), unhex(t, "0300002a25e00000000000"+cookieUser+"0100080003000000"); !bytes.Equal(got, want) {
		t.Errorf("got  %x\nwant %x (IronRDP's)", got, want)
	}
	if got, want := ConnectionRequestPDU("", ProtocolSSL), unhex(t, "030000130ee000000000000100080001000000"); !bytes.Equal(got, want) {
		t.Errorf("no cookie: got %x, want %x", got, want)
	}
	for _, tc := range []struct {
		name, cookie, want string
	}{
		{"CRLF injection", "bob\r\nCookie: msts=1.2.3\r\n", "bobCookie: msts=1.2.3"},
		{"NUL and DEL", "a\x00b\x7fc", "abc"},
		{"invalid UTF-8", "al\xffice", "alice"},
		{"only control characters", "\r\n", ""},
		{"long", strings.Repeat("x", 300), strings.Repeat("x", 221)},
		{"long multibyte", strings.Repeat("é", 150), strings.Repeat("é", 110)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pkt := ConnectionRequestPDU(tc.cookie, ProtocolHybrid)
			cr, err := ParseConnectionRequest(pkt)
			if err != nil {
				t.Fatal(err)
			}
			want := ConnectionRequest{Cookie: tc.want, Protocols: ProtocolHybrid, HasNegotiation: true}
			if !reflect.DeepEqual(cr, want) {
				t.Fatalf("got %+v, want %+v", cr, want)
			}
		})
	}
}

func TestParseConnectionConfirm(t *testing.T) {
	for _, tc := range []struct {
		name, hex string
		want      ConnectionConfirm
		err       error  // what Err wraps
		text      string // in Err's message
	}{
		{"response TLS", "030000130ed000001234000200080001000000",
			ConnectionConfirm{Negotiation: RDPNegRsp, Protocol: ProtocolSSL}, nil, ""},
		// IronRDP's nego_confirm_response.
		{"ironrdp/response HYBRID", "030000130ed000000000000" + "21f080002000000",
			ConnectionConfirm{Negotiation: RDPNegRsp, Flags: 0x1f, Protocol: ProtocolHybrid}, nil, ""},
		{"response HYBRID_EX", "030000130ed000001234000200080008000000",
			ConnectionConfirm{Negotiation: RDPNegRsp, Protocol: ProtocolHybridEx}, nil, ""},
		{"failure HYBRID_REQUIRED_BY_SERVER", "030000130ed000001234000300080005000000",
			ConnectionConfirm{Negotiation: RDPNegFailure, FailureCode: 5}, ErrNegotiationFailed,
			"rdcleanpath: RDP security negotiation failed: the server requires NLA (CredSSP) (failure code 5, HYBRID_REQUIRED_BY_SERVER)"},
		// IronRDP's nego_confirm_failure.
		{"ironrdp/failure SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER", "030000130ed000000000000300080006000000",
			ConnectionConfirm{Negotiation: RDPNegFailure, FailureCode: 6}, ErrNegotiationFailed,
			"the server requires TLS with a client certificate (failure code 6, SSL_WITH_USER_AUTH_REQUIRED_BY_SERVER)"},
		{"failure SSL_CERT_NOT_ON_SERVER", "030000130ed000001234000300080003000000",
			ConnectionConfirm{Negotiation: RDPNegFailure, FailureCode: 3}, ErrNegotiationFailed,
			"the server has no certificate for TLS"},
		{"failure unknown", "030000130ed000001234000300080063000000",
			ConnectionConfirm{Negotiation: RDPNegFailure, FailureCode: 99}, ErrNegotiationFailed,
			"rdcleanpath: RDP security negotiation failed: failure code 99"},
		{"response protocol 0", "030000130ed000001234000200080000000000",
			ConnectionConfirm{Negotiation: RDPNegRsp}, ErrStandardSecurity,
			"rdcleanpath: the RDP server offers only standard RDP security, which the browser client cannot use: enable TLS or NLA on the server"},
		{"no negotiation", "0300000b06d00000123400",
			ConnectionConfirm{}, ErrStandardSecurity, "enable TLS or NLA on the server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := ParseConnectionConfirm(unhex(t, tc.hex))
			if err != nil {
				t.Fatal(err)
			}
			if cc != tc.want {
				t.Fatalf("got %+v, want %+v", cc, tc.want)
			}
			err = cc.Err()
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Err() = %v", err)
				}
				return
			}
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("Err() = %v, want %v saying %q", err, tc.err, tc.text)
			}
			other := ErrNegotiationFailed
			if tc.err == ErrNegotiationFailed {
				other = ErrStandardSecurity
			}
			if errors.Is(err, other) {
				t.Fatalf("Err() = %v is %v too", err, other)
			}
		})
	}
}

func TestParseConnectionConfirmRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, hex, want string
	}{
		{"empty", "", "truncated: 0 bytes"},
		{"truncated", "030000130ed00000123400020008000100", "TPKT length 19 in a packet of 17 bytes"},
		{"truncated header", "030000130ed000", "truncated: 7 bytes"},
		{"TPKT version", "020000130ed000001234000200080001000000", "not a TPKT packet (version byte 0x02)"},
		{"TPKT length", "030000120ed000001234000200080001000000", "TPKT length 18 in a packet of 19 bytes"},
		{"length indicator", "030000130fd000001234000200080001000000", "X.224 length indicator 15 in a TPDU of 15 bytes"},
		{"a Request", "030000130ee000000000000100080003000000", "X.224 TPDU code 0xe0, want 0xd0"},
		{"class", "030000130ed000001234100200080001000000", "X.224 class option 0x10"},
		// IronRDP's nego_confirm_unexpected_rdp_msg_type.
		{"ironrdp/unexpected type", "030000130ed00000000000af1f080002000000",
			"negotiation type 0xaf, want RDP_NEG_RSP (0x02) or RDP_NEG_FAILURE (0x03)"},
		{"RDP_NEG_REQ", "030000130ed000001234000100080001000000", "negotiation type 0x01"},
		{"structure length", "030000130ed000001234000200070001000000", "negotiation structure length 7, want 8"},
		{"short structure", "030000120dd0000012340002000700010000", "negotiation structure of 7 bytes, want 8"},
		{"trailing garbage", "030000140fd00000123400020008000100000000", "negotiation structure of 9 bytes, want 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cc, err := ParseConnectionConfirm(unhex(t, tc.hex))
			if err == nil {
				t.Fatalf("parsed %+v", cc)
			}
			if !strings.HasPrefix(err.Error(), "rdcleanpath: X.224 Connection Confirm: ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %q, want one saying %q", err, tc.want)
			}
		})
	}
}

func TestReadTPKT(t *testing.T) {
	cc := unhex(t, "030000130ed000001234000200080001000000")

	t.Run("one byte at a time, the rest unread", func(t *testing.T) {
		after := []byte{0x16, 0x03, 0x03} // the server's TLS records
		r := bytes.NewReader(append(bytes.Clone(cc), after...))
		pkt, err := ReadTPKT(iotest.OneByteReader(r), MaxTPKT)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pkt, cc) {
			t.Fatalf("got %x, want %x", pkt, cc)
		}
		if r.Len() != len(after) {
			t.Fatalf("%d bytes left, want %d", r.Len(), len(after))
		}
	})

	t.Run("max", func(t *testing.T) {
		if _, err := ReadTPKT(bytes.NewReader(cc), len(cc)); err != nil {
			t.Fatalf("a packet of exactly max bytes: %v", err)
		}
		if _, err := ReadTPKT(bytes.NewReader(cc), 0); err != nil {
			t.Fatalf("max 0 (MaxTPKT): %v", err)
		}
	})

	for _, tc := range []struct {
		name, hex string
		max       int
		want      string
		read      int // bytes ReadTPKT may consume before refusing
	}{
		{"too large", "03000401" + "0ed0", MaxTPKT, "rdcleanpath: TPKT packet of 1025 bytes exceeds 1024", 4},
		{"too large for max", "030000130ed0", 18, "rdcleanpath: TPKT packet of 19 bytes exceeds 18", 4},
		{"too small", "03000006" + "0000", MaxTPKT, "rdcleanpath: TPKT length 6 below 7", 4},
		{"zero", "03000000", MaxTPKT, "rdcleanpath: TPKT length 0 below 7", 4},
		{"version", "16030100" + "05", MaxTPKT, "rdcleanpath: not a TPKT packet (version byte 0x16)", 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &countingReader{r: bytes.NewReader(unhex(t, tc.hex))}
			_, err := ReadTPKT(r, tc.max)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
			if r.n != tc.read {
				t.Fatalf("read %d bytes before refusing, want %d", r.n, tc.read)
			}
		})
	}

	t.Run("truncated", func(t *testing.T) {
		for n := 1; n < len(cc); n++ {
			_, err := ReadTPKT(bytes.NewReader(cc[:n]), MaxTPKT)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%d of %d bytes: err = %v, want io.ErrUnexpectedEOF", n, len(cc), err)
			}
		}
		if _, err := ReadTPKT(bytes.NewReader(nil), MaxTPKT); !errors.Is(err, io.EOF) {
			t.Fatalf("empty stream: err = %v, want io.EOF", err)
		}
	})
}

func TestProtocolName(t *testing.T) {
	for p, want := range map[uint32]string{
		ProtocolRDP:      "standard RDP security",
		ProtocolSSL:      "TLS",
		ProtocolHybrid:   "CredSSP (NLA)",
		ProtocolRDSTLS:   "RDSTLS",
		ProtocolHybridEx: "CredSSP with Early User Authorization",
		0x0b:             "TLS | CredSSP (NLA) | CredSSP with Early User Authorization",
		0x1f:             "TLS | CredSSP (NLA) | RDSTLS | CredSSP with Early User Authorization | 0x10",
		0x80000002:       "CredSSP (NLA) | 0x80000000",
	} {
		if got := ProtocolName(p); got != want {
			t.Errorf("ProtocolName(%#x) = %q, want %q", p, got, want)
		}
	}
}
