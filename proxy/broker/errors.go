package broker

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrorKind classes the refusals of Open.
type ErrorKind int

const (
	KindUnknownTarget ErrorKind = iota + 1 // not in the inventory, or the port is not offered
	KindUserLimit                          // the user has Config.PerUser sessions open
	KindCapacity                           // the instance is full
	KindUnreachable                        // no address of the target answered (or the dial was cancelled)
	KindRefused                            // the dial guard refused every address
	KindClosed                             // the broker is draining or shut down
	KindInternal                           // the live journal could not be written
	// KindAuditUnavailable: the audit file cannot be written (disk full,
	// read-only, moved and not reopenable); the error wraps the fault, and
	// errors.Is(err, ErrAuditUnavailable). Sessions are admitted again once
	// a write to it succeeds.
	KindAuditUnavailable
)

// String is the kind as a metric label.
func (k ErrorKind) String() string {
	switch k {
	case KindUnknownTarget:
		return "unknown_target"
	case KindUserLimit:
		return "user_limit"
	case KindCapacity:
		return "capacity"
	case KindUnreachable:
		return "unreachable"
	case KindRefused:
		return "refused"
	case KindClosed:
		return "closed"
	case KindInternal:
		return "internal"
	case KindAuditUnavailable:
		return "audit_unavailable"
	}
	return "unknown"
}

// Error is a refused Open. Msg is a sentence for the user.
type Error struct {
	Kind ErrorKind
	Msg  string
	Err  error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Msg + ": " + e.Err.Error()
	}
	return e.Msg
}

// Sentence is Msg as a sentence for the user: capitalized, with a full
// stop, and a general one when Msg is empty.
func (e *Error) Sentence() string {
	if e.Msg == "" {
		return "The session could not be opened."
	}
	r, n := utf8.DecodeRuneInString(e.Msg)
	s := string(unicode.ToUpper(r)) + e.Msg[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ErrNoSession is the answer to Kill for an ID that is not live.
var ErrNoSession = errors.New("broker: no such live session")

// ErrAuditUnavailable is why Open refuses sessions while the audit file
// cannot be written: errors.Is(err, ErrAuditUnavailable). The error says
// the file and the cause: "audit log unwritable (/var/log/bastiond/audit.jsonl:
// no space left on device): new sessions are refused until it can be written".
var ErrAuditUnavailable = errors.New("audit log unwritable")

// End reasons, as recorded in the end record's "reason". The metric label
// of bastiond_sessions_ended_total is the reason's class (reasonClass).
const (
	// ReasonClientClosed: the client ended its stream first (and the
	// target then closed), or both closed normally with the client first.
	ReasonClientClosed = "client closed"
	// ReasonTargetClosed: the target ended its stream first.
	ReasonTargetClosed = "target closed"
	// ReasonIdle: no byte either way for the protocol's idle timeout.
	ReasonIdle = "idle timeout"
	// ReasonMaxDuration: the protocol's maximum session time passed.
	ReasonMaxDuration = "max duration"
	// ReasonAccessRevoked: the caller ended it (EndWhere) because the user,
	// role or token that allowed it is gone.
	ReasonAccessRevoked = "access revoked"
	// ReasonTargetUnreachable: the machine went away mid-session
	// (ETIMEDOUT, EHOSTUNREACH, ENETUNREACH, EHOSTDOWN, ECONNRESET on the
	// target's side).
	ReasonTargetUnreachable = "target unreachable"
	// ReasonShutdown: the broker closed with the session still open.
	ReasonShutdown = "shutdown"
	// ReasonAbandoned: a crash interrupted it; written at the next start.
	ReasonAbandoned = "abandoned"
	// ReasonAuthFailed: the target refused the credentials (a browser
	// session; the bastion authenticates to the target on the user's behalf).
	ReasonAuthFailed = "auth failed"
	// ReasonRecordingFailed: the user's role requires a recording and it
	// could not be written; followed by ": CAUSE" ("recording failed: no
	// space left on device").
	ReasonRecordingFailed = "recording failed"
	// ReasonAuditUnavailable: Open refused the session after dialling its
	// target because its start record could not be written; both records
	// are written once the audit file can be (KindAuditUnavailable).
	ReasonAuditUnavailable = "audit log unwritable"

	// Prefixes of reasons that carry detail: "killed: by root:
	// maintenance", "client error: <err>", "target error: <err>".
	ReasonKilled      = "killed: "
	ReasonClientError = "client error: "
	ReasonTargetError = "target error: "
	// ReasonRemoteExit: the remote shell exited: "remote exit (status 0)".
	ReasonRemoteExit = "remote exit"
	// ReasonHostKey: the target's identity was refused: "host key
	// mismatch: ..." or "host key not pinned: ...".
	ReasonHostKey = "host key "
	// ReasonNegotiation: the target and the bastion found no security
	// protocol in common (an RDP server's X.224 answer or TLS handshake):
	// "negotiation failed: the server requires NLA (CredSSP)".
	ReasonNegotiation = "negotiation failed: "
)

// reasonClass is a reason as a metric label.
func reasonClass(reason string) string {
	switch reason {
	case ReasonClientClosed:
		return "client_closed"
	case ReasonTargetClosed:
		return "target_closed"
	case ReasonIdle:
		return "idle_timeout"
	case ReasonMaxDuration:
		return "max_duration"
	case ReasonAccessRevoked:
		return "access_revoked"
	case ReasonTargetUnreachable:
		return "target_unreachable"
	case ReasonShutdown:
		return "shutdown"
	case ReasonAbandoned:
		return "abandoned"
	case ReasonAuthFailed:
		return "auth_failed"
	case ReasonAuditUnavailable:
		return "audit_unavailable"
	}
	switch {
	case strings.HasPrefix(reason, ReasonRecordingFailed):
		// "recording failed: no space left on device"
		return "recording_failed"
	case strings.HasPrefix(reason, ReasonKilled):
		return "killed"
	case strings.HasPrefix(reason, ReasonClientError):
		return "client_error"
	case strings.HasPrefix(reason, ReasonTargetError):
		return "target_error"
	case strings.HasPrefix(reason, ReasonRemoteExit):
		return "remote_exit"
	case strings.HasPrefix(reason, ReasonHostKey):
		return "host_key"
	case strings.HasPrefix(reason, ReasonNegotiation):
		return "negotiation"
	}
	return "other"
}
