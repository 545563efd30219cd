// Package authz answers whether a user may open a session, and records
// every refusal the same way. Its Authorizer asks the policy in force
// (proxy/access) and, when the answer is no, logs it, writes the
// connect_refused audit event and counts it in
// bastiond_connect_refusals_total, by reason. The portal's routes (ticket
// issue, browser SSH and RDP) and the native tunnel all go through it, so
// that a refusal reads the same whichever way the user came.
//
// It also holds the reason classes of connect_refused events (the broker's
// refusals, a ticket that could not be used) and the token_refused events
// of API tokens.
package authz

import (
	"errors"
	"net/netip"
	"slices"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/ticket"
)

// Reasons of connect_refused events, and labels of
// bastiond_connect_refusals_total.
const (
	NoRole        = "no_role"        // no role of the user's allows it (or the login)
	UnknownTarget = "unknown_target" // the roles cover it, but the machine or port is not in the inventory
	DialGuard     = "dial_guard"     // the dial guard refused every address of the target
	DialFailed    = "dial_failed"    // no address of the target answered
	Capacity      = "capacity"       // the bastion is full
	UserCap       = "user_cap"       // the user has limits.sessions_per_user sessions open
	AuditDown     = "audit_unavailable"
	RecordingDown = "recording_unavailable"
	FilesDisabled = "file_transfer_disabled" // a tunnel would carry the files a role keeps out
	ShuttingDown  = "shutting_down"
	Internal      = "internal"    // the live journal could not be written
	Unavailable   = "unavailable" // the bastion does not carry this kind of session
	HostKey       = "host_key_mismatch"
	HostKeyNew    = "host_key_not_pinned"
)

// Reasons are the labels bastiond_connect_refusals_total starts with, at
// zero.
var Reasons = []string{NoRole, UnknownTarget, DialGuard, DialFailed, Capacity, UserCap, AuditDown, RecordingDown, FilesDisabled,
	ShuttingDown, Internal, Unavailable, HostKey, HostKeyNew, ticket.ReasonBad, ticket.ReasonExpired}

// Config is what an Authorizer asks and tells. SetConfig replaces it on
// reload.
type Config struct {
	// Logger receives a line for each refusal. Default: none.
	Logger *zap.Logger
	// Access is the policy in force. Required.
	Access *access.Policy
	// Audit receives the refusals. Default audit.Discard.
	Audit audit.Sink
}

// Authorizer answers access requests under the policy in force and
// records the refusals.
type Authorizer struct {
	cfg      atomic.Pointer[Config]
	refusals *prometheus.CounterVec
}

// New checks cfg and returns an Authorizer.
func New(cfg Config) (*Authorizer, error) {
	a := &Authorizer{refusals: newRefusals()}
	if err := a.SetConfig(cfg); err != nil {
		return nil, err
	}
	return a, nil
}

// SetConfig swaps the configuration; the counts go on.
func (a *Authorizer) SetConfig(cfg Config) error {
	if cfg.Access == nil {
		return errors.New("authz: a policy is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Audit == nil {
		cfg.Audit = audit.Discard
	}
	a.cfg.Store(&cfg)
	return nil
}

// Policy is the policy in force.
func (a *Authorizer) Policy() *access.Policy { return a.cfg.Load().Access }

func newRefusals() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_connect_refusals_total",
		Help: "Connects refused, by reason (the connect_refused audit events): no_role, unknown_target, dial_guard, " +
			"dial_failed, capacity, user_cap, audit_unavailable, recording_unavailable, file_transfer_disabled, shutting_down, internal, unavailable, " +
			"host_key_mismatch, host_key_not_pinned (an SSH host key or an RDP certificate), bad_ticket, ticket_expired."}, []string{"reason"})
	for _, r := range Reasons {
		v.WithLabelValues(r)
	}
	return v
}

// Metrics is bastiond_connect_refusals_total.
func (a *Authorizer) Metrics() prometheus.Collector { return a.refusals }

// Who is who asks.
type Who struct {
	User string
	// Granted are the roles the account store grants the user.
	Granted []string
	// Groups are the user's groups at its single sign-on provider, as
	// PROVIDER/GROUP (auth.User.Subjects).
	Groups []string
	// Source is the address the request came from. Client, if valid, is
	// the address and port the session is carried from, for the event.
	Source netip.Addr
	Client netip.AddrPort
	// Via is how the user came: portal, api, browser, quic, websocket.
	Via string
	// Token is the ID of the API token presented, if one was.
	Token string
}

// What is what Who asks for.
type What struct {
	Target   string
	Protocol string
	// Port is the target port of a tunnel (or the one an API request
	// named); 0 for ssh and rdp, whose port is the target's.
	Port uint16
	// Login is the account name on the target; "" when not yet known.
	Login string
}

func request(w Who, x What) access.Request {
	return access.Request{User: w.User, Granted: w.Granted, Groups: w.Groups, Target: x.Target, Protocol: x.Protocol, Port: x.Port, Login: x.Login}
}

// Decide answers w's request for x under the policy in force, and records
// nothing: for what a session may do once it is allowed (clipboard,
// recording).
func (a *Authorizer) Decide(w Who, x What) access.Decision {
	return a.Policy().Check(request(w, x))
}

