package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/proxy/tunnel"
)

const serverName = "bastion.lab.example"

// daemon is one bastiond started by a test inside the bastion namespace.
type daemon struct {
	t       testing.TB
	dir     string
	cfgPath string
	admin   string
	bin     string // the bastiond binary; binDir's when empty
	audit   string // the audit file; dir/audit.jsonl when empty
	cmd     *exec.Cmd
	log     syncbuf.Buffer
	notes   chan string // sd_notify datagrams, in order
	done    chan struct{}
	exitErr error // valid once done is closed
}

type activation int

const (
	// viaTool: `systemd-socket-activate -l [::]:443`, which passes TCP 443
	// and starts the daemon on the first connection; the daemon binds UDP.
	viaTool activation = iota
	// viaFDs: the test passes TCP and UDP 443 as systemd does for a
	// .socket unit with ListenStream= and ListenDatagram=.
	viaFDs
)

// labConfig is a configuration for the lab; extra is appended.
func labConfig(dir, extra string) string { return labConfigTargets(dir, "", extra) }

// labConfigTargets is labConfig with more inventory targets (YAML list
// items, indented by four spaces).
func labConfigTargets(dir, targets, extra string) string {
	return fmt.Sprintf(`listen:
  server_name: %s
  tls: {self_signed: true}
  admin_socket: %s/admin.sock
  admin_group: users
bastion:
  public_interface: %s
  vnet_interface: %s
  subnets: [%s, "%s"]
  mode: bridged
inventory:
  targets:
    - name: vm1
      addresses: [%s, "%s"]
      ports: {ssh: 22}
      tags: [linux]
    - name: vm2
      addresses: [%s, "%s"]
      ports: {rdp: %s, tunnel: [%s]}
%slogging: {audit_file: %s/audit.jsonl, format: json}
state_dir: %s/state
%s`, serverName, dir, lab["PUB_IFACE"], lab["VNET_BRIDGE"], lab["BASTION_SUBNET4"], lab["BASTION_SUBNET6"],
		lab["VM1_4"], lab["VM1_6"], lab["VM2_4"], lab["VM2_6"], lab["VM2_RDP_NLA_PORT"], lab["VM2_RDP_TLS_PORT"], targets, dir, dir, extra)
}

func startDaemon(t testing.TB, how activation, extra string) *daemon {
	t.Helper()
	return startDaemonWith(t, how, func(dir string) string { return labConfig(dir, extra) })
}

// startDaemonWith starts a daemon on the configuration config returns for
// the daemon's directory.
func startDaemonWith(t testing.TB, how activation, config func(dir string) string) *daemon {
	t.Helper()
	needLab(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	d := &daemon{t: t, dir: dir, cfgPath: filepath.Join(dir, "bastiond.yaml"), admin: filepath.Join(dir, "admin.sock")}
	d.writeConfig(config(dir))
	d.launch(how)
	return d
}

// restart starts a new daemon on d's directory, configuration and state,
// once d has exited.
func (d *daemon) restart(how activation) *daemon {
	d.t.Helper()
	n := &daemon{t: d.t, dir: d.dir, cfgPath: d.cfgPath, admin: d.admin}
	n.launch(how)
	return n
}

func (d *daemon) launch(how activation) {
	t, dir := d.t, d.dir
	t.Helper()
	d.notes, d.done = make(chan string, 256), make(chan struct{})
	notifyPath := filepath.Join(dir, "notify.sock")
	os.Remove(notifyPath) // a restart's predecessor's
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				close(d.notes)
				return
			}
			d.notes <- string(buf[:n])
		}
	}()

	bastiond := d.bin
	if bastiond == "" {
		bastiond = filepath.Join(binDir, "bastiond")
	}
	env := []string{"NOTIFY_SOCKET=" + notifyPath, "WATCHDOG_USEC=400000"}
	switch how {
	case viaTool:
		args := []string{"netns", "exec", labValue(t, "NS_BASTION"), "systemd-socket-activate", "-l", "[::]:443"}
		for _, e := range env {
			args = append(args, "-E", e)
		}
		d.cmd = exec.Command("ip", append(args, bastiond, "-config", d.cfgPath)...)
	case viaFDs:
		files := activationFiles(t)
		// LISTEN_PID must be the daemon's own PID: the shell sets it to its
		// own and then becomes the daemon with exec, keeping the PID.
		script := `LISTEN_PID=$$ exec "$0" "$@"`
		d.cmd = exec.Command("ip", "netns", "exec", labValue(t, "NS_BASTION"), "sh", "-c", script, bastiond, "-config", d.cfgPath)
		d.cmd.Env = append(os.Environ(), append(env, "LISTEN_FDS=2", "LISTEN_FDNAMES=https:quic")...)
		d.cmd.ExtraFiles = files
	}
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range d.cmd.ExtraFiles {
		f.Close()
	}
	go func() {
		d.exitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(d.stop)
	if how == viaTool {
		// The tool listens first and starts the daemon on the first
		// connection, which the daemon then serves.
		d.waitLog("Listening on", 10*time.Second)
		if _, err := httpsGet(t, labValue(t, "BASTION_PUB4"), "/"); err != nil {
			t.Fatalf("first connection through socket activation: %v\n%s", err, d.log.String())
		}
	}
	d.waitNotify("READY=1", 20*time.Second)
}

