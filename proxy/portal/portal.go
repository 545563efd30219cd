package portal

import (
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/internal/addrport"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/internal/servername"
	"github.com/bastiond/bastiond/proxy/link"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
)

//go:embed pages
var pagesFS embed.FS

var pages = template.Must(template.ParseFS(pagesFS, "pages/*.html"))

// loginCookie carries the login form's CSRF token (double submit): a form
// posted from another site cannot read it, so it cannot echo it.
const loginCookie = "__Host-bastion-login"

// maxFormBytes bounds the body of a form or JSON request.
const maxFormBytes = 16 << 10

// caller is who a request comes from: a web session, or an API token.
type caller struct {
	user    auth.User
	session websession.Session // zero for a token
	token   auth.Token         // zero for a session
	// link is the shareable link whose web session this is (links.go):
	// its only right is the link's target, protocol and login.
	link string
}

// binding is what tickets of this caller are bound to.
func (c caller) binding() string {
	if c.token.ID != "" {
		return "token:" + c.token.ID
	}
	return c.session.ID
}

func clientAddr(r *http.Request) netip.Addr {
	return addrport.Parse(r.RemoteAddr).Addr()
}

// who is c asking, from src, by way of via.
func (c caller) who(src netip.Addr, via string) authz.Who {
	if c.link != "" {
		via = viaLink
	}
	return authz.Who{User: c.user.Name, Granted: c.user.Roles, Groups: c.user.Subjects(), Source: src, Via: via, Token: c.token.ID}
}

// principal is who c is, to the policy.
func (c caller) principal() access.Principal {
	return access.Principal{User: c.user.Name, Granted: c.user.Roles, Groups: c.user.Subjects()}
}

// auditor reports whether c may see and play the recordings.
func (s *Portal) auditor(c caller) bool {
	return s.authz().Auditor(authz.Who{User: c.user.Name, Granted: c.user.Roles, Groups: c.user.Subjects()})
}

// ticketWhat is what a ticket opens: its port is the request's for a
// tunnel only (an SSH or RDP ticket holds the target's, which the policy
// does not ask for).
func ticketWhat(t ticket.Ticket) authz.What {
	x := authz.What{Target: t.Target, Protocol: t.Protocol}
	if t.Protocol == access.Tunnel {
		x.Port = t.Port
	}
	return x
}

// sessionCaller returns the caller of a request that carries a live session cookie.
func (s *Portal) sessionCaller(r *http.Request) (caller, bool) {
	c, err := s.signedIn(r)
	return c, err == nil
}

// errSignedOut is a request without a live web session.
var errSignedOut = errors.New("portal: not signed in")

// signedIn is sessionCaller saying why there is no caller: errSignedOut,
// or an error wrapping store.ErrUnavailable when the cluster's database
// cannot be read, which is no reason to end the session.
func (s *Portal) signedIn(r *http.Request) (caller, error) {
	ck, err := r.Cookie(websession.CookieName)
	if err != nil {
		return caller{}, errSignedOut
	}
	sess, err := s.sessions.Get(ck.Value)
	if err != nil {
		if errors.Is(err, websession.ErrNoSession) {
			return caller{}, errSignedOut
		}
		s.log.Error("web session unreadable: the request is treated as signed out", zap.Error(err))
		if errors.Is(err, store.ErrUnavailable) {
			return caller{}, err
		}
		return caller{}, errSignedOut
	}
	if _, ok := link.IDOf(sess.User); ok {
		// A shareable link's session: no account, and no right but its
		// link's, which only linkCaller's routes give.
		return caller{}, errSignedOut
	}
	u, err := s.auth.Store().User(sess.User)
	if errors.Is(err, store.ErrUnavailable) {
		s.log.Error("account unreadable: the request is treated as signed out", zap.String("web_session", sess.ID), zap.Error(err))
		return caller{}, err
	}
	if err != nil || u.Disabled {
		if err := s.sessions.End(sess.ID); err != nil {
			s.log.Error("cannot end the web session of a disabled or deleted account", zap.String("web_session", sess.ID), zap.Error(err))
			return caller{}, errSignedOut
		}
		s.webSessionExpired(sess, "account_disabled")
		return caller{}, errSignedOut
	}
	return caller{user: u, session: sess}, nil
}

