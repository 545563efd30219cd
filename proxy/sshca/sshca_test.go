package sshca

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

func open(t *testing.T, dir string) *CA {
	t.Helper()
	ca, err := Open(Config{Dir: dir, ServerName: "bastion.lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestOpenCreatesThenLoads(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ca := open(t, dir)
	fi, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %s, want 0600", fi.Mode())
	}
	if d, _ := os.Stat(dir); d.Mode().Perm() != 0o700 {
		t.Errorf("state dir mode %s, want 0700", d.Mode())
	}
	line := ca.PublicKey()
	pub, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatalf("PublicKey %q: %v", line, err)
	}
	if pub.Type() != ssh.KeyAlgoED25519 || comment != "bastiond-ca@bastion.lab.example" || strings.Contains(line, "\n") {
		t.Errorf("PublicKey = %q", line)
	}
	if again := open(t, dir).PublicKey(); again != line {
		t.Errorf("reopened CA has another key: %q, was %q", again, line)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("state dir holds %d files, want only %s", len(entries), KeyFile)
	}
}

func TestOpenRefuses(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rsaPEM, err := ssh.MarshalPrivateKey(rsaKey, "")
	if err != nil {
		t.Fatal(err)
	}
	valid := func(t *testing.T) []byte {
		dir := t.TempDir()
		open(t, dir)
		b, err := os.ReadFile(filepath.Join(dir, KeyFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tt := range []struct {
		name string
		data func(t *testing.T) []byte
		mode os.FileMode
		want string
	}{
		{"readable by others", valid, 0o644, "has mode -rw-r--r--: the CA key must be a file only its owner can read; run `chmod 600"},
		{"readable by the group", valid, 0o640, "has mode -rw-r-----"},
		{"corrupt", func(*testing.T) []byte { return []byte("-----BEGIN OPENSSH PRIVATE KEY-----\nnot base64\n") }, 0o600, "is not an OpenSSH private key"},
		{"truncated", func(t *testing.T) []byte { b := valid(t); return b[:len(b)/2] }, 0o600, "is not an OpenSSH private key"},
		{"not ed25519", func(*testing.T) []byte { return pem.EncodeToMemory(rsaPEM) }, 0o600, "not an ed25519 key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, KeyFile)
			before := tt.data(t)
			if err := os.WriteFile(path, before, tt.mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(path, tt.mode) // past the umask
			_, err := Open(Config{Dir: dir, ServerName: "b"})
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("got %v, want an error naming %s with %q", err, path, tt.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(after, before) {
				t.Error("the refused key file was changed")
			}
		})
	}
	if _, err := Open(Config{Dir: t.TempDir()}); err == nil {
		t.Error("Open without a server name accepted")
	}
}

func TestSign(t *testing.T) {
	ca := open(t, t.TempDir())
	caPub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ca.PublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	signer, err := ca.Sign("alice", "bastiond:alice:5f2c0a9e13b7", 0)
	if err != nil {
		t.Fatal(err)
	}
	cert, ok := signer.PublicKey().(*ssh.Certificate)
	if !ok {
		t.Fatalf("signer's public key is a %T, want a certificate", signer.PublicKey())
	}
	if cert.CertType != ssh.UserCert || cert.KeyId != "bastiond:alice:5f2c0a9e13b7" || len(cert.ValidPrincipals) != 1 || cert.ValidPrincipals[0] != "alice" {
		t.Errorf("certificate %+v", cert)
	}
	if len(cert.CriticalOptions) != 0 || len(cert.Extensions) != 1 || cert.Extensions["permit-pty"] != "" {
		t.Errorf("permissions %+v, want permit-pty only", cert.Permissions)
	}
	after, before := time.Unix(int64(cert.ValidAfter), 0), time.Unix(int64(cert.ValidBefore), 0)
	if d := start.Sub(after); d < 59*time.Second || d > 61*time.Second {
		t.Errorf("valid after %s, want a minute before %s", after, start)
	}
	if d := before.Sub(start); d < DefaultValidity-time.Second || d > DefaultValidity+time.Second {
		t.Errorf("valid before %s, want %s after %s", before, DefaultValidity, start)
	}

	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), caPub.Marshal()) }}
	if err := checker.CheckCert("alice", cert); err != nil {
		t.Errorf("CheckCert for alice: %v", err)
	}
	if err := checker.CheckCert("root", cert); err == nil {
		t.Error("certificate for alice accepted for root")
	}
	checker.Clock = func() time.Time { return before.Add(time.Second) }
	if err := checker.CheckCert("alice", cert); err == nil {
		t.Error("expired certificate accepted")
	}
	other := open(t, t.TempDir())
	otherPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(other.PublicKey()))
	checker = &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), otherPub.Marshal()) }}
	if _, err := checker.Authenticate(connMeta("alice"), cert); err == nil {
		t.Error("certificate accepted by a machine that trusts another CA")
	}

	long, err := ca.Sign("bob", "k", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if c := long.PublicKey().(*ssh.Certificate); time.Unix(int64(c.ValidBefore), 0).Sub(start) < 59*time.Minute {
		t.Errorf("validity 1h not honoured: %d", c.ValidBefore)
	}
	a, _ := ca.Sign("alice", "k", 0)
	b, _ := ca.Sign("alice", "k", 0)
	ca1, cb := a.PublicKey().(*ssh.Certificate), b.PublicKey().(*ssh.Certificate)
	if bytes.Equal(ca1.Key.Marshal(), cb.Key.Marshal()) || ca1.Serial == cb.Serial {
		t.Error("two certificates share a key or a serial")
	}
	if _, err := ca.Sign("", "k", 0); err == nil {
		t.Error("certificate without a login")
	}
}

