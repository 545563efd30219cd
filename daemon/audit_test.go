package daemon

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/proxy/hostkeys"
)

// testConfig is the lab's configuration with two more roles to grant.
const testConfig = `listen:
  server_name: bastion.lab.example
  tls:
    self_signed: true
bastion:
  public_interface: pub0
  vnet_interface: vnet0
  subnets: [198.18.0.0/26, "2001:db8:b5::/64"]
  mode: bridged
inventory:
  targets:
    - name: vm1
      addresses: [198.18.1.11, "2001:db8:b5:1::11"]
      ports: {ssh: 22}
    - name: vm2
      addresses: [198.18.1.12, "2001:db8:b5:1::12"]
      ports: {rdp: 3389, tunnel: [3390]}
access:
  roles:
    - name: ops
      targets: ["*"]
      protocols: [ssh]
    - name: dba
      targets: [vm2]
      protocols: [rdp]
state_dir: /tmp/bastiond-test
`

// adminEnv is a daemon with its account store, host key store, front door
// and broker, its audit trail written by the broker to a real file, and
// its admin API on a socket.
type adminEnv struct {
	d      *daemon
	client *adminapi.Client
	// trail is the audit file; read counts the lines of it already checked.
	trail string
	read  int
	// sshKey is the host key of the SSH server that scans of vm1 reach.
	sshKey ssh.PublicKey
}

func adminDaemon(t *testing.T) *adminEnv {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	dir := t.TempDir()
	file := filepath.Join(dir, "bastiond.yaml")
	if err := os.WriteFile(file, []byte(testConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	db, err := bbolt.Open(filepath.Join(dir, "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := auth.NewStore(db)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(auth.AuthenticatorConfig{Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := hostkeys.New(hostkeys.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	cs := &certs.Store{}
	if err := cs.Load(certs.Config{SelfSigned: true, ServerName: "bastion.lab.example", Dir: dir}); err != nil {
		t.Fatal(err)
	}
	front, err := proxy.New(proxy.Config{Logger: log, ServerName: "bastion.lab.example", Certs: cs, Access: accessPolicy(cfg)}, a)
	if err != nil {
		t.Fatal(err)
	}
	trailFile := filepath.Join(dir, "audit.jsonl")
	b, err := broker.New(broker.Config{Logger: log}, broker.Options{LiveDir: filepath.Join(dir, "live"), AuditFile: trailFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close(context.Background()) })
	d := &daemon{file: file, log: log, auth: a, front: front, broker: b, hostKeys: keys, cfg: cfg, loaded: time.Now(),
		trail: newTrail(log), reloads: make(chan reloadRequest)}
	d.trail.attach(b)
	t.Cleanup(d.trail.close)

	// Scans of vm1 reach an SSH server on loopback (IPv6 where there is one).
	hostKey := newHostKey(t)
	sshLn, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		sshLn, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sshLn.Close() })
	go serveSSH(sshLn, hostKey)

	path := filepath.Join(dir, "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: log, Status: func() adminapi.Status { return adminapi.Status{} },
		Users: usersAPI{d}, HostKeys: hostKeysAPI{keys, d}, Reload: d.requestReload, Audit: d.trail,
		ScanDial: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dialer net.Dialer
			return dialer.DialContext(ctx, "tcp", sshLn.Addr().String())
		}})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	// The serve loop's part in reloads.
	stop := make(chan struct{})
	t.Cleanup(func() { close(stop) })
	go func() {
		for {
			select {
			case req := <-d.reloads:
				d.serveReload(req)
			case <-stop:
				return
			}
		}
	}()
	return &adminEnv{d: d, client: adminapi.NewClient(path), trail: trailFile, read: 1, // after audit_chain_started
		sshKey: hostKey.PublicKey()}
}

func newHostKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serveSSH(ln net.Listener, key ssh.Signer) {
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(key)
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			ssh.NewServerConn(c, cfg)
		}()
	}
}

// admin is how the trail names the user running the test on the socket.
func admin(t *testing.T) string {
	t.Helper()
	uid := strconv.Itoa(os.Geteuid())
	if u, err := user.LookupId(uid); err == nil {
		return u.Username
	}
	return "uid:" + uid
}

