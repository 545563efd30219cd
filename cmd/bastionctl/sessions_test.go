package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

// TestPrintSessions: every session is listed with the instance that
// carries it, IPv4 and IPv6 clients alike.
func TestPrintSessions(t *testing.T) {
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	list := []admin.Session{
		{ID: "aaaa00000001", Instance: "bastion-a", User: "alice", Client: netip.MustParseAddrPort("192.0.2.10:50000"), Target: "vm1",
			Protocol: "ssh", Port: 22, Via: "browser", Start: now.Add(-time.Hour), LastActive: now.Add(-time.Minute), BytesUp: 2048, BytesDown: 10},
		{ID: "bbbb00000001", Instance: "bastion-b", User: "bob", Client: netip.MustParseAddrPort("[2001:db8::7]:50001"), Target: "vm2",
			Protocol: "rdp", Port: 3389, Via: "websocket", Start: now.Add(-2 * time.Minute), LastActive: now},
	}
	var out bytes.Buffer
	printSessions(&out, list, now)
	want := []string{
		"ID            INSTANCE   USER   FROM         TARGET    PROTOCOL  VIA        STARTED     IDLE  UP       DOWN",
		"aaaa00000001  bastion-a  alice  192.0.2.10   vm1:22    ssh       browser    1h0m0s ago  1m0s  2.0 KiB  10 B",
		"bbbb00000001  bastion-b  bob    2001:db8::7  vm2:3389  rdp       websocket  2m0s ago    0s    0 B      0 B",
		"2 live sessions",
	}
	if got := strings.Split(strings.TrimRight(out.String(), "\n"), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestWatchLine: 'sessions watch ID' prints the live view's address of a
// browser session, names the instance that carries it in a cluster, and
// refuses a native tunnel and an unknown ID with a sentence.
func TestWatchLine(t *testing.T) {
	list := []admin.Session{
		{ID: "aaaa00000001", Instance: "bastion-a", User: "alice", Client: netip.MustParseAddrPort("192.0.2.10:50000"), Target: "vm1",
			Protocol: "ssh", Via: "browser"},
		{ID: "bbbb00000001", Instance: "bastion-b", User: "bob", Client: netip.MustParseAddrPort("[2001:db8::7]:50001"), Target: "vm2",
			Protocol: "rdp", Via: "browser"},
		{ID: "cccc00000001", Instance: "bastion-a", User: "carol", Client: netip.MustParseAddrPort("[2001:db8::8]:50001"), Target: "vm2",
			Protocol: "tunnel", Via: "quic"},
	}
	st := admin.Status{ServerName: "bastion.example", Instance: "bastion-a"}
	for _, tc := range []struct{ id, want, err string }{
		{"aaaa00000001", "https://bastion.example/watch/aaaa00000001", ""},
		{"bbbb00000001", "https://bastion.example/watch/bbbb00000001   (on instance bastion-b: open it there)", ""},
		{"cccc00000001", "", "native tunnel"},
		{"dddd00000001", "", "no live session dddd00000001"},
	} {
		got, err := watchLine(st, list, tc.id)
		if got != tc.want || (err == nil) != (tc.err == "") || err != nil && !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %q, %v; want %q, %q", tc.id, got, err, tc.want, tc.err)
		}
	}
}
