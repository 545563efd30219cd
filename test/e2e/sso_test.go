package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// startSSODaemon is bastiond with the lab's IdP (provider "lab"), the
// providers more returns (auth.oidc list items), and the role sso-ops for
// the IdP's group lab-ops.
func startSSODaemon(t *testing.T, more func(IdP) string) (*Daemon, IdP) {
	t.Helper()
	idp := LabIdP(t)
	providers := ""
	if more != nil {
		providers = more(idp)
	}
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return SSOConfig(dir, idp, providers, "") })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	return d, idp
}

// TestBrowserSSO: Chromium signs in through the lab's real OpenID provider
// (Dex), over IPv4 and over IPv6: the portal's button, Dex's login page,
// back to the portal with exactly the machines the user's group allows;
// a user whose group maps to no role sees none; sign-out ends the session.
func TestBrowserSSO(t *testing.T) {
	d, idp := startSSODaemon(t, nil)
	base := "https://" + ServerName + "/"
	for _, fam := range []struct {
		name, bastion, idp string
	}{
		{"ipv4", LabValue(t, "BASTION_PUB4"), idp.Addr4},
		{"ipv6", "[" + LabValue(t, "BASTION_PUB6") + "]", "[" + idp.Addr6 + "]"},
	} {
		t.Run(fam.name, func(t *testing.T) {
			b := StartBrowser(t, "browser-sso-"+fam.name, fmt.Sprintf("--host-resolver-rules=MAP %s %s, MAP idp.lab.example %s",
				ServerName, fam.bastion, fam.idp))
			signIn := func(user string) {
				t.Helper()
				b.Goto(t, base)
				b.Click(t, `a.button[href="/sso/lab"]`)
				b.WaitVisible(t, "#login")
				b.Fill(t, "#login", user)
				b.Fill(t, "#password", idp.Password)
				b.Click(t, "#submit-login")
				b.WaitVisible(t, "header .who")
				if who := b.Text(t, "header .who"); who != user {
					t.Fatalf("signed in as %q, want %q", who, user)
				}
			}
			signIn(idp.User)
			b.WaitVisible(t, "ul.targets")
			if list := b.Text(t, "ul.targets"); !strings.Contains(list, "vm1") || strings.Contains(list, "vm2") {
				t.Fatalf("%s's machines: %q, want vm1 only (group %s)", idp.User, list, IdPGroup)
			}
			b.Screenshot(t, "signed-in")
			b.Click(t, `header form[action="/logout"] button`)
			b.WaitVisible(t, "form.login")

			signIn(idp.NoRoleUser)
			if page := b.Text(t, "main"); !strings.Contains(page, "No machine is open to you") {
				t.Fatalf("%s (no role) sees: %q", idp.NoRoleUser, page)
			}
			if p := b.TakeProblems(t); len(p.Violations)+len(p.Exceptions) > 0 {
				t.Errorf("CSP violations %q, exceptions %q", p.Violations, p.Exceptions)
			}
		})
	}
	WaitEvent(t, d, "signin_succeeded", map[string]string{"user": idp.User, "reason": "sso", "via": "sso"})
	WaitEvent(t, d, "signin_no_role", map[string]string{"user": idp.NoRoleUser})
}