// tokenCaller returns the caller of a request with an Authorization: Bearer
// token carrying scope. present is false when there is no such header.
func (s *Portal) tokenCaller(r *http.Request, scope string) (c caller, present bool, err error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return caller{}, false, nil
	}
	v, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		s.authz().TokenRefused(clientAddr(r), "api", auth.ErrBadToken)
		return caller{}, true, auth.ErrBadToken
	}
	t, u, err := s.auth.Store().CheckToken(strings.TrimSpace(v))
	if err != nil {
		s.authz().TokenRefused(clientAddr(r), "api", err)
		return caller{}, true, err
	}
	if !t.HasScope(scope) {
		s.authz().ScopeRefused(clientAddr(r), "api", t, scope)
		return caller{}, true, errors.New("the token lacks the " + scope + " scope")
	}
	return caller{user: u, token: t}, true, nil
}

// sameOrigin reports whether a browser request comes from our own pages:
// its Origin must be https://HOST where HOST is the request's Host and
// names this bastion. Browsers send Origin on every POST and WebSocket
// upgrade; its absence means a client we do not serve.
func (s *Portal) sameOrigin(r *http.Request) bool {
	o := r.Header.Get("Origin")
	if o == "" {
		return false
	}
	u, err := url.Parse(o)
	if err != nil || u.Scheme != "https" || u.User != nil || u.Path != "" || u.RawQuery != "" {
		return false
	}
	return strings.EqualFold(u.Host, r.Host) && servername.Same(u.Hostname(), s.cfg.Load().ServerName)
}

type pageData struct {
	Title string
	// Page is the body's class; Styles are the page's own stylesheets.
	Page   string
	Styles []string
	// Auditor shows the link to the recordings.
	Auditor    bool
	Recordings []Recording
	User       string
	CSRF       string
	Error      string
	Targets    []access.Reachable
	// Networks are where the "Connect to an address" box may go.
	Networks []access.Reachable
	Target   string
	Protocol string
	Ticket   string
	// Login and Until are a shareable link's login and end of validity.
	Login string
	Until string
	// Script is the client page's module; Clipboard says whether the
	// desktop may share the clipboard.
	Script    string
	Clipboard bool
	// FileTransfer says whether files may pass through the desktop's
	// clipboard (the role's disable_file_transfer).
	FileTransfer bool
	// Providers are the single sign-on buttons of the sign-in page.
	Providers []oidc.Info
	// Refresh, when set, is where the page sends the browser on at once;
	// Code is a bastionctl sign-in's code to type.
	Refresh string
	Code    string
	// Security is the Security page's; Challenge a passkey ceremony's
	// options after a right password (JSON), for the sign-in page.
	Security  *securityPage
	Challenge string
	// Live is the auditors' sessions page's, Watch the live view's.
	Live  []LiveSession
	Watch *watchData
}

func (s *Portal) render(w http.ResponseWriter, code int, name string, d pageData) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	if err := pages.ExecuteTemplate(w, name, d); err != nil {
		s.log.Warn("render page", zap.String("page", name), zap.Error(err))
	}
}

func randomToken() string {
	var b [32]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: name, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode,
	})
}

// portal is GET /: the machine list when signed in, else the login form.
func (s *Portal) portal(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok {
		s.loginPage(w, http.StatusOK, "")
		return
	}
	s.render(w, http.StatusOK, "portal.html", pageData{
		Title: "Machines", User: c.user.Name, CSRF: c.session.CSRF, Auditor: s.auditor(c),
		Targets: s.policy().Reachable(c.principal()), Networks: s.policy().ReachableNetworks(c.principal()),
	})
}

func (s *Portal) loginPage(w http.ResponseWriter, code int, msg string) {
	tok := randomToken()
	setCookie(w, loginCookie, tok, 3600)
	d := pageData{Title: "Sign in", CSRF: tok, Error: msg, Script: "/static/app/passkey.js"}
	if sso := s.sso(); sso != nil {
		d.Providers = sso.Providers()
	}
	s.render(w, code, "login.html", d)
}

