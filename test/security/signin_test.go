package security

import (
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// TestInvariant15StrangersCannotRefuseASignIn: a stranger fills every table
// of the sign-in defences with the worst input it can send, from the /64s
// of an IPv6 /48 and from IPv4 addresses; then a correct sign-in from a new
// address works, the account the flood aimed at still takes its owner's
// password and code, and a guesser is still throttled and locked.
//
// The tables are made small (limits.signin_throttle_entries) so that
// filling them takes seconds: what is tested is what a full table does,
// which does not depend on its size.
func TestInvariant15StrangersCannotRefuseASignIn(t *testing.T) {
	e2e.NeedLab(t)
	removeFirewallAtEnd(t)
	const entries = 32
	// The firewall's per-source connection rate would drop some of the
	// flood's connections: raised, so that every attempt reaches the
	// sign-in.
	d := e2e.StartDaemon(t, e2e.ViaFDs, fmt.Sprintf("limits: {signin_throttle_entries: %d}\nfirewall: {conn_rate: 1000}\n", entries))
	e2e.AddLabUsers(t, d, "alice", "bob", "admin")
	secret, _ := e2e.EnrolTOTP(t, d, "admin")
	flood4, flood6 := netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("2001:db8:f100::/48")
	e2e.RouteSources(t, flood4, flood6)
	pub4, pub6 := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "BASTION_PUB6")
	pw := e2e.TunnelPassword

	// The flood: from entries /64s and entries IPv4 addresses, each
	// sends what used to fill the tables for free (names and passwords
	// over the limits, names that break the rules), then a name that
	// exists nowhere and the admin's name, with wrong passwords.
	long := strings.Repeat("x", 7<<10)
	var sources []netip.Addr
	for i := range entries {
		sources = append(sources, netip.AddrFrom4([4]byte{198, 51, 100, byte(i + 1)}))
		sources = append(sources, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0xf1, 0x00, 0, byte(i), 15: 1}))
	}
	tries := []struct{ user, password string }{
		{long, long},
		{strings.Repeat("a", 65), pw},
		{"admin", strings.Repeat("p", 1025)},
		{"admin\x1b]52;c;ZXZpbA==\x07", pw},
		{"stranger", "wrong password"},
		{"admin", "wrong password"},
	}
	start := time.Now()
	var wg sync.WaitGroup
	work := make(chan netip.Addr)
	for range 4 { // as many as the daemon hashes at once on two cores
		wg.Add(1)
		go func() {
			defer wg.Done()
			for src := range work {
				bastion := pub4
				if src.Is6() {
					bastion = pub6
				}
				for i, try := range tries {
					user := try.user
					if user == "stranger" {
						user += strconv.Itoa(i) + "-" + strings.ReplaceAll(src.String(), ":", "")
					}
					if code, _, err := e2e.NewWebUserFrom(t, bastion, src).TrySignIn(user, try.password, ""); err != nil || code != 401 {
						t.Errorf("flood from %s, try %d: %d %v, want 401", src, i, code, err)
					}
				}
			}
		}()
	}
	for _, src := range sources {
		work <- src
	}
	close(work)
	wg.Wait()
	t.Logf("flood: %d sign-ins from %d sources in %s", len(sources)*len(tries), len(sources), time.Since(start).Round(100*time.Millisecond))

	// Every table is full and has forgotten entries to stay so; no input
	// over the limits reached the log.
	for _, table := range []string{"sources", "pairs"} {
		if n := e2e.Metric(t, `bastiond_signin_throttle_entries{table="`+table+`"}`); n != entries {
			t.Errorf("%s table: %v entries, want %d (full)", table, n, entries)
		}
		if n := e2e.Metric(t, `bastiond_signin_throttle_evictions_total{table="`+table+`"}`); n < entries {
			t.Errorf("%s table: %v evictions, want at least %d", table, n, entries)
		}
	}
	if n := e2e.Metric(t, `bastiond_signin_throttle_entries{table="users"}`); n != 1 {
		t.Errorf("accounts table: %v entries, want 1 (admin: names of no account are not kept)", n)
	}
	if n := e2e.Metric(t, `bastiond_signins_total{outcome="malformed"}`); n != float64(4*len(sources)) {
		t.Errorf("malformed sign-ins counted: %v, want %d", n, 4*len(sources))
	}
	log := d.Log.String()
	if strings.Contains(log, "xxxxxxxx") || strings.Contains(log, "aaaaaaaa") || strings.Contains(log, "ZXZpbA") {
		t.Error("input over the limits or against the name rules reached the daemon's log")
	}

	// Correct sign-ins from new addresses work: the sources table is full
	// of the flood's entries, and nobody is turned away for it.
	for _, from := range []struct {
		bastion string
		src     netip.Addr
	}{
		{pub4, netip.MustParseAddr(e2e.LabValue(t, "CLIENT4"))},
		{pub6, netip.MustParseAddr(e2e.LabValue(t, "CLIENT6"))},
		{pub4, netip.MustParseAddr("198.51.100.240")},
		{pub6, netip.MustParseAddr("2001:db8:f100:f0::1")},
	} {
		if code, page := e2e.NewWebUserFrom(t, from.bastion, from.src).SignIn("alice", pw, ""); code != 303 {
			t.Errorf("alice from %s after the flood: %d\n%s", from.src, code, page)
		}
	}
	// The admin's account, which the flood aimed at, is held up for the
	// password alone, and takes its owner's password and code.
	fresh := netip.MustParseAddr("2001:db8:f100:f1::1")
	if code, _ := e2e.NewWebUserFrom(t, pub6, fresh).SignIn("admin", pw, ""); code != 401 {
		t.Errorf("admin's password alone, while the flood holds the account up: %d, want 401", code)
	}
	if code, page := e2e.NewWebUserFrom(t, pub6, fresh).SignIn("admin", pw, e2e.TOTPAt(t, secret, 1)); code != 303 {
		t.Errorf("admin's password and code after the flood: %d\n%s", code, page)
	}

	// A guesser, over IPv4 and IPv6, is still throttled, then locks the
	// account it guesses, and only for itself where there is a second
	// factor... alice and bob have none, so the lock holds for everyone
	// until it ends or an admin lifts it.
	guessers := []struct {
		user, bastion string
		src           netip.Addr
	}{
		{"alice", pub4, netip.MustParseAddr("198.51.100.250")},
		{"bob", pub6, netip.MustParseAddr("2001:db8:f100:f2::1")},
	}
	locked := map[string]bool{}
	deadline := time.Now().Add(150 * time.Second)
	for attempts := 0; len(locked) < len(guessers) && attempts < 200 && time.Now().Before(deadline); attempts++ {
		for _, g := range guessers {
			if !locked[g.user] {
				if code, _ := e2e.NewWebUserFrom(t, g.bastion, g.src).SignIn(g.user, "guess "+strconv.Itoa(attempts), ""); code != 401 {
					t.Fatalf("%s's guess: %d", g.user, code)
				}
			}
		}
		out, _ := d.Ctl(nil, "users", "list")
		for _, g := range guessers {
			if regexp.MustCompile(`(?m)^` + g.user + `\s+locked until \S+ by ` + regexp.QuoteMeta(sourceOf(g.src))).MatchString(out) {
				locked[g.user] = true
			}
		}
		time.Sleep(time.Second)
	}
	log = d.Log.String()
	for _, g := range guessers {
		checked := countLines(log, `"msg":"login failed"`, `"user":"`+g.user+`"`, `"source":"`+g.src.String()+`"`) +
			countLines(log, `"msg":"account locked"`, `"user":"`+g.user+`"`, `"source":"`+g.src.String()+`"`)
		throttled := countLines(log, `"msg":"login refused: throttled"`, `"user":"`+g.user+`"`, `"source":"`+g.src.String()+`"`)
		t.Logf("guesser against %s from %s: %d guesses checked, %d refused unchecked", g.user, g.src, checked, throttled)
		if !locked[g.user] || checked != 10 || throttled == 0 {
			t.Errorf("guesser against %s: locked %v after %d checked guesses and %d throttled, want locked after 10 and some throttled",
				g.user, locked[g.user], checked, throttled)
		}
		if code, _ := e2e.NewWebUserFrom(t, g.bastion, g.src).SignIn(g.user, pw, ""); code != 401 {
			t.Errorf("the right password of %s from the guesser that locked it: %d, want 401", g.user, code)
		}
		// Invariant 12: the lockout is an audit event, naming the guesser.
		if waitEvent(t, d, func(e map[string]any) bool {
			return e["event"] == "account_locked" && e["user"] == g.user && e["source"] == g.src.String() && e["until"] != nil
		}) == nil {
			t.Errorf("no account_locked audit event for %s from %s", g.user, g.src)
		}
	}
	if out, err := d.Ctl(nil, "users", "unlock", "alice"); err != nil {
		t.Fatalf("unlock: %v\n%s", err, out)
	}
	if waitEvent(t, d, func(e map[string]any) bool {
		return e["event"] == "user_unlocked" && e["user"] == "alice" && e["source"] == "local"
	}) == nil {
		t.Error("no user_unlocked audit event")
	}
	if code, _ := e2e.NewWebUser(t, pub4).SignIn("alice", pw, ""); code != 303 {
		t.Errorf("alice after an admin's unlock: %d", code)
	}
}

// sourceOf is how the bastion names the source of a: an IPv4 address, an
// IPv6 /64.
func sourceOf(a netip.Addr) string {
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// countLines counts the lines of s that hold every one of parts.
func countLines(s string, parts ...string) int {
	n := 0
	for _, line := range strings.Split(s, "\n") {
		all := true
		for _, p := range parts {
			all = all && strings.Contains(line, p)
		}
		if all {
			n++
		}
	}
	return n
}
