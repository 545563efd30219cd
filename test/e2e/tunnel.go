package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/tunnel"
)

// TunnelPassword is the password AddLabUsers gives every user.
const TunnelPassword = "tunnel password 1234"

// TunnelConfig is the lab's configuration with raw TCP services for the
// tunnel tests: vm1 also offers 9000 (the sink), 9001 (the holder) and 5201
// (iperf3); "rogue6" is the rogue host by its IPv6 address only (a target
// dialled over IPv6), port 9000; "self" names the bastion's own public
// address, which the dial guard must refuse.
func TunnelConfig(dir, extra string) string {
	targets := fmt.Sprintf(`    - name: rogue6
      addresses: ["%s"]
      ports: {tunnel: [9000]}
    - name: self
      addresses: [%s]
      ports: {tunnel: [9000]}
`, lab["ROGUE6"], lab["BASTION_PUB4"])
	return strings.Replace(LabConfigTargets(dir, targets, extra), "ports: {ssh: 22}", "ports: {ssh: 22, tunnel: [9000, 9001, 5201]}", 1)
}

// TunnelAccess lets alice open tunnels to every target; extraLimits is
// appended to its limits section.
func TunnelAccess(extraLimits string) string {
	return `access:
  roles:
    - name: tunnels
      subjects: [user:alice]
      targets: ["*"]
      protocols: [tunnel]
limits:
  target_timeout: 2s
` + extraLimits
}

// Sink is a TCP service in a lab namespace.
type Sink struct {
	Accepted atomic.Int64
}

// SinkMode is what a Sink does with a connection.
type SinkMode int

const sinkReply = 1<<20 + 7

// StartSink listens on addr in namespace ns until the test ends.
func StartSink(t testing.TB, ns, addr string, mode SinkMode) *Sink {
	t.Helper()
	var ln net.Listener
	if err := InNetns(ns, func() (err error) {
		ln, err = net.Listen("tcp", addr)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &Sink{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.Accepted.Add(1)
			if mode == SinkClose {
				c.Close()
				continue
			}
			go func() {
				defer c.Close()
				if mode == SinkEcho {
					io.Copy(c, c)
					return
				}
				io.Copy(io.Discard, c)
				if mode == SinkAnswer {
					c.Write(make([]byte, sinkReply))
				}
			}()
		}
	}()
	return s
}

// LoginAs runs bastionctl login in the client namespace against the
// bastion's address addr and returns the credentials file.
func LoginAs(t testing.TB, user, addr string) string {
	t.Helper()
	creds := filepath.Join(t.TempDir(), "credentials.json")
	login := exec.Command("ip", "netns", "exec", LabValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "login",
		"--server", ServerName, "--address", net.JoinHostPort(addr, "443"), "--insecure",
		"--user", user, "--password-stdin", "--ttl", "1h")
	login.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
	login.Stdin = strings.NewReader(TunnelPassword + "\n")
	if out, err := login.CombinedOutput(); err != nil {
		t.Fatalf("login: %v\n%s", err, out)
	}
	return creds
}

// TunnelClient is the tunnel library in the client namespace, with the
// token of a credentials file.
func TunnelClient(t testing.TB, creds, addr, transport string) *tunnel.Client {
	t.Helper()
	data, err := os.ReadFile(creds)
	if err != nil {
		t.Fatal(err)
	}
	var c struct{ Token string }
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	cl, err := tunnel.NewClient(tunnel.ClientConfig{Server: ServerName, Address: net.JoinHostPort(addr, "443"),
		TLS: &tls.Config{InsecureSkipVerify: true}, Token: c.Token, Transport: transport})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// Dial opens a tunnel from the client namespace (where the client's
// sockets are made).
func Dial(t testing.TB, cl *tunnel.Client, target string, port uint16) (net.Conn, error) {
	t.Helper()
	var c net.Conn
	err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err = cl.Dial(ctx, target, port)
		return err
	})
	return c, err
}

// WantRefusal checks that err is the bastion's answer st and mentions msg.
func WantRefusal(t testing.TB, err error, st tunnelwire.Status, msg string) {
	t.Helper()
	var te *tunnelwire.Error
	if !errors.As(err, &te) || te.Status != st || !strings.Contains(err.Error(), msg) {
		t.Errorf("got %v, want the bastion's %v answer mentioning %q", err, st, msg)
	}
}

// AuditRecord waits for the audit record of session id with event ev.
func (d *Daemon) AuditRecord(id, ev string) map[string]any {
	d.t.Helper()
	for end := time.Now().Add(15 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		f, err := os.Open(d.AuditFile())
		if err != nil {
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r map[string]any
			if json.Unmarshal(sc.Bytes(), &r) == nil && r["session"] == id && r["event"] == ev {
				f.Close()
				return r
			}
		}
		f.Close()
	}
	d.t.Fatalf("no %s record for session %s in the audit file", ev, id)
	return nil
}

// lastSession is the newest live session of user, from bastionctl sessions.
func (d *Daemon) liveSessions() []map[string]any {
	d.t.Helper()
	out, err := d.Ctl(nil, "sessions", "--json")
	if err != nil {
		d.t.Fatalf("sessions: %v\n%s", err, out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		d.t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	return list
}

// sessionID is the ID of the one live session to target, waiting for it.
func (d *Daemon) sessionID(target string) string {
	d.t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		for _, s := range d.liveSessions() {
			if s["target"] == target {
				return s["id"].(string)
			}
		}
	}
	d.t.Fatalf("no live session to %s", target)
	return ""
}

// AddLabUsers creates users with TunnelPassword.
func AddLabUsers(t testing.TB, d *Daemon, users ...string) {
	t.Helper()
	for _, u := range users {
		if out, err := d.CtlStdin(TunnelPassword+"\n", "users", "add", u, "--password-stdin"); err != nil {
			t.Fatalf("users add %s: %v\n%s", u, err, out)
		}
	}
}

const (
	SinkAnswer SinkMode = iota // read the connection to its end, then send sinkReply bytes and close
	sinkHold                   // read the connection to its end, then close
	SinkClose                  // close at once: only count connections
	SinkEcho                   // send back what it reads
)

// StartRDPTunnel runs `bastionctl tunnel vm2` to vm2's NLA port, listening
// on 127.0.0.1:13389 in the client's namespace, as the user of creds (with
// extra flags), until the test ends. It returns the tunnel's output once
// the tunnel listens.
func StartRDPTunnel(t *testing.T, creds string, extra ...string) *syncbuf.Buffer {
	t.Helper()
	args := append([]string{"netns", "exec", LabValue(t, "NS_CLIENT"), filepath.Join(binDir, "bastionctl"),
		"tunnel", "vm2", "--port", LabValue(t, "VM2_RDP_NLA_PORT"), "--listen", "127.0.0.1:13389"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	tun := exec.CommandContext(ctx, "ip", args...)
	tun.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
	tun.WaitDelay = 5 * time.Second
	out := new(syncbuf.Buffer)
	tun.Stdout, tun.Stderr = out, out
	if err := tun.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		tun.Process.Signal(syscall.SIGTERM)
		tun.Wait()
		cancel()
	})
	for end := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "listening on 127.0.0.1:13389"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("bastionctl tunnel did not start:\n%s", out.String())
		}
	}
	return out
}
