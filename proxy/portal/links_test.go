package portal

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/audit/audittest"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/link"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// linkEnv is a portal with links on, its events and its logs (every
// level), and a relay that records the tickets handed to it.
type linkEnv struct {
	s     *Portal
	h     http.Handler
	links *link.Store
	sink  *capture
	logs  *observer.ObservedLogs
	rr    *relayRecorder
}

func newLinkEnv(t *testing.T, enabled bool) *linkEnv {
	t.Helper()
	rr := &relayRecorder{}
	return linkEnvOf(t, newTunedTestServer(t, testConfig{}, tuning{relay: rr.relay}), enabled, rr)
}

// linkEnvOf is newLinkEnv on the portal s.
func linkEnvOf(t *testing.T, s *Portal, enabled bool, rr *relayRecorder) *linkEnv {
	t.Helper()
	sink := audited(t, s)
	core, logs := observer.New(zapcore.DebugLevel)
	s.log = zap.New(core)
	links := link.NewStore(pgstoretest.Backends[0].Open(t))
	c := *s.cfg.Load()
	c.Links = LinksConfig{Store: links, Enabled: enabled, Record: true}
	if err := s.SetConfig(c); err != nil {
		t.Fatal(err)
	}
	return &linkEnv{s: s, h: s.routes(), links: links, sink: sink, logs: logs, rr: rr}
}

func (e *linkEnv) create(t *testing.T, n link.New) (link.Link, string) {
	t.Helper()
	l, secret, err := e.links.Create(n)
	if err != nil {
		t.Fatal(err)
	}
	return l, secret
}

var linkVM1 = link.New{Target: "vm1", Protocol: access.SSH, Login: "deploy", CreatedBy: "uid:0", Valid: time.Hour, Uses: 2}

// expiredPage is the page of a spent ticket, which every link that opens
// nothing shows too.
func expiredPage(r reply) bool {
	return r.code == http.StatusForbidden && strings.Contains(r.body, "Your session has expired, start again from the portal") &&
		!strings.Contains(r.body, "vm1") && !strings.Contains(r.body, "deploy")
}

// open opens the link of secret in b as a person would: its page, then
// its button. It returns the connect ticket, or "" and the reply.
func open(t *testing.T, b *browser, secret string) (string, reply) {
	t.Helper()
	page := b.get("/l/" + secret)
	if page.code != http.StatusOK {
		return "", page
	}
	r := b.post("/l/"+secret, url.Values{"csrf": {csrfOf(t, page.body)}})
	loc := r.header.Get("Location")
	if r.code != http.StatusSeeOther || !strings.HasPrefix(loc, "/connect/") {
		return "", r
	}
	return strings.TrimPrefix(loc, "/connect/"), r
}

func wsOf(b *browser, tk, protocol string) reply {
	return b.do(http.MethodGet, "/ws/"+protocol+"?ticket="+tk, nil, map[string]string{"Origin": b.origin})
}

