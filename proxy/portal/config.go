package portal

import (
	"errors"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/watch"
	"github.com/bastiond/bastiond/proxy/websession"
	"github.com/bastiond/bastiond/proxy/webssh"
)

// Config is what the portal needs. It can be replaced on reload with
// SetConfig.
type Config struct {
	// Logger is required.
	Logger *zap.Logger
	// Audit receives the portal's security events: sign-outs, tickets,
	// tokens, recordings written and played. Default audit.Discard.
	Audit audit.Sink
	// ServerName is the DNS name users connect to: requests for another
	// Host get the uniform 404, and browser requests must come from a page
	// of https://ServerName. Required.
	ServerName string
	// HandshakeTimeout bounds reading a request's body (which is refused
	// with 408 past it) and the handshakes of browser sessions with their
	// targets. Default 10s.
	HandshakeTimeout time.Duration
	// Authz answers and records the access requests; its policy is the
	// one in force. Required; the same one on every SetConfig.
	Authz *authz.Authorizer
	// MFA is the second factor local users give after their password
	// (access.mfa: totp, webauthn or any). Default totp.
	MFA string
	// WebSessions bounds browser sessions.
	WebSessions websession.Config
	// Shared, when set, keeps the web sessions and the connect tickets in
	// this database, which every instance of a cluster shares: a browser
	// signed in on one instance is signed in on all, a ticket is redeemed
	// once among them. nil (one host) keeps them in this process's memory,
	// handed over in a binary upgrade by ExportSessions. Read by New only.
	Shared store.DB
	// SSH is what browser SSH terminals need besides the broker.
	SSH SSHConfig
	// RDP is what browser remote desktops need.
	RDP RDPConfig
	// Broker opens and carries sessions; nil makes the terminal and the
	// desktop in the browser unavailable. It outlives reloads.
	Broker *broker.Broker
	// Tunnel serves GET /tunnel, the native tunnel's WebSocket; nil: the
	// route answers the uniform 404.
	Tunnel http.HandlerFunc
	// SSO signs users in through single sign-on providers; nil: local
	// accounts only.
	SSO *oidc.Set
	// AccessChanged is called when a single sign-on took groups away from
	// a user, so that the sessions they gave end, as on a reload that
	// withdraws a right. Optional.
	AccessChanged func(why string)
	// Links are the shareable links (links.go).
	Links LinksConfig
	// Readiness answers GET ReadyPath for a load balancer: state is
	// "ready" (200) or why not (503, e.g. "draining"). ok false, or a nil
	// Readiness, answers the uniform 404: to anyone but a balancer, the
	// path does not exist.
	Readiness func(r *http.Request) (state string, ok bool)
	// SessionOwner, in a cluster, names the instance that carries a live
	// session (registry.Owner), so that a request to watch it elsewhere is
	// told where it is; nil: one host.
	SessionOwner func(id string) (instance string, err error)
	// ClusterSessions, in a cluster, lists every instance's live sessions
	// for the auditors' sessions page; nil: this instance's only.
	ClusterSessions func() ([]broker.Info, error)
}

// SSHConfig is what browser SSH terminals need besides the broker and
// the policy.
type SSHConfig struct {
	// HostKeys checks a target's host key against the pinned ones: the
	// callback and the host key algorithms to offer. nil makes browser SSH
	// unavailable.
	HostKeys func(target string) (ssh.HostKeyCallback, []string)
	// Sign makes a short-lived user certificate for targets that trust the
	// bastion's CA (inventory ssh_certificates). nil: no CA.
	Sign func(login, keyID string) (ssh.Signer, error)
	// RecordDir receives the recordings of sessions whose role records
	// them, and is where auditors play them from.
	RecordDir string
	// RecordingWritten is called after each recording is closed (the
	// retention of the recordings directory runs then). Optional.
	RecordingWritten func()
	// RecordingStarted is called when a session's recording starts, with
	// the session (Info.Recording names the file): a cluster enters it in
	// its catalog. Optional.
	RecordingStarted func(broker.Info)
	// RecordingClosed is called when a session's recording is closed,
	// complete, with the session (Info.RecordingSHA256 is the file's hash)
	// and the file's size: a cluster notes it in its catalog. Optional.
	RecordingClosed func(i broker.Info, size int64)
}