// TestSSORefusedWithDex: against the real provider, a tampered state, a
// replayed code and a provider that cannot be reached are each refused
// with a clear page and an audit event, and sign nobody in; a user whose
// group maps to no role gets no ticket.
func TestSSORefusedWithDex(t *testing.T) {
	d, idp := startSSODaemon(t, func(idp IdP) string {
		return `    - name: nowhere
      title: Nowhere SSO
      issuer: https://idp.lab.example:5557/dex
      client_id: bastiond
      client_secret_file: ` + idp.ClientSecretFile + "\n"
	})
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			t.Run("wrong state", func(t *testing.T) {
				b := NewSSOBrowser(t, network)
				back, _ := url.Parse(b.SignInAtIdP("/sso/lab", idp.User, idp.Password))
				q := back.Query()
				q.Set("state", "forged-"+q.Get("state"))
				back.RawQuery = q.Encode()
				code, page, _ := b.Get(back.String())
				if code != http.StatusUnauthorized || !strings.Contains(page, "not started here") || b.Cookie("__Host-bastion") != "" {
					t.Fatalf("forged state: %d\n%s", code, tail(page, 1500))
				}
				WaitEvent(t, d, "signin_failed", map[string]string{"reason": "sso_bad_state", "via": "sso"})
			})
			t.Run("replayed code", func(t *testing.T) {
				b := NewSSOBrowser(t, network)
				back := b.SignInAtIdP("/sso/lab", idp.User, idp.Password)
				flow := b.Cookie("__Host-bastion-sso")
				if code, _, _ := b.Get(back); code != http.StatusOK {
					t.Fatalf("first use of the code: %d", code)
				}
				thief := NewSSOBrowser(t, network)
				thief.SetCookie("__Host-bastion-sso", flow)
				code, page, _ := thief.Get(back)
				if code != http.StatusUnauthorized || !strings.Contains(page, "refused this sign-in") {
					t.Fatalf("replayed code: %d\n%s", code, tail(page, 1500))
				}
				WaitEvent(t, d, "signin_failed", map[string]string{"reason": "sso_code_refused", "via": "sso"})
			})
		})
	}
	t.Run("provider unreachable", func(t *testing.T) {
		b := NewSSOBrowser(t, "tcp6")
		code, page, _ := b.Get("https://" + ServerName + "/sso/nowhere")
		if code != http.StatusBadGateway || !strings.Contains(page, "Nowhere SSO cannot be reached") {
			t.Fatalf("unreachable provider: %d\n%s", code, tail(page, 1500))
		}
		WaitEvent(t, d, "signin_failed", map[string]string{"reason": "sso_unreachable", "via": "sso"})
	})
	t.Run("no role, no ticket", func(t *testing.T) {
		b, csrf := SignedInSSO(t, "tcp4", idp.NoRoleUser, idp.Password)
		code, body := b.PostJSON("/api/connect", csrf, `{"target":"vm1","protocol":"ssh"}`)
		if code == http.StatusOK {
			t.Fatalf("a user with no role got a ticket: %s", body)
		}
		WaitEvent(t, d, "connect_refused", map[string]string{"user": idp.NoRoleUser, "reason": "no_role"})
	})
}

// TestBastionctlLoginSSO: `bastionctl login --sso` in the client namespace
// signs in through Dex in Chromium (the system browser, through $BROWSER),
// comes back to its loopback listener with the token, and ssh through
// `bastionctl ssh-proxy` works with it; with --no-browser, the address is
// opened by hand and the code the page shows is typed in.
func TestBastionctlLoginSSO(t *testing.T) {
	d, idp := startSSODaemon(t, nil)
	b := StartBrowser(t, "bastionctl-sso")
	dir := t.TempDir()
	urlFile := filepath.Join(dir, "url")
	opener := filepath.Join(dir, "open-browser")
	if err := os.WriteFile(opener, []byte("#!/bin/sh\nprintf '%s\\n' \"$1\" > "+urlFile+".tmp && mv "+urlFile+".tmp "+urlFile+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	login := func(t *testing.T, creds string, args ...string) (*exec.Cmd, io.WriteCloser, *bufio.Reader) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", LabValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "login",
			"--server", ServerName, "--insecure", "--sso", "--ttl", "1h"}, args...)...)
		cmd.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds, "BROWSER="+opener)
		stdin, _ := cmd.StdinPipe()
		stderr, _ := cmd.StderrPipe()
		cmd.WaitDelay = 5 * time.Second
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd, stdin, bufio.NewReader(stderr)
	}
	atDex := func(t *testing.T, u string) {
		b.Goto(t, u)
		b.WaitVisible(t, "#login")
		b.Fill(t, "#login", idp.User)
		b.Fill(t, "#password", idp.Password)
		b.Click(t, "#submit-login")
	}
	sshVM1 := func(t *testing.T, creds string) {
		ssh := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), "ssh", "-F", "none",
			"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy vm1",
			"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
			"-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20", "-i", LabValue(t, "LAB_KEY"), "lab@vm1", "uname", "-n")
		ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds, "XDG_CACHE_HOME="+t.TempDir())
		ssh.WaitDelay = 5 * time.Second
		out, err := ssh.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != "vm1" {
			t.Fatalf("ssh lab@vm1 through ssh-proxy with the SSO token: %v\n%s", err, out)
		}
	}

	t.Run("browser", func(t *testing.T) {
		defer func() {
			if t.Failed() {
				b.Screenshot(t, "failed-browser")
			}
		}()
		creds := filepath.Join(t.TempDir(), "credentials.json")
		cmd, _, stderr := login(t, creds)
		go io.Copy(io.Discard, stderr)
		deadline := time.Now().Add(20 * time.Second)
		var u []byte
		for {
			var err error
			if u, err = os.ReadFile(urlFile); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("bastionctl opened no browser")
			}
			time.Sleep(50 * time.Millisecond)
		}
		start := strings.TrimSpace(string(u))
		if su, err := url.Parse(start); err != nil || su.Hostname() != ServerName || su.Path != "/sso/lab" || su.Query().Get("cli_challenge") == "" || su.Query().Get("cli_port") == "0" {
			t.Fatalf("bastionctl opened %q", start)
		}
		atDex(t, start)
		b.WaitText(t, "body", "bastionctl has its token")
		if err := cmd.Wait(); err != nil {
			t.Fatalf("bastionctl login --sso: %v", err)
		}
		data, _ := os.ReadFile(creds)
		if !strings.Contains(string(data), `"user": "`+idp.User+`"`) {
			t.Fatalf("credentials: %s", data)
		}
		sshVM1(t, creds)
		WaitEvent(t, d, "token_issued", map[string]string{"user": idp.User})
	})

	t.Run("no browser", func(t *testing.T) {
		creds := filepath.Join(t.TempDir(), "credentials.json")
		cmd, stdin, stderr := login(t, creds, "--no-browser")
		var start string
		for start == "" {
			line, err := stderr.ReadString('\n')
			if err != nil {
				t.Fatalf("bastionctl printed no address: %v", err)
			}
			if f := strings.Fields(line); len(f) == 1 && strings.HasPrefix(f[0], "https://") {
				start = f[0]
			}
		}
		go io.Copy(io.Discard, stderr)
		if !strings.Contains(start, "cli_port=0") {
			t.Fatalf("--no-browser's address %q", start)
		}
		atDex(t, start)
		b.WaitVisible(t, "#code")
		code := b.Text(t, "#code")
		if !regexp.MustCompile(`^[A-Za-z0-9_-]{40,}$`).MatchString(code) {
			t.Fatalf("the page's code %q", code)
		}
		fmt.Fprintln(stdin, code)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("bastionctl login --sso --no-browser: %v", err)
		}
		sshVM1(t, creds)
	})
}

