package api

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
)

// TestTokenResponseJSON: the answer to POST /api/tokens is one flat
// object, the secret under "token" and the token's fields beside it, as
// bastionctl login decodes it; and it decodes back to what was sent.
func TestTokenResponseJSON(t *testing.T) {
	want := TokenResponse{Secret: "bt_0123456789abcdef_secret", Token: Token{ID: "0123456789abcdef", User: "alice",
		Scopes: []string{"api", "tunnel"}, Comment: "laptop", Created: time.Date(2026, 12, 6, 9, 0, 0, 0, time.UTC),
		Expires: time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC), Source: "2001:db8::7"}}
	data, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var flat map[string]any
	if err := json.Unmarshal(data, &flat); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range flat {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"comment", "created", "expires", "id", "scopes", "source", "token", "user"}) {
		t.Errorf("keys %q", keys)
	}
	var got TokenResponse
	if err := json.Unmarshal(data, &got); err != nil || got.Secret != want.Secret || got.ID != want.ID ||
		!slices.Equal(got.Scopes, want.Scopes) || !got.Expires.Equal(want.Expires) {
		t.Errorf("decoded %+v, %v", got, err)
	}
}