// TestLinkUses: a link opens its session as many times as it has uses,
// from a browser with no account, over IPv4 and IPv6; its page spends
// nothing; the session is the link's (user link:ID, via link); then the
// link is used up, and a revoked, expired or unknown one shows the
// expired page; each outcome is its event; no secret in any log or event.
func TestLinkUses(t *testing.T) {
	for _, remote := range []string{"192.0.2.10:40000", "[2001:db8::10]:40000"} {
		t.Run(remote, func(t *testing.T) {
			e := newLinkEnv(t, true)
			src := strings.Trim(remote[:strings.LastIndex(remote, ":")], "[]")
			l, secret := e.create(t, linkVM1)
			user := link.User(l.ID)
			var secrets []string
			secrets = append(secrets, secret)

			b := newBrowser(t, e.h)
			b.remote = remote
			for range 3 {
				p := b.get("/l/" + secret)
				if p.code != http.StatusOK || !strings.Contains(p.body, "vm1") || !strings.Contains(p.body, "deploy") ||
					!strings.Contains(p.body, `<form method="post"`) {
					t.Fatalf("link page: %d\n%s", p.code, p.body)
				}
			}
			if got, _ := e.links.Get(l.ID); got.Spent != 0 {
				t.Fatalf("the page spent %d uses", got.Spent)
			}
			late := newBrowser(t, e.h)
			late.remote = remote
			lateCSRF := csrfOf(t, late.get("/l/"+secret).body)
			audittest.Check(t, "pages", e.sink.Take())

			for use := 1; use <= 2; use++ {
				fresh := newBrowser(t, e.h)
				fresh.remote = remote
				tk, r := open(t, fresh, secret)
				if tk == "" {
					t.Fatalf("use %d: %d\n%s", use, r.code, r.body)
				}
				secrets = append(secrets, tk, fresh.cookies[websession.CookieName].Value)
				audittest.Check(t, "use", e.sink.Take(),
					audittest.Want{Event: audit.LinkUsed, Actor: user, Source: src, User: user, Target: "vm1", Protocol: access.SSH,
						Via: "link", Session: true},
					audittest.Want{Event: audit.TicketIssued, Actor: user, Source: src, User: user, Target: "vm1", Protocol: access.SSH,
						Via: "link", Port: 22})
				if p := fresh.get("/connect/" + tk); p.code != http.StatusOK || !strings.Contains(p.body, `data-ticket="`+tk+`"`) ||
					strings.Contains(p.body, "/logout") {
					t.Fatalf("connect page: %d\n%s", p.code, p.body)
				}
				if r := wsOf(fresh, tk, "ssh"); r.code != http.StatusSwitchingProtocols {
					t.Fatalf("relay: %d %s", r.code, r.body)
				}
				if got := e.rr.got[len(e.rr.got)-1]; got.User != user || got.Target != "vm1" || got.Protocol != access.SSH || got.Port != 22 {
					t.Errorf("relayed %+v", got)
				}
				if got, _ := e.links.Get(l.ID); got.Spent != use {
					t.Errorf("after use %d: %d spent", use, got.Spent)
				}
			}
			refused := func(what, secret, reason string, id bool) {
				t.Helper()
				if r := newBrowser(t, e.h).get("/l/" + secret); !expiredPage(r) {
					t.Errorf("%s: %d\n%s", what, r.code, r.body)
				}
				got := e.sink.Take()
				actor := audit.ActorAnonymous
				if id {
					actor = user
				}
				audittest.Check(t, what, got, audittest.Want{Event: audit.LinkRefused, Actor: actor, Source: "2001:db8::10", Reason: reason})
			}
			refused("used up", secret, link.StateUsedUp, true)
			// A page loaded while it had uses: its button refuses the same.
			if r := late.post("/l/"+secret, url.Values{"csrf": {lateCSRF}}); !expiredPage(r) {
				t.Errorf("used-up link posted: %d", r.code)
			}
			audittest.Check(t, "late button", e.sink.Take(), audittest.Want{Event: audit.LinkRefused, Actor: user, Source: src, Reason: link.StateUsedUp})

			l2, s2 := e.create(t, linkVM1)
			if _, err := e.links.Revoke(l2.ID); err != nil {
				t.Fatal(err)
			}
			user = link.User(l2.ID)
			refused("revoked", s2, link.StateRevoked, true)
			n := linkVM1
			n.Valid = time.Nanosecond
			l3, s3 := e.create(t, n)
			user = link.User(l3.ID)
			refused("expired", s3, link.StateExpired, true)
			refused("unknown", strings.Repeat("A", 43), link.Unknown, false)
			refused("malformed", "not-a-secret", link.Unknown, false)
			secrets = append(secrets, s2, s3)

			for _, entry := range e.logs.All() {
				line := entry.Message
				for k, v := range entry.ContextMap() {
					line += " " + k + "=" + strings.TrimSpace(strings.ReplaceAll(toString(v), "\n", " "))
				}
				for _, sec := range secrets {
					if strings.Contains(line, sec) {
						t.Errorf("a secret is logged: %s", line)
					}
				}
			}
			audittest.NoSecrets(t, e.sink.Take(), secrets...)
		})
	}
}

func toString(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	return fmt.Sprint(v)
}

