package user

import (
	"testing"
	"time"

	"example.com/hooked"
)

func TestUser(t *testing.T) {
	hooked.Period = time.Millisecond
	if hooked.Period != time.Millisecond {
		t.Fail()
	}
}
