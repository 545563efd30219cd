package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/internal/testcert"
)

// Rsyslog is a real rsyslogd (Debian's package, with its GnuTLS driver)
// started by a test as a syslog collector that takes RFC 5425 over TLS: its
// own configuration, work directory, PID file and output under the test's
// directory, in the foreground, never the system's rsyslog. It writes the
// MSG of every message it receives, one a line, to Received.
type Rsyslog struct {
	t        testing.TB
	ns       string // network namespace; "" for this one
	Dir      string
	Port     int
	CAFile   string // the collector's certificate, self-signed: the CA to trust
	Name     string // the name its certificate carries
	Received string
	conf     string
	cmd      *exec.Cmd
	done     chan struct{}
	log      syncbuf.Buffer
}

// StartRsyslog starts rsyslogd listening on 127.0.0.1:port and [::1]:port
// inside the namespace ns.
func StartRsyslog(t testing.TB, ns string, port int) *Rsyslog {
	t.Helper()
	if _, err := exec.LookPath("rsyslogd"); err != nil {
		t.Skip("rsyslogd is not installed: run test/deps.sh as root (rsyslog, rsyslog-gnutls)")
	}
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/rsyslog/lmnsd_gtls.so"); err != nil {
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			t.Skip("rsyslog's GnuTLS driver is not installed: run test/deps.sh as root (rsyslog-gnutls)")
		}
	}
	dir := t.TempDir()
	r := &Rsyslog{t: t, ns: ns, Dir: dir, Port: port, Name: "collector.lab.example",
		CAFile: filepath.Join(dir, "ca.pem"), Received: filepath.Join(dir, "received.log"), conf: filepath.Join(dir, "rsyslog.conf")}
	cert := testcert.New(t, testcert.Options{Name: r.Name, CA: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	for name, data := range map[string][]byte{"ca.pem": testcert.PEM(cert), "key.pem": testcert.KeyPEM(t, cert)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := fmt.Sprintf(`# bastiond's e2e collector: TLS on port %[2]d, every message's MSG to received.log
global(
  workDirectory="%[1]s/work"
  maxMessageSize="256k"
  defaultNetstreamDriver="gtls"
  defaultNetstreamDriverCAFile="%[1]s/ca.pem"
  defaultNetstreamDriverCertFile="%[1]s/ca.pem"
  defaultNetstreamDriverKeyFile="%[1]s/key.pem"
)
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="%[2]d" address="127.0.0.1")
input(type="imtcp" port="%[2]d" address="::1")
template(name="msgonly" type="string" string="%%msg%%\n")
action(type="omfile" file="%[1]s/received.log" template="msgonly")
`, dir, port)
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.Start()
	t.Cleanup(r.Stop)
	return r
}

// Start starts rsyslogd (again) and waits until it takes connections.
func (r *Rsyslog) Start() {
	r.t.Helper()
	pid := filepath.Join(r.Dir, "rsyslogd.pid")
	os.Remove(pid) // a stopped one's
	args := []string{"rsyslogd", "-n", "-f", r.conf, "-i", pid}
	if r.ns != "" {
		args = append([]string{"ip", "netns", "exec", r.ns}, args...)
	}
	r.cmd = exec.Command(args[0], args[1:]...)
	r.cmd.Stdout, r.cmd.Stderr = &r.log, &r.log
	if err := r.cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { cmd.Wait(); close(done) }(r.cmd, r.done)
	for end := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if r.listening() {
			return
		}
		select {
		case <-r.done:
			r.t.Fatalf("rsyslogd exited at start:\n%s", r.log.String())
		default:
		}
		if time.Now().After(end) {
			r.t.Fatalf("rsyslogd does not listen on port %d after 15s:\n%s", r.Port, r.log.String())
		}
	}
}

func (r *Rsyslog) listening() bool {
	dial := func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(r.Port)), time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	if r.ns == "" {
		return dial() == nil
	}
	return InNetns(r.ns, dial) == nil
}

// Stop sends SIGTERM to rsyslogd, by its PID, and waits for it to exit.
func (r *Rsyslog) Stop() {
	select {
	case <-r.done:
		return
	default:
	}
	r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(20 * time.Second):
		r.cmd.Process.Kill()
		<-r.done
		r.t.Errorf("rsyslogd ignored SIGTERM for 20s; killed it")
	}
}

// PID is the running rsyslogd's process ID.
func (r *Rsyslog) PID() int { return r.cmd.Process.Pid }

// Lines are the MSGs received so far, one per message, in order.
func (r *Rsyslog) Lines() [][]byte {
	data, err := os.ReadFile(r.Received)
	if err != nil && !os.IsNotExist(err) {
		r.t.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, append([]byte(nil), sc.Bytes()...))
	}
	return lines
}

// Log is rsyslogd's own output.
func (r *Rsyslog) Log() string { return r.log.String() }