// TestLinkSessionScope: a link's web session opens its connect page and
// its WebSocket, and nothing else: not the machine list, the API, the
// recordings, the security page, another ticket; and the terminal offers
// and accepts the link's login alone.
func TestLinkSessionScope(t *testing.T) {
	e := newLinkEnv(t, true)
	l, secret := e.create(t, linkVM1)
	b := newBrowser(t, e.h)
	tk, r := open(t, b, secret)
	if tk == "" {
		t.Fatalf("open: %d %s", r.code, r.body)
	}
	sess, err := e.s.sessions.Get(b.cookies[websession.CookieName].Value)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		r    func() reply
		bad  func(reply) bool
	}{
		{"machine list", func() reply { return b.get("/") }, func(r reply) bool { return !strings.Contains(r.body, `action="/login"`) }},
		{"targets API", func() reply { return b.get("/api/targets") }, func(r reply) bool { return r.code != http.StatusUnauthorized }},
		{"connect API", func() reply {
			return b.postJSON("/api/connect", map[string]string{"target": "vm1", "protocol": "ssh"}, map[string]string{"X-CSRF-Token": sess.CSRF})
		}, func(r reply) bool { return r.code != http.StatusForbidden }},
		{"connect form", func() reply {
			return b.post("/connect", url.Values{"csrf": {sess.CSRF}, "target": {"vm1"}, "protocol": {"ssh"}})
		}, func(r reply) bool { return r.code != http.StatusForbidden }},
		{"recordings", func() reply { return b.get("/recordings") }, func(r reply) bool { return r.code == http.StatusOK && !strings.Contains(r.body, `action="/login"`) }},
		{"security", func() reply { return b.get("/security") }, func(r reply) bool { return r.code == http.StatusOK && !strings.Contains(r.body, `action="/login"`) }},
		{"tokens", func() reply { return b.get("/api/tokens") }, func(r reply) bool { return r.code != http.StatusUnauthorized }},
	} {
		if got := tc.r(); tc.bad(got) {
			t.Errorf("%s: %d\n%.300s", tc.name, got.code, got.body)
		}
	}
	// The session survives those refusals: its ticket still opens.
	if r := wsOf(b, tk, "ssh"); r.code != http.StatusSwitchingProtocols {
		t.Fatalf("relay after the refusals: %d %s", r.code, r.body)
	}
	e.sink.Take()

	c := caller{session: sess, link: l.ID}
	c.user.Name = link.User(l.ID)
	tt := ticket.Ticket{User: c.user.Name, Target: "vm1", Protocol: access.SSH, Port: 22}
	p := webssh.Params{Certificate: true, Logins: []string{"root", "deploy"}}
	e.s.linkSSH(&p, c, tt)
	if len(p.Logins) != 1 || p.Logins[0] != "deploy" || p.Certificate || !p.Record {
		t.Fatalf("terminal of a link: logins %v, certificate %v, record %v", p.Logins, p.Certificate, p.Record)
	}
	if _, err := p.Authorize("root"); err == nil {
		t.Error("another login accepted")
	}
	if _, err := p.Authorize("deploy"); err != nil {
		t.Errorf("the link's login refused: %v", err)
	}
	audittest.Check(t, "another login", e.sink.Take(), audittest.Want{Event: audit.ConnectRefused, Actor: c.user.Name,
		Source: "-", User: c.user.Name, Target: "vm1", Protocol: access.SSH, Reason: "link", Via: "link"})

	// Revoked: the session's next ticket opens nothing.
	tk2, _ := e.s.tickets.Issue(ticket.Ticket{Session: sess.ID, User: c.user.Name, Target: "vm1", Protocol: access.SSH, Port: 22})
	if _, err := e.links.Revoke(l.ID); err != nil {
		t.Fatal(err)
	}
	if r := wsOf(b, tk2, "ssh"); r.code != http.StatusForbidden {
		t.Errorf("a revoked link's session relayed: %d", r.code)
	}
	if _, err := p.Authorize("deploy"); err == nil {
		t.Error("a revoked link's login accepted")
	}
	got := e.sink.Take()
	if len(got) != 2 || got[0].Reason != "link" || got[1].Reason != "link" {
		t.Errorf("events of a revoked link's session: %+v", got)
	}
}

