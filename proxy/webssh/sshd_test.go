package webssh

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// The tests log in to a real OpenSSH sshd as a user that exists only in
// sshd's view of /etc: sshd runs in a mount namespace of its own where
// copies of /etc/passwd, /etc/shadow and /etc/group (and for PAM,
// /etc/pam.d) that add the user are bind-mounted over the host's. Nothing
// on the host changes.

const (
	testUser = "bastiontest"
	testUID  = 4343
)

// sshd is a running OpenSSH server and what logs in to it.
type sshd struct {
	dir      string
	port     int
	ipv6     bool
	hostKey  ssh.PublicKey
	password string

	keyPEM, encKeyPEM []byte // the user's key, plain and encrypted
	passphrase        string
	ca                ssh.Signer // trusted for user certificates

	cmd    *exec.Cmd
	stderr *syncbuf.Buffer
}

// sshdConfig is what differs between the servers the tests use.
type sshdConfig struct {
	// pam: passwords only through keyboard-interactive, which PAM
	// (pam_unix) answers.
	pam bool
}

var (
	sshdMu      sync.Mutex
	sshdServers = map[sshdConfig]*sshd{}
	sshdErrors  = map[sshdConfig]error{} // a server that would not start is not tried again
)

// startSSHD returns the server for cfg, starting it on first use; TestMain
// stops them. It skips the test when it cannot run one.
func startSSHD(t testing.TB, cfg sshdConfig) *sshd {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd runs in a mount namespace of its own")
	}
	for _, tool := range []string{"/usr/sbin/sshd", "unshare", "openssl", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
	if cfg.pam && pamUnix() == "" {
		t.Skip("needs pam_unix.so for keyboard-interactive")
	}
	sshdMu.Lock()
	defer sshdMu.Unlock()
	if s := sshdServers[cfg]; s != nil {
		return s
	}
	if err := sshdErrors[cfg]; err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	s, err := newSSHD(cfg)
	if err != nil {
		sshdErrors[cfg] = err
		t.Fatalf("start sshd: %v", err)
	}
	sshdServers[cfg] = s
	return s
}

func stopSSHDs() {
	sshdMu.Lock()
	defer sshdMu.Unlock()
	for _, s := range sshdServers {
		s.stop()
	}
}

