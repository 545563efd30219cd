package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/tunnel"
	"github.com/bastiond/bastiond/tunnel/tunneltest"
)

const testToken = "bst_0123456789abcdef_secret"

// testCredentials are what bastionctl login would have kept for s, with
// its certificate as the CA.
func testCredentials(t *testing.T, s *tunneltest.Server) credentials {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, s.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return credentials{Server: tunneltest.Name, Address: s.Addr, CA: ca, User: "alice", Token: testToken,
		TokenID: "0123456789abcdef", Expires: time.Now().Add(time.Hour)}
}

func testClient(t *testing.T, s *tunneltest.Server, transport string) *tunnel.Client {
	t.Helper()
	cl, err := testCredentials(t, s).tunnelClient(transport, func(format string, args ...any) { t.Logf(format, args...) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// refusing answers a request for target "denied" with StatusDenied and
// echoes the others.
func refusing(c net.Conn, req tunnelwire.Request) {
	if req.Target == "denied" {
		tunneltest.Refuse(c, tunnelwire.StatusDenied, "alice may not open tunnels to denied port 3389")
		return
	}
	tunneltest.Echo(c, req)
}

func TestServeTunnel(t *testing.T) {
	for _, transport := range []string{"quic", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			s := tunneltest.New(t, tunneltest.Config{Handler: refusing})
			cl := testClient(t, s, transport)
			errOut := &syncbuf.Buffer{}
			run := func(target string) (string, func()) {
				ln, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- serveTunnel(ctx, ln, cl, target, 3389, errOut, nil) }()
				return ln.Addr().String(), func() {
					cancel()
					if err := <-done; err != nil {
						t.Errorf("serveTunnel: %v", err)
					}
				}
			}
			addr, stop := run("vm1")

			// Many local connections at once, each sending and
			// half-closing; every byte comes back.
			var wg sync.WaitGroup
			for range 8 {
				wg.Go(func() {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Error(err)
						return
					}
					defer c.Close()
					data := make([]byte, 1<<20+3)
					rand.Read(data)
					go func() {
						c.Write(data)
						c.(*net.TCPConn).CloseWrite()
					}()
					c.SetReadDeadline(time.Now().Add(20 * time.Second))
					got, err := io.ReadAll(c)
					if err != nil || !bytes.Equal(got, data) {
						t.Errorf("echoed %d bytes (%v), want the %d sent", len(got), err, len(data))
					}
				})
			}
			wg.Wait()

			// One connection left open when the command stops is closed.
			idle, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer idle.Close()
			idle.Write([]byte("x"))
			io.ReadFull(idle, make([]byte, 1))
			stop()
			idle.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := idle.Read(make([]byte, 1)); err == nil {
				t.Error("a connection outlived the command")
			}

			// A refused tunnel: the local connection is closed, the error
			// told, and the command goes on.
			addr, stop = run("denied")
			defer stop()
			for range 2 {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
					t.Errorf("refused tunnel: read %d, %v; want the connection closed", n, err)
				}
				c.Close()
			}
			want := "bastionctl: bastion refused the tunnel to denied:3389: alice may not open tunnels to denied port 3389\n"
			if got := errOut.String(); got != want+want {
				t.Errorf("errors told:\n%s\nwant twice:\n%s", got, want)
			}
		})
	}
}

func TestSSHProxy(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{Handler: refusing})
	for _, transport := range []string{"quic", "tcp", "auto"} {
		t.Run(transport, func(t *testing.T) {
			cl := testClient(t, s, transport)
			in := append([]byte("SSH-2.0-OpenSSH_9.6\r\n"), make([]byte, 2<<20)...)
			var out bytes.Buffer
			if err := sshProxy(context.Background(), cl, "vm1", 22, bytes.NewReader(in), &out, nil); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out.Bytes(), in) {
				t.Fatalf("stdout got %d bytes, want the %d of stdin", out.Len(), len(in))
			}
			out.Reset()
			err := sshProxy(context.Background(), cl, "denied", 22, strings.NewReader("x"), &out, nil)
			var te *tunnelwire.Error
			if !errors.As(err, &te) || te.Status != tunnelwire.StatusDenied || out.Len() != 0 {
				t.Fatalf("refused: %v, %q on stdout", err, out.String())
			}
		})
	}
}

// TestSSHProxyRemoteEnds: when the machine ends the connection, ssh-proxy
// ends too, even though ssh has not closed its end (stdin).
func TestSSHProxyRemoteEnds(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: "s"})
		c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\nbye"))
		c.(interface{ CloseWrite() error }).CloseWrite()
		io.Copy(io.Discard, c)
	}})
	cl := testClient(t, s, "quic")
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	var out bytes.Buffer
	if err := sshProxy(context.Background(), cl, "vm1", 22, stdin, &out, nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != "SSH-2.0-OpenSSH_9.6\r\nbye" {
		t.Fatalf("stdout %q", out.String())
	}
}

func TestTunnelClientFromLogin(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{})
	good := testCredentials(t, s)
	for _, c := range []struct {
		name   string
		change func(*credentials)
		want   string // "" to dial
	}{
		{"CA file", func(*credentials) {}, ""},
		{"expired", func(c *credentials) { c.Expires = time.Date(2020, 1, 2, 3, 4, 5, 0, time.Local) },
			"your login expired at 2020-01-02 03:04:05: run bastionctl login"},
		{"CA file missing", func(c *credentials) { c.CA = filepath.Join(t.TempDir(), "none.pem") }, "no such file"},
		{"no CA: the system roots", func(c *credentials) { c.CA = "" }, "certificate"},
		{"insecure", func(c *credentials) { c.CA, c.Insecure = "", true }, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := good
			c.change(&cr)
			cl, err := cr.tunnelClient("auto", nil)
			if err == nil {
				defer cl.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				var conn net.Conn
				if conn, err = cl.Dial(ctx, "vm1", 22); err == nil {
					conn.Close()
				}
			}
			if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("got %v, want %q", err, c.want)
			}
		})
	}
}

