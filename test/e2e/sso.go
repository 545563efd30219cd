package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SSOConfig is the lab's configuration with the lab's IdP as provider
// "lab" (and the providers of more, YAML list items of auth.oidc), and
// the role sso-ops (the IdP's group lab-ops: ssh and tunnels on vm1);
// extra is appended (top-level YAML).
func SSOConfig(dir string, idp IdP, more, extra string) string {
	return LabConfig(dir, idp.OIDCConfig()+more+`access:
  roles:
    - name: sso-ops
      subjects: [oidc-group:`+IdPProvider+`/`+IdPGroup+`]
      targets: [vm1]
      protocols: [ssh, tunnel]
`+extra)
}

// SSOBrowser is a user's browser as a Go client in the client namespace:
// it keeps cookies, follows redirects (from the bastion to the IdP and back
// through the IdP's login), and stops at the IdP's redirect back to the
// bastion's callback, which the test then follows or tampers with. It
// trusts every certificate: what is under test is the bastion's trust of
// the IdP, not the test's. network is tcp4 or tcp6: the bastion's and the
// IdP's names resolve to that family only.
type SSOBrowser struct {
	t      testing.TB
	Client *http.Client
}

// NewSSOBrowser is a fresh SSOBrowser.
func NewSSOBrowser(t testing.TB, network string) *SSOBrowser {
	t.Helper()
	NeedLab(t)
	c := LabHTTPClient(t, "client", network, nil)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	c.Timeout = 20 * time.Second
	c.Jar, _ = cookiejar.New(nil)
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if req.URL.Path == SSOCallbackPath {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &SSOBrowser{t: t, Client: c}
}

// Get fetches u and returns the status, the body and the response.
func (b *SSOBrowser) Get(u string) (int, string, *http.Response) {
	b.t.Helper()
	resp, err := b.Client.Get(u)
	if err != nil {
		b.t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(body), resp
}

var dexForm = regexp.MustCompile(`<form method="post" action="([^"]+)">`)

// SignInAtIdP starts a sign-in at the bastion's start path (e.g.
// /sso/lab), signs in at the lab's IdP as user with password, and returns
// the URL the IdP sends the browser back to (the callback, with its code
// and state), not yet followed.
func (b *SSOBrowser) SignInAtIdP(start, user, password string) string {
	b.t.Helper()
	code, page, resp := b.Get("https://" + ServerName + start)
	m := dexForm.FindStringSubmatch(page)
	if code != http.StatusOK || m == nil {
		b.t.Fatalf("GET %s: %d, no login form of the IdP at %s:\n%s", start, code, resp.Request.URL, tail(page, 2000))
	}
	action, err := resp.Request.URL.Parse(html.UnescapeString(m[1]))
	if err != nil {
		b.t.Fatal(err)
	}
	resp, err = b.Client.PostForm(action.String(), url.Values{"login": {user}, "password": {password}})
	if err != nil {
		b.t.Fatalf("POST the IdP's login form: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound || !strings.Contains(loc, SSOCallbackPath+"?") {
		b.t.Fatalf("the IdP's login: %d, Location %q:\n%s", resp.StatusCode, loc, tail(string(body), 2000))
	}
	return loc
}

// Cookie is the value of the bastion's cookie called name, "" if none.
func (b *SSOBrowser) Cookie(name string) string {
	for _, c := range b.Client.Jar.Cookies(&url.URL{Scheme: "https", Host: ServerName, Path: "/"}) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// SetCookie sets the bastion's cookie called name.
func (b *SSOBrowser) SetCookie(name, value string) {
	b.Client.Jar.SetCookies(&url.URL{Scheme: "https", Host: ServerName, Path: "/"},
		[]*http.Cookie{{Name: name, Value: value, Path: "/", Secure: true}})
}

// PostJSON posts body (JSON) to the bastion's path with the session's CSRF
// token csrf and its Origin, and returns the status and body.
func (b *SSOBrowser) PostJSON(path, csrf, body string) (int, string) {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "https://"+ServerName+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "https://"+ServerName)
	req.Header.Set("X-CSRF-Token", csrf)
	resp, err := b.Client.Do(req)
	if err != nil {
		b.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

// SignedInSSO is a browser signed in at the lab's bastion through its IdP
// as user, over network; it returns the browser and the portal's CSRF
// token.
func SignedInSSO(t testing.TB, network, user, password string) (*SSOBrowser, string) {
	t.Helper()
	b := NewSSOBrowser(t, network)
	back := b.SignInAtIdP("/sso/"+IdPProvider, user, password)
	if code, page, _ := b.Get(back); code != http.StatusOK {
		t.Fatalf("the bastion's callback: %d\n%s", code, tail(page, 2000))
	}
	code, page, _ := b.Get("https://" + ServerName + "/")
	if code != http.StatusOK || !strings.Contains(page, user) {
		t.Fatalf("portal after the sign-in of %s: %d\n%s", user, code, tail(page, 2000))
	}
	return b, csrfIn(t, page)
}

// AuditEvents are the daemon's audit events of type kind, oldest first.
func (d *Daemon) AuditEvents(kind string) []map[string]any {
	var out []map[string]any
	data, _ := os.ReadFile(d.AuditFile())
	for _, line := range strings.Split(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == kind {
			out = append(out, r)
		}
	}
	return out
}

// WaitEvent waits a few seconds for an audit event of d with the fields of
// want, and fails the test without one.
func WaitEvent(t testing.TB, d *Daemon, kind string, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !d.HasEvent(kind, want) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s event with %v in the audit trail", kind, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// HasEvent reports whether one of d's audit events of type kind has every
// field of want as a string.
func (d *Daemon) HasEvent(kind string, want map[string]string) bool {
	for _, r := range d.AuditEvents(kind) {
		ok := true
		for k, v := range want {
			if fmt.Sprint(r[k]) != v {
				ok = false
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// CLIToken signs user in for bastionctl as `bastionctl login --sso
// --no-browser` does, at the bastion's provider, and redeems the code the
// page shows for an API token. It returns that code and the token
// endpoint's status and body.
func (b *SSOBrowser) CLIToken(provider, user, password string) (code string, status int, body string) {
	b.t.Helper()
	verifier := "a-verifier-the-test-made-up-for-this-one-sign-in"
	sum := sha256.Sum256([]byte(verifier))
	start := "/sso/" + provider + "?" + url.Values{"cli_port": {"0"}, "cli_challenge": {base64.RawURLEncoding.EncodeToString(sum[:])}}.Encode()
	st, page, _ := b.Get(b.SignInAtIdP(start, user, password))
	m := regexp.MustCompile(`<code id="code">([A-Za-z0-9_-]+)</code>`).FindStringSubmatch(page)
	if st != http.StatusOK || m == nil {
		b.t.Fatalf("bastionctl's sign-in page: %d\n%s", st, tail(page, 2000))
	}
	req, _ := json.Marshal(map[string]string{"code": m[1], "verifier": verifier, "ttl": "1h"})
	resp, err := b.Client.Post("https://"+ServerName+"/api/sso/token", "application/json", strings.NewReader(string(req)))
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return m[1], resp.StatusCode, string(data)
}

// Dex is a Dex of a test's own, beside the lab's: the lab's configuration
// on another port, changed as the test needs.
type Dex struct {
	t      testing.TB
	cmd    *exec.Cmd
	log    bytes.Buffer
	Issuer string
}

// StartDex starts a Dex in the client namespace on the lab IdP's addresses
// and port, with the lab Dex's configuration (its client, users, TLS
// certificate) changed by edit, and waits until the bastion's namespace
// reads its discovery document. Its signing keys are its own, made at its
// start. It is stopped when the test ends.
func StartDex(t testing.TB, port string, edit func(config string) string) *Dex {
	t.Helper()
	idp := LabIdP(t)
	data, err := os.ReadFile(filepath.Join(labDir(), "idp", "config.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.ReplaceAll(string(data), ":"+idp.Port, ":"+port)
	if edit != nil {
		cfg = edit(cfg)
	}
	path := filepath.Join(t.TempDir(), "dex.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := os.Getenv("LAB_DEX")
	if bin == "" {
		cache := os.Getenv("DEX_CACHE")
		if cache == "" {
			cache = "/var/cache/bastiond-test"
		}
		bin = filepath.Join(cache, "dex-v2.45.1", "dex")
	}
	d := &Dex{t: t, Issuer: strings.Replace(idp.Issuer, ":"+idp.Port, ":"+port, 1)}
	d.cmd = exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), bin, "serve", path)
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start Dex: %v", err)
	}
	t.Cleanup(d.Stop)
	c := LabHTTPClient(t, "bastion", "tcp", idp.CertPool(t))
	for try := 0; ; try++ {
		resp, err := c.Get(d.Issuer + "/.well-known/openid-configuration")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return d
			}
		}
		if try == 100 {
			t.Fatalf("Dex at %s did not answer: %v\n%s", d.Issuer, err, d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Stop stops the Dex; stopping it again does nothing.
func (d *Dex) Stop() {
	if d.cmd.ProcessState != nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { d.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		d.cmd.Process.Kill()
		<-done
	}
}
