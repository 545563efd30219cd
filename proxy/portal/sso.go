package portal

import (
	"errors"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/websession"
)

// The single sign-on's routes: GET /sso/{provider} sends the browser to
// the provider, GET /sso/callback takes it back, POST /api/sso/token gives
// bastionctl its token. Without providers, all three are the uniform 404.

// challengeRule is an RFC 7636 S256 challenge: 43 base64url characters.
var challengeRule = regexp.MustCompile(`^[A-Za-z0-9_-]{43}$`)

func (s *Portal) sso() *oidc.Set { return s.cfg.Load().SSO }

// origin is https://SERVER_NAME as the browser of r reaches it: with the
// port of its Host when not 443 (a forward, as the demo's, publishes the
// bastion on another). The front door has checked that Host names the
// server.
func (s *Portal) origin(r *http.Request) string {
	name := s.cfg.Load().ServerName
	if _, port, err := net.SplitHostPort(r.Host); err == nil && port != "443" {
		return "https://" + net.JoinHostPort(name, port)
	}
	return "https://" + name
}

func setFlowCookie(w http.ResponseWriter, value string, maxAge int) {
	// Lax, not Strict: the provider sends the browser back with a
	// navigation from its own site.
	http.SetCookie(w, &http.Cookie{Name: oidc.CookieName, Value: value, Path: "/", MaxAge: maxAge,
		Secure: true, HttpOnly: true, SameSite: http.SameSiteLaxMode})
}

// ssoStart is GET /sso/{provider}.
func (s *Portal) ssoStart(w http.ResponseWriter, r *http.Request) {
	sso := s.sso()
	if sso == nil {
		notFound(w, r)
		return
	}
	var cli *oidc.CLI
	if q := r.URL.Query(); q.Has(api.SSOChallengeParam) || q.Has(api.SSOPortParam) {
		port, err := strconv.Atoi(q.Get(api.SSOPortParam))
		if err != nil || port < 0 || port > 65535 || !challengeRule.MatchString(q.Get(api.SSOChallengeParam)) {
			s.loginPage(w, http.StatusBadRequest, "This sign-in link is malformed. Run bastionctl login --sso again.")
			return
		}
		cli = &oidc.CLI{Port: port, Challenge: q.Get(api.SSOChallengeParam)}
	}
	authURL, cookie, err := sso.Begin(r.Context(), r.PathValue("provider"), cli, s.origin(r)+"/sso/callback")
	var e *oidc.Error
	if errors.As(err, &e) && e.Reason == oidc.ReasonUnknownProvider {
		notFound(w, r)
		return
	}
	if err != nil {
		s.ssoRefused(w, r, err)
		return
	}
	s.log.Info("single sign-on begun", zap.String("provider", r.PathValue("provider")), zap.Stringer("source", clientAddr(r)),
		zap.Bool("bastionctl", cli != nil))
	setFlowCookie(w, cookie, int(10*time.Minute/time.Second))
	http.Redirect(w, r, authURL, http.StatusSeeOther)
}

// ssoRefused answers a refused single sign-on with the sign-in page and
// what went wrong, and records it.
func (s *Portal) ssoRefused(w http.ResponseWriter, r *http.Request, err error) {
	src := clientAddr(r)
	var e *oidc.Error
	if !errors.As(err, &e) {
		s.log.Error("single sign-on failed", zap.Error(err))
		s.loginPage(w, http.StatusInternalServerError, "The sign-in failed. Please try again.")
		return
	}
	code, counted := http.StatusUnauthorized, true
	switch e.Reason {
	case oidc.ReasonUnreachable:
		code, counted = http.StatusBadGateway, false
	case oidc.ReasonUnavailable:
		code, counted = http.StatusServiceUnavailable, false
	}
	detail := e.Detail
	if e.Err != nil && !counted {
		detail += ": " + e.Err.Error()
	}
	s.auth.SSOFailed(src, e.Provider, "", e.Reason, detail, counted)
	s.loginPage(w, code, e.Message)
}

