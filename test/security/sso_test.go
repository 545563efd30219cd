package security

import (
	"encoding/json"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/test/e2e"
)

// ssoDaemon is bastiond with the lab's OpenID provider (Dex) as "lab" and
// the role sso-ops for its group lab-ops.
func ssoDaemon(t *testing.T) (*e2e.Daemon, e2e.IdP) {
	t.Helper()
	e2e.NeedLab(t)
	removeFirewallAtEnd(t)
	idp := e2e.LabIdP(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.SSOConfig(dir, idp, "", "") })
	return d, idp
}

// TestInvariant06SSOUsersNeedARole: a user the provider signs in, whose
// groups map to no role, gets no ticket from the portal and no tunnel
// ticket with the API token bastionctl got for them; the sign-in itself
// is an audit event.
func TestInvariant06SSOUsersNeedARole(t *testing.T) {
	d, idp := ssoDaemon(t)
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			// The control: the user whose group has a role gets one.
			ana, csrf := e2e.SignedInSSO(t, network, idp.User, idp.Password)
			if code, body := ana.PostJSON("/api/connect", csrf, `{"target":"vm1","protocol":"ssh"}`); code != http.StatusOK {
				t.Fatalf("%s (group %s) got no ticket: %d %s", idp.User, e2e.IdPGroup, code, body)
			}
			b, csrf := e2e.SignedInSSO(t, network, idp.NoRoleUser, idp.Password)
			if code, body := b.PostJSON("/api/connect", csrf, `{"target":"vm1","protocol":"ssh"}`); code == http.StatusOK {
				t.Fatalf("portal: a user with no role got a ticket: %s", body)
			}
			_, st, body := e2e.NewSSOBrowser(t, network).CLIToken(e2e.IdPProvider, idp.NoRoleUser, idp.Password)
			var tok struct{ Token string }
			if st != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil || tok.Token == "" {
				t.Fatalf("bastionctl's token: %d %s", st, body)
			}
			req, _ := http.NewRequest(http.MethodPost, "https://"+e2e.ServerName+"/api/connect", strings.NewReader(`{"target":"vm1","protocol":"tunnel","port":22}`))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+tok.Token)
			resp, err := b.Client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Fatal("API: a user with no role got a tunnel ticket")
			}
		})
	}
	e2e.WaitEvent(t, d, "signin_no_role", map[string]string{"user": idp.NoRoleUser, "via": "sso"})
	for _, e := range d.AuditEvents("ticket_issued") {
		if e["user"] == idp.NoRoleUser {
			t.Errorf("a ticket issued to a user with no role: %v", e)
		}
	}
}

// TestInvariant10SSOSecretsAreNeverKept: after sign-ins through the
// provider (the portal's and bastionctl's), a replayed answer and a
// forged one, no file the daemon wrote (its state, its audit trail, its
// configuration's directory) and nothing it logged holds the client
// secret, a code the provider or the bastion issued, a flow cookie, or an
// ID token (a JWT: base64url JSON, "eyJ").
func TestInvariant10SSOSecretsAreNeverKept(t *testing.T) {
	d, idp := ssoDaemon(t)
	secrets := map[string]string{"client secret": idp.ClientSecret(t)}
	for _, network := range []string{"tcp4", "tcp6"} {
		b := e2e.NewSSOBrowser(t, network)
		back := b.SignInAtIdP("/sso/lab", idp.User, idp.Password)
		u, _ := url.Parse(back)
		secrets["code "+network] = u.Query().Get("code")
		secrets["flow cookie "+network] = b.Cookie("__Host-bastion-sso")
		if st, _, _ := b.Get(back); st != http.StatusOK {
			t.Fatalf("sign-in over %s: %d", network, st)
		}
		if st, _, _ := b.Get(back); st == http.StatusOK {
			t.Fatalf("a replayed answer signed in over %s", network)
		}
		u.RawQuery = url.Values{"code": {"forged-code-" + network}, "state": {"forged"}}.Encode()
		b.Get(u.String())
		code, st, body := e2e.NewSSOBrowser(t, network).CLIToken(e2e.IdPProvider, idp.User, idp.Password)
		if st != http.StatusOK {
			t.Fatalf("bastionctl's token over %s: %d %s", network, st, body)
		}
		secrets["bastionctl code "+network] = code
		var tok struct{ Token string }
		json.Unmarshal([]byte(body), &tok)
		secrets["api token "+network] = tok.Token
	}
	// Stopped, so that its log and files are whole.
	d.Stop()
	places := map[string]string{"the daemon's log": d.Log.String()}
	filepath.WalkDir(d.Dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Type()&fs.ModeSocket != 0 {
			return nil
		}
		if data, err := os.ReadFile(p); err == nil {
			places[p] = string(data)
		}
		return nil
	})
	if len(places) < 3 {
		t.Fatalf("found only %d places to look in", len(places))
	}
	for where, text := range places {
		for what, s := range secrets {
			if s != "" && strings.Contains(text, s) {
				t.Errorf("%s holds the %s", where, what)
			}
		}
		if strings.Contains(text, "eyJhbGciOi") {
			t.Errorf("%s holds something like an ID token", where)
		}
	}
}
