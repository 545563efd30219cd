package proxy

import (
	"errors"
	"net/netip"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/ticket"
	"github.com/bastiond/bastiond/proxy/websession"
)

// Reasons of connect_refused events, and labels of
// bastiond_connect_refusals_total.
const (
	refusedNoRole        = "no_role"        // no role of the user's allows it (or the login)
	refusedUnknownTarget = "unknown_target" // the roles cover it, but the machine or port is not in the inventory
	refusedDialGuard     = "dial_guard"     // the dial guard refused every address of the target
	refusedDialFailed    = "dial_failed"    // no address of the target answered
	refusedCapacity      = "capacity"       // the bastion is full
	refusedUserCap       = "user_cap"       // the user has limits.sessions_per_user sessions open
	refusedAuditDown     = "audit_unavailable"
	refusedRecordingDown = "recording_unavailable"
	refusedShuttingDown  = "shutting_down"
	refusedInternal      = "internal"    // the live journal could not be written
	refusedUnavailable   = "unavailable" // the bastion does not carry this kind of session
	refusedHostKey       = "host_key_mismatch"
	refusedHostKeyNew    = "host_key_not_pinned"
)

// connectRefusalReasons are the labels bastiond_connect_refusals_total
// starts with, at zero.
var connectRefusalReasons = []string{refusedNoRole, refusedUnknownTarget, refusedDialGuard, refusedDialFailed,
	refusedCapacity, refusedUserCap, refusedAuditDown, refusedRecordingDown, refusedShuttingDown, refusedInternal,
	refusedUnavailable, refusedHostKey, refusedHostKeyNew, ticket.ReasonBad, ticket.ReasonExpired}

func newConnectRefusals() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_connect_refusals_total",
		Help: "Connects refused, by reason (the connect_refused audit events): no_role, unknown_target, dial_guard, " +
			"dial_failed, capacity, user_cap, audit_unavailable, recording_unavailable, shutting_down, internal, unavailable, " +
			"host_key_mismatch, host_key_not_pinned (an SSH host key or an RDP certificate), bad_ticket, ticket_expired."}, []string{"reason"})
	for _, r := range connectRefusalReasons {
		v.WithLabelValues(r)
	}
	return v
}

// addrString is a as the source of an audit event: its IP address, or
// "-" if there is none.
func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return audit.ActorAnonymous
	}
	return a.Unmap().String()
}

// connectRefused writes e, a connect_refused event (its Reason set), to
// the audit trail and counts it. The caller fills the actor, source,
// target and protocol.
func (s *Server) connectRefused(e audit.Event) {
	e.Event = audit.ConnectRefused
	s.connectRefusals.WithLabelValues(e.Reason).Inc()
	s.audit().Audit(e)
}

// refusal is the connect_refused event of c's attempt, from src, to open
// protocol on target, for reason.
func refusal(c caller, src netip.Addr, target, protocol, reason, detail string) audit.Event {
	return audit.Event{Actor: c.user.Name, Source: addrString(src), User: c.user.Name, Target: target, Protocol: protocol,
		Token: c.token.ID, Reason: reason, Detail: detail}
}

// brokerRefusal is the reason class of a refusal of broker.Open.
func brokerRefusal(err error) string {
	if errors.Is(err, broker.ErrAuditUnavailable) {
		return refusedAuditDown
	}
	var be *broker.Error
	if !errors.As(err, &be) {
		return refusedInternal
	}
	switch be.Kind {
	case broker.KindUnknownTarget:
		return refusedUnknownTarget
	case broker.KindUserLimit:
		return refusedUserCap
	case broker.KindCapacity:
		return refusedCapacity
	case broker.KindUnreachable:
		return refusedDialFailed
	case broker.KindRefused:
		return refusedDialGuard
	case broker.KindClosed:
		return refusedShuttingDown
	case broker.KindAuditUnavailable:
		return refusedAuditDown
	}
	return refusedInternal
}

// ticketRefusal is the reason class and detail of a ticket that could not
// be used.
func ticketRefusal(err error) (reason, detail string) {
	var te *ticket.Error
	if errors.As(err, &te) {
		return te.Reason, te.Detail
	}
	return ticket.ReasonBad, err.Error()
}

// tokenRefused writes the token_refused event of a presented API token
// that err refused, from src, on the path (the API, a tunnel). Nothing of
// the presented string is written but the ID of a token that exists.
func (s *Server) tokenRefused(src netip.Addr, via string, err error) {
	e := audit.Event{Event: audit.TokenRefused, Actor: audit.ActorAnonymous, Source: addrString(src), Via: via}
	var te *auth.TokenError
	switch {
	case errors.As(err, &te):
		e.Reason, e.Token, e.User = te.Reason, te.ID, te.User
	case errors.Is(err, auth.ErrBadToken):
		e.Reason = auth.TokenMalformed
	default:
		return // not the token's fault (the store was handed over)
	}
	s.audit().Audit(e)
}

// scopeRefused writes the token_refused event of a valid token that lacks
// scope.
func (s *Server) scopeRefused(src netip.Addr, via string, t auth.Token, scope string) {
	s.audit().Audit(audit.Event{Event: audit.TokenRefused, Actor: t.User, Source: addrString(src), Via: via,
		User: t.User, Token: t.ID, Reason: "no_scope", Detail: "the token lacks the " + scope + " scope"})
}

// webSessionExpired writes the websession_expired event of a web session
// the store ended by itself (websession.Store.OnExpire), or that the
// server ended because its account is disabled or gone.
func (s *Server) webSessionExpired(sess websession.Session, reason string) {
	start := sess.Created.UTC()
	s.audit().Audit(audit.Event{Event: audit.WebSessionEnded, Actor: audit.ActorDaemon, Source: audit.SourceLocal,
		User: sess.User, Session: sess.ID, Client: addrString(sess.Source), Start: &start, Reason: reason})
}

func (s *Server) audit() audit.Sink { return s.cfg.Load().Audit }

// collectors is a prometheus.Collector made of several.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}