// login is POST /login.
func (s *Portal) login(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	ck, err := r.Cookie(loginCookie)
	if err := r.ParseForm(); err != nil || !s.sameOrigin(r) || ck == nil || !equalTokens(ck.Value, r.PostFormValue("csrf")) {
		s.log.Info("login form refused: no matching origin or form token", zap.Stringer("source", clientAddr(r)), zap.NamedError("form", err),
			zap.String("origin", r.Header.Get("Origin")), zap.Bool("form_cookie", ck != nil))
		s.audit().Audit(audit.Event{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Source: authz.AddrString(clientAddr(r)),
			Reason: "form", Detail: "the sign-in form came without a matching origin or form token (expired, or posted from another site)"})
		s.loginPage(w, http.StatusForbidden, "The sign-in form expired. Please sign in again.")
		return
	}
	src := clientAddr(r)
	u, err := s.auth.SignIn(r.Context(), r.PostFormValue("user"), r.PostFormValue("password"), r.PostFormValue("code"), src, s.mfa())
	if errors.Is(err, auth.ErrUnavailable) {
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	}
	if pn, ok := errors.AsType[*auth.PasskeyNeeded](err); ok {
		// The password is right; a passkey, bound to this form, follows.
		ch, err := s.auth.BeginPasskeySecondFactor(s.rp(r), pn, ck.Value)
		if err != nil {
			s.log.Error("cannot begin a passkey's second factor", zap.String("user", pn.User), zap.Error(err))
			s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
			return
		}
		js, _ := json.Marshal(ch)
		s.render(w, http.StatusOK, "login.html", pageData{Title: "Sign in", CSRF: ck.Value, Challenge: string(js), Script: "/static/app/passkey.js"})
		return
	}
	if err != nil {
		s.loginPage(w, http.StatusUnauthorized, auth.ErrLoginFailed.Error())
		return
	}
	if !s.startSession(w, u, src) {
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func equalTokens(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// browserCaller returns the session caller of a state-changing browser
// request: same origin, live session, and the session's CSRF token in the
// form field csrf or the X-CSRF-Token header.
func (s *Portal) browserCaller(r *http.Request) (caller, bool) {
	c, err := s.browserCheck(r)
	return c, err == nil
}

// browserCheck is browserCaller saying why there is no caller (signedIn).
func (s *Portal) browserCheck(r *http.Request) (caller, error) {
	if !s.sameOrigin(r) {
		return caller{}, errSignedOut
	}
	c, err := s.signedIn(r)
	if err != nil {
		return caller{}, err
	}
	tok := r.Header.Get("X-CSRF-Token")
	if tok == "" {
		tok = r.PostFormValue("csrf")
	}
	if !c.session.CheckCSRF(tok) {
		return caller{}, errSignedOut
	}
	return c, nil
}

// logout is POST /logout.
func (s *Portal) logout(w http.ResponseWriter, r *http.Request) {
	c, ok := s.formCaller(w, r)
	if !ok {
		return
	}
	if err := s.sessions.End(c.session.ID); err != nil {
		s.log.Error("sign-out: cannot end the web session", zap.String("web_session", c.session.ID), zap.Error(err))
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Not signed out", Error: errSessionStore,
			User: c.user.Name, CSRF: c.session.CSRF})
		return
	}
	if err := s.tickets.EndSession(c.session.ID); err != nil {
		// Its tickets are bound to a session that no longer exists: they
		// cannot be redeemed, and expire within TTL anyway.
		s.log.Warn("sign-out: cannot drop the session's tickets", zap.String("web_session", c.session.ID), zap.Error(err))
	}
	s.log.Info("signed out", zap.String("user", c.user.Name), zap.String("web_session", c.session.ID))
	start := c.session.Created.UTC()
	s.audit().Audit(audit.Event{Event: audit.Signout, Actor: c.user.Name, Source: authz.AddrString(clientAddr(r)), User: c.user.Name,
		Session: c.session.ID, Start: &start})
	setCookie(w, websession.CookieName, "", -1)
	if sso := s.sso(); sso != nil && c.user.SSO() {
		// RP-initiated logout: signed out of the bastion, the browser goes
		// on to sign out at the provider too, and comes back. A page, not a
		// redirect: the form's CSP (form-action 'self') would stop a
		// redirect to another site.
		if end := sso.EndSessionURL(c.user.Provider, s.origin(r)+"/"); end != "" {
			s.render(w, http.StatusOK, "continue.html", pageData{Title: "Signed out", Refresh: end,
				Error: "Signed out of the bastion. Signing you out of " + sso.Title(c.user.Provider) + "."})
			return
		}
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// formCaller returns the caller of a portal form post (bounded body, same
// origin, live session, CSRF token). A post that fails gets the expired
// page, which is also what a user whose session ended sees.
func (s *Portal) formCaller(w http.ResponseWriter, r *http.Request) (caller, bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	c, err := s.browserCheck(r)
	if errors.Is(err, store.ErrUnavailable) {
		s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore})
		return caller{}, false
	}
	ok := err == nil
	if !ok {
		s.log.Info("browser request refused: origin, session or CSRF token", zap.String("path", r.URL.Path),
			zap.Stringer("source", clientAddr(r)), zap.String("origin", r.Header.Get("Origin")))
		s.render(w, http.StatusForbidden, "expired.html", pageData{Title: "Session expired"})
	}
	return c, ok
}

// connectForm is POST /connect from the portal's buttons.
func (s *Portal) connectForm(w http.ResponseWriter, r *http.Request) {
	c, ok := s.formCaller(w, r)
	if !ok {
		return
	}
	target, address := r.PostFormValue("target"), strings.TrimSpace(r.PostFormValue("address"))
	if address != "" {
		// The "Connect to an address" box.
		target = address
	}
	t, err := s.issueTicket(c, clientAddr(r), target, r.PostFormValue("protocol"), 0)
	if err != nil {
		if !errors.Is(err, errNotAllowed) {
			s.render(w, http.StatusServiceUnavailable, "denied.html", pageData{Title: "Try again", Error: errSessionStore,
				User: c.user.Name, CSRF: c.session.CSRF})
			return
		}
		if address != "" {
			// The same words whether the address is in no network or in
			// one the user's roles do not grant: a user learns no more of
			// the network than the portal lists.
			s.render(w, http.StatusForbidden, "denied.html", pageData{Title: "Not allowed", User: c.user.Name, CSRF: c.session.CSRF,
				Error: fmt.Sprintf("You may not connect to %s by %s: it is not an address of a network open to you.", address,
					strings.ToUpper(r.PostFormValue("protocol")))})
			return
		}
		s.render(w, http.StatusForbidden, "expired.html", pageData{Title: "Not allowed"})
		return
	}
	http.Redirect(w, r, "/connect/"+t, http.StatusSeeOther)
}

var errNotAllowed = errors.New("not allowed")

// errSessionStore is what a user reads when the web sessions or tickets
// cannot be written (a cluster's database is down).
const errSessionStore = "The bastion cannot reach its database just now. Please try again in a moment."

// issueTicket checks that c, from src, may open protocol on target and
// returns a ticket. Either outcome is an audit event: ticket_issued, or
// connect_refused.
func (s *Portal) issueTicket(c caller, src netip.Addr, target, protocol string, port uint16) (string, error) {
	if t, ok := s.policy().Target(target); ok {
		// An address as netip writes it (2001:db8::5 for [2001:db8::5]):
		// what the ticket, the session and its host key pin carry.
		target = t.Name
	}
	d := s.authz().Check(c.who(src, c.via()), authz.What{Target: target, Protocol: protocol, Port: port})
	if !d.Allowed {
		return "", errNotAllowed
	}
	if protocol != access.Tunnel {
		t, _ := s.policy().Target(target)
		port = map[string]uint16{access.SSH: t.SSH, access.RDP: t.RDP}[protocol]
	}
	v, err := s.tickets.Issue(ticket.Ticket{Session: c.binding(), User: c.user.Name, Target: target, Protocol: protocol, Port: port})
	if err != nil {
		s.log.Error("cannot issue a connect ticket", zap.String("user", c.user.Name), zap.Error(err))
		return "", err
	}
	s.audit().Audit(audit.Event{Event: audit.TicketIssued, Actor: c.user.Name, Source: authz.AddrString(src), User: c.user.Name,
		Target: target, Protocol: protocol, Port: port, Via: c.via(), Token: c.token.ID, Roles: d.Roles})
	return v, nil
}

// via is how c is signed in, for the audit trail: the portal (a web
// session) or the API (a token).
func (c caller) via() string {
	if c.token.ID != "" {
		return "api"
	}
	return "portal"
}

// connectPage is GET /connect/{ticket}: the client page for a ticket this
// browser's session holds, and for anything else the expired page alone.
func (s *Portal) connectPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionOrLinkCaller(r)
	var t ticket.Ticket
	err := ticket.ErrExpired
	if ok {
		t, err = s.tickets.Peek(r.PathValue("ticket"), c.session.ID)
	}
	if err != nil {
		s.render(w, http.StatusForbidden, "expired.html", pageData{Title: "Session expired"})
		return
	}
	title := t.Target
	if tg, ok := s.policy().Target(t.Target); ok {
		title = tg.Shown() // an address as its network's target_name writes it
	}
	d := pageData{
		Title: title, User: c.user.Name, CSRF: c.session.CSRF, Page: "wide", Styles: []string{"/static/app/connect.css"},
		Target: t.Target, Protocol: t.Protocol, Ticket: r.PathValue("ticket"), Script: "/static/app/connect.js",
	}
	if t.Protocol == access.RDP {
		// The desktop's client compiles WebAssembly (fetched from a data:
		// URL) and draws through blob: images.
		w.Header().Set("Content-Security-Policy", desktopCSP)
		d.Styles, d.Script = []string{"/static/app/desktop.css"}, "/static/app/desktop.js"
		dec := s.authz().Decide(c.who(clientAddr(r), "browser"), authz.What{Target: t.Target, Protocol: t.Protocol})
		d.Clipboard, d.FileTransfer = !dec.DisableClipboard, !dec.DisableClipboard && !dec.DisableFileTransfer
	}
	if c.link != "" {
		s.linkConnectPage(&d)
	}
	s.render(w, http.StatusOK, "connect.html", d)
}

