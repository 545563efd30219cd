package portal

import (
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
)

// networkPolicy is testPolicy with a network lab that alice may SSH into
// and a network desks that nobody is granted.
func networkPolicy() *access.Policy {
	return testPolicy(access.Role{Name: "lab", Subjects: []string{"user:alice"}, Targets: []string{"network:lab"}, Protocols: []string{access.SSH}}).
		WithNetworks([]access.Network{
			{Name: "lab", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16"), netip.MustParsePrefix("2001:db8:20::/48")}, SSH: 22,
				TargetName: "{network}-{dashed}"},
			{Name: "desks", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16"), netip.MustParsePrefix("2001:db8:30::/48")}, SSH: 22},
		})
}

// TestConnectByAddress: the portal's "Connect to an address" box, and
// POST /api/connect with an address, IPv4 and IPv6.
func TestConnectByAddress(t *testing.T) {
	rr := &relayRecorder{}
	srv := newTunedTestServer(t, testConfig{Access: networkPolicy()}, tuning{relay: rr.relay})
	sink := audited(t, srv)
	h := srv.routes()
	alice := newBrowser(t, h)
	csrf := alice.signIn("alice")
	sink.Take()

	page := alice.get("/")
	for _, want := range []string{"Connect to an address in lab", "10.20.0.0/16, 2001:db8:20::/48", `name="address"`} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the portal lacks %q:\n%s", want, page.body)
		}
	}
	if strings.Contains(page.body, "desks") {
		t.Errorf("the portal shows a network alice is not granted:\n%s", page.body)
	}

	for _, tc := range []struct{ typed, target string }{
		{"10.20.1.5", "10.20.1.5"},
		{" 10.20.1.6 ", "10.20.1.6"},
		{"2001:db8:20::5", "2001:db8:20::5"},
		{"[2001:db8:20::6]", "2001:db8:20::6"},
		{"::ffff:10.20.1.7", "10.20.1.7"},
	} {
		t.Run("granted/"+tc.typed, func(t *testing.T) {
			r := alice.post("/connect", url.Values{"csrf": {csrf}, "address": {tc.typed}, "protocol": {"ssh"}})
			tk, ok := strings.CutPrefix(r.header.Get("Location"), "/connect/")
			if r.code != http.StatusSeeOther || !ok {
				t.Fatalf("connect to %q: %d %s", tc.typed, r.code, r.body)
			}
			audittest.Check(t, "ticket", sink.Take(), audittest.Want{Event: audit.TicketIssued, Actor: "alice", User: "alice",
				Target: tc.target, Protocol: "ssh", Port: 22, Via: "portal", Source: "2001:db8::10"})
			if r := alice.do(http.MethodGet, "/ws/ssh?ticket="+tk, nil, map[string]string{"Origin": alice.origin}); r.code != http.StatusSwitchingProtocols {
				t.Fatalf("relay: %d", r.code)
			}
			if got := rr.got[len(rr.got)-1]; got.Target != tc.target || got.Port != 22 {
				t.Errorf("the relay got %+v, want target %s port 22", got, tc.target)
			}
			tk2 := strings.TrimPrefix(alice.post("/connect", url.Values{"csrf": {csrf}, "address": {tc.typed}, "protocol": {"ssh"}}).header.Get("Location"), "/connect/")
			sink.Take()
			title := "lab-" + strings.NewReplacer(".", "-", ":", "-").Replace(tc.target)
			if r := alice.get("/connect/" + tk2); !strings.Contains(r.body, "<title>"+title) || !strings.Contains(r.body, `data-target="`+tc.target+`"`) {
				t.Errorf("the connect page of %s lacks the title %s and the address:\n%s", tc.typed, title, r.body)
			}
		})
	}
	for _, tc := range []struct{ name, typed, reason string }{
		{"outside every network, IPv4", "10.21.0.1", authz.UnknownTarget},
		{"outside every network, IPv6", "2001:db8:21::1", authz.UnknownTarget},
		{"in a network not granted, IPv4", "10.30.0.1", authz.NoRole},
		{"in a network not granted, IPv6", "2001:db8:30::1", authz.NoRole},
		{"not an address", "vm9.example", authz.UnknownTarget},
	} {
		t.Run("refused/"+tc.name, func(t *testing.T) {
			r := alice.post("/connect", url.Values{"csrf": {csrf}, "address": {tc.typed}, "protocol": {"ssh"}})
			want := "You may not connect to " + tc.typed + " by SSH: it is not an address of a network open to you."
			if r.code != http.StatusForbidden || r.header.Get("Location") != "" || !strings.Contains(r.body, want) {
				t.Fatalf("connect to %q: %d %s", tc.typed, r.code, r.body)
			}
			if strings.Contains(r.body, "desks") || strings.Contains(r.body, "10.30.0.0") {
				t.Errorf("the refusal names a network alice is not granted:\n%s", r.body)
			}
			audittest.Check(t, "refused", sink.Take(), audittest.Want{Event: audit.ConnectRefused, Actor: "alice", User: "alice",
				Target: tc.typed, Protocol: "ssh", Reason: tc.reason, Via: "portal", Source: "2001:db8::10"})
		})
	}

	t.Run("api", func(t *testing.T) {
		hdr := map[string]string{"X-CSRF-Token": csrf}
		r := alice.do(http.MethodGet, "/api/targets", nil, hdr)
		var ts []access.Reachable
		if err := json.Unmarshal([]byte(r.body), &ts); err != nil || r.code != http.StatusOK {
			t.Fatalf("GET /api/targets: %d %s", r.code, r.body)
		}
		last := ts[len(ts)-1]
		if !last.Network || last.Name != "lab" || strings.Join(last.CIDRs, " ") != "10.20.0.0/16 2001:db8:20::/48" || len(ts) != 2 {
			t.Errorf("GET /api/targets: %+v", ts)
		}
		for _, addr := range []string{"10.20.9.9", "2001:db8:20::9"} {
			if r := alice.postJSON("/api/connect", ConnectRequest{Address: addr, Protocol: "ssh"}, hdr); r.code != http.StatusOK {
				t.Errorf("POST /api/connect {address: %s}: %d %s", addr, r.code, r.body)
			}
		}
		if r := alice.postJSON("/api/connect", ConnectRequest{Address: "10.30.9.9", Protocol: "ssh"}, hdr); r.code != http.StatusForbidden {
			t.Errorf("POST /api/connect to a network not granted: %d %s", r.code, r.body)
		}
		if r := alice.postJSON("/api/connect", ConnectRequest{Target: "vm1", Address: "10.20.9.9", Protocol: "ssh"}, hdr); r.code != http.StatusBadRequest {
			t.Errorf("POST /api/connect with a target and an address: %d %s", r.code, r.body)
		}
	})
}