// Check answers w's request for x under the policy in force. A refusal is
// logged, written as a connect_refused event whose reason is the class the
// user may learn (DeniedReason: NoRole or UnknownTarget) and counted.
func (a *Authorizer) Check(w Who, x What) access.Decision {
	c := a.cfg.Load()
	p := c.Access
	r := request(w, x)
	d := p.Check(r)
	if !d.Allowed {
		c.Logger.Info("connect refused", zap.String("user", w.User), zap.String("via", w.Via), zap.String("target", x.Target),
			zap.String("protocol", x.Protocol), zap.Uint16("port", x.Port), zap.String("login", x.Login), zap.String("reason", d.Reason))
		a.Refuse(w, x, Refusal{Reason: DeniedReason(p, r), Detail: d.Reason, Roles: d.Roles})
	}
	return d
}

// Auditor reports whether w may see and play the recordings.
func (a *Authorizer) Auditor(w Who) bool {
	return a.Policy().Auditor(access.Principal{User: w.User, Granted: w.Granted, Groups: w.Groups})
}

// Refusal is why a request was refused.
type Refusal struct {
	// Reason is one of this package's reasons, or a ticket's.
	Reason string
	// Detail says more, for the admins.
	Detail string
	// Session is the broker session the refusal ended, if one was open.
	Session string
	// Roles are the roles that allowed the request, if the refusal came
	// after the policy's yes.
	Roles []string
}

// Refuse writes the connect_refused event of w's request for x, refused
// for r, and counts it.
func (a *Authorizer) Refuse(w Who, x What, r Refusal) {
	e := audit.Event{Actor: w.User, Source: AddrString(w.Source), User: w.User, Target: x.Target, Protocol: x.Protocol,
		Port: x.Port, Login: x.Login, Via: w.Via, Token: w.Token, Session: r.Session, Roles: r.Roles, Reason: r.Reason, Detail: r.Detail}
	if w.Client.IsValid() {
		e.Client = w.Client.String()
	}
	a.Refused(e)
}

// Refused writes e, a connect_refused event (its Reason set), to the audit
// trail and counts it, for a refusal that is not of a Who and a What (an
// RDP certificate refused after the session opened).
func (a *Authorizer) Refused(e audit.Event) {
	e.Event = audit.ConnectRefused
	a.refusals.WithLabelValues(e.Reason).Inc()
	a.cfg.Load().Audit.Audit(e)
}

// DeniedReason is the reason class of a refused access request: the
// machine or port is not in the inventory, or no role allows it.
func DeniedReason(p *access.Policy, r access.Request) string {
	t, ok := p.Target(r.Target)
	if !ok {
		return UnknownTarget
	}
	switch r.Protocol {
	case access.SSH:
		ok = t.SSH != 0
	case access.RDP:
		ok = t.RDP != 0
	case access.Tunnel:
		ok = r.Port == 0 || slices.Contains([]uint16{t.SSH, t.RDP}, r.Port) || slices.Contains(t.Tunnel, r.Port)
	}
	if !ok {
		return UnknownTarget
	}
	return NoRole
}

// BrokerRefusal is the reason class of a refusal of broker.Open.
func BrokerRefusal(err error) string {
	if errors.Is(err, broker.ErrAuditUnavailable) {
		return AuditDown
	}
	var be *broker.Error
	if !errors.As(err, &be) {
		return Internal
	}
	switch be.Kind {
	case broker.KindUnknownTarget:
		return UnknownTarget
	case broker.KindUserLimit:
		return UserCap
	case broker.KindCapacity:
		return Capacity
	case broker.KindUnreachable:
		return DialFailed
	case broker.KindRefused:
		return DialGuard
	case broker.KindClosed:
		return ShuttingDown
	case broker.KindAuditUnavailable:
		return AuditDown
	}
	return Internal
}

// TicketRefusal is the reason class and detail of a ticket that could not
// be used.
func TicketRefusal(err error) (reason, detail string) {
	var te *ticket.Error
	if errors.As(err, &te) {
		return te.Reason, te.Detail
	}
	return ticket.ReasonBad, err.Error()
}

// TokenRefused writes the token_refused event of a presented API token
// that err refused, from src, on the path via (the API, a tunnel). Nothing
// of the presented string is written but the ID of a token that exists.
func (a *Authorizer) TokenRefused(src netip.Addr, via string, err error) {
	e := audit.Event{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: AddrString(src), Via: via}
	var te *auth.TokenError
	switch {
	case errors.As(err, &te):
		e.Reason, e.Token, e.User = te.Reason, te.ID, te.User
	case errors.Is(err, auth.ErrBadToken):
		e.Reason = auth.TokenMalformed
	case errors.Is(err, auth.ErrUnavailable):
		// Not the token's fault either, but a refusal all the same.
		e.Reason, e.Detail = "unavailable", "the database of the tokens cannot be reached: the token was not checked"
	default:
		return // not the token's fault (the store was handed over)
	}
	a.cfg.Load().Audit.Audit(e)
}

// ScopeRefused writes the token_refused event of a valid token t that
// lacks scope.
func (a *Authorizer) ScopeRefused(src netip.Addr, via string, t auth.Token, scope string) {
	a.cfg.Load().Audit.Audit(audit.Event{Event: audit.TokenRefused, Actor: t.User, Source: AddrString(src), Via: via,
		User: t.User, Token: t.ID, Reason: "no_scope", Detail: "the token lacks the " + scope + " scope"})
}

// AddrString is a as the source of an audit event: its IP address, or
// "-" if there is none.
func AddrString(a netip.Addr) string {
	if !a.IsValid() {
		return audit.ActorAnonymous
	}
	return a.Unmap().String()
}