// relay is GET /ws/{protocol}?ticket=T: the WebSocket of a browser session.
// The Origin must be ours (a page elsewhere cannot ride the user's cookie),
// the ticket must be this session's and is used up here.
func (s *Portal) relay(w http.ResponseWriter, r *http.Request) {
	if !s.sameOrigin(r) {
		s.log.Info("websocket refused: origin", zap.String("origin", r.Header.Get("Origin")), zap.Stringer("source", clientAddr(r)))
		http.Error(w, "forbidden", http.StatusForbidden)
		return
	}
	c, ok := s.sessionOrLinkCaller(r)
	if !ok {
		http.Error(w, ticket.ErrExpired.Error(), http.StatusForbidden)
		return
	}
	if r.PathValue("protocol") == access.RDP {
		s.serveRDP(w, r, c) // its ticket comes inside the WebSocket
		return
	}
	src := clientAddr(r)
	t, err := s.tickets.Redeem(r.URL.Query().Get("ticket"), c.session.ID)
	if err == nil && t.Protocol != r.PathValue("protocol") {
		err = &ticket.Error{Reason: ticket.ReasonBad, Detail: "a ticket for " + t.Protocol + " presented for " + r.PathValue("protocol")}
	}
	if err != nil {
		reason, detail := authz.TicketRefusal(err)
		s.authz().Refuse(c.who(src, "browser"), authz.What{Target: t.Target, Protocol: r.PathValue("protocol")},
			authz.Refusal{Reason: reason, Detail: detail})
		http.Error(w, ticket.ErrExpired.Error(), http.StatusForbidden)
		return
	}
	// Rights are checked again: a reload may have taken them away since
	// the ticket was issued.
	if c.link != "" {
		if err := s.linkStillGood(c, t, src); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
	} else if d := s.authz().Check(c.who(src, "browser"), ticketWhat(t)); !d.Allowed {
		http.Error(w, "not allowed", http.StatusForbidden)
		return
	}
	s.relaySSH(w, r, c, t)
}