// expect waits for the next len(want) lines of the trail and checks that
// they are want, exactly (but for the time, which must be recent). Actor
// and Source default to the admin on the socket.
func (e *adminEnv) expect(t *testing.T, want ...audit.Event) {
	t.Helper()
	var lines [][]byte
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(e.trail)
		if err != nil {
			t.Fatal(err)
		}
		lines = bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
		if len(lines) >= e.read+len(want) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	got := lines[min(e.read, len(lines)):min(e.read+len(want), len(lines))]
	e.read += len(got)
	if len(got) != len(want) {
		t.Fatalf("the trail holds %d new lines, want %d:\n%s", len(got), len(want), bytes.Join(got, []byte("\n")))
	}
	for i, line := range got {
		var ev audit.Event
		if err := json.Unmarshal(line, &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if time.Since(ev.Time) > time.Minute || !bytes.Contains(line, []byte(`"prev":"`)) {
			t.Errorf("line %s: not a recent chained line", line)
		}
		ev.Time = time.Time{}
		w := want[i]
		w.V = audit.Version
		if w.Actor == "" {
			w.Actor = admin(t)
		}
		if w.Source == "" {
			w.Source = audit.SourceLocal
		}
		if !reflect.DeepEqual(ev, w) {
			wl := audit.Marshal(w)
			t.Errorf("event %d:\n got %s\nwant %s", i+1, line, wl)
		}
	}
}

// verify checks the whole trail's chain, and that nothing more is in it.
func (e *adminEnv) verify(t *testing.T) {
	t.Helper()
	f, err := os.Open(e.trail)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rep, err := audit.Verify(audit.File{Name: e.trail, R: bufio.NewReader(f)})
	if err != nil || rep.Broken != nil || len(rep.Restarts) > 0 {
		t.Fatalf("the trail does not verify: %+v %v", rep.Broken, err)
	}
	if rep.Lines != e.read {
		t.Errorf("the trail holds %d lines, the test checked %d", rep.Lines, e.read)
	}
}

// TestAccountEvents: every account change made on the admin socket is
// one audit event per thing changed, named for the admin, in the file the
// broker writes, chained.
func TestAccountEvents(t *testing.T) {
	e := adminDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.client
	change := func(name, action string, req adminapi.UserRequest) {
		t.Helper()
		if err := c.UserChange(ctx, name, action, req); err != nil {
			t.Fatalf("%s %s: %v", action, name, err)
		}
	}
	const pw = "correct horse battery staple"

	change("bob", "", adminapi.UserRequest{Password: pw, Roles: []string{"ops"}})
	e.expect(t, audit.Event{Event: audit.UserCreated, User: "bob", Roles: []string{"ops"}})

	change("bob", "grant", adminapi.UserRequest{Roles: []string{"dba", "ops"}})
	e.expect(t, audit.Event{Event: audit.GrantAdded, User: "bob", Role: "dba"}, audit.Event{Event: audit.GrantAdded, User: "bob", Role: "ops"})

	change("bob", "revoke", adminapi.UserRequest{Roles: []string{"dba"}})
	e.expect(t, audit.Event{Event: audit.GrantRemoved, User: "bob", Role: "dba"})

	change("bob", "password", adminapi.UserRequest{Password: pw + "!"})
	e.expect(t, audit.Event{Event: audit.PasswordSet, User: "bob", Detail: "the account's web sessions were ended and its API tokens revoked"})

	enrol, err := c.BeginTOTP(ctx, "bob")
	if err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.UserChanged, User: "bob", Reason: "totp_enrolment_started",
		Detail: "TOTP enrolment started: a new secret, in force once confirmed with a code"})
	code := totpCode(t, enrol.Secret, time.Now())
	change("bob", "totp/confirm", adminapi.UserRequest{Code: code})
	e.expect(t, audit.Event{Event: audit.TOTPEnrolled, User: "bob"})
	change("bob", "totp/reset", adminapi.UserRequest{})
	e.expect(t, audit.Event{Event: audit.TOTPRemoved, User: "bob"})

	// Tokens: revoked one by one, and all of a user's; never a secret.
	store := e.d.auth.Store()
	var ids []string
	var secrets []string
	for _, src := range []string{"192.0.2.7", "2001:db8::7", "2001:db8::8"} {
		secret, tok, err := store.IssueToken("bob", nil, time.Hour, "laptop", src)
		if err != nil {
			t.Fatal(err)
		}
		ids, secrets = append(ids, tok.ID), append(secrets, secret)
	}
	if _, err := c.RevokeTokens(ctx, ids[0], ""); err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.TokenRevoked, User: "bob", Token: ids[0]})
	if n, err := c.RevokeTokens(ctx, "", "bob"); err != nil || n != 2 {
		t.Fatalf("revoke bob's tokens: %d, %v", n, err)
	}
	// In the order they were issued.
	e.expect(t, audit.Event{Event: audit.TokenRevoked, User: "bob", Token: ids[1]}, audit.Event{Event: audit.TokenRevoked, User: "bob", Token: ids[2]})

	// Lockout cleared, disabled (what it ended is said), enabled, deleted.
	if err := store.Update("bob", func(u *auth.User) error { u.LockedUntil = time.Now().Add(time.Hour); return nil }); err != nil {
		t.Fatal(err)
	}
	change("bob", "unlock", adminapi.UserRequest{})
	e.expect(t, audit.Event{Event: audit.UserUnlocked, User: "bob"})
	if _, err := c.DisableUser(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.UserDisabled, User: "bob", Detail: "ended 0 web sessions, revoked 0 API tokens, ended 0 live sessions"})
	change("bob", "enable", adminapi.UserRequest{})
	e.expect(t, audit.Event{Event: audit.UserEnabled, User: "bob"})
	change("bob", "delete", adminapi.UserRequest{})
	e.expect(t, audit.Event{Event: audit.UserDeleted, User: "bob"})

	// A change refused is no event.
	if err := c.UserChange(ctx, "nobody", "unlock", adminapi.UserRequest{}); err == nil {
		t.Error("unlocking an unknown account succeeded")
	}
	if err := c.UserChange(ctx, "carol", "", adminapi.UserRequest{Password: pw, Roles: []string{"no-such-role"}}); err == nil {
		t.Error("an account with an unknown role was created")
	}
	time.Sleep(200 * time.Millisecond)
	e.verify(t)
	if dump := os.Getenv("AUDIT_DUMP"); dump != "" {
		data, _ := os.ReadFile(e.trail)
		os.WriteFile(dump, data, 0o600)
	}

	data, err := os.ReadFile(e.trail)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range append(secrets, pw, enrol.Secret, code) {
		if bytes.Contains(data, []byte(secret)) {
			t.Errorf("a secret is in the trail: %q", secret)
		}
	}
}

// totpCode is the RFC 6238 code of a base32 secret at t, as an
// authenticator app computes it.
func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	key, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil {
		t.Fatal(err)
	}
	var msg [8]byte
	binary.BigEndian.PutUint64(msg[:], uint64(at.Unix()/30))
	mac := hmac.New(sha1.New, key)
	mac.Write(msg[:])
	sum := mac.Sum(nil)
	off := sum[len(sum)-1] & 0x0f
	return fmt.Sprintf("%06d", (binary.BigEndian.Uint32(sum[off:])&0x7fffffff)%1_000_000)
}
