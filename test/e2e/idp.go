package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The lab's OpenID provider as bastiond's configuration and the IdP know it.
const (
	// IdPProvider is the name tests give the lab's IdP in auth.oidc: the
	// subjects of its groups are oidc-group:lab/GROUP.
	IdPProvider = "lab"
	// IdPTitle is its title: the portal's button reads "Sign in with Lab SSO".
	IdPTitle = "Lab SSO"
	// IdPGroup is the group of LabIdP's User; IdPNoRoleGroup that of its
	// NoRoleUser, which the tests map to no role.
	IdPGroup       = "lab-ops"
	IdPNoRoleGroup = "visitors"
	// SSOCallbackPath is the redirect URI's path; the lab's IdP accepts
	// https://bastion.lab.example/sso/callback (and, in the cluster mode, the
	// balancer's server name's).
	SSOCallbackPath = "/sso/callback"
)

// IdP is the lab's OpenID provider: Dex, started by test/lab/lab.sh in the
// client's namespace on addresses of its own, as lab.env describes it.
type IdP struct {
	Issuer           string // LAB_IDP_ISSUER: https://idp.lab.example:5556/dex
	CAFile           string // LAB_IDP_CA: PEM of the CA that signed Dex's certificate
	ClientID         string // LAB_IDP_CLIENT_ID: bastiond
	ClientSecretFile string // LAB_IDP_CLIENT_SECRET_FILE: the client's secret (root, 0600)
	User             string // LAB_SSO_USER: ana@lab.example, in group IdPGroup
	NoRoleUser       string // LAB_SSO_NOROLE_USER: ned@lab.example, in group IdPNoRoleGroup
	Password         string // LAB_PASSWORD: both users' password
	Addr4, Addr6     string // IDP4, IDP6: the addresses idp.lab.example names
	Port             string // IDP_PORT: 5556
}

// LabIdP returns the lab's IdP, failing the test when lab.env lacks any of it.
func LabIdP(t testing.TB) IdP {
	t.Helper()
	NeedLab(t)
	return IdP{
		Issuer:           LabValue(t, "LAB_IDP_ISSUER"),
		CAFile:           LabValue(t, "LAB_IDP_CA"),
		ClientID:         LabValue(t, "LAB_IDP_CLIENT_ID"),
		ClientSecretFile: LabValue(t, "LAB_IDP_CLIENT_SECRET_FILE"),
		User:             LabValue(t, "LAB_SSO_USER"),
		NoRoleUser:       LabValue(t, "LAB_SSO_NOROLE_USER"),
		Password:         LabValue(t, "LAB_PASSWORD"),
		Addr4:            LabValue(t, "IDP4"),
		Addr6:            LabValue(t, "IDP6"),
		Port:             LabValue(t, "IDP_PORT"),
	}
}

// OIDCConfig is the auth section of a bastiond configuration with the lab's
// IdP as provider IdPProvider (top-level YAML: append it to LabConfig's
// extra). Roles name its groups as oidc-group:lab/lab-ops.
func (p IdP) OIDCConfig() string {
	return fmt.Sprintf(`auth:
  oidc:
    - name: %s
      title: %s
      issuer: %s
      client_id: %s
      client_secret_file: %s
      ca_file: %s
      scopes: [openid, email, profile, groups]
`, IdPProvider, IdPTitle, p.Issuer, p.ClientID, p.ClientSecretFile, p.CAFile)
}

// ClientSecret reads the client's secret.
func (p IdP) ClientSecret(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.ClientSecretFile)
	if err != nil {
		t.Fatalf("IdP client secret: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// RedirectURI is the callback the lab's IdP accepts for the lab's bastion.
func (p IdP) RedirectURI() string { return "https://" + ServerName + SSOCallbackPath }

// CertPool holds the CA that signed the IdP's certificate, and no other.
func (p IdP) CertPool(t testing.TB) *x509.CertPool {
	t.Helper()
	pem, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatalf("IdP CA: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("IdP CA: no certificate in %s", p.CAFile)
	}
	return pool
}

// HTTPClient is a browser-like client (cookies, TLS checked against the
// IdP's CA only) on lab host host ("client", "bastion", ...): see
// LabHTTPClient. It does not follow a redirect to the bastion's callback:
// the response carrying the code is returned.
func (p IdP) HTTPClient(t testing.TB, host, network string) *http.Client {
	t.Helper()
	c := LabHTTPClient(t, host, network, p.CertPool(t))
	jar, _ := cookiejar.New(nil)
	c.Jar = jar
	c.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if strings.HasSuffix(req.URL.Path, SSOCallbackPath) {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return c
}

// LabHTTPClient is an HTTP client whose connections are made inside lab
// host host's network namespace, with names resolved from that host's
// hosts file (/etc/netns/bl-HOST/hosts, as processes in the host see them:
// Go's resolver would read the machine's own /etc/hosts), keeping only the
// addresses network ("tcp", "tcp4" or "tcp6") allows. Literal addresses are
// used as they are. roots are the CAs it trusts (nil: the system's).
func LabHTTPClient(t testing.TB, host, network string, roots *x509.CertPool) *http.Client {
	t.Helper()
	ns := "bl-" + strings.TrimPrefix(host, "bl-")
	hosts := filepath.Join("/etc/netns", ns, "hosts")
	if _, err := os.Stat(hosts); err != nil {
		t.Fatalf("LabHTTPClient: lab host %q: %v", host, err)
	}
	dial := func(ctx context.Context, _, addr string) (net.Conn, error) {
		name, port, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		ips, err := lookupHostsFile(hosts, name, network)
		if err != nil {
			return nil, err
		}
		var errs []error
		for _, ip := range ips {
			var c net.Conn
			err := InNetns(ns, func() (err error) {
				c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
				return err
			})
			if err == nil {
				return c, nil
			}
			errs = append(errs, err)
		}
		return nil, errors.Join(errs...)
	}
	return &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext:       dial,
			TLSClientConfig:   &tls.Config{RootCAs: roots},
			ForceAttemptHTTP2: true,
			// Each client is a fresh browser; no connection outlives it.
			DisableKeepAlives: true,
		},
	}
}

// lookupHostsFile resolves name with the hosts file at path, keeping the
// addresses of network's family, in the file's order.
func lookupHostsFile(path, name, network string) ([]netip.Addr, error) {
	want := func(a netip.Addr) bool {
		switch network {
		case "tcp4", "udp4":
			return a.Is4()
		case "tcp6", "udp6":
			return a.Is6() && !a.Is4In6()
		}
		return true
	}
	if a, err := netip.ParseAddr(name); err == nil {
		if !want(a) {
			return nil, fmt.Errorf("%s is not a %s address", name, network)
		}
		return []netip.Addr{a}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []netip.Addr
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		a, err := netip.ParseAddr(fields[0])
		if err != nil || !want(a) {
			continue
		}
		for _, n := range fields[1:] {
			if strings.EqualFold(n, name) {
				out = append(out, a)
				break
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s: no %s address for %q", path, network, name)
	}
	return out, nil
}