// apiError is the body of every API error.
type apiError = api.Error

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// apiCaller authenticates an API request: a bearer token with scope, or a
// web session (with CSRF and Origin checks when state changes).
func (s *Portal) apiCaller(w http.ResponseWriter, r *http.Request, scope string, changes bool) (caller, bool) {
	c, present, err := s.tokenCaller(r, scope)
	if present {
		if errors.Is(err, auth.ErrUnavailable) {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
			return caller{}, false
		}
		if err != nil {
			writeJSON(w, http.StatusUnauthorized, apiError{Error: err.Error()})
			return caller{}, false
		}
		return c, true
	}
	if changes {
		c, err := s.browserCheck(r)
		switch {
		case errors.Is(err, store.ErrUnavailable):
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		case err != nil:
			writeJSON(w, http.StatusForbidden, apiError{Error: "sign in again from the portal (session, origin or CSRF token missing)"})
		}
		return c, err == nil
	}
	c, ok := s.sessionCaller(r)
	if !ok {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "sign in first"})
	}
	return c, ok
}

// decodeJSON reads a bounded JSON body of the right type, refusing unknown fields.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeJSON(w, http.StatusUnsupportedMediaType, apiError{Error: "send application/json"})
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFormBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed request: " + err.Error()})
		return false
	}
	if _, err := dec.Token(); err != io.EOF {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed request: data after the JSON object"})
		return false
	}
	return true
}

