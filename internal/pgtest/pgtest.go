// Package pgtest runs a throwaway PostgreSQL server for tests: Debian's
// postgresql binaries (initdb, pg_ctl) run as user postgres on a data
// directory of the test's own, with TLS on (a certificate from a CA the
// test makes), listening on 127.0.0.1 and ::1 on a free port and on a unix
// socket in that directory. It never touches another PostgreSQL of the
// host: nothing but its own directory, port and process is used. Tests that
// use it skip, saying why, when not root or when postgresql is not
// installed (test/deps.sh test installs it).
package pgtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// User is the role bastiond connects as; it owns the databases that
// NewDatabase makes.
const User = "bastiond"

// Options change the server Start makes.
type Options struct {
	// CertNames are the names and addresses of the server's certificate;
	// empty means 127.0.0.1, ::1 and localhost.
	CertNames []string
	// Durable keeps fsync on, as a production server has it, for
	// benchmarks; tests leave it off (a test's data need not survive a
	// power cut).
	Durable bool
}

// Server is one running PostgreSQL server.
type Server struct {
	// Dir holds everything: data/, the socket, the certificates and the
	// log; it is removed at the end of the test.
	Dir string
	// Port is the TCP port on 127.0.0.1 and ::1 (and the socket's number).
	Port int
	// CAFile is the PEM certificate of the CA that signed the server's.
	CAFile string
	// Password is User's password.
	Password string

	bin     string // the directory of initdb, pg_ctl
	uid     int
	gid     int
	dbs     atomic.Int64
	stop    bool // running: stop it at cleanup
	durable bool
	extra   []string // more settings (a standby's primary_conninfo)
}

