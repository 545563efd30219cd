package portal

import (
	"net/http"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/api/tunnelwire"
)

func staticFile(name, contentType string) http.HandlerFunc {
	data, err := pagesFS.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", contentType)
		w.Write(data)
	}
}

// routes is the public HTTP surface. Every response carries the security
// headers; every unknown path, another Host and OPTIONS * get the same 404;
// every body is read whole, under a deadline, before a route sees it.
func (s *Portal) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", s.portal)
	mux.HandleFunc("GET /static/portal.css", staticFile("pages/portal.css", "text/css; charset=utf-8"))
	mux.HandleFunc("GET /static/app/{name}", s.appAsset)
	mux.HandleFunc("POST /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.HandleFunc("GET /sso/callback", s.ssoCallback)
	mux.HandleFunc("GET /sso/{provider}", s.ssoStart)
	mux.HandleFunc("POST "+api.SSOTokenPath, s.apiSSOToken)
	mux.HandleFunc("GET "+api.SSOProvidersPath, s.apiSSOProviders)
	mux.HandleFunc("POST /login/passkey/begin", s.loginPasskeyBegin)
	mux.HandleFunc("POST /login/passkey/finish", s.loginPasskeyFinish)
	mux.HandleFunc("GET /security", s.securityPage)
	mux.HandleFunc("POST /security/proof", s.proveForm)
	mux.HandleFunc("POST /security/proof/begin", s.passkeyBegin)
	mux.HandleFunc("POST /security/proof/finish", s.passkeyProve)
	mux.HandleFunc("POST /security/passkeys/begin", s.passkeyBegin)
	mux.HandleFunc("POST /security/passkeys/finish", s.passkeyRegister)
	mux.HandleFunc("POST /security/passkeys/remove", s.passkeyRemove)
	mux.HandleFunc("POST /security/passkeys/rename", s.passkeyRename)
	mux.HandleFunc("POST /security/totp/begin", s.totpBegin)
	mux.HandleFunc("POST /security/totp/confirm", s.totpConfirm)
	mux.HandleFunc("POST /security/totp/remove", s.totpRemove)
	mux.HandleFunc("POST /connect", s.connectForm)
	mux.HandleFunc("GET /connect/{ticket}", s.connectPage)
	mux.HandleFunc("GET /l/{secret}", s.linkPage)
	mux.HandleFunc("POST /l/{secret}", s.linkOpen)
	mux.HandleFunc("GET /ws/{protocol}", s.relay)
	mux.HandleFunc("GET "+tunnelwire.WebSocketPath, s.tunnel)
	mux.HandleFunc("GET "+ReadyPath, s.ready)
	mux.HandleFunc("GET /recordings", s.recordingsPage)
	mux.HandleFunc("GET /recordings/{id}", s.playerPage)
	mux.HandleFunc("GET /api/recordings/{id}", s.castFile)
	mux.HandleFunc("GET /ws/replay/{id}", s.replayRDP)
	mux.HandleFunc("GET /api/replay/{player}", s.replayState)
	mux.HandleFunc("POST /api/replay/{player}", s.replayControl)
	mux.HandleFunc("GET /api/rdp/outcome", s.rdpOutcome)
	mux.HandleFunc("GET /sessions", s.sessionsPage)
	mux.HandleFunc("GET /watch/{id}", s.watchPage)
	mux.HandleFunc("GET /ws/watch/{id}", s.watchSocket)
	mux.HandleFunc("GET /api/rdp/watchers", s.rdpWatchers)
	mux.HandleFunc("GET /api/targets", s.apiTargets)
	mux.HandleFunc(filesPrefix+"{session}/{op}", s.apiFiles)
	mux.HandleFunc("POST /api/connect", s.apiConnect)
	mux.HandleFunc("POST /api/tokens", s.apiIssueToken)
	mux.HandleFunc("GET /api/tokens", s.apiTokens)
	mux.HandleFunc("DELETE /api/tokens/{id}", s.apiRevokeToken)
	mux.HandleFunc("/", notFound)
	return securityHeaders(s.frontDoor(mux))
}

// csp is the Content-Security-Policy with the script sources given.
func csp(scripts string) string {
	return "default-src 'none'; script-src " + scripts + "; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
		"font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}

// playerCSP lets the recording player compile its WebAssembly terminal;
// JavaScript eval stays refused.
var playerCSP = csp("'self' 'wasm-unsafe-eval'")

// desktopCSP lets the remote desktop's client compile its WebAssembly,
// which it loads from a data: URL, and show images it makes as blobs.
var desktopCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		h.Set("Content-Security-Policy", csp("'self'"))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		next.ServeHTTP(w, r)
	})
}

// tunnel is GET /tunnel, served by the native tunnel's server
// (Config.Tunnel).
func (s *Portal) tunnel(w http.ResponseWriter, r *http.Request) {
	if h := s.cfg.Load().Tunnel; h != nil {
		h(w, r)
		return
	}
	notFound(w, r)
}

// ReadyPath is where a load balancer asks whether this bastion takes new
// users (Config.Readiness).
const ReadyPath = "/.well-known/bastiond/ready"

// ready is GET ReadyPath: 200 "ready" or 503 and why not, to a balancer
// only; the uniform 404 to anyone else.
func (s *Portal) ready(w http.ResponseWriter, r *http.Request) {
	f := s.cfg.Load().Readiness
	if f == nil {
		notFound(w, r)
		return
	}
	state, ok := f(r)
	if !ok {
		notFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if state != "ready" {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	w.Write([]byte(state + "\n"))
}

func notFound(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusNotFound)
	w.Write([]byte("not found\n"))
}
