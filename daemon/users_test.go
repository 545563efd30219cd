package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/proxy/auth"
)

// usersDaemon is a daemon with what account administration uses (the
// account store, the front door, the broker) and its admin API on a socket.
func usersDaemon(t *testing.T) (*daemon, *adminclient.Client) {
	t.Helper()
	e := adminDaemon(t)
	return e.d, e.client
}

// TestDisableRevokesTokens: `users disable` revokes the account's API
// tokens and says how many; `users enable` then brings none back.
func TestDisableRevokesTokens(t *testing.T) {
	d, client := usersDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	store := d.auth.Store()
	for _, u := range []string{"bob", "carol"} {
		if err := store.AddUser(u, "correct horse battery", nil); err != nil {
			t.Fatal(err)
		}
	}
	var bobs []string
	for _, src := range []string{"192.0.2.7", "2001:db8::7"} {
		secret, _, err := store.IssueToken("bob", nil, time.Hour, "laptop", src)
		if err != nil {
			t.Fatal(err)
		}
		bobs = append(bobs, secret)
	}
	carols, _, err := store.IssueToken("carol", nil, time.Hour, "", "2001:db8::8")
	if err != nil {
		t.Fatal(err)
	}

	ended, err := client.DisableUser(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if ended.Tokens != 2 {
		t.Errorf("disable answered %+v, want 2 tokens revoked", ended)
	}
	if err := client.UserChange(ctx, "bob", "enable", adminapi.UserRequest{}); err != nil {
		t.Fatal(err)
	}
	for i, secret := range bobs {
		if _, _, err := store.CheckToken(secret); !errors.Is(err, auth.ErrBadToken) {
			t.Errorf("bob's token %d works again after disable and enable: %v", i, err)
		}
	}
	if ts, err := client.Tokens(ctx, "bob"); err != nil || len(ts) != 0 {
		t.Errorf("bob's tokens after disable and enable: %v, %v", ts, err)
	}
	if _, _, err := store.CheckToken(carols); err != nil {
		t.Errorf("another user's token was revoked: %v", err)
	}
	if _, err := client.DisableUser(ctx, "nobody"); err == nil {
		t.Error("disabling an unknown user succeeded")
	}
}