// Start starts a server for t, stopped and removed when t ends, or skips t
// when it cannot run one here.
func Start(t testing.TB, opts ...Options) *Server {
	t.Helper()
	var o Options
	if len(opts) > 0 {
		o = opts[0]
	}
	if os.Geteuid() != 0 {
		t.Skip("pgtest: a throwaway PostgreSQL needs root (to run it as user postgres); run the test as root")
	}
	bin := binDir()
	if bin == "" {
		t.Skip("pgtest: PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb); test/deps.sh test installs it")
	}
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Skip("pgtest: no user postgres (installed with Debian's postgresql package): ", err)
	}
	s := &Server{bin: bin}
	s.uid, _ = strconv.Atoi(pg.Uid)
	s.gid, _ = strconv.Atoi(pg.Gid)
	s.Dir, err = os.MkdirTemp("", "pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if s.stop {
			s.ctl(t, "stop", "-m", "fast", "-w", "-t", "60")
		}
		os.RemoveAll(s.Dir)
	})
	if err := os.Chmod(s.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(s.Dir, s.uid, s.gid); err != nil {
		t.Fatal(err)
	}
	s.Password = randomHex(16)
	pwfile := filepath.Join(s.Dir, "pwfile")
	s.write(t, "pwfile", randomHex(16)+"\n", 0o600) // the superuser's, never used: it signs in over the socket
	if out, err := s.asPostgres(filepath.Join(bin, "initdb"), "-D", s.data(), "-U", "postgres", "--pwfile", pwfile,
		"-E", "UTF8", "--locale", "C", "--auth-local", "trust", "--auth-host", "reject").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	names := o.CertNames
	if len(names) == 0 {
		names = []string{"127.0.0.1", "::1", "localhost"}
	}
	s.makeCerts(t, names)
	// Only the socket (superuser, trust: the directory is root's and
	// postgres's only) and TLS with a password for User. No plain TCP.
	s.write(t, "data/pg_hba.conf", "local all postgres trust\n"+
		"local replication postgres trust\n"+
		"local all "+User+" scram-sha-256\n"+
		"hostssl all "+User+" 127.0.0.1/32 scram-sha-256\n"+
		"hostssl all "+User+" ::1/128 scram-sha-256\n", 0o600)
	s.durable = o.Durable
	s.configure(t)
	s.stop = true
	s.Exec(t, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s'", User, s.Password))
	return s
}

// configure writes the server's settings for a free port and starts it.
func (s *Server) configure(t testing.TB) {
	t.Helper()
	durability := []string{"fsync = off", "full_page_writes = off"}
	if s.durable {
		durability = []string{"fsync = on", "synchronous_commit = on"}
	}
	for attempt := 0; ; attempt++ {
		s.Port = freePort(t)
		s.write(t, "data/postgresql.auto.conf", strings.Join([]string{
			"listen_addresses = '127.0.0.1,::1'",
			"port = " + strconv.Itoa(s.Port),
			"unix_socket_directories = '" + s.Dir + "'",
			"ssl = on",
			"ssl_cert_file = '" + filepath.Join(s.Dir, "server.crt") + "'",
			"ssl_key_file = '" + filepath.Join(s.Dir, "server.key") + "'",
			"max_connections = 200",
			"logging_collector = off",
			strings.Join(append(durability, s.extra...), "\n"),
			"",
		}, "\n"), 0o600)
		err := s.start()
		if err == nil {
			break
		}
		if attempt == 2 {
			t.Fatalf("pgtest: %v", err)
		}
	}
	s.stop = true
}

// StartStandby starts a hot standby of s (pg_basebackup, streaming
// replication): a read-only copy, with the same role, password and
// certificate, on a port of its own; stopped and removed when t ends.
func (s *Server) StartStandby(t testing.TB) *Server {
	t.Helper()
	r := &Server{bin: s.bin, uid: s.uid, gid: s.gid, Password: s.Password, durable: s.durable}
	var err error
	if r.Dir, err = os.MkdirTemp("", "pgtest-standby-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if r.stop {
			r.ctl(t, "stop", "-m", "fast", "-w", "-t", "60")
		}
		os.RemoveAll(r.Dir)
	})
	if err := os.Chmod(r.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(r.Dir, r.uid, r.gid); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"server.crt", "server.key", "ca.crt"} {
		b, err := os.ReadFile(filepath.Join(s.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		r.write(t, f, string(b), 0o600)
	}
	r.CAFile = filepath.Join(r.Dir, "ca.crt")
	if out, err := r.asPostgres(filepath.Join(s.bin, "pg_basebackup"), "-D", r.data(), "-h", s.Dir, "-p", strconv.Itoa(s.Port),
		"-U", "postgres", "-R", "-X", "stream", "-c", "fast").CombinedOutput(); err != nil {
		t.Fatalf("pgtest: pg_basebackup: %v\n%s", err, out)
	}
	// -R put the primary's address in postgresql.auto.conf, which
	// configure rewrites.
	auto, err := os.ReadFile(filepath.Join(r.data(), "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(auto), "\n") {
		if strings.HasPrefix(line, "primary_conninfo") {
			r.extra = append(r.extra, line)
		}
	}
	if len(r.extra) == 0 {
		t.Fatalf("pgtest: pg_basebackup -R wrote no primary_conninfo:\n%s", auto)
	}
	r.configure(t)
	return r
}

// binDir is the bin directory of the newest PostgreSQL installed.
func binDir() string {
	m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	sort.Slice(m, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[i]))))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(filepath.Dir(m[j]))))
		return a < b
	})
	if len(m) == 0 {
		return ""
	}
	return filepath.Dir(m[len(m)-1])
}

func (s *Server) data() string { return filepath.Join(s.Dir, "data") }

// asPostgres is a command run as user postgres, in Dir.
func (s *Server) asPostgres(name string, args ...string) *exec.Cmd {
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + strconv.Itoa(s.uid), "--regid=" + strconv.Itoa(s.gid),
		"--clear-groups", "--", name}, args...)...)
	cmd.Dir = s.Dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LANG=C", "HOME=" + s.Dir}
	return cmd
}

