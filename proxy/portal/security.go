package portal

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"html/template"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/websession"
)

// The Security page (GET /security) and the passkey ceremonies. A signed-in
// local user lists, adds, renames and removes passkeys there, and enrols
// in TOTP or removes it. Changing a second factor needs a fresh proof: the
// sign-in itself, or the password or a passkey given again, within
// auth.FreshFor; a stolen session cookie alone cannot add an attacker's
// passkey. Every state-changing request is a same-origin POST with the
// session's CSRF token, as the portal's other forms are.

// securityPage is what security.html shows.
type securityPage struct {
	// SSO is set for an account a single sign-on provider made: it has
	// nothing to change here.
	SSO      bool
	Provider string
	Passkeys []auth.Passkey
	TOTP     bool
	// Pending is a TOTP enrolment waiting for its first code.
	Pending *totpPending
	// Fresh: the user proved itself recently enough to change a factor.
	Fresh  bool
	Notice string
}

type totpPending struct {
	QR     template.URL // a PNG as a data: URL
	Secret string
}

// rp is the relying party of a browser request whose Origin was checked
// (sameOrigin): the server name, and the origin as the browser wrote it.
func (s *Portal) rp(r *http.Request) auth.RP {
	return auth.RP{ID: strings.TrimSuffix(strings.ToLower(s.cfg.Load().ServerName), "."), Origin: r.Header.Get("Origin")}
}

func (s *Portal) mfa() auth.MFA {
	m, err := auth.ParseMFA(s.cfg.Load().MFA)
	if err != nil {
		return auth.MFATOTP
	}
	return m
}

// fresh reports whether c proved itself within auth.FreshFor.
func (s *Portal) fresh(c caller) bool {
	if time.Since(c.session.Created) < s.freshFor {
		return true
	}
	ok, err := s.auth.Fresh(c.session.ID)
	if err != nil {
		s.log.Warn("cannot read the session's fresh proof", zap.String("web_session", c.session.ID), zap.Error(err))
	}
	return ok
}

