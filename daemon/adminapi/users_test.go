package adminapi

import (
	"context"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/adminclient"
)

// disableOnly answers Disable; the other account calls are not made.
type disableOnly struct {
	Users
	disabled []string
}

func (d *disableOnly) Disable(name string) (Ended, error) {
	if name != "bob" {
		return Ended{}, ErrNotFound
	}
	d.disabled = append(d.disabled, name)
	return Ended{WebSessions: 1, Tokens: 3, Sessions: 2}, nil
}

// TestDisableAnswer: the answer to `users disable` says what it ended,
// API tokens included.
func TestDisableAnswer(t *testing.T) {
	u := &disableOnly{}
	path := startServer(t, "", func(c *Config) { c.Users = u })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e, err := adminclient.NewClient(path).DisableUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if want := (Ended{WebSessions: 1, Tokens: 3, Sessions: 2}); e != want || len(u.disabled) != 1 {
		t.Errorf("DisableUser = %+v (calls %v), want %+v", e, u.disabled, want)
	}
	if _, err := adminclient.NewClient(path).DisableUser(ctx, "nobody"); err == nil {
		t.Error("disabling an unknown user answered no error")
	}
}