type connMeta string

func (c connMeta) User() string        { return string(c) }
func (connMeta) SessionID() []byte     { return nil }
func (connMeta) ClientVersion() []byte { return nil }
func (connMeta) ServerVersion() []byte { return nil }
func (connMeta) RemoteAddr() net.Addr  { return nil }
func (connMeta) LocalAddr() net.Addr   { return nil }

// TestLogin logs in with a certificate to an x/crypto SSH server that trusts
// the CA, on IPv4 and IPv6 loopback.
func TestLogin(t *testing.T) {
	ca := open(t, t.TempDir())
	caPub, _, _, _, _ := ssh.ParseAuthorizedKey([]byte(ca.PublicKey()))
	hostKey, err := ca.Sign("host", "host", time.Hour) // any key will do as a host key
	if err != nil {
		t.Fatal(err)
	}
	checker := &ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), caPub.Marshal()) }}
	cfg := &ssh.ServerConfig{PublicKeyCallback: checker.Authenticate}
	cfg.AddHostKey(hostKey)
	for _, n := range []struct{ name, network, addr string }{{"IPv4", "tcp4", "127.0.0.1:0"}, {"IPv6", "tcp6", "[::1]:0"}} {
		t.Run(n.name, func(t *testing.T) {
			ln, err := net.Listen(n.network, n.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", n.network, err)
			}
			var wg sync.WaitGroup
			defer wg.Wait()
			defer ln.Close()
			wg.Go(func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.SetDeadline(time.Now().Add(10 * time.Second))
					if sc, _, reqs, err := ssh.NewServerConn(c, cfg); err == nil {
						go ssh.DiscardRequests(reqs)
						sc.Wait()
					}
					c.Close()
				}
			})
			for _, tt := range []struct {
				login, as string
				ok        bool
			}{{"alice", "alice", true}, {"alice", "root", false}} {
				signer, err := ca.Sign(tt.login, "bastiond:test", 0)
				if err != nil {
					t.Fatal(err)
				}
				c, err := ssh.Dial("tcp", ln.Addr().String(), &ssh.ClientConfig{
					User: tt.as, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
					HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
				})
				if (err == nil) != tt.ok {
					t.Errorf("certificate for %s logging in as %s: %v", tt.login, tt.as, err)
				}
				if err == nil {
					c.Close()
				}
			}
		})
	}
}

