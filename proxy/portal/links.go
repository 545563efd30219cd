package portal

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/link"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/webrdp"
	"github.com/bastiond/bastiond/proxy/websession"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// LinksConfig is what shareable links need.
type LinksConfig struct {
	// Store keeps the links; nil or Enabled false: every link's URL
	// answers the expired page (link_refused, reason disabled).
	Store   *link.Store
	Enabled bool
	// Record records the sessions links open.
	Record bool
}

// viaLink is how a link's session came, in its events and records.
const viaLink = "link"

// linkCookie carries the link page's CSRF token (double submit), as
// loginCookie does the sign-in form's.
const linkCookie = "__Host-bastion-link"

// Why a link opened nothing, besides link's states: links are off, or
// the page's form came without its token.
const (
	linkDisabled = "disabled"
	linkForm     = "form"
)

// relayVia is how c's browser session is carried: browser, or link.
func (c caller) relayVia() string {
	if c.link != "" {
		return viaLink
	}
	return "browser"
}

// sessionOrLinkCaller is sessionCaller, or the caller of a shareable
// link's web session: only the connect page, the WebSockets and the
// desktop's outcome accept one.
func (s *Portal) sessionOrLinkCaller(r *http.Request) (caller, bool) {
	if c, ok := s.sessionCaller(r); ok {
		return c, true
	}
	ck, err := r.Cookie(websession.CookieName)
	if err != nil {
		return caller{}, false
	}
	sess, err := s.sessions.Get(ck.Value)
	if err != nil {
		return caller{}, false
	}
	id, ok := link.IDOf(sess.User)
	if !ok {
		return caller{}, false
	}
	c := caller{session: sess, link: id}
	c.user.Name = sess.User
	return c, true
}

// linkConnectPage adapts the connect page of a link's session: no account
// to show, nothing else to go to.
func (s *Portal) linkConnectPage(d *pageData) {
	d.User = ""
	if d.Protocol == access.RDP {
		d.Clipboard = true
	}
}

// errLinkGone is a link's session whose link no longer opens anything.
var errLinkGone = errors.New("this link was revoked, or links are off: ask whoever sent it for a new one")

// liveLink returns the link of c's session, if links are on and it was not
// revoked since (its expiry and uses were checked when it was opened).
func (s *Portal) liveLink(c caller) (link.Link, error) {
	lc := s.cfg.Load().Links
	if lc.Store == nil || !lc.Enabled {
		return link.Link{}, errLinkGone
	}
	l, err := lc.Store.Get(c.link)
	if err != nil {
		return link.Link{}, err
	}
	if !l.Revoked.IsZero() {
		return link.Link{}, errLinkGone
	}
	return l, nil
}

// linkStillGood checks, when its ticket is redeemed, that c's link still
// opens t: not revoked, the same target and protocol, still in the
// inventory. A refusal is a connect_refused event (reason link).
func (s *Portal) linkStillGood(c caller, t ticket.Ticket, src netip.Addr) error {
	l, err := s.liveLink(c)
	if err == nil && (l.Target != t.Target || l.Protocol != t.Protocol) {
		err = errors.New("the ticket is not this link's")
	}
	if err == nil {
		tg, ok := s.policy().Target(t.Target)
		if !ok || (t.Protocol == access.SSH && tg.SSH == 0) || (t.Protocol == access.RDP && tg.RDP == 0) {
			err = fmt.Errorf("%s on %s is no longer in the inventory", t.Protocol, t.Target)
		}
	}
	if err != nil {
		s.authz().Refuse(c.who(src, viaLink), authz.What{Target: t.Target, Protocol: t.Protocol},
			authz.Refusal{Reason: "link", Detail: err.Error()})
	}
	return err
}