func pamUnix() string {
	for _, p := range []string{"/usr/lib/x86_64-linux-gnu/security/pam_unix.so", "/lib/x86_64-linux-gnu/security/pam_unix.so",
		"/usr/lib/aarch64-linux-gnu/security/pam_unix.so", "/usr/lib64/security/pam_unix.so", "/usr/lib/security/pam_unix.so"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

func newSSHD(cfg sshdConfig) (_ *sshd, err error) {
	dir, err := os.MkdirTemp("", "webssh-sshd-")
	if err != nil {
		return nil, err
	}
	s := &sshd{dir: dir, password: "pw-" + randomHex(8), passphrase: "pp-" + randomHex(8), stderr: &syncbuf.Buffer{}}
	defer func() {
		if err != nil {
			s.stop()
		}
	}()
	// The user's home must be reachable by the user.
	home := filepath.Join(dir, "home")
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.Mkdir(home, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chown(home, testUID, testUID); err != nil {
		return nil, err
	}

	openssl := exec.Command("openssl", "passwd", "-6", "-stdin")
	openssl.Stdin = strings.NewReader(s.password + "\n")
	hash, err := openssl.Output()
	if err != nil {
		return nil, fmt.Errorf("openssl passwd: %w", err)
	}
	if err := addUser(dir, home, strings.TrimSpace(string(hash))); err != nil {
		return nil, err
	}

	hostPub, hostPEM, err := newKey("")
	if err != nil {
		return nil, err
	}
	s.hostKey = hostPub
	userPub, userPEM, err := newKey("")
	if err != nil {
		return nil, err
	}
	s.keyPEM = userPEM
	encPub, encPEM, err := newKey(s.passphrase)
	if err != nil {
		return nil, err
	}
	s.encKeyPEM = encPEM
	_, caKey, _ := ed25519.GenerateKey(rand.Reader)
	if s.ca, err = ssh.NewSignerFromKey(caKey); err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"host_ed25519":    hostPEM,
		"authorized_keys": append(ssh.MarshalAuthorizedKey(userPub), ssh.MarshalAuthorizedKey(encPub)...),
		"ca.pub":          ssh.MarshalAuthorizedKey(s.ca.PublicKey()),
	}
	if cfg.pam {
		files["pam.d/sshd"] = []byte("auth required pam_unix.so nodelay\naccount required pam_unix.so\n" +
			"session required pam_permit.so\npassword required pam_deny.so\n")
	}
	for name, b := range files {
		// sshd reads authorized_keys as the user, and refuses a host key
		// others may read.
		mode := os.FileMode(0o644)
		if name == "host_ed25519" {
			mode = 0o600
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), b, mode); err != nil {
			return nil, err
		}
	}

	if s.port, s.ipv6, err = freePort(); err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("ListenAddress 127.0.0.1:%d\n", s.port)
	if s.ipv6 {
		listen += fmt.Sprintf("ListenAddress [::1]:%d\n", s.port)
	}
	yesNo := map[bool]string{true: "yes", false: "no"}
	conf := listen + fmt.Sprintf(`HostKey %[1]s/host_ed25519
PidFile %[1]s/sshd.pid
AuthorizedKeysFile %[1]s/authorized_keys
TrustedUserCAKeys %[1]s/ca.pub
UsePAM %[2]s
PasswordAuthentication %[3]s
KbdInteractiveAuthentication %[2]s
PubkeyAuthentication yes
AllowUsers %[4]s
PermitRootLogin no
StrictModes no
PrintMotd no
PrintLastLog no
AcceptEnv LANG
Subsystem sftp /usr/lib/openssh/sftp-server
MaxAuthTries 10
LogLevel VERBOSE
`, dir, yesNo[cfg.pam], yesNo[!cfg.pam], testUser)
	if err := os.WriteFile(filepath.Join(dir, "sshd_config"), []byte(conf), 0o600); err != nil {
		return nil, err
	}

	script := []string{"set -e"}
	for _, f := range []string{"passwd", "shadow", "group"} {
		script = append(script, fmt.Sprintf("mount --bind %s/etc/%s /etc/%s", dir, f, f))
	}
	if cfg.pam {
		script = append(script, fmt.Sprintf("mount --bind %s/pam.d /etc/pam.d", dir))
	}
	// sshd's privilege separation directory, in this namespace only.
	script = append(script, "[ -d /run/sshd ] || { mount -t tmpfs -o mode=0755 tmpfs /run && mkdir /run/sshd; }",
		fmt.Sprintf("exec /usr/sbin/sshd -D -e -f %s/sshd_config", dir))
	s.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c", strings.Join(script, "\n"))
	s.cmd.Stdout, s.cmd.Stderr = s.stderr, s.stderr
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := s.cmd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", s.addr(false), time.Second)
		if err == nil {
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			b := make([]byte, 8)
			n, _ := c.Read(b)
			c.Close()
			if bytes.HasPrefix(b[:n], []byte("SSH-2.0")) {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("sshd does not answer on %s: %s", s.addr(false), s.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (s *sshd) addr(ipv6 bool) string {
	if ipv6 {
		return fmt.Sprintf("[::1]:%d", s.port)
	}
	return fmt.Sprintf("127.0.0.1:%d", s.port)
}

func (s *sshd) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		s.cmd.Process.Signal(syscall.SIGTERM)
		s.cmd.Wait()
	}
	os.RemoveAll(s.dir)
}

// addUser writes copies of the host's passwd, shadow and group files
// with the test user added, under dir/etc.
func addUser(dir, home, hash string) error {
	etc := filepath.Join(dir, "etc")
	if err := os.Mkdir(etc, 0o755); err != nil {
		return err
	}
	lines := map[string]string{
		"passwd": fmt.Sprintf("%s:x:%d:%d:bastiond test user:%s:/bin/sh\n", testUser, testUID, testUID, home),
		"shadow": fmt.Sprintf("%s:%s:19000:0:99999:7:::\n", testUser, hash),
		"group":  fmt.Sprintf("%s:x:%d:\n", testUser, testUID),
	}
	for name, line := range lines {
		b, err := os.ReadFile("/etc/" + name)
		if err != nil {
			return err
		}
		// sshd needs its privilege separation user.
		if name == "passwd" && !bytes.Contains(b, []byte("\nsshd:")) && !bytes.HasPrefix(b, []byte("sshd:")) {
			b = append(b, "sshd:x:65534:65534::/run/sshd:/usr/sbin/nologin\n"...)
		}
		if err := os.WriteFile(filepath.Join(etc, name), append(b, line...), 0o644); err != nil {
			return err
		}
	}
	return os.Chmod(filepath.Join(etc, "shadow"), 0o640)
}

// newKey makes an ed25519 key and its OpenSSH PEM, encrypted with
// passphrase unless it is empty.
func newKey(passphrase string) (ssh.PublicKey, []byte, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	var block *pem.Block
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(priv, "webssh test")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(priv, "webssh test", []byte(passphrase))
	}
	if err != nil {
		return nil, nil, err
	}
	sp, err := ssh.NewPublicKey(pub)
	return sp, pem.EncodeToMemory(block), err
}

// freePort finds a port free on 127.0.0.1 and, when IPv6 works, on ::1.
func freePort() (int, bool, error) {
	for range 20 {
		l, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			return 0, false, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		l6, err := net.Listen("tcp6", fmt.Sprintf("[::1]:%d", port))
		if err == nil {
			l6.Close()
			return port, true, nil
		}
		if l6, err6 := net.Listen("tcp6", "[::1]:0"); err6 != nil {
			return port, false, nil // no IPv6 here
		} else {
			l6.Close()
		}
	}
	return 0, false, fmt.Errorf("no port free on both 127.0.0.1 and ::1")
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
