package e2e

import (
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const portalAccess = `access:
  groups:
    ops: [alice]
  roles:
    - name: ops-ssh
      subjects: [group:ops]
      targets: ["tag:linux"]
      protocols: [ssh]
    - name: desktops
      targets: [vm2]
      protocols: [rdp]
`

// TestPortal: accounts made with bastionctl sign in over IPv4 and IPv6 and
// see the machines their roles allow; connect tickets work once and only in
// their own browser; TOTP, disable and tokens behave end to end.
func TestPortal(t *testing.T) {
	d := StartDaemon(t, ViaFDs, portalAccess)
	const pw = "lab password 1234"
	for _, u := range []string{"alice", "carol"} {
		if out, err := d.CtlStdin(pw+"\n", "users", "add", u, "--password-stdin"); err != nil {
			t.Fatalf("users add %s: %v\n%s", u, err, out)
		}
	}
	if out, err := d.Ctl(nil, "users", "grant", "carol", "desktops"); err != nil {
		t.Fatalf("grant: %v\n%s", err, out)
	}
	if out, err := d.Ctl(nil, "users", "grant", "carol", "no-such-role"); err == nil || !strings.Contains(out, `no role "no-such-role"`) {
		t.Errorf("granting an undefined role: %v\n%s", err, out)
	}
	if out, _ := d.Ctl(nil, "users", "list"); !regexp.MustCompile(`(?m)^alice\s+active\s+-\s+ops-ssh`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^carol\s+active\s+-\s+desktops`).MatchString(out) {
		t.Errorf("users list:\n%s", out)
	}

	for _, fam := range []struct{ name, addr string }{{"IPv4", LabValue(t, "BASTION_PUB4")}, {"IPv6", LabValue(t, "BASTION_PUB6")}} {
		t.Run(fam.name, func(t *testing.T) {
			alice := NewWebUser(t, fam.addr)
			if code, _ := alice.SignIn("alice", "wrong password!!", ""); code != http.StatusUnauthorized {
				t.Fatalf("wrong password: %d", code)
			}
			code, portal := alice.SignIn("alice", pw, "")
			if code != http.StatusSeeOther || !strings.Contains(portal, "vm1") || strings.Contains(portal, "vm2") {
				t.Fatalf("alice's portal (%d):\n%s", code, portal)
			}
			resp, _ := alice.do(http.MethodPost, "/connect", url.Values{"csrf": {csrfIn(t, portal)}, "target": {"vm1"}, "protocol": {"ssh"}})
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/connect/") {
				t.Fatalf("connect: %d %q", resp.StatusCode, loc)
			}
			if resp, page := alice.do(http.MethodGet, loc, nil); resp.StatusCode != http.StatusOK || !strings.Contains(page, `data-protocol="ssh"`) {
				t.Fatalf("connect page: %d\n%s", resp.StatusCode, page)
			}
			// The same link in another browser shows the expired page.
			if resp, page := NewWebUser(t, fam.addr).do(http.MethodGet, loc, nil); resp.StatusCode != http.StatusForbidden ||
				!strings.Contains(page, "Your session has expired, start again from the portal") {
				t.Fatalf("copied link: %d\n%s", resp.StatusCode, page)
			}
			// A stranger without a session cannot use it, nor spoil it for alice.
			if resp, _ := alice.do(http.MethodGet, loc, nil); resp.StatusCode != http.StatusOK {
				t.Errorf("alice's own link after a stranger opened it: %d", resp.StatusCode)
			}
			// carol holds rdp on vm2 by a grant alone.
			carol := NewWebUser(t, fam.addr)
			if _, p := carol.SignIn("carol", pw, ""); !strings.Contains(p, "vm2") || strings.Contains(p, "vm1") {
				t.Errorf("carol's portal:\n%s", p)
			}
		})
	}

	t.Run("TOTP", func(t *testing.T) {
		// The admin runs the enrolment with the user present: the QR code
		// is shown, the app's code typed in.
		secret, shown := EnrolTOTP(t, d, "alice")
		if !strings.Contains(shown, "▀") {
			t.Fatalf("no QR code:\n%s", shown)
		}
		web := NewWebUser(t, LabValue(t, "BASTION_PUB4"))
		if code, _ := web.SignIn("alice", pw, ""); code != http.StatusUnauthorized {
			t.Fatalf("signed in without the code: %d", code)
		}
		// The enrolment used this step's code; the next step's is accepted
		// (one step of clock drift), once.
		next := TOTPAt(t, secret, 1)
		if code, _ := web.SignIn("alice", pw, next); code != http.StatusSeeOther {
			t.Fatalf("sign in with the code: %d", code)
		}
		if code, _ := NewWebUser(t, LabValue(t, "BASTION_PUB4")).SignIn("alice", pw, next); code != http.StatusUnauthorized {
			t.Errorf("a code was accepted twice: %d", code)
		}
		if out, _ := d.Ctl(nil, "users", "list"); !regexp.MustCompile(`(?m)^alice\s+active\s+yes`).MatchString(out) {
			t.Errorf("users list does not show TOTP:\n%s", out)
		}
		if out, err := d.Ctl(nil, "users", "totp", "alice", "--reset"); err != nil {
			t.Fatal(out)
		}
	})

	t.Run("disable ends the web session", func(t *testing.T) {
		alice := NewWebUser(t, LabValue(t, "BASTION_PUB6"))
		alice.SignIn("alice", pw, "")
		if out, err := d.Ctl(nil, "users", "disable", "alice"); err != nil {
			t.Fatal(out)
		}
		if _, page := alice.do(http.MethodGet, "/", nil); !strings.Contains(page, `action="/login"`) {
			t.Error("a disabled user's session still shows the portal")
		}
		if code, _ := alice.SignIn("alice", pw, ""); code != http.StatusUnauthorized {
			t.Errorf("disabled user signed in: %d", code)
		}
		d.Ctl(nil, "users", "enable", "alice")
	})

	t.Run("bastionctl login and tokens", func(t *testing.T) {
		creds := filepath.Join(t.TempDir(), "credentials.json")
		login := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "login",
			"--server", ServerName, "--address", net.JoinHostPort(LabValue(t, "BASTION_PUB6"), "443"), "--insecure",
			"--user", "alice", "--password-stdin", "--ttl", "1h")
		login.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
		login.Stdin = strings.NewReader(pw + "\n")
		if out, err := login.CombinedOutput(); err != nil || !strings.Contains(string(out), "signed in to "+ServerName+" as alice") {
			t.Fatalf("login: %v\n%s", err, out)
		}
		if st, err := os.Stat(creds); err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("credentials file: %v %v", st.Mode(), err)
		}
		out, _ := d.Ctl(nil, "tokens", "list", "--user", "alice")
		if !strings.Contains(out, "alice") || !strings.Contains(out, "api,tunnel") {
			t.Fatalf("tokens list:\n%s", out)
		}
		logout := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "logout")
		logout.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
		if out, err := logout.CombinedOutput(); err != nil {
			t.Fatalf("logout: %v\n%s", err, out)
		}
		if out, _ := d.Ctl(nil, "tokens", "list", "--user", "alice"); strings.Contains(out, "api,tunnel") {
			t.Errorf("token still listed after logout:\n%s", out)
		}
	})
}
