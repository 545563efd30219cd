package portal

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/web"
	"github.com/bastiond/bastiond/web/browsertest"
)

// TestLinkBrowser opens a shareable link in Debian's Chromium, with no
// account, over 127.0.0.1 and ::1: its page, its button, the terminal's
// page of the link's session, whose sign-in form offers the link's login
// alone; then the used-up link's expired page.
func TestLinkBrowser(t *testing.T) {
	if !web.Built() {
		t.Skip("web/dist is not built: run make web")
	}
	cfg := browsertest.Config{WebDir: "../../web", Artifacts: os.Getenv("BASTIOND_ARTIFACTS")}
	if cfg.Artifacts == "" {
		cfg.Artifacts = t.TempDir()
	}
	if why := browsertest.Missing(cfg); why != "" {
		t.Skip("browser tests: " + why)
	}
	cert := testcert.New(t, testcert.Options{Name: testName})
	for _, addr := range []string{"127.0.0.1", "::1"} {
		t.Run(addr, func(t *testing.T) {
			// The terminal's WebSocket is the real one, before the
			// broker's dial (to loopback, which its dial guard refuses).
			e := linkEnvOf(t, newBrokerEnv(t).s, true, nil)
			ec := *e.s.cfg.Load()
			ec.SSH.HostKeys = func(string) (ssh.HostKeyCallback, []string) { return nil, nil }
			ec.SSH.RecordDir = t.TempDir()
			e.s.cfg.Store(&ec)
			n := linkVM1
			n.Uses = 1
			l, secret := e.create(t, n)
			ln, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
			if err != nil {
				t.Skipf("cannot listen on %s: %v", addr, err)
			}
			srv := httptest.NewUnstartedServer(e.s.Handler())
			srv.Listener.Close()
			srv.Listener = ln
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
			srv.StartTLS()
			defer srv.Close()
			host := addr
			if strings.Contains(addr, ":") {
				host = "[" + addr + "]"
			}
			c := cfg
			c.Args = []string{"--host-resolver-rules=MAP " + testName + " " + host}
			b := browsertest.Start(t, c)
			url := fmt.Sprintf("https://%s:%d/l/%s", testName, ln.Addr().(*net.TCPAddr).Port, secret)
			b.Goto(t, url)
			b.WaitText(t, "body", "vm1")
			b.Click(t, "#open-link")
			b.WaitVisible(t, "#client")
			if u := b.URL(t); !strings.Contains(u, "/connect/") {
				t.Fatalf("after Open the browser is at %s: %s", u, b.Text(t, "body"))
			}
			b.WaitVisible(t, "#client form.signin select")
			if n := b.Count(t, "#client form.signin select option"); n != 1 {
				t.Errorf("the terminal offers %d logins", n)
			}
			if got := b.Text(t, "#client form.signin select"); got != "deploy" {
				t.Errorf("the terminal offers %q", got)
			}
			if got, _ := e.links.Get(l.ID); got.Spent != 1 {
				t.Errorf("%d uses spent", got.Spent)
			}
			if p := b.TakeProblems(t); len(p.Violations)+len(p.Exceptions) > 0 {
				t.Errorf("CSP violations %q, exceptions %q", p.Violations, p.Exceptions)
			}
			b.Goto(t, url)
			b.WaitText(t, "body", "Your session has expired")
		})
	}
}
