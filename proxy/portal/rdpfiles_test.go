package portal

import (
	"net/netip"
	"testing"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/webrdp"
)

type fakeSession struct{ webrdp.Session }

func (fakeSession) ID() string { return "5d6e4972e252" }

// TestFileTransferEvent: a desktop's file is audited with its size and
// hash, an incomplete one with what passed, a refusal with its reason;
// for clients on IPv4 and IPv6.
func TestFileTransferEvent(t *testing.T) {
	for _, client := range []string{"192.0.2.10:50000", "[2001:db8::10]:50000"} {
		ap := netip.MustParseAddrPort(client)
		e := fileTransferEvent("carol", ap, fakeSession{}, webrdp.FileEvent{Direction: webrdp.Upload, Name: "a.txt", Size: 5, Bytes: 5,
			SHA256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae", Complete: true})
		if e.Event != audit.FileTransfer || e.Protocol != "rdp" || e.Direction != "upload" || e.Name != "a.txt" || *e.Size != 5 ||
			!*e.Complete || e.Session != "5d6e4972e252" || e.Client != client || e.Source != ap.Addr().String() || e.User != "carol" {
			t.Errorf("%s: %+v", client, e)
		}
		e = fileTransferEvent("carol", ap, fakeSession{}, webrdp.FileEvent{Direction: webrdp.Download, Name: "big.iso", Size: 9000, Bytes: 4096, SHA256: "ab"})
		if *e.Size != 4096 || *e.Complete {
			t.Errorf("%s: incomplete as %+v", client, e)
		}
		e = fileTransferEvent("carol", ap, fakeSession{}, webrdp.FileEvent{Refused: true, Direction: webrdp.Download, Size: -1})
		if e.Event != audit.FileTransferRefused || e.Reason != "role" || e.Size != nil || e.Complete != nil || e.Direction != "download" {
			t.Errorf("%s: refusal as %+v", client, e)
		}
	}
}
