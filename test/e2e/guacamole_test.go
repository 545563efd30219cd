package e2e

import (
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/test/guac"
)

// TestGuacdHandshake runs the real guacd on loopback and has the
// Guacamole client open an RDP session through it to a port of 127.0.0.1
// or ::1 where nothing listens: the handshake completes (guacd's args, ready), then
// guacd reports that it could not reach the server, and the client says
// so. It needs no lab, only guacd (test/deps.sh test installs it).
func TestGuacdHandshake(t *testing.T) {
	if _, err := exec.LookPath("guacd"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("guacd is not installed (test/deps.sh test installs it)")
		}
		t.Skip("guacd is not installed (test/deps.sh test installs it)")
	}
	// guacd itself listens on IPv4 only (StartGuacd); the RDP server it is
	// sent to is on either.
	for _, tc := range []struct{ name, loopback string }{{"IPv4", "127.0.0.1"}, {"IPv6", "::1"}} {
		t.Run(tc.name, func(t *testing.T) {
			closed := closedPort(t, tc.loopback)
			g := StartGuacd(t, "")
			conn, err := net.DialTimeout("tcp", g.Addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			s, err := guac.Dial(conn, guac.RDP{Host: tc.loopback, Port: closed, Username: "u", Password: "p", Security: "tls", Width: 800, Height: 600})
			if err != nil {
				t.Fatalf("%v\nguacd: %s", err, g.Log.String())
			}
			defer s.Close()
			if s.ID == "" {
				t.Error("ready without a connection ID")
			}
			err = s.Run(20 * time.Second)
			if err == nil || !strings.Contains(err.Error(), "ended") {
				t.Fatalf("a session to a closed port: %v, want guacd's error\nguacd: %s", err, g.Log.String())
			}
			t.Logf("%v", err)
		})
	}
}

// closedPort is a TCP port on host where nothing listens: one the kernel
// gave a listener that is closed again.
func closedPort(t *testing.T, host string) string {
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ln.Close()
	return port
}

// Guacd is a guacd this test started.
type Guacd struct {
	Cmd  *exec.Cmd
	Addr string // where it listens, host:port
	Log  *syncbuf.Buffer
}

// StartGuacd starts guacd in the foreground in network namespace netns
// ("" for this process's), listening on a free port of 127.0.0.1, and
// stops it and what it forked (by its process group) when the test ends.
// guacd 1.3.0 listens on IPv4 only: it binds an IPv6 address to an IPv4
// socket, which fails (EAFNOSUPPORT).
func StartGuacd(t testing.TB, netns string) *Guacd {
	t.Helper()
	for range 5 {
		if g := startGuacd(t, netns); g != nil {
			return g
		}
	}
	t.Fatal("guacd: no free port in 5 tries")
	return nil
}

// startGuacd is one try of StartGuacd: nil when the port it picked was
// taken in the meantime.
func startGuacd(t testing.TB, netns string) *Guacd {
	t.Helper()
	var port string
	pick := func() error {
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		_, port, _ = net.SplitHostPort(ln.Addr().String())
		return nil
	}
	argv := []string{"guacd", "-f", "-b", "127.0.0.1", "-l", "", "-L", "info"}
	var err error
	if netns != "" {
		err = InNetns(netns, pick)
		argv = append([]string{"ip", "netns", "exec", netns}, argv...)
	} else {
		err = pick()
	}
	if err != nil {
		t.Fatalf("guacd: a free port: %v", err)
	}
	argv[len(argv)-3] = port
	g := &Guacd{Addr: "127.0.0.1:" + port, Log: &syncbuf.Buffer{}}
	g.Cmd = exec.Command(argv[0], argv[1:]...)
	g.Cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
	g.Cmd.Stdout, g.Cmd.Stderr = g.Log, g.Log
	g.Cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := g.Cmd.Start(); err != nil {
		t.Fatalf("guacd: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- g.Cmd.Wait() }()
	pgid := g.Cmd.Process.Pid
	stop := func() {
		syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			syscall.Kill(-pgid, syscall.SIGKILL)
			<-exited
		}
	}
	// Listening, or gone: 10 s at most.
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(g.Log.String(), "Listening on host"); time.Sleep(50 * time.Millisecond) {
		select {
		case err := <-exited:
			if strings.Contains(g.Log.String(), "Unable to bind") {
				return nil
			}
			t.Fatalf("guacd exited: %v\n%s", err, g.Log.String())
		default:
		}
		if time.Now().After(deadline) {
			stop()
			t.Fatalf("guacd did not listen within 10 s:\n%s", g.Log.String())
		}
	}
	t.Cleanup(stop)
	return g
}