// ssoCallback is GET /sso/callback: the provider's answer.
func (s *Portal) ssoCallback(w http.ResponseWriter, r *http.Request) {
	cfg := s.cfg.Load()
	if cfg.SSO == nil {
		notFound(w, r)
		return
	}
	// The page that follows must not tell the code to anyone: not even
	// to this bastion's own next page, in a Referer.
	w.Header().Set("Referrer-Policy", "no-referrer")
	setFlowCookie(w, "", -1)
	src := clientAddr(r)
	if wait, err := s.auth.SourceWait(src, "sso"); err != nil {
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	} else if wait > 0 {
		s.loginPage(w, http.StatusTooManyRequests, auth.ErrLoginFailed.Error())
		return
	}
	var flow string
	if ck, err := r.Cookie(oidc.CookieName); err == nil {
		flow = ck.Value
	}
	q := r.URL.Query()
	id, f, err := cfg.SSO.Finish(r.Context(), flow, oidc.Answer{State: q.Get("state"), Code: q.Get("code"),
		Error: q.Get("error"), ErrorDescription: q.Get("error_description")})
	if err != nil {
		s.ssoRefused(w, r, err)
		return
	}
	u, lost, err := s.auth.SignInSSO(auth.SSOIdentity{Provider: id.Provider, Subject: id.Subject, Name: id.Name, Groups: id.Groups}, src)
	if errors.Is(err, auth.ErrUnavailable) {
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	}
	if err != nil {
		s.loginPage(w, http.StatusForbidden, "Your account cannot sign in here. Please ask your administrator.")
		return
	}
	title := cfg.SSO.Title(id.Provider)
	if lost && cfg.AccessChanged != nil {
		cfg.AccessChanged("the groups of " + u.Name + " at " + id.Provider + " changed at sign-in")
	}
	c := caller{user: u}
	if roles := s.policy().RolesOf(c.principal()); len(roles) == 0 {
		groups := "no groups"
		if len(u.Groups) > 0 {
			groups = "groups " + strings.Join(u.Groups, ", ")
		}
		s.log.Info("signed in through single sign-on, but no role applies", zap.String("user", u.Name), zap.String("provider", id.Provider))
		s.audit().Audit(audit.Event{Event: audit.SigninNoRole, Actor: u.Name, Source: authz.AddrString(src), User: u.Name, Via: "sso",
			Detail: "no role applies to the user or to its " + groups + " at " + id.Provider + ": they see no machines"})
	}
	if f.CLI != nil {
		s.ssoForCLI(w, r, u, id.Provider, title, *f.CLI)
		return
	}
	cookie, sess, err := s.sessions.New(u.Name, src)
	if err != nil {
		s.log.Error("signed in, but the web session cannot be stored", zap.String("user", u.Name), zap.Stringer("source", src), zap.Error(err))
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	}
	s.log.Info("signed in through single sign-on", zap.String("user", u.Name), zap.String("provider", id.Provider),
		zap.Stringer("source", src), zap.String("web_session", sess.ID))
	setCookie(w, websession.CookieName, cookie, 0)
	// A page, not a redirect: after a navigation that began at the
	// provider's site, the browser would not send the new session's
	// SameSite=Strict cookie along a redirect. The page's own
	// navigation is this site's.
	s.render(w, http.StatusOK, "continue.html", pageData{Title: "Signed in", Refresh: "/",
		Error: "Signed in with " + title + ". Continuing to the portal."})
}

// ssoForCLI hands the result of a bastionctl's sign-in to it: a one-time
// code, sent to its loopback listener or shown to be typed.
func (s *Portal) ssoForCLI(w http.ResponseWriter, r *http.Request, u auth.User, provider, title string, cli oidc.CLI) {
	code, err := s.sso().IssueCLICode(u.Name, provider, cli)
	if err != nil {
		s.log.Error("signed in for bastionctl, but the result cannot be stored", zap.String("user", u.Name), zap.Error(err))
		s.loginPage(w, http.StatusServiceUnavailable, errSessionStore)
		return
	}
	s.log.Info("signed in through single sign-on for bastionctl", zap.String("user", u.Name), zap.String("provider", provider),
		zap.Stringer("source", clientAddr(r)), zap.Bool("loopback", cli.Port != 0))
	if cli.Port != 0 {
		to := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(cli.Port), Path: "/callback", RawQuery: url.Values{"code": {code}}.Encode()}
		http.Redirect(w, r, to.String(), http.StatusSeeOther)
		return
	}
	s.render(w, http.StatusOK, "continue.html", pageData{Title: "Signed in for bastionctl", Code: code,
		Error: "Signed in with " + title + " as " + u.Name + "."})
}

// apiSSOToken is POST /api/sso/token: bastionctl redeems a sign-in's
// code, with its verifier, for an API token.
func (s *Portal) apiSSOToken(w http.ResponseWriter, r *http.Request) {
	sso := s.sso()
	if sso == nil {
		notFound(w, r)
		return
	}
	var req api.SSOTokenRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	ttl, ok := tokenParams(w, req.TTL, req.Comment)
	if !ok {
		return
	}
	src := clientAddr(r)
	if wait, err := s.auth.SourceWait(src, "sso"); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	} else if wait > 0 {
		writeJSON(w, http.StatusTooManyRequests, apiError{Error: auth.ErrLoginFailed.Error()})
		return
	}
	name, provider, err := sso.RedeemCLICode(req.Code, req.Verifier)
	if errors.Is(err, oidc.ErrCLICode) {
		s.auth.SSOFailed(src, "", "", "sso_bad_cli_code", "a sign-in code that is wrong, used or expired, or shown with the wrong verifier", true)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: err.Error()})
		return
	}
	if err != nil {
		s.log.Error("cannot redeem a bastionctl sign-in's code", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	u, err := s.auth.Store().User(name)
	if err != nil || u.Disabled || u.Provider != provider {
		if errors.Is(err, store.ErrUnavailable) {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
			return
		}
		s.auth.SSOFailed(src, provider, name, "disabled", "the account was disabled or deleted since the sign-in", true)
		writeJSON(w, http.StatusUnauthorized, apiError{Error: auth.ErrLoginFailed.Error()})
		return
	}
	s.issueToken(w, u, src, req.Scopes, ttl, req.Comment, "signed in through "+provider)
}

// apiSSOProviders is GET /api/sso/providers: the providers bastionctl may
// sign in through.
func (s *Portal) apiSSOProviders(w http.ResponseWriter, r *http.Request) {
	sso := s.sso()
	if sso == nil {
		notFound(w, r)
		return
	}
	out := []api.SSOProvider{}
	for _, p := range sso.Providers() {
		out = append(out, api.SSOProvider{Name: p.Name, Title: p.Title})
	}
	writeJSON(w, http.StatusOK, out)
}