// TestSSOGroupLostEndsSessions: a user's live tunnel, opened with the
// token of a sign-in through a Dex that put them in group lab-ops, ends
// as a withdrawn right when they sign in again after the provider took
// them out of it. The Dex is restarted between the two with new signing
// keys (memory storage): the bastion fetches the new ones by itself.
func TestSSOGroupLostEndsSessions(t *testing.T) {
	idp := LabIdP(t)
	dex := StartDex(t, "5558", nil)
	auth := strings.NewReplacer("name: "+IdPProvider+"\n", "name: lab2\n", idp.Issuer, dex.Issuer).Replace(idp.OIDCConfig())
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return LabConfig(dir, auth+`access:
  roles:
    - name: sso2
      subjects: [oidc-group:lab2/`+IdPGroup+`]
      targets: [vm1]
      protocols: [tunnel]
`)
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	pub6 := LabValue(t, "BASTION_PUB6")
	_, st, body := NewSSOBrowser(t, "tcp6").CLIToken("lab2", idp.User, idp.Password)
	var tok struct{ Token string }
	if st != http.StatusOK || json.Unmarshal([]byte(body), &tok) != nil {
		t.Fatalf("token: %d %s", st, body)
	}
	creds := filepath.Join(t.TempDir(), "credentials.json")
	os.WriteFile(creds, []byte(`{"token":"`+tok.Token+`"}`), 0o600)
	conn, err := Dial(t, TunnelClient(t, creds, pub6, "quic"), "vm1", 22)
	if err != nil {
		t.Fatalf("tunnel to vm1:22 while in group %s: %v", IdPGroup, err)
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	banner := make([]byte, 8)
	if _, err := io.ReadFull(conn, banner); err != nil || string(banner) != "SSH-2.0-" {
		t.Fatalf("vm1's banner through the tunnel: %q %v", banner, err)
	}

	dex.Stop()
	StartDex(t, "5558", func(cfg string) string {
		return strings.Replace(cfg, "groups: ["+IdPGroup+"]", "groups: []", 1)
	})
	b := NewSSOBrowser(t, "tcp4")
	if code, page, _ := b.Get(b.SignInAtIdP("/sso/lab2", idp.User, idp.Password)); code != http.StatusOK {
		t.Fatalf("second sign-in (new keys at the provider): %d\n%s", code, tail(page, 1500))
	}
	conn.SetReadDeadline(time.Now().Add(15 * time.Second))
	if _, err := io.Copy(io.Discard, conn); err != nil {
		t.Fatalf("the tunnel outlived the group that allowed it: %v", err)
	}
	WaitEvent(t, d, "session_end", map[string]string{"user": idp.User, "reason": "access revoked"})
}
