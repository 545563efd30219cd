package hooked

import (
	"testing"
	"time"
)

// TestHooks changes package variables: every line is a hook.
func TestHooks(t *testing.T) {
	_ = fine
	retry = time.Millisecond
	limits["x"] = 1
	count++
	f := &open
	_ = f
}

// TestNotHooks changes only its own variables.
func TestNotHooks(t *testing.T) {
	retry := time.Minute
	retry = time.Hour
	_ = retry
	var c struct{ count int }
	c.count = 1
}