// linkSSH makes the terminal of c's link session the link's: its one
// login, which the page offers alone and the server alone accepts; the
// links' recording; a password or key typed by the user, never the
// bastion's certificate (whoever holds a link still signs in to the
// machine).
func (s *Portal) linkSSH(p *webssh.Params, c caller, t ticket.Ticket) {
	l, err := s.liveLink(c)
	p.Logins = []string{l.Login} // a link gone since: Authorize refuses it

	p.Record = s.cfg.Load().Links.Record
	p.Clipboard = true
	p.FileTransfer = false // nobody signed in vouches for what would leave or enter: no file panel
	p.Certificate = false
	p.Authorize = func(login string) ([]string, error) {
		refuse := err
		if refuse == nil {
			l, refuse = s.liveLink(c)
		}
		if refuse == nil && login != l.Login {
			refuse = fmt.Errorf("this link opens the login %s only, not %s", l.Login, login)
		}
		if refuse != nil {
			s.authz().Refuse(c.who(p.Client.Addr(), viaLink), authz.What{Target: t.Target, Protocol: access.SSH, Login: login},
				authz.Refusal{Reason: "link", Detail: refuse.Error()})
			return nil, refuse
		}
		return nil, nil
	}
}

// linkRDPGrant is the grant of c's link session's desktop.
func (s *Portal) linkRDPGrant(c caller, t ticket.Ticket, src netip.Addr) (webrdp.Grant, error) {
	if err := s.linkStillGood(c, t, src); err != nil {
		return webrdp.Grant{}, &webrdp.Refusal{Status: http.StatusForbidden, Outcome: webrdp.Outcome{Class: webrdp.ClassDenied,
			Message: "This link no longer opens a remote desktop on " + t.Target + "."}}
	}
	return webrdp.Grant{Target: t.Target, Clipboard: true, FileTransfer: false}, nil // as linkSSH: no files
}

// linkPage is GET /l/{secret}: what the link opens and a button to open
// it. Nothing is spent: a chat app's preview of the URL costs no use.
func (s *Portal) linkPage(w http.ResponseWriter, r *http.Request) {
	l, ok := s.checkLink(w, r, false)
	if !ok {
		return
	}
	tok := randomToken()
	http.SetCookie(w, &http.Cookie{Name: linkCookie, Value: tok, Path: "/", MaxAge: 3600, Secure: true, HttpOnly: true,
		SameSite: http.SameSiteStrictMode})
	// The secret is in the form's action, which is this page's own URL.
	s.render(w, http.StatusOK, "link.html", pageData{Title: "Open " + l.Target, Target: l.Target, Protocol: l.Protocol,
		Login: l.Login, CSRF: tok, Until: l.Expires.UTC().Format(time.RFC1123)})
}

// linkOpen is POST /l/{secret}: spends one use of the link and opens its
// session: a web session bound to the link, and a connect ticket for it.
func (s *Portal) linkOpen(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	src := clientAddr(r)
	ck, _ := r.Cookie(linkCookie)
	if err := r.ParseForm(); err != nil || !s.sameOrigin(r) || ck == nil || !equalTokens(ck.Value, r.PostFormValue("csrf")) {
		s.log.Info("link form refused: no matching origin or form token", zap.Stringer("source", src), zap.NamedError("form", err),
			zap.String("origin", r.Header.Get("Origin")), zap.Bool("form_cookie", ck != nil))
		s.linkRefused(src, "", linkForm, "the link's form came without a matching origin or form token (expired, or posted from another site)")
		s.render(w, http.StatusForbidden, "expired.html", pageData{Title: "Session expired"})
		return
	}
	l, ok := s.checkLink(w, r, true)
	if !ok {
		return
	}
	cookie, sess, err := s.sessions.New(link.User(l.ID), src)
	if err != nil {
		s.log.Error("link used, but its web session cannot be stored", zap.String("link", l.ID), zap.Error(err))
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore})
		return
	}
	setCookie(w, websession.CookieName, cookie, 0)
	setCookie(w, linkCookie, "", -1)
	t, _ := s.policy().Target(l.Target)
	port := map[string]uint16{access.SSH: t.SSH, access.RDP: t.RDP}[l.Protocol]
	user := link.User(l.ID)
	v, err := s.tickets.Issue(ticket.Ticket{Session: sess.ID, User: user, Target: l.Target, Protocol: l.Protocol, Port: port})
	if err != nil {
		s.log.Error("link used, but its ticket cannot be issued", zap.String("link", l.ID), zap.Error(err))
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore})
		return
	}
	s.log.Info("link used", zap.String("link", l.ID), zap.Stringer("source", src), zap.String("web_session", sess.ID),
		zap.Int("uses_left", l.Left()))
	s.audit().Audit(audit.Event{Event: audit.LinkUsed, Actor: user, Source: authz.AddrString(src), User: user, Link: l.ID,
		Client: addrport.Parse(r.RemoteAddr).String(), Session: sess.ID, Target: l.Target, Protocol: l.Protocol, Login: l.Login, Via: viaLink,
		Uses: l.Left(), Detail: fmt.Sprintf("use %d of %d", l.Spent, l.Uses)})
	s.audit().Audit(audit.Event{Event: audit.TicketIssued, Actor: user, Source: authz.AddrString(src), User: user,
		Target: l.Target, Protocol: l.Protocol, Port: port, Via: viaLink, Link: l.ID})
	http.Redirect(w, r, "/connect/"+v, http.StatusSeeOther)
}