// TestLinkRefusals: links off, a form without its token, a machine that
// left the inventory: the page says so, nothing is spent, and each is a
// link_refused event; a source that presented unknown secrets too often
// is refused unchecked.
func TestLinkRefusals(t *testing.T) {
	t.Run("disabled", func(t *testing.T) {
		e := newLinkEnv(t, false)
		_, secret := e.create(t, linkVM1)
		for _, r := range []reply{newBrowser(t, e.h).get("/l/" + secret), newBrowser(t, e.h).post("/l/"+secret, url.Values{})} {
			if !expiredPage(r) {
				t.Errorf("links off: %d\n%s", r.code, r.body)
			}
		}
		got := e.sink.Take()
		if len(got) != 2 || got[0].Reason != linkDisabled || got[1].Reason != linkForm {
			t.Errorf("events: %+v", got)
		}
	})
	t.Run("form", func(t *testing.T) {
		e := newLinkEnv(t, true)
		l, secret := e.create(t, linkVM1)
		for name, tamper := range map[string]func(b *browser, f url.Values){
			"no form token":   func(b *browser, f url.Values) { f.Del("csrf") },
			"wrong token":     func(b *browser, f url.Values) { f.Set("csrf", f.Get("csrf")+"x") },
			"no cookie":       func(b *browser, f url.Values) { delete(b.cookies, linkCookie) },
			"foreign origin":  func(b *browser, f url.Values) { b.origin = "https://evil.example" },
			"no origin":       func(b *browser, f url.Values) { b.origin = "" },
			"subdomain":       func(b *browser, f url.Values) { b.origin = "https://x." + testName },
			"http origin":     func(b *browser, f url.Values) { b.origin = "http://" + testName },
			"another's token": func(b *browser, f url.Values) { f.Set("csrf", csrfOf(t, newBrowser(t, e.h).get("/l/"+secret).body)) },
		} {
			b := newBrowser(t, e.h)
			f := url.Values{"csrf": {csrfOf(t, b.get("/l/"+secret).body)}}
			tamper(b, f)
			if r := b.post("/l/"+secret, f); !expiredPage(r) || b.cookies[websession.CookieName] != nil {
				t.Errorf("%s: %d", name, r.code)
			}
			if got := e.sink.Take(); len(got) != 1 || got[0].Event != audit.LinkRefused || got[0].Reason != linkForm {
				t.Errorf("%s: events %+v", name, got)
			}
		}
		if got, _ := e.links.Get(l.ID); got.Spent != 0 {
			t.Errorf("refused forms spent %d uses", got.Spent)
		}
	})
	t.Run("machine gone", func(t *testing.T) {
		e := newLinkEnv(t, true)
		n := linkVM1
		n.Target = "vm9"
		l, secret := e.create(t, n)
		if tk, r := open(t, newBrowser(t, e.h), secret); tk != "" || r.code != http.StatusForbidden || !strings.Contains(r.body, "not available") {
			t.Errorf("%d %s", r.code, r.body)
		}
		if got, _ := e.links.Get(l.ID); got.Spent != 0 {
			t.Errorf("spent %d", got.Spent)
		}
		if got := e.sink.Take(); len(got) != 1 || got[0].Reason != "unknown_target" || got[0].Link != l.ID {
			t.Errorf("events %+v", got)
		}
	})
	t.Run("unknown secrets throttle the source", func(t *testing.T) {
		e := newLinkEnv(t, true)
		_, secret := e.create(t, linkVM1)
		guesser := newBrowser(t, e.h)
		guesser.remote = "198.51.100.7:5000"
		for range 10 {
			guesser.get("/l/" + strings.Repeat("B", 43))
		}
		// Past its backoff's start, even a good link is refused unchecked
		// from that source (the backoff is minutes long by now)...
		if r := guesser.get("/l/" + secret); !expiredPage(r) {
			t.Errorf("a throttled source opened a link page: %d", r.code)
		}
		got := e.sink.Take()
		if last := got[len(got)-1]; last.Event != audit.SigninThrottled || last.Via != "link" {
			t.Errorf("last event %+v", last)
		}
		// ...and from another source it opens.
		if r := newBrowser(t, e.h).get("/l/" + secret); r.code != http.StatusOK {
			t.Errorf("another source: %d", r.code)
		}
	})
}