// Portal is the HTTP side of port 443: it owns the web sessions, the
// connect tickets, how desktops ended and the players of recordings.
type Portal struct {
	cfg      atomic.Pointer[Config]
	log      *zap.Logger
	auth     *auth.Authenticator
	sessions websession.Sessions
	tickets  ticket.Tickets
	outcomes *outcomeStore // how browser remote desktops ended
	// watch holds the live browser sessions auditors may watch;
	// desktopWatchers their watchers, for the desktop pages' banner.
	watch           *watch.Hub
	desktopWatchers desktopWatchers
	players         players       // the clocks of recorded desktops played back
	files           *webssh.Files // the live browser terminals' file panels
	refusals        *prometheus.CounterVec
	handler         http.Handler

	// freshFor is how recent a sign-in lets its session change a second
	// factor without a proof (auth.FreshFor; tests shorten it).
	freshFor time.Duration

	// relaySSH carries the browser SSH terminal of a ticket redeemed and
	// checked: serveSSH, but in the tests of the ticket checks.
	relaySSH func(http.ResponseWriter, *http.Request, caller, ticket.Ticket)
}

// New checks cfg and returns a Portal that signs users in with a.
func New(cfg Config, a *auth.Authenticator) (*Portal, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, errors.New("portal: an Authenticator is required")
	}
	p := &Portal{log: c.Logger, auth: a, outcomes: newOutcomeStore(), watch: watch.NewHub(), refusals: newRefusals(),
		files: webssh.NewFiles()}
	if c.Shared != nil {
		p.sessions, p.tickets = websession.NewShared(c.Shared, c.WebSessions), ticket.NewShared(c.Shared)
	} else {
		p.sessions, p.tickets = websession.NewStore(c.WebSessions), ticket.NewStore()
	}
	p.relaySSH = p.serveSSH
	p.freshFor = auth.FreshFor
	p.cfg.Store(c)
	p.sessions.OnExpire(p.webSessionExpired)
	p.handler = p.routes()
	return p, nil
}

func (c Config) withDefaults() (*Config, error) {
	if c.Logger == nil || c.ServerName == "" || c.Authz == nil {
		return nil, errors.New("portal: Logger, ServerName and Authz are required")
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	return &c, nil
}

// SetConfig swaps the configuration for new requests; sessions already
// open keep the settings they started with.
func (s *Portal) SetConfig(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	s.cfg.Store(c)
	s.sessions.SetConfig(c.WebSessions)
	return nil
}

// Handler serves the portal's routes.
func (s *Portal) Handler() http.Handler { return s.handler }

func (s *Portal) policy() *access.Policy { return s.authz().Policy() }

func (s *Portal) authz() *authz.Authorizer { return s.cfg.Load().Authz }

func (s *Portal) audit() audit.Sink { return s.cfg.Load().Audit }

// WebSessions counts the browsers signed in (on every instance, when the
// sessions are shared).
func (s *Portal) WebSessions() (int, error) { return s.sessions.Len() }

// EndUser ends the web sessions of user (disabled, password changed) and
// returns how many there were.
func (s *Portal) EndUser(user string) (int, error) { return s.sessions.EndUser(user) }

// ExportSessions returns the signed-in web sessions and the unredeemed
// tickets, for ImportSessions in the successor, so that nobody is signed
// out by an upgrade. The bytes hold secrets (the sessions' CSRF tokens).
// Shared sessions and tickets are not in them: the successor finds them
// in the database.
func (s *Portal) ExportSessions() (webSessions, tickets []byte, err error) {
	if webSessions, err = s.sessions.Export(); err != nil {
		return nil, nil, err
	}
	if tickets, err = s.tickets.Export(); err != nil {
		return nil, nil, err
	}
	return webSessions, tickets, nil
}

// ImportSessions adds what ExportSessions returned in the predecessor.
// Each session and ticket keeps its times: one already expired by this
// portal's limits is left out. On an error, the web sessions may be in and
// the tickets not; a ticket without its session is of no use anyway.
func (s *Portal) ImportSessions(webSessions, tickets []byte) error {
	if err := s.sessions.Import(webSessions); err != nil {
		return err
	}
	return s.tickets.Import(tickets)
}

// webSessionExpired writes the websession_expired event of a web session
// the store ended by itself (websession.Sessions.OnExpire), or that the
// portal ended because its account is disabled or gone.
func (s *Portal) webSessionExpired(sess websession.Session, reason string) {
	start := sess.Created.UTC()
	s.audit().Audit(audit.Event{Event: audit.WebSessionEnded, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		User: sess.User, Session: sess.ID, Client: authz.AddrString(sess.Source), Start: &start, Reason: reason})
}