// checkLink finds the link of the request's secret, spending a use when
// spend is set. A link that opens nothing gets the expired page (the same
// as a spent ticket's) and a link_refused event; the secret of no link
// counts against the source as a failed sign-in does, and a source that
// failed too often is refused unchecked.
func (s *Portal) checkLink(w http.ResponseWriter, r *http.Request, spend bool) (link.Link, bool) {
	src := clientAddr(r)
	expired := func() {
		s.render(w, http.StatusForbidden, "expired.html", pageData{Title: "Session expired"})
	}
	wait, err := s.auth.SourceWait(src, viaLink)
	if err != nil {
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore})
		return link.Link{}, false
	}
	if wait > 0 {
		expired() // SourceWait wrote signin_throttled
		return link.Link{}, false
	}
	lc := s.cfg.Load().Links
	if lc.Store == nil || !lc.Enabled {
		s.linkRefused(src, "", linkDisabled, "links are off (links.enabled)")
		expired()
		return link.Link{}, false
	}
	secret := r.PathValue("secret")
	var l link.Link
	if spend {
		// Checked before the use is spent: a link whose machine left the
		// inventory keeps its uses.
		if l, err = lc.Store.Peek(secret); err == nil && !s.linkTargetKnown(l) {
			err = errLinkTarget
		}
		if err == nil {
			l, err = lc.Store.Spend(secret)
		}
	} else {
		l, err = lc.Store.Peek(secret)
	}
	if ref, ok := errors.AsType[*link.Refused](err); ok {
		detail := ""
		if ref.Reason == link.Unknown {
			detail = "no link has this secret"
			if err := s.auth.SourceFailed(src); err != nil {
				s.log.Error("the secret of no link, and the failure could not be counted", zap.Stringer("source", src), zap.Error(err))
			}
		}
		s.linkRefused(src, ref.Link.ID, ref.Reason, detail)
		expired()
		return link.Link{}, false
	}
	if errors.Is(err, errLinkTarget) {
		s.linkRefused(src, l.ID, "unknown_target", l.Protocol+" on "+l.Target+" is not in the inventory")
		s.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Not available",
			Error: "The machine this link opens is not available. Ask whoever sent it."})
		return link.Link{}, false
	}
	if err != nil {
		s.log.Error("cannot read a link", zap.Stringer("source", src), zap.Error(err))
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore})
		return link.Link{}, false
	}
	return l, true
}

var errLinkTarget = errors.New("the link's machine is not in the inventory")

func (s *Portal) linkTargetKnown(l link.Link) bool {
	t, ok := s.policy().Target(l.Target)
	return ok && ((l.Protocol == access.SSH && t.SSH != 0) || (l.Protocol == access.RDP && t.RDP != 0))
}

// linkRefused writes the link_refused event of a link (id, if known) that
// opened nothing for src.
func (s *Portal) linkRefused(src netip.Addr, id, reason, detail string) {
	s.log.Info("link refused", zap.String("link", id), zap.Stringer("source", src), zap.String("reason", reason))
	actor := audit.ActorAnonymous
	if id != "" {
		actor = link.User(id)
	}
	s.audit().Audit(audit.Event{Event: audit.LinkRefused, Actor: actor, Source: authz.AddrString(src), Link: id, Via: viaLink,
		Reason: reason, Detail: detail})
}

// withoutSecret is a request's path as logs may show it: a link's secret
// is never logged.
func withoutSecret(path string) string {
	if strings.HasPrefix(path, "/l/") {
		return "/l/(secret)"
	}
	return path
}