// apiTargets is GET /api/targets.
func (s *Portal) apiTargets(w http.ResponseWriter, r *http.Request) {
	c, ok := s.apiCaller(w, r, auth.ScopeAPI, false)
	if !ok {
		return
	}
	// The networks come after the targets, each with "network": true.
	ts := append(s.policy().Reachable(c.principal()), s.policy().ReachableNetworks(c.principal())...)
	if ts == nil {
		ts = []access.Reachable{}
	}
	writeJSON(w, http.StatusOK, ts)
}

// ConnectRequest is the body of POST /api/connect.
type ConnectRequest struct {
	Target string `json:"target"`
	// Address is an address inside a network of GET /api/targets, in
	// place of Target.
	Address  string `json:"address,omitempty"`
	Protocol string `json:"protocol"`
	// Port is the target port of a tunnel.
	Port uint16 `json:"port,omitempty"`
}

// ConnectResponse is its answer.
type ConnectResponse struct {
	Ticket  string    `json:"ticket"`
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
}

// apiConnect is POST /api/connect.
func (s *Portal) apiConnect(w http.ResponseWriter, r *http.Request) {
	c, ok := s.apiCaller(w, r, auth.ScopeAPI, true)
	if !ok {
		return
	}
	var req ConnectRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if req.Address != "" {
		if req.Target != "" {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "give target or address, not both"})
			return
		}
		req.Target = req.Address
	}
	t, err := s.issueTicket(c, clientAddr(r), req.Target, req.Protocol, req.Port)
	if err != nil && !errors.Is(err, errNotAllowed) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusForbidden, apiError{Error: "not allowed: no role of yours covers " + req.Protocol + " on " + strconv.Quote(req.Target)})
		return
	}
	writeJSON(w, http.StatusOK, ConnectResponse{Ticket: t, URL: "/connect/" + t, Expires: time.Now().Add(ticket.TTL).UTC()})
}

// TokenRequest is the body of POST /api/tokens: `bastionctl login`.
type TokenRequest = api.TokenRequest

// TokenResponse carries a new token's secret, shown once.
type TokenResponse = api.TokenResponse

// apiIssueToken is POST /api/tokens.
func (s *Portal) apiIssueToken(w http.ResponseWriter, r *http.Request) {
	var req TokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	// Refused before the password is checked: a lifetime or a comment
	// that cannot be kept costs no sign-in.
	ttl, ok := tokenParams(w, req.TTL, req.Comment)
	if !ok {
		return
	}
	src := clientAddr(r)
	u, err := s.auth.SignIn(r.Context(), req.User, req.Password, req.Code, src, s.mfa())
	if errors.Is(err, auth.ErrUnavailable) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	if _, ok := errors.AsType[*auth.PasskeyNeeded](err); ok {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "this account's second factor is a passkey: sign in with the browser"})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: auth.ErrLoginFailed.Error()})
		return
	}
	s.issueToken(w, u, src, req.Scopes, ttl, req.Comment, "")
}

