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
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/version"
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
	client *adminclient.Client
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
	db, err := statedb.Open(filepath.Join(dir, "state.db"))
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
	return &adminEnv{d: d, client: adminclient.NewClient(path), trail: trailFile, read: 1, // after audit_chain_started
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
	// AUDIT_DUMP=FILE collects the trails the tests wrote: the examples
	// of docs/audit.md.
	if dump := os.Getenv("AUDIT_DUMP"); dump != "" {
		data, _ := os.ReadFile(e.trail)
		f, err := os.OpenFile(dump, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err == nil {
			f.Write(data)
			f.Close()
		}
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
	change("bob", "passkeys/reset", adminapi.UserRequest{})
	e.expect(t, audit.Event{Event: audit.PasskeyRemoved, User: "bob", Detail: "every passkey of the account (0) removed by an administrator"})

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

// TestHostKeyEvents: pinning from a scan, from a key line and by
// fingerprint, and forgetting, are one event per key.
func TestHostKeyEvents(t *testing.T) {
	e := adminDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := e.client
	fp := ssh.FingerprintSHA256(e.sshKey)

	keys, err := c.ScanHostKeys(ctx, "vm1", adminapi.ScanRequest{Pin: true})
	if err != nil || len(keys) != 1 || keys[0].Fingerprint != fp {
		t.Fatalf("scan and pin: %+v, %v", keys, err)
	}
	e.expect(t, audit.Event{Event: audit.HostKeyPinned, Target: "vm1", Protocol: "ssh", Fingerprint: fp, Detail: "pinned as a scan found it"})

	// A scan that finds the key pinned already pins nothing: no event.
	if _, err := c.ScanHostKeys(ctx, "vm1", adminapi.ScanRequest{Pin: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ForgetHostKeys(ctx, "vm1", fp); err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.HostKeyForgot, Target: "vm1", Protocol: "ssh", Fingerprint: fp})

	other := newHostKey(t).PublicKey()
	if _, err := c.PinHostKeys(ctx, "vm1", adminapi.PinRequest{Keys: []string{string(ssh.MarshalAuthorizedKey(other))}}); err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.HostKeyPinned, Target: "vm1", Protocol: "ssh", Fingerprint: ssh.FingerprintSHA256(other),
		Detail: "pinned from a key line the admin gave"})

	// Seen by a scan without pinning, then pinned by its fingerprint.
	if _, err := c.ScanHostKeys(ctx, "vm1", adminapi.ScanRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PinHostKeys(ctx, "vm1", adminapi.PinRequest{Fingerprints: []string{fp}}); err != nil {
		t.Fatal(err)
	}
	e.expect(t, audit.Event{Event: audit.HostKeyPinned, Target: "vm1", Protocol: "ssh", Fingerprint: fp,
		Detail: "pinned by fingerprint, as seen before"})

	// Forgetting every key of a target: one event each.
	if _, err := c.ForgetHostKeys(ctx, "vm1", ""); err != nil {
		t.Fatal(err)
	}
	forgot := e.peek(t, 2)
	want := []audit.Event{{Event: audit.HostKeyForgot, Target: "vm1", Protocol: "ssh", Fingerprint: fp},
		{Event: audit.HostKeyForgot, Target: "vm1", Protocol: "ssh", Fingerprint: ssh.FingerprintSHA256(other)}}
	if len(forgot) == 2 && !bytes.Contains(forgot[0], []byte(fp)) {
		want[0], want[1] = want[1], want[0]
	}
	e.expect(t, want...)

	// Refused: a target not in the inventory; nothing recorded.
	if _, err := c.PinHostKeys(ctx, "vm9", adminapi.PinRequest{Keys: []string{string(ssh.MarshalAuthorizedKey(other))}}); err == nil {
		t.Error("pinned a key for a target not in the inventory")
	}
	time.Sleep(200 * time.Millisecond)
	e.verify(t)
}

// TestReloadEvents: `bastionctl reload` of a file that does not load is a
// config_refused event naming the admin, the file and line; the running
// configuration stays.
func TestReloadEvents(t *testing.T) {
	e := adminDaemon(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	running := e.d.config()
	bad := strings.Replace(testConfig, "protocols: [rdp]", "protocols: [rdp, telnet]", 1)
	if err := os.WriteFile(e.d.file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	_, loadErr := config.Load(e.d.file)
	if loadErr == nil || !strings.Contains(loadErr.Error(), e.d.file+":") {
		t.Fatalf("the bad file loads: %v", loadErr)
	}
	res, err := e.client.Reload(ctx)
	if err != nil || res.OK || res.Error != loadErr.Error() {
		t.Fatalf("reload answered %+v, %v", res, err)
	}
	if e.d.config() != running {
		t.Error("a refused configuration replaced the running one")
	}
	e.expect(t, audit.Event{Event: audit.ConfigRefused, Reason: "config_invalid", Digest: fileDigest(e.d.file),
		Detail: "bastionctl reload; the running configuration stays in force: " + loadErr.Error()})

	// On SIGHUP the daemon is the actor. A file that is gone has no digest.
	os.Remove(e.d.file)
	e.d.reload(audit.ActorDaemon, "on SIGHUP")
	e.expect(t, audit.Event{Event: audit.ConfigRefused, Actor: audit.ActorDaemon, Reason: "config_invalid",
		Detail: "on SIGHUP; the running configuration stays in force: config: open " + e.d.file + ": no such file or directory"})
	e.verify(t)
}

// TestConfigReloadedEvent: a reload that took names the new file's digest
// and the settings that changed. (Swapping a configuration in needs the
// firewall, so this takes the event from a reload's outcome.)
func TestConfigReloadedEvent(t *testing.T) {
	e := adminDaemon(t)
	prev := e.d.config()
	changed := strings.Replace(testConfig, "protocols: [rdp]", "protocols: [rdp, tunnel]", 1)
	changed = strings.Replace(changed, "state_dir: /tmp/bastiond-test", "state_dir: /tmp/bastiond-test2", 1)
	if err := os.WriteFile(e.d.file, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	next, err := config.Load(e.d.file)
	if err != nil {
		t.Fatal(err)
	}
	e.d.auditReload("alice", "bastionctl reload", prev, next, nil)
	e.expect(t, audit.Event{Event: audit.ConfigReloaded, Actor: "alice", Digest: next.Digest,
		// recordings_dir is state_dir/recordings by default: it moves too.
		Detail: "bastionctl reload; changed: access.roles, state_dir, recordings_dir; at the next restart only: state_dir, recordings_dir"})
	e.d.auditReload(audit.ActorDaemon, "on SIGHUP", next, next, nil)
	e.expect(t, audit.Event{Event: audit.ConfigReloaded, Actor: audit.ActorDaemon, Digest: next.Digest, Detail: "on SIGHUP; changed: nothing"})
	e.d.auditReload(audit.ActorDaemon, "on SIGHUP", next, nil, refused("firewall_refused", errors.New("cannot put the firewall in force: EPERM")))
	e.expect(t, audit.Event{Event: audit.ConfigRefused, Actor: audit.ActorDaemon, Reason: "firewall_refused", Digest: next.Digest,
		Detail: "on SIGHUP; the running configuration stays in force: cannot put the firewall in force: EPERM"})
	e.verify(t)
}

// TestDaemonEvents: start, stop and firewall repairs are the daemon's own
// events.
func TestDaemonEvents(t *testing.T) {
	e := adminDaemon(t)
	e.d.auditStarted()
	e.expect(t, audit.Event{Event: audit.DaemonStarted, Actor: audit.ActorDaemon, Version: version.Version, Digest: e.d.config().Digest,
		Detail: fmt.Sprintf("pid %d, configuration %s", os.Getpid(), e.d.file)})
	diffs := make([]string, 23)
	for i := range diffs {
		diffs[i] = fmt.Sprintf("table inet bastiond: chain input: a rule was added at position %d", i+1)
	}
	e.d.auditDrift(diffs[:2])
	e.expect(t, audit.Event{Event: audit.DriftRepaired, Actor: audit.ActorDaemon, Count: 2,
		Detail: "someone changed bastiond's tables; restored them: " + diffs[0] + "; " + diffs[1]})
	e.d.auditDrift(diffs)
	e.expect(t, audit.Event{Event: audit.DriftRepaired, Actor: audit.ActorDaemon, Count: 23,
		Detail: "someone changed bastiond's tables; restored them: " + strings.Join(diffs[:20], "; ") + "; and 3 more"})
	e.d.auditStopped("", "on SIGTERM; 0 sessions were still open after the drain and are ended")
	e.expect(t, audit.Event{Event: audit.DaemonStopped, Actor: audit.ActorDaemon, Version: version.Version,
		Detail: "on SIGTERM; 0 sessions were still open after the drain and are ended"})
	e.verify(t)
}

// peek waits for n more lines of the trail and returns them, unread.
func (e *adminEnv) peek(t *testing.T, n int) [][]byte {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		data, err := os.ReadFile(e.trail)
		if err != nil {
			t.Fatal(err)
		}
		lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
		if len(lines) >= e.read+n || time.Now().After(deadline) {
			return lines[min(e.read, len(lines)):min(e.read+n, len(lines))]
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestUpgradeFailedEvents: an upgrade whose new binary does not start is
// upgrade_started then upgrade_failed, named for who asked.
func TestUpgradeFailedEvents(t *testing.T) {
	e := adminDaemon(t)
	d := e.d
	falseBin, err := exec.LookPath("false")
	if err != nil {
		t.Skip("no false(1) to stand for a new binary that cannot start")
	}
	d.exe = falseBin
	d.lns = &listeners{}
	adminLn, err := net.ListenUnix("unix", &net.UnixAddr{Name: filepath.Join(t.TempDir(), "a.sock"), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	defer adminLn.Close()
	metricsLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer metricsLn.Close()
	d.adminLn, d.metrics = adminLn, &metricsServer{ln: metricsLn}

	res := d.upgrade("alice", "bastionctl upgrade")
	if res.err == nil {
		t.Fatal("an upgrade to false(1) succeeded")
	}
	e.expect(t, audit.Event{Event: audit.UpgradeStarted, Actor: "alice", Version: version.Version,
		Detail: fmt.Sprintf("bastionctl upgrade: pid %d starts %s", os.Getpid(), falseBin)})
	lines := e.peek(t, 1)
	var got audit.Event
	if len(lines) != 1 || json.Unmarshal(lines[0], &got) != nil {
		t.Fatalf("no upgrade_failed line: %q", lines)
	}
	prefix := fmt.Sprintf("pid %d still serves: ", os.Getpid())
	if !strings.HasPrefix(got.Detail, prefix) || !strings.Contains(got.Detail, "the new process") {
		t.Errorf("upgrade_failed detail %q", got.Detail)
	}
	e.expect(t, audit.Event{Event: audit.UpgradeFailed, Actor: "alice", Version: version.Version, Reason: "upgrade_failed", Detail: got.Detail})
	e.verify(t)
}
