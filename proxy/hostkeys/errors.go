package hostkeys

import (
	"errors"
	"fmt"
	"strings"
)

// Errors a host key check wraps, so that a relay can tell the user which
// it is: the key differs from the one pinned, or nothing is pinned yet and
// the key seen awaits an admin's approval.
var (
	ErrMismatch  = errors.New("host key mismatch")
	ErrNotPinned = errors.New("host key not pinned")
)

// ErrNoKey marks a target or fingerprint the store has no key for.
var ErrNoKey = errors.New("no such key")

// noKeyError is an ErrNoKey that says which key.
type noKeyError struct{ msg string }

func noKey(format string, args ...any) error { return &noKeyError{fmt.Sprintf(format, args...)} }

func (e *noKeyError) Error() string { return e.msg }
func (e *noKeyError) Unwrap() error { return ErrNoKey }

// CheckError is a refused key: Err is ErrMismatch or ErrNotPinned. Its
// message is for the admin and says what to run.
type CheckError struct {
	Err    error
	Kind   string
	Target string
	// Seen is the fingerprint of the key the target presented, Algorithm
	// its type.
	Seen      string
	Algorithm string
	// Pinned are the fingerprints pinned for the target (none for
	// ErrNotPinned).
	Pinned []string
}

func (e *CheckError) Error() string {
	what := "host key"
	if e.Kind == KindRDP {
		what = "certificate"
	}
	seen := e.Seen
	if e.Algorithm != "" {
		seen += " (" + e.Algorithm + ")"
	}
	if !errors.Is(e.Err, ErrMismatch) {
		return fmt.Sprintf("hostkeys: %v: %s has no %s pinned; it presented %s, now pending an admin's approval: "+
			"compare it with the machine's own, then run `bastionctl hostkeys pin %s`", e.Err, e.Target, what, seen, e.Target)
	}
	old, pinned := "FINGERPRINT", "the pinned ones are "
	if len(e.Pinned) == 1 {
		old, pinned = e.Pinned[0], "the pinned one is "
	}
	return fmt.Sprintf("hostkeys: %v: the %s of %s is not the one pinned: it presented %s, %s%s; "+
		"refused: the machine was re-keyed or reinstalled, or someone is intercepting the connection. "+
		"Once the new key is checked on the machine, run `bastionctl hostkeys pin %s %s` and `bastionctl hostkeys forget %s %s`",
		e.Err, what, e.Target, seen, pinned, strings.Join(e.Pinned, ", "), e.Target, e.Seen, e.Target, old)
}

func (e *CheckError) Unwrap() error { return e.Err }