// TestOpenSSHReadsCertificate has ssh-keygen describe a certificate.
func TestOpenSSHReadsCertificate(t *testing.T) {
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		t.Skip("ssh-keygen not installed")
	}
	ca := open(t, t.TempDir())
	signer, err := ca.Sign("alice", "bastiond:alice:5f2c0a9e13b7", 0)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "id-cert.pub")
	if err := os.WriteFile(path, ssh.MarshalAuthorizedKey(signer.PublicKey()), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-L", "-f", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ssh-keygen -L: %v: %s", err, out)
	}
	caFP := ssh.FingerprintSHA256(mustParse(t, ca.PublicKey()))
	for _, want := range []string{
		"Type: ssh-ed25519-cert-v01@openssh.com user certificate",
		"Signing CA: ED25519 " + caFP,
		`Key ID: "bastiond:alice:5f2c0a9e13b7"`,
		"Principals: \n                alice\n",
		"Critical Options: (none)",
		"Extensions: \n                permit-pty\n",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("ssh-keygen -L lacks %q:\n%s", want, out)
		}
	}
}

// TestOpenSSHLogin logs in to a real sshd that trusts the CA through
// TrustedUserCAKeys, on IPv4 and IPv6 loopback.
func TestOpenSSHLogin(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: sshd runs as root to log users in")
	}
	sshd, err := exec.LookPath("sshd")
	if err != nil {
		t.Skip("sshd not installed")
	}
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Skipf("sshd's privilege separation directory: %v", err)
	}
	dir := t.TempDir()
	ca := open(t, filepath.Join(dir, "state"))
	caFile := filepath.Join(dir, "trusted_user_ca_keys")
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	if err := os.WriteFile(caFile, []byte(ca.PublicKey()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	for _, n := range []struct{ name, network, addr string }{{"IPv4", "tcp4", "127.0.0.1"}, {"IPv6", "tcp6", "::1"}} {
		t.Run(n.name, func(t *testing.T) {
			ln, err := net.Listen(n.network, net.JoinHostPort(n.addr, "0"))
			if err != nil {
				t.Skipf("no %s loopback: %v", n.network, err)
			}
			addr := ln.Addr().String()
			ln.Close() // sshd takes the port
			conf := filepath.Join(dir, "sshd_config_"+n.name)
			err = os.WriteFile(conf, fmt.Appendf(nil, "ListenAddress %s\nHostKey %s\nTrustedUserCAKeys %s\n"+
				"PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"+
				"AuthorizedKeysFile none\nUsePAM no\nPidFile none\nStrictModes no\n", addr, hostKey, caFile), 0o600)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(sshd, "-D", "-e", "-f", conf)
			var log syncbuf.Buffer
			cmd.Stderr = &log
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() {
				cmd.Process.Kill()
				cmd.Wait()
			}()
			login := func(login, as string) error {
				signer, err := ca.Sign(login, "bastiond:test:"+n.name, 0)
				if err != nil {
					t.Fatal(err)
				}
				var c *ssh.Client
				for range 50 { // sshd needs a moment to listen
					c, err = ssh.Dial("tcp", addr, &ssh.ClientConfig{
						User: as, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)},
						HostKeyCallback: ssh.InsecureIgnoreHostKey(), Timeout: 5 * time.Second,
					})
					if err == nil || !strings.Contains(err.Error(), "connection refused") {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
				if err != nil {
					return err
				}
				defer c.Close()
				s, err := c.NewSession()
				if err != nil {
					return err
				}
				defer s.Close()
				out, err := s.Output("id -un")
				if err == nil && strings.TrimSpace(string(out)) != as {
					err = fmt.Errorf("logged in as %q", out)
				}
				return err
			}
			if err := login("root", "root"); err != nil {
				t.Fatalf("login with a certificate for root: %v\nsshd: %s", err, log.String())
			}
			if err := login("alice", "root"); err == nil {
				t.Error("a certificate for alice logged in as root")
			}
			if !strings.Contains(log.String(), `ID bastiond:test:`+n.name) {
				t.Errorf("sshd did not log the key ID:\n%s", log.String())
			}
		})
	}
}

func mustParse(t *testing.T, line string) ssh.PublicKey {
	t.Helper()
	k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	return k
}