// securityPage is GET /security.
func (s *Portal) securityPage(w http.ResponseWriter, r *http.Request) {
	c, ok := s.sessionCaller(r)
	if !ok {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	s.renderSecurity(w, http.StatusOK, c, "")
}

func (s *Portal) renderSecurity(w http.ResponseWriter, code int, c caller, notice string) {
	p := &securityPage{SSO: c.user.SSO(), Provider: c.user.Provider, Passkeys: c.user.Passkeys, TOTP: c.user.HasTOTP(),
		Fresh: s.fresh(c), Notice: notice}
	if e, ok, err := s.auth.Store().PendingTOTP(c.user.Name, s.cfg.Load().ServerName); err == nil && ok && !p.TOTP {
		if png, err := e.QRPNG(); err == nil {
			p.Pending = &totpPending{QR: template.URL("data:image/png;base64," + base64.StdEncoding.EncodeToString(png)), Secret: e.Secret}
		}
	}
	s.render(w, code, "security.html", pageData{Title: "Security", User: c.user.Name, CSRF: c.session.CSRF, Auditor: s.auditor(c),
		Security: p, Script: "/static/app/passkey.js"})
}

// securityForm is a form post of the Security page by a local user; with
// needFresh, one that changes a second factor, refused without a fresh
// proof.
func (s *Portal) securityForm(w http.ResponseWriter, r *http.Request, needFresh bool) (caller, bool) {
	c, ok := s.formCaller(w, r)
	if !ok {
		return caller{}, false
	}
	if c.user.SSO() {
		s.renderSecurity(w, http.StatusForbidden, c, "")
		return caller{}, false
	}
	if needFresh && !s.fresh(c) {
		s.refuseStale(c, r)
		s.renderSecurity(w, http.StatusForbidden, c, "Confirm it is you first: give your password or use a passkey.")
		return caller{}, false
	}
	return c, true
}

// refuseStale logs and audits a change of a second factor refused for
// want of a fresh proof.
func (s *Portal) refuseStale(c caller, r *http.Request) {
	s.log.Info("second factor change refused: no fresh proof", zap.String("user", c.user.Name), zap.String("path", r.URL.Path),
		zap.String("web_session", c.session.ID))
	s.audit().Audit(audit.Event{Event: audit.SigninRefused, Actor: c.user.Name, Source: authz.AddrString(clientAddr(r)), User: c.user.Name,
		Session: c.session.ID, Reason: "not_fresh",
		Detail: "a second factor change without a fresh proof (the password or a passkey within the last minutes)"})
}

// freshJSON reports whether c proved itself lately; if not, it refuses
// the Security page script's request (refuseStale) and answers 403.
func (s *Portal) freshJSON(w http.ResponseWriter, r *http.Request, c caller) bool {
	if s.fresh(c) {
		return true
	}
	s.refuseStale(c, r)
	writeJSON(w, http.StatusForbidden, apiError{Error: "confirm it is you first: give your password or use a passkey"})
	return false
}

// proveForm is POST /security/proof: the password again.
func (s *Portal) proveForm(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, false)
	if !ok {
		return
	}
	err := s.auth.ProvePassword(r.Context(), c.user.Name, r.PostFormValue("password"), clientAddr(r))
	if errors.Is(err, auth.ErrUnavailable) {
		s.renderSecurity(w, http.StatusServiceUnavailable, c, errSessionStore)
		return
	}
	if err != nil {
		s.renderSecurity(w, http.StatusUnauthorized, c, "That password is not right.")
		return
	}
	if err := s.auth.MarkFresh(c.session.ID); err != nil {
		s.renderSecurity(w, http.StatusServiceUnavailable, c, errSessionStore)
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// passkeyRequest is the body of the ceremonies' JSON posts.
type passkeyRequest struct {
	Ceremony   string          `json:"ceremony"`
	Name       string          `json:"name,omitempty"`
	Credential json.RawMessage `json:"credential"`
}

// securityJSON authenticates a JSON post of the Security page's script:
// same origin, live session, CSRF header, a local account.
func (s *Portal) securityJSON(w http.ResponseWriter, r *http.Request) (caller, bool) {
	c, err := s.browserCheck(r)
	if err != nil {
		writeJSON(w, http.StatusForbidden, apiError{Error: "your session expired: reload the page"})
		return caller{}, false
	}
	if c.user.SSO() {
		writeJSON(w, http.StatusForbidden, apiError{Error: "your account signs in through its provider"})
		return caller{}, false
	}
	return c, true
}

// passkeyBegin is POST /security/passkeys/begin (register) and
// /security/proof/begin (prove with a passkey).
func (s *Portal) passkeyBegin(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityJSON(w, r)
	if !ok {
		return
	}
	var ch auth.Challenge
	var err error
	if strings.HasPrefix(r.URL.Path, "/security/proof/") {
		ch, err = s.auth.BeginPasskeyProof(s.rp(r), c.user.Name, c.session.ID)
	} else {
		if !s.freshJSON(w, r, c) {
			return
		}
		ch, err = s.auth.BeginPasskeyRegistration(s.rp(r), c.user.Name, c.session.ID)
	}
	if err != nil {
		s.log.Info("passkey ceremony not begun", zap.String("user", c.user.Name), zap.Error(err))
		writeJSON(w, http.StatusBadRequest, apiError{Error: strings.TrimPrefix(err.Error(), "auth: ")})
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

// passkeyRegister is POST /security/passkeys/finish.
func (s *Portal) passkeyRegister(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityJSON(w, r)
	if !ok {
		return
	}
	var req passkeyRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	if !s.freshJSON(w, r, c) {
		return
	}
	p, err := s.auth.FinishPasskeyRegistration(s.rp(r), req.Ceremony, c.session.ID, c.user.Name, req.Name, req.Credential, clientAddr(r))
	if err != nil {
		s.log.Info("passkey not registered", zap.String("user", c.user.Name), zap.Error(err))
		writeJSON(w, http.StatusBadRequest, apiError{Error: strings.TrimPrefix(err.Error(), "auth: ")})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}{p.IDString(), p.Name})
}

// passkeyProve is POST /security/proof/finish.
func (s *Portal) passkeyProve(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityJSON(w, r)
	if !ok {
		return
	}
	var req passkeyRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	err := s.auth.FinishPasskeyProof(s.rp(r), req.Ceremony, c.session.ID, c.user.Name, req.Credential, clientAddr(r))
	if errors.Is(err, auth.ErrUnavailable) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "the passkey was not accepted"})
		return
	}
	if err := s.auth.MarkFresh(c.session.ID); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

// passkeyRemove is POST /security/passkeys/remove.
func (s *Portal) passkeyRemove(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, true)
	if !ok {
		return
	}
	if err := s.auth.RemovePasskey(c.user.Name, r.PostFormValue("id"), c.user.Name, clientAddr(r)); err != nil {
		s.renderSecurity(w, http.StatusBadRequest, c, "No such passkey of yours.")
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// passkeyRename is POST /security/passkeys/rename.
func (s *Portal) passkeyRename(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, false)
	if !ok {
		return
	}
	if err := s.auth.RenamePasskey(c.user.Name, r.PostFormValue("id"), r.PostFormValue("name")); err != nil {
		s.renderSecurity(w, http.StatusBadRequest, c, strings.TrimPrefix(err.Error(), "auth: "))
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// totpBegin is POST /security/totp/begin: a new secret, shown with its QR
// code until a first code confirms it.
func (s *Portal) totpBegin(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, true)
	if !ok {
		return
	}
	if c.user.HasTOTP() {
		s.renderSecurity(w, http.StatusConflict, c, "Remove the app you use now first.")
		return
	}
	if _, err := s.auth.Store().BeginTOTP(c.user.Name, s.cfg.Load().ServerName); err != nil {
		s.renderSecurity(w, http.StatusServiceUnavailable, c, errSessionStore)
		return
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// totpConfirm is POST /security/totp/confirm.
func (s *Portal) totpConfirm(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, true)
	if !ok {
		return
	}
	if err := s.auth.Store().ConfirmTOTP(c.user.Name, r.PostFormValue("code")); err != nil {
		s.renderSecurity(w, http.StatusBadRequest, c, "That code does not match: check the app's clock and try the next code.")
		return
	}
	s.log.Info("TOTP enrolled", zap.String("user", c.user.Name))
	s.audit().Audit(audit.Event{Event: audit.TOTPEnrolled, Actor: c.user.Name, Source: authz.AddrString(clientAddr(r)), User: c.user.Name,
		Via: "portal"})
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// totpRemove is POST /security/totp/remove: the enrolment, or the one
// pending.
func (s *Portal) totpRemove(w http.ResponseWriter, r *http.Request) {
	c, ok := s.securityForm(w, r, true)
	if !ok {
		return
	}
	if err := s.auth.Store().ResetTOTP(c.user.Name); err != nil {
		s.renderSecurity(w, http.StatusServiceUnavailable, c, errSessionStore)
		return
	}
	if c.user.HasTOTP() {
		s.log.Info("TOTP removed", zap.String("user", c.user.Name))
		s.audit().Audit(audit.Event{Event: audit.TOTPRemoved, Actor: c.user.Name, Source: authz.AddrString(clientAddr(r)), User: c.user.Name,
			Via: "portal"})
	}
	http.Redirect(w, r, "/security", http.StatusSeeOther)
}

// loginToken returns the sign-in form's token of a JSON post of the
// sign-in page's script: same origin, and the form cookie's token in the
// X-CSRF-Token header.
func (s *Portal) loginToken(w http.ResponseWriter, r *http.Request) (string, bool) {
	ck, err := r.Cookie(loginCookie)
	if !s.sameOrigin(r) || err != nil || !equalTokens(ck.Value, r.Header.Get("X-CSRF-Token")) {
		s.log.Info("passkey sign-in refused: no matching origin or form token", zap.Stringer("source", clientAddr(r)),
			zap.String("origin", r.Header.Get("Origin")))
		s.audit().Audit(audit.Event{Event: audit.SigninRefused, Actor: audit.ActorAnonymous, Source: authz.AddrString(clientAddr(r)),
			Reason: "form", Detail: "a passkey sign-in came without a matching origin or form token (expired, or posted from another site)"})
		writeJSON(w, http.StatusForbidden, apiError{Error: "The sign-in form expired. Please reload the page."})
		return "", false
	}
	return ck.Value, true
}

// loginPasskeyBegin is POST /login/passkey/begin: a sign-in with a
// passkey alone, which the browser picks (no name typed).
func (s *Portal) loginPasskeyBegin(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.loginToken(w, r)
	if !ok {
		return
	}
	ch, err := s.auth.BeginPasskeySignIn(s.rp(r), tok)
	if err != nil {
		s.log.Error("cannot begin a passkey sign-in", zap.Error(err))
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	writeJSON(w, http.StatusOK, ch)
}

// loginPasskeyFinish is POST /login/passkey/finish: the answer to a
// passkey sign-in, alone or after the password.
func (s *Portal) loginPasskeyFinish(w http.ResponseWriter, r *http.Request) {
	tok, ok := s.loginToken(w, r)
	if !ok {
		return
	}
	var req passkeyRequest
	if !decodeJSON(w, r, &req) {
		return
	}
	src := clientAddr(r)
	u, err := s.auth.FinishPasskeySignIn(s.rp(r), req.Ceremony, tok, req.Credential, src)
	if errors.Is(err, auth.ErrUnavailable) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	if err != nil {
		writeJSON(w, http.StatusUnauthorized, apiError{Error: "Sign-in failed: that passkey was not accepted."})
		return
	}
	if !s.startSession(w, u, src) {
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: errSessionStore})
		return
	}
	writeJSON(w, http.StatusOK, struct {
		Redirect string `json:"redirect"`
	}{"/"})
}

// startSession signs u in from src: a new web session and its cookie.
func (s *Portal) startSession(w http.ResponseWriter, u auth.User, src netip.Addr) bool {
	cookie, sess, err := s.sessions.New(u.Name, src)
	if err != nil {
		s.log.Error("signed in, but the web session cannot be stored", zap.String("user", u.Name), zap.Error(err))
		return false
	}
	s.log.Info("signed in", zap.String("user", u.Name), zap.Stringer("source", src), zap.String("web_session", sess.ID))
	setCookie(w, websession.CookieName, cookie, 0)
	setCookie(w, loginCookie, "", -1)
	return true
}