// activationFiles makes TCP and UDP [::]:443 sockets inside the bastion
// namespace, as systemd would for bastiond.socket.
func activationFiles(t testing.TB) []*os.File {
	var files []*os.File
	err := inNetns(labValue(t, "NS_BASTION"), func() error {
		ln, err := net.Listen("tcp", "[::]:443")
		if err != nil {
			return err
		}
		defer ln.Close()
		pc, err := net.ListenPacket("udp", "[::]:443")
		if err != nil {
			return err
		}
		defer pc.Close()
		tf, err := ln.(*net.TCPListener).File()
		if err != nil {
			return err
		}
		uf, err := pc.(*net.UDPConn).File()
		if err != nil {
			return err
		}
		files = []*os.File{tf, uf}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// auditFile is the daemon's audit file.
func (d *daemon) auditFile() string {
	if d.audit != "" {
		return d.audit
	}
	return filepath.Join(d.dir, "audit.jsonl")
}

func (d *daemon) writeConfig(s string) {
	if err := os.WriteFile(d.cfgPath, []byte(s), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *daemon) signal(s syscall.Signal) {
	if err := d.cmd.Process.Signal(s); err != nil {
		d.t.Fatalf("signal %v: %v", s, err)
	}
}

// stop ends the daemon if a test left it running.
func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Kill()
	<-d.done
}

// wait returns the daemon's exit error once it exits.
func (d *daemon) wait(timeout time.Duration) error {
	select {
	case <-d.done:
		return d.exitErr
	case <-time.After(timeout):
		d.t.Fatalf("daemon did not exit within %s\n%s", timeout, d.log.String())
		return nil
	}
}

// waitNotify waits for an sd_notify datagram containing want and returns it.
func (d *daemon) waitNotify(want string, timeout time.Duration) string {
	d.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case n, ok := <-d.notes:
			if !ok {
				d.t.Fatalf("notify socket closed before %q\n%s", want, d.log.String())
			}
			if strings.Contains(n, want) {
				return n
			}
		case <-deadline:
			d.t.Fatalf("no %q notification within %s\nlog:\n%s", want, timeout, d.log.String())
		}
	}
}

func (d *daemon) waitLog(want string, timeout time.Duration) {
	d.t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(d.log.String(), want) {
			return
		}
	}
	d.t.Fatalf("log never showed %q:\n%s", want, d.log.String())
}