func (s *Server) ctl(t testing.TB, args ...string) {
	t.Helper()
	if out, err := s.asPostgres(filepath.Join(s.bin, "pg_ctl"), append([]string{"-D", s.data()}, args...)...).CombinedOutput(); err != nil {
		t.Errorf("pgtest: pg_ctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// start runs pg_ctl start and waits until the server accepts connections.
func (s *Server) start() error {
	out, err := s.asPostgres(filepath.Join(s.bin, "pg_ctl"), "-D", s.data(), "-l", filepath.Join(s.Dir, "log"),
		"-w", "-t", "60", "start").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(s.Dir, "log"))
		return fmt.Errorf("pg_ctl start: %v\n%s\nserver log:\n%s", err, out, log)
	}
	return nil
}

// Stop stops the server (pg_ctl stop -m fast), until Restart.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.ctl(t, "stop", "-m", "fast", "-w", "-t", "60")
	s.stop = false
}

// Restart starts the server again after Stop, on the same port.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	if err := s.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.stop = true
}

// DSN is a connection string for User to database db on host, an address
// or name of the server's (127.0.0.1, ::1, localhost), with TLS verified
// against CAFile.
func (s *Server) DSN(host, db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=verify-full sslrootcert=%s",
		host, s.Port, User, s.Password, db, s.CAFile)
}

// SocketDSN is a connection string for User to database db over the
// server's unix socket (no TLS: there is no network).
func (s *Server) SocketDSN(db string) string {
	return fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s", s.Dir, s.Port, User, s.Password, db)
}

// NewDatabase creates an empty database owned by User and returns its
// name.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("t%d_%s", s.dbs.Add(1), randomHex(4))
	s.Exec(t, "postgres", "CREATE DATABASE "+name+" OWNER "+User)
	return name
}

// Admin connects to database db as the superuser, over the socket; the
// connection is closed when t ends.
func (s *Server) Admin(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=%s", s.Dir, s.Port, db))
	if err != nil {
		t.Fatalf("pgtest: connect as postgres to %s: %v", db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// Exec runs sql in database db as the superuser.
func (s *Server) Exec(t testing.TB, db, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=postgres dbname=%s", s.Dir, s.Port, db))
	if err != nil {
		t.Fatalf("pgtest: connect as postgres to %s: %v", db, err)
	}
	defer c.Close(context.Background())
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("pgtest: %s: %v", sql, err)
	}
}

// write writes a file under Dir, owned by postgres.
func (s *Server) write(t testing.TB, name, content string, mode os.FileMode) {
	t.Helper()
	p := filepath.Join(s.Dir, name)
	if err := os.WriteFile(p, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, s.uid, s.gid); err != nil {
		t.Fatal(err)
	}
}

// makeCerts makes a CA (CAFile) and the server's certificate and key for
// names.
func (s *Server) makeCerts(t testing.TB, names []string) {
	t.Helper()
	ca, caKey, caPEM := NewCA(t, "pgtest CA")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	s.write(t, "server.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	s.write(t, "server.key", string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})), 0o600)
	s.write(t, "ca.crt", string(caPEM), 0o644)
	s.CAFile = filepath.Join(s.Dir, "ca.crt")
}

// NewCA makes a self-signed CA: its certificate, key, and the certificate
// in PEM.
func NewCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// freePort is a TCP port free on both 127.0.0.1 and ::1 at the moment.
func freePort(t testing.TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l6, err := net.Listen("tcp", net.JoinHostPort("::1", strconv.Itoa(port)))
		l.Close()
		if err == nil {
			l6.Close()
			return port
		}
	}
	t.Fatal("pgtest: no TCP port free on both 127.0.0.1 and ::1")
	return 0
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// FreePort is a TCP port on 127.0.0.1 and ::1 that nothing listens on at
// the moment: a server that is down, for tests.
func FreePort(t testing.TB) int { return freePort(t) }
