package e2e

import (
	"context"
	"crypto/tls"
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

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// ServerName is the name the lab's bastion answers to.
const ServerName = "bastion.lab.example"

// Daemon is one bastiond started by a test inside the bastion namespace.
type Daemon struct {
	t       testing.TB
	Dir     string
	cfgPath string
	admin   string
	bin     string // the bastiond binary; binDir's when empty
	ns      string // the network namespace it runs in; the lab's bastion when empty
	audit   string // the audit file; dir/audit.jsonl when empty
	Cmd     *exec.Cmd
	Log     syncbuf.Buffer
	notes   chan string // sd_notify datagrams, in order
	done    chan struct{}
	exitErr error // valid once done is closed
}

// Activation is how a test hands the daemon its listening sockets.
type Activation int

// LabConfig is a configuration for the lab; extra is appended.
func LabConfig(dir, extra string) string { return LabConfigTargets(dir, "", extra) }

// LabConfigTargets is labConfig with more inventory targets (YAML list
// items, indented by four spaces).
func LabConfigTargets(dir, targets, extra string) string {
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
%s`, ServerName, dir, lab["PUB_IFACE"], lab["VNET_BRIDGE"], lab["BASTION_SUBNET4"], lab["BASTION_SUBNET6"],
		lab["VM1_4"], lab["VM1_6"], lab["VM2_4"], lab["VM2_6"], lab["VM2_RDP_NLA_PORT"], lab["VM2_RDP_TLS_PORT"], targets, dir, dir, extra)
}

// StartDaemon starts a daemon on the lab configuration with extra appended.
func StartDaemon(t testing.TB, how Activation, extra string) *Daemon {
	t.Helper()
	return StartDaemonWith(t, how, func(dir string) string { return LabConfig(dir, extra) })
}

// StartDaemonWith starts a daemon on the configuration config returns for
// the daemon's directory.
func StartDaemonWith(t testing.TB, how Activation, config func(dir string) string) *Daemon {
	t.Helper()
	return StartDaemonIn(t, "", how, config)
}

// StartDaemonIn is StartDaemonWith in the network namespace ns (the lab's
// bastion for ""): in the cluster lab, an instance.
func StartDaemonIn(t testing.TB, ns string, how Activation, config func(dir string) string) *Daemon {
	t.Helper()
	NeedLab(t)
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	d := &Daemon{t: t, Dir: dir, ns: ns, cfgPath: filepath.Join(dir, "bastiond.yaml"), admin: filepath.Join(dir, "admin.sock")}
	d.WriteConfig(config(dir))
	d.launch(how)
	return d
}

// restart starts a new daemon on d's directory, configuration and state,
// once d has exited.
func (d *Daemon) restart(how Activation) *Daemon {
	d.t.Helper()
	n := &Daemon{t: d.t, Dir: d.Dir, ns: d.ns, cfgPath: d.cfgPath, admin: d.admin}
	n.launch(how)
	return n
}

// Netns is the network namespace the daemon runs in.
func (d *Daemon) Netns() string {
	if d.ns != "" {
		return d.ns
	}
	return LabValue(d.t, "NS_BASTION")
}

func (d *Daemon) launch(how Activation) {
	t, dir := d.t, d.Dir
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
	// $BASTIOND_TEST_DAEMON_ENV adds variables to the daemon's environment
	// alone (e.g. "GOMAXPROCS=4 GODEBUG=..." for a benchmark's experiment).
	env = append(env, strings.Fields(os.Getenv("BASTIOND_TEST_DAEMON_ENV"))...)
	switch how {
	case ViaTool:
		args := []string{"netns", "exec", d.Netns(), "systemd-socket-activate", "-l", "[::]:443"}
		for _, e := range env {
			args = append(args, "-E", e)
		}
		d.Cmd = exec.Command("ip", append(args, bastiond, "-config", d.cfgPath)...)
	case ViaFDs:
		files := activationFiles(t, d.Netns())
		// LISTEN_PID must be the daemon's own PID: the shell sets it to its
		// own and then becomes the daemon with exec, keeping the PID.
		script := `LISTEN_PID=$$ exec "$0" "$@"`
		d.Cmd = exec.Command("ip", "netns", "exec", d.Netns(), "sh", "-c", script, bastiond, "-config", d.cfgPath)
		d.Cmd.Env = append(os.Environ(), append(env, "LISTEN_FDS=2", "LISTEN_FDNAMES=https:quic")...)
		d.Cmd.ExtraFiles = files
	}
	d.Cmd.Stdout, d.Cmd.Stderr = &d.Log, &d.Log
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, f := range d.Cmd.ExtraFiles {
		f.Close()
	}
	go func() {
		d.exitErr = d.Cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(d.Stop)
	if how == ViaTool {
		// The tool listens first and starts the daemon on the first
		// connection, which the daemon then serves.
		d.WaitLog("Listening on", 10*time.Second)
		if _, err := HTTPSGet(t, LabValue(t, "BASTION_PUB4"), "/"); err != nil {
			t.Fatalf("first connection through socket activation: %v\n%s", err, d.Log.String())
		}
	}
	d.WaitNotify("READY=1", 20*time.Second)
}

// activationFiles makes TCP and UDP [::]:443 sockets inside the network
// namespace ns, as systemd would for bastiond.socket.
func activationFiles(t testing.TB, ns string) []*os.File {
	var files []*os.File
	err := InNetns(ns, func() error {
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

// AuditFile is the daemon's audit file.
func (d *Daemon) AuditFile() string {
	if d.audit != "" {
		return d.audit
	}
	return filepath.Join(d.Dir, "audit.jsonl")
}

// WriteConfig replaces the daemon's configuration file with s.
func (d *Daemon) WriteConfig(s string) {
	if err := os.WriteFile(d.cfgPath, []byte(s), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

// Signal sends s to the daemon.
func (d *Daemon) Signal(s syscall.Signal) {
	if err := d.Cmd.Process.Signal(s); err != nil {
		d.t.Fatalf("signal %v: %v", s, err)
	}
}

// Stop ends the daemon if a test left it running.
func (d *Daemon) Stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.Cmd.Process.Kill()
	<-d.done
}

// Wait returns the daemon's exit error once it exits.
func (d *Daemon) Wait(timeout time.Duration) error {
	select {
	case <-d.done:
		return d.exitErr
	case <-time.After(timeout):
		d.t.Fatalf("daemon did not exit within %s\n%s", timeout, d.Log.String())
		return nil
	}
}

// WaitNotify waits for an sd_notify datagram containing want and returns it.
func (d *Daemon) WaitNotify(want string, timeout time.Duration) string {
	d.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case n, ok := <-d.notes:
			if !ok {
				d.t.Fatalf("notify socket closed before %q\n%s", want, d.Log.String())
			}
			if strings.Contains(n, want) {
				return n
			}
		case <-deadline:
			d.t.Fatalf("no %q notification within %s\nlog:\n%s", want, timeout, d.Log.String())
		}
	}
}

// WaitLog waits for want to appear in the daemon's log.
func (d *Daemon) WaitLog(want string, timeout time.Duration) {
	d.t.Helper()
	for end := time.Now().Add(timeout); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if strings.Contains(d.Log.String(), want) {
			return
		}
	}
	d.t.Fatalf("log never showed %q:\n%s", want, d.Log.String())
}

// Ctl runs bastionctl against the daemon, as root unless asUser is given
// (setpriv arguments).
func (d *Daemon) Ctl(asUser []string, args ...string) (string, error) {
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

// CtlStdin runs bastionctl with stdin.
func (d *Daemon) CtlStdin(stdin string, args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(binDir, "bastionctl"), append([]string{"--socket", d.admin}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

const (
	// ViaTool: `systemd-socket-activate -l [::]:443`, which passes TCP 443
	// and starts the daemon on the first connection; the daemon binds UDP.
	ViaTool Activation = iota
	// ViaFDs: the test passes TCP and UDP 443 as systemd does for a
	// .socket unit with ListenStream= and ListenDatagram=.
	ViaFDs
)

// HTTPSGet fetches path from the bastion's public address, from the client
// namespace, as a user's browser would.
func HTTPSGet(t testing.TB, addr, path string) (*http.Response, error) {
	t.Helper()
	return HTTPSGetWithin(t, addr, path, 10*time.Second)
}

// HTTPSGetWithin is HTTPSGet with a timeout of its own.
func HTTPSGetWithin(t testing.TB, addr, path string, timeout time.Duration) (*http.Response, error) {
	t.Helper()
	client := &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{ServerName: ServerName, InsecureSkipVerify: true},
			ForceAttemptHTTP2: true,
			DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				var c net.Conn
				err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
					c, err = (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, a)
					return err
				})
				return c, err
			},
		},
	}
	defer client.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "https://"+net.JoinHostPort(addr, "443")+path, nil)
	if err != nil {
		return nil, err
	}
	req.Host = ServerName // as a browser would: the bastion serves no other Host
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp, nil
}