// ctl runs bastionctl against the daemon, as root unless asUser is given
// (setpriv arguments).
func (d *daemon) ctl(asUser []string, args ...string) (string, error) {
	argv := append([]string{filepath.Join(binDir, "bastionctl"), "--socket", d.admin}, args...)
	var cmd *exec.Cmd
	if asUser != nil {
		cmd = exec.Command("setpriv", append(asUser, argv...)...)
	} else {
		cmd = exec.Command(argv[0], argv[1:]...)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// httpsGet fetches path from the bastion's public address, from the client
// namespace, as a user's browser would.
func httpsGet(t testing.TB, addr, path string) (*http.Response, error) {
	t.Helper()
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{ServerName: serverName, InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				var c net.Conn
				err := inNetns(labValue(t, "NS_CLIENT"), func() (err error) {
					c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, a)
					return err
				})
				return c, err
			},
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get("https://" + net.JoinHostPort(addr, "443") + path)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}

// TestLifecycleSocketActivated drives the daemon as systemd would through
// one life: on-demand start, READY, watchdog, status, a reload that fails and
// one that works, refusal on the admin socket, and a drain on SIGTERM.
func TestLifecycleSocketActivated(t *testing.T) {
	d := startDaemon(t, viaTool, "")

	t.Run("serves TLS on IPv4 and IPv6", func(t *testing.T) {
		for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
			resp, err := httpsGet(t, labValue(t, key), "/")
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") == "" {
				t.Errorf("%s: status %d, headers %v", key, resp.StatusCode, resp.Header)
			}
		}
	})

	t.Run("watchdog keepalives", func(t *testing.T) {
		d.waitNotify("WATCHDOG=1", 2*time.Second)
	})

	t.Run("status shows the inherited listener", func(t *testing.T) {
		out, err := d.ctl(nil, "status")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, want := range []string{"listener  tcp [::]:443 (from systemd)", "listener  udp [::]:443\n", "config    " + d.cfgPath, "sessions  0"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("admin socket refuses other users", func(t *testing.T) {
		out, err := d.ctl([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, "status")
		if err == nil || !strings.Contains(out, "permission denied: uid 65534 is not root and not in the bastion admin group") {
			t.Errorf("unprivileged status: err=%v out=%s", err, out)
		}
		out, err = d.ctl([]string{"--reuid=65534", "--regid=65534", "--groups=100"}, "status")
		if err != nil || !strings.Contains(out, "bastiond") {
			t.Errorf("admin-group status: err=%v out=%s", err, out)
		}
	})

	t.Run("broken reload keeps the old config", func(t *testing.T) {
		before, _ := d.ctl(nil, "status", "--json")
		good, _ := os.ReadFile(d.cfgPath)
		d.writeConfig(strings.Replace(string(good), "server_name:", "sever_name:", 1))
		d.signal(syscall.SIGHUP)
		d.waitNotify("RELOADING=1", 5*time.Second)
		n := d.waitNotify("READY=1", 5*time.Second)
		if !strings.Contains(n, "STATUS=reload failed, running previous configuration") {
			t.Errorf("READY after failed reload says %q", n)
		}
		d.waitLog(`bastiond.yaml:2: listen.sever_name: unknown key (did you mean \"server_name\"?)`, 5*time.Second)
		out, err := d.ctl(nil, "status")
		if err != nil || !strings.Contains(out, "last reload  FAILED") {
			t.Errorf("status after failed reload: %v\n%s", err, out)
		}
		if after, _ := d.ctl(nil, "status", "--json"); digestOf(after) != digestOf(before) {
			t.Errorf("config digest changed after a failed reload")
		}
		if resp, err := httpsGet(t, labValue(t, "BASTION_PUB4"), "/"); err != nil || resp.StatusCode != 200 {
			t.Errorf("not serving after a failed reload: %v", err)
		}

		// Fixing the file and reloading again applies it.
		d.writeConfig(string(good) + "limits: {drain_grace: 7s}\n")
		d.signal(syscall.SIGHUP)
		d.waitNotify("RELOADING=1", 5*time.Second)
		if n := d.waitNotify("READY=1", 5*time.Second); strings.Contains(n, "failed") {
			t.Errorf("good reload reported %q", n)
		}
		if after, _ := d.ctl(nil, "status", "--json"); digestOf(after) == digestOf(before) {
			t.Errorf("config digest unchanged after a good reload")
		}
	})

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		d.signal(syscall.SIGTERM)
		d.waitNotify("STOPPING=1", 5*time.Second)
		if err := d.wait(15 * time.Second); err != nil {
			t.Fatalf("exit: %v\n%s", err, d.log.String())
		}
		if _, err := os.Stat(d.admin); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("admin socket left behind: %v", err)
		}
	})
}

func digestOf(statusJSON string) string {
	_, rest, _ := strings.Cut(statusJSON, `"config_digest": "`)
	digest, _, _ := strings.Cut(rest, `"`)
	return digest
}