// tokenParams checks a token request's ttl ("" for the default) and
// comment, answering 400 when the ttl is no duration up to
// auth.MaxTokenTTL or the comment cannot be kept.
func tokenParams(w http.ResponseWriter, ttl, comment string) (time.Duration, bool) {
	if err := auth.CheckTokenComment(comment); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return 0, false
	}
	if ttl == "" {
		return 0, true
	}
	d, err := time.ParseDuration(ttl)
	if err != nil || d <= 0 || d > auth.MaxTokenTTL {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "ttl: a duration up to " + auth.MaxTokenTTL.String()})
		return 0, false
	}
	return d, true
}

// issueToken issues an API token to u, who signed in from src, and
// answers with it; how says how they signed in, for the audit trail.
func (s *Portal) issueToken(w http.ResponseWriter, u auth.User, src netip.Addr, scopes []string, ttl time.Duration, comment, how string) {
	secret, t, err := s.auth.Store().IssueToken(u.Name, scopes, ttl, comment, src.String())
	if errors.Is(err, store.ErrUnavailable) {
		s.log.Error("signed in, but the token cannot be stored", zap.String("user", u.Name), zap.Stringer("source", src), zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	s.log.Info("API token issued", zap.String("user", u.Name), zap.String("token", t.ID), zap.Strings("scopes", t.Scopes),
		zap.Time("expires", t.Expires), zap.Stringer("source", src))
	expires := t.Expires
	detail := "scopes " + strings.Join(t.Scopes, ", ")
	if how != "" {
		detail += "; " + how
	}
	s.audit().Audit(audit.Event{Event: audit.TokenIssued, Actor: u.Name, Source: authz.AddrString(src), User: u.Name, Token: t.ID,
		Until: &expires, Detail: detail})
	writeJSON(w, http.StatusOK, TokenResponse{Secret: secret, Token: api.Token{ID: t.ID, User: t.User, Scopes: t.Scopes,
		Comment: t.Comment, Created: t.Created, Expires: t.Expires, Source: t.Source}})
}

// bearerOnly authenticates a request that only an API token may make.
func (s *Portal) bearerOnly(w http.ResponseWriter, r *http.Request) (caller, bool) {
	c, present, err := s.tokenCaller(r, auth.ScopeAPI)
	if errors.Is(err, auth.ErrUnavailable) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return caller{}, false
	}
	if !present || err != nil {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "present an API token (bastionctl login)"})
		return caller{}, false
	}
	return c, true
}

// apiTokens is GET /api/tokens: the caller's own tokens.
func (s *Portal) apiTokens(w http.ResponseWriter, r *http.Request) {
	c, ok := s.bearerOnly(w, r)
	if !ok {
		return
	}
	ts, err := s.auth.Store().Tokens(c.user.Name)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: "cannot list tokens"})
		return
	}
	writeJSON(w, http.StatusOK, ts)
}

// apiRevokeToken is DELETE /api/tokens/{id}; "current" names the token presented.
func (s *Portal) apiRevokeToken(w http.ResponseWriter, r *http.Request) {
	c, ok := s.bearerOnly(w, r)
	if !ok {
		return
	}
	id := r.PathValue("id")
	if id == "current" {
		id = c.token.ID
	}
	if err := s.auth.Store().RevokeToken(id, c.user.Name); err != nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such token of yours: " + id})
		return
	}
	s.log.Info("API token revoked", zap.String("user", c.user.Name), zap.String("token", id))
	s.audit().Audit(audit.Event{Event: audit.TokenRevoked, Actor: c.user.Name, Source: authz.AddrString(clientAddr(r)), User: c.user.Name,
		Token: id, Via: "api"})
	writeJSON(w, http.StatusOK, struct{}{})
}