// TestTunnelCommand runs the command itself: its checks, and the line it
// prints once it listens.
func TestTunnelCommand(t *testing.T) {
	s := tunneltest.New(t, tunneltest.Config{})
	dir := t.TempDir()
	path := filepath.Join(dir, "credentials.json")
	t.Setenv("BASTION_CREDENTIALS", path)

	run := func(ctx context.Context, args ...string) (string, error) {
		cmd := newRoot()
		var out syncbuf.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs(args)
		err := cmd.ExecuteContext(ctx)
		return out.String(), err
	}
	if _, err := run(context.Background(), "tunnel", "vm1"); err == nil || err.Error() != "--port is required" {
		t.Errorf("no --port: %v", err)
	}
	if _, err := run(context.Background(), "tunnel", "vm1", "--port", "22"); err == nil || err.Error() != "not logged in: run bastionctl login" {
		t.Errorf("no login: %v", err)
	}
	data, _ := json.Marshal(testCredentials(t, s))
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := run(context.Background(), "tunnel", "vm1", "--port", "22", "--transport", "udp"); err == nil || !strings.Contains(err.Error(), `transport "udp"`) {
		t.Errorf("bad transport: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out string
	cmd := newRoot()
	var stdout, stderr syncbuf.Buffer
	cmd.SetOut(&stdout)
	cmd.SetErr(&stderr)
	cmd.SetArgs([]string{"tunnel", "VM1", "--port", "3389", "-v"})
	go func() { done <- cmd.ExecuteContext(ctx) }()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end) && !strings.Contains(stdout.String(), "\n"); time.Sleep(10 * time.Millisecond) {
	}
	out = stdout.String()
	addr, ok := strings.CutPrefix(out, "tunnel to vm1:3389 listening on ")
	addr, ok2 := strings.CutSuffix(addr, "\n")
	if !ok || !ok2 || strings.Contains(addr, " ") {
		t.Fatalf("printed %q", out)
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("ping"))
	c.(*net.TCPConn).CloseWrite()
	got, err := io.ReadAll(c)
	c.Close()
	if string(got) != "ping" || err != nil {
		t.Errorf("echo: %q, %v", got, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("stopped: %v", err)
	}
	if !strings.Contains(stderr.String(), "tunnel to vm1:3389 open over quic (session "+tunneltest.SessionID+")") {
		t.Errorf("-v said:\n%s", stderr.String())
	}
	if stdout.String() != out {
		t.Errorf("more on standard output: %q", stdout.String())
	}
}

// TestSSHProxyNormalEnds runs ssh-proxy as ssh ends a session, 50 times
// per transport: ssh closes its end of standard input, reads the
// machine's last words, then closes standard output and sends SIGHUP (ctx
// ends), at varying moments while the machine still talks. Each run ends
// without an error, and the server sees the client's end of stream and
// then, at most, a closed peer on its writes: what the bastion records
// as the client's normal close.
func TestSSHProxyNormalEnds(t *testing.T) {
	type seen struct{ read, write error }
	ends := make(chan seen, 1)
	s := tunneltest.New(t, tunneltest.Config{Handler: func(c net.Conn, req tunnelwire.Request) {
		tunnelwire.WriteResponse(c, tunnelwire.Response{Status: tunnelwire.StatusOK, Message: "s"})
		c.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
		_, rerr := io.Copy(io.Discard, c)
		var werr error
		for i := 0; i < 200 && werr == nil; i++ {
			_, werr = c.Write([]byte("bye"))
			time.Sleep(50 * time.Microsecond)
		}
		if werr == nil {
			werr = c.(interface{ CloseWrite() error }).CloseWrite()
		}
		ends <- seen{rerr, werr}
	}})
	for _, transport := range []string{"quic", "tcp"} {
		t.Run(transport, func(t *testing.T) {
			for i := range 50 {
				cl := testClient(t, s, transport)
				stdin, stdinW := io.Pipe()
				stdoutR, stdout := io.Pipe()
				ctx, hup := context.WithCancel(context.Background())
				go func() {
					stdinW.Write([]byte("SSH-2.0-OpenSSH_9.6\r\n"))
					stdinW.Close()
					io.ReadFull(stdoutR, make([]byte, 21+3*(i%7)))
					time.Sleep(time.Duration(i%5) * 100 * time.Microsecond)
					stdoutR.Close()
					hup()
				}()
				err := sshProxy(ctx, cl, "vm1", 22, stdin, stdout, nil)
				cl.Close()
				if err != nil {
					t.Fatalf("run %d: %v", i, err)
				}
				select {
				case e := <-ends:
					if e.read != nil || e.write != nil && !errors.Is(e.write, syscall.EPIPE) && !errors.Is(e.write, syscall.ECONNRESET) {
						t.Fatalf("run %d: the server read %v and wrote %v; want the end of stream and at most a closed peer", i, e.read, e.write)
					}
				case <-time.After(10 * time.Second):
					t.Fatalf("run %d: the server's end never came", i)
				}
			}
		})
	}
}