// TestSocketActivationBothSockets passes TCP and UDP 443 as bastiond.socket
// does, checks that QUIC is served on the inherited UDP socket, and that a
// drain waits for an open connection until a second signal ends it.
func TestSocketActivationBothSockets(t *testing.T) {
	d := startDaemon(t, viaFDs, "limits: {drain_grace: 5m}\n")

	out, err := d.ctl(nil, "status")
	if err != nil || !strings.Contains(out, "tcp [::]:443 (from systemd)") || !strings.Contains(out, "udp [::]:443 (from systemd)") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("QUIC answers the tunnel ALPN over "+key, func(t *testing.T) {
			var pc net.PacketConn
			if err := inNetns(labValue(t, "NS_CLIENT"), func() (err error) {
				pc, err = net.ListenPacket("udp", ":0")
				return err
			}); err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			raddr, _ := net.ResolveUDPAddr("udp", net.JoinHostPort(labValue(t, key), "443"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr := &quic.Transport{Conn: pc}
			defer tr.Close()
			conn, err := tr.Dial(ctx, raddr, &tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: []string{"bastion-tunnel/1"}}, nil)
			if err != nil {
				t.Fatalf("QUIC handshake: %v", err)
			}
			// The tunnel answers on the socket systemd passed: a request
			// with a token that is not valid is refused in words.
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := tunnel.Request{Token: "bst_0000000000000000_notvalid", Target: "vm1", Port: 22}.Marshal()
			str.Write(req)
			resp, err := tunnel.ReadResponse(str)
			if err != nil || resp.Status != tunnel.StatusUnauthorized {
				t.Errorf("tunnel answer: %+v %v, want unauthorized", resp, err)
			}
			conn.CloseWithError(0, "")
		})
	}

	t.Run("drain waits for open connections; a second signal ends it", func(t *testing.T) {
		// A connection in the middle of a request keeps the drain waiting.
		var c net.Conn
		if err := inNetns(labValue(t, "NS_CLIENT"), func() (err error) {
			c, err = tls.Dial("tcp", net.JoinHostPort(labValue(t, "BASTION_PUB4"), "443"),
				&tls.Config{ServerName: serverName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+serverName+"\r\n")

		d.signal(syscall.SIGTERM)
		d.waitNotify("STOPPING=1", 5*time.Second)
		out, err := d.ctl(nil, "status")
		if err != nil || !strings.Contains(out, "draining") {
			t.Fatalf("status while draining: %v\n%s", err, out)
		}
		// New connections are no longer accepted.
		err = inNetns(labValue(t, "NS_CLIENT"), func() error {
			nc, err := net.DialTimeout("tcp", net.JoinHostPort(labValue(t, "BASTION_PUB4"), "443"), 2*time.Second)
			if err == nil {
				// The socket may still queue the connection: then it must never be served.
				nc.SetDeadline(time.Now().Add(2 * time.Second))
				tc := tls.Client(nc, &tls.Config{ServerName: serverName, InsecureSkipVerify: true})
				err = tc.Handshake()
				nc.Close()
				if err == nil {
					return errors.New("a new connection was served during the drain")
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		d.signal(syscall.SIGINT)
		if err := d.wait(10 * time.Second); err != nil {
			t.Fatalf("exit after second signal: %v\n%s", err, d.log.String())
		}
		if !strings.Contains(d.log.String(), "second signal: closing every session now") {
			t.Errorf("log lacks the second-signal message:\n%s", d.log.String())
		}
	})
}

// TestCheckConfig runs `bastiond -check-config` as an admin would.
func TestCheckConfig(t *testing.T) {
	needLab(t)
	dir := t.TempDir()
	good := labConfig(dir, "")
	tests := []struct {
		name   string
		config string
		ok     bool
		want   string
	}{
		{"valid", good, true, "configuration is valid"},
		{"misspelt key", strings.Replace(good, "vnet_interface:", "vnet_interfce:", 1), false,
			`bastiond.yaml:8: bastion.vnet_interfce: unknown key (did you mean "vnet_interface"?)`},
		{"VNet address outside the bastion subnet", strings.Replace(good, labValue(t, "BASTION_SUBNET4"), "198.18.2.0/27", 1), false,
			"is outside the dedicated bastion subnet"},
		{"missing interface", strings.Replace(good, "public_interface: "+lab["PUB_IFACE"], "public_interface: nope0", 1), false,
			`bastion.public_interface: discover: interface "nope0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "bastiond.yaml")
			os.WriteFile(path, []byte(tt.config), 0o644)
			out, err := exec.Command("ip", "netns", "exec", labValue(t, "NS_BASTION"), filepath.Join(binDir, "bastiond"), "-check-config", "-config", path).CombinedOutput()
			if (err == nil) != tt.ok || !strings.Contains(string(out), tt.want) {
				t.Errorf("exit error %v, output:\n%s\nwant ok=%v and %q", err, out, tt.ok, tt.want)
			}
		})
	}
}
