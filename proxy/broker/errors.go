package broker

import (
	"errors"
	"strings"
	"syscall"
)

// ErrorKind classes the refusals of Open.
type ErrorKind int

const (
	KindUnknownTarget ErrorKind = iota + 1 // not in the inventory, or the port is not offered
	KindUserLimit                          // the user has sessions_per_user open
	KindCapacity                           // the instance is full
	KindUnreachable                        // no address of the target answered
	KindRefused                            // the dial guard refused the address
	KindClosed                             // the broker is shutting down
	KindInternal                           // the start record could not be written
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

func (e *Error) Unwrap() error { return e.Err }

// ErrNoSession is the answer to Kill for an ID that is not live.
var ErrNoSession = errors.New("broker: no such live session")

// End reasons, as recorded.
const (
	ReasonClientClosed      = "client closed"
	ReasonTargetClosed      = "target closed"
	ReasonIdle              = "idle timeout"
	ReasonMaxDuration       = "max duration"
	ReasonAccessRevoked     = "access revoked"
	ReasonTargetUnreachable = "target unreachable"
	ReasonShutdown          = "shutdown"
	ReasonAbandoned         = "abandoned"
	// Prefixes of reasons that carry detail.
	ReasonKilled      = "killed: "
	ReasonClientError = "client error: "
	ReasonTargetError = "target error: "
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
	}
	switch {
	case strings.HasPrefix(reason, ReasonKilled):
		return "killed"
	case strings.HasPrefix(reason, ReasonClientError):
		return "client_error"
	case strings.HasPrefix(reason, ReasonTargetError):
		return "target_error"
	}
	return "other"
}

// unreachable reports whether err says the peer is gone: no answer to data
// or keepalives (TCP_USER_TIMEOUT), or no route to it any more.
func unreachable(err error) bool {
	return errors.Is(err, syscall.ETIMEDOUT) || errors.Is(err, syscall.EHOSTUNREACH) ||
		errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTDOWN)
}
