package hostkeys

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/statedb"
)

// networks are the loopbacks every network test runs on.
var networks = []struct{ name, network, addr string }{
	{"IPv4", "tcp4", "127.0.0.1:0"},
	{"IPv6", "tcp6", "[::1]:0"},
}

func newSigner(t testing.TB, kind string) ssh.Signer {
	t.Helper()
	var key any
	var err error
	switch kind {
	case "ed25519":
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case "ecdsa":
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "rsa":
		key, err = rsa.GenerateKey(rand.Reader, 2048)
	}
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// startSSH runs an SSH server with the given host keys on a loopback
// address of network, letting in any client without authentication, and
// returns its address. It skips the test when network has no loopback.
func startSSH(t *testing.T, network, addr string, hostKeys ...ssh.Signer) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback on this host: %v", network, err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	for _, k := range hostKeys {
		cfg.AddHostKey(k)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				_, chans, reqs, err := ssh.NewServerConn(c, cfg)
				if err != nil {
					return
				}
				go ssh.DiscardRequests(reqs)
				for ch := range chans {
					ch.Reject(ssh.Prohibited, "test server")
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func dialer(addr string) func(context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// connect makes a full SSH connection to addr checked by the store's
// Verifier for target.
func connect(t *testing.T, s *Store, target, addr string) error {
	t.Helper()
	cb, algs := s.Verifier(target)
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: "lab", HostKeyCallback: cb, HostKeyAlgorithms: algs, Timeout: 5 * time.Second})
	if err == nil {
		c.Close()
	}
	return err
}

func openDB(t *testing.T, path string) *statedb.Handle {
	t.Helper()
	db, err := statedb.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func newStore(t *testing.T) *Store {
	t.Helper()
	db := openDB(t, filepath.Join(t.TempDir(), "state.db"))
	t.Cleanup(func() { db.Close() })
	s, err := New(Config{DB: db, ScanTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func fp(s ssh.Signer) string { return ssh.FingerprintSHA256(s.PublicKey()) }

func fingerprints(keys []Key) []string {
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = k.Fingerprint
	}
	slices.Sort(out)
	return out
}

func sorted(s ...string) []string { return slices.Sorted(slices.Values(s)) }

var (
	sharedOnce    sync.Once
	sharedSigners map[string]ssh.Signer
)

// signers are host keys shared by the tests: RSA keys take a while to make.
func signers(t *testing.T) map[string]ssh.Signer {
	sharedOnce.Do(func() {
		sharedSigners = map[string]ssh.Signer{}
		for _, k := range []string{"ed25519", "ecdsa", "rsa"} {
			sharedSigners[k] = newSigner(t, k)
		}
	})
	return sharedSigners
}

func TestScan(t *testing.T) {
	keys := signers(t)
	for _, n := range networks {
		t.Run(n.name, func(t *testing.T) {
			s := newStore(t)
			addr := startSSH(t, n.network, n.addr, keys["ed25519"], keys["ecdsa"], keys["rsa"])
			got, err := s.ScanSSH(context.Background(), "vm1", dialer(addr))
			if err != nil {
				t.Fatal(err)
			}
			if want := sorted(fp(keys["ed25519"]), fp(keys["ecdsa"]), fp(keys["rsa"])); !slices.Equal(fingerprints(got), want) {
				t.Fatalf("scan found %v, want %v", fingerprints(got), want)
			}
			for _, k := range got {
				if k.State != StatePending || k.SeenAt != addr || k.Kind != KindSSH || k.Target != "vm1" || k.FirstSeen.IsZero() {
					t.Errorf("scanned key %+v", k)
				}
			}
			algs := []string{got[0].Algorithm, got[1].Algorithm, got[2].Algorithm}
			if want := sorted(ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoRSA); !slices.Equal(sorted(algs...), want) {
				t.Errorf("algorithms %v, want %v", algs, want)
			}

			// Pinned keys stay pinned when scanned again; nothing is duplicated.
			if _, err := s.Pin("vm1", []string{fp(keys["ed25519"])}, "root"); err != nil {
				t.Fatal(err)
			}
			if _, err := s.ScanSSH(context.Background(), "vm1", dialer(addr)); err != nil {
				t.Fatal(err)
			}
			list, _ := s.List("vm1")
			if len(list) != 3 || list[0].Fingerprint != fp(keys["ed25519"]) || list[0].State != StatePinned || list[1].State != StatePending {
				t.Errorf("after a second scan: %+v", list)
			}
		})
	}
}

func TestScanOneKey(t *testing.T) {
	s := newStore(t)
	ed := signers(t)["ed25519"]
	got, err := s.ScanSSH(context.Background(), "vm1", dialer(startSSH(t, "tcp4", "127.0.0.1:0", ed)))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Fingerprint != fp(ed) {
		t.Fatalf("got %+v", got)
	}
}

func TestScanBounded(t *testing.T) {
	for _, n := range networks {
		t.Run(n.name, func(t *testing.T) {
			// A server that accepts and never says a word.
			ln, err := net.Listen(n.network, n.addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", n.network, err)
			}
			defer ln.Close()
			var conns []net.Conn
			var mu sync.Mutex
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					mu.Lock()
					conns = append(conns, c)
					mu.Unlock()
				}
			}()
			defer func() {
				mu.Lock()
				for _, c := range conns {
					c.Close()
				}
				mu.Unlock()
			}()
			s := newStore(t)
			s.scanTimeout = 200 * time.Millisecond
			_, err = s.ScanSSH(context.Background(), "vm1", dialer(ln.Addr().String()))
			if err == nil || !strings.Contains(err.Error(), "no ssh-ed25519 host key within 200ms") {
				t.Fatalf("scan of a silent server: %v", err)
			}
			// A cancelled context stops the scan at once.
			ctx, cancel := context.WithCancel(context.Background())
			s.scanTimeout = time.Minute
			time.AfterFunc(100*time.Millisecond, cancel)
			start := time.Now()
			if _, err := s.ScanSSH(ctx, "vm1", dialer(ln.Addr().String())); !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled scan: %v", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("cancelled scan took %s", d)
			}
		})
	}
}

func TestScanUnreachable(t *testing.T) {
	s := newStore(t)
	dial := func(context.Context) (net.Conn, error) { return nil, errors.New("refused by the dial guard") }
	if _, err := s.ScanSSH(context.Background(), "vm1", dial); err == nil || !strings.Contains(err.Error(), "hostkeys: scan vm1: refused by the dial guard") {
		t.Fatalf("got %v", err)
	}
	if list, _ := s.List(""); len(list) != 0 {
		t.Errorf("a failed scan stored %+v", list)
	}
}

func TestVerifier(t *testing.T) {
	keys := signers(t)
	for _, n := range networks {
		t.Run(n.name, func(t *testing.T) {
			s := newStore(t)
			addr := startSSH(t, n.network, n.addr, keys["ed25519"], keys["rsa"])

			// Nothing pinned: refused, and the key seen awaits an admin.
			if _, algs := s.Verifier("vm1"); algs != nil {
				t.Errorf("algorithms with nothing pinned: %v", algs)
			}
			err := connect(t, s, "vm1", addr)
			var cerr *CheckError
			if !errors.Is(err, ErrNotPinned) || !errors.As(err, &cerr) {
				t.Fatalf("first connection: %v", err)
			}
			if msg := err.Error(); !strings.Contains(msg, "vm1 has no host key pinned") || !strings.Contains(msg, "`bastionctl hostkeys pin vm1`") {
				t.Errorf("message: %s", msg)
			}
			pending, _ := s.List("vm1")
			if len(pending) != 1 || pending[0].State != StatePending || pending[0].SeenAt != addr || pending[0].Fingerprint != cerr.Seen {
				t.Fatalf("pending after first connection: %+v", pending)
			}

			// Pinned: accepted.
			if _, err := s.Pin("vm1", nil, "alice"); err != nil {
				t.Fatal(err)
			}
			if _, algs := s.Verifier("vm1"); len(algs) == 0 {
				t.Error("no algorithms with a pinned key")
			}
			if err := connect(t, s, "vm1", addr); err != nil {
				t.Fatalf("pinned key refused: %v", err)
			}

			// Only the RSA key pinned: the algorithms make the server
			// present it, though it prefers ed25519.
			s.Forget("vm1", "")
			if _, err := s.PinKey("vm1", string(ssh.MarshalAuthorizedKey(keys["rsa"].PublicKey())), "alice"); err != nil {
				t.Fatal(err)
			}
			if _, algs := s.Verifier("vm1"); !slices.Equal(algs[:3], []string{ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoED25519}) {
				t.Errorf("algorithms for an RSA key: %v", algs)
			}
			if err := connect(t, s, "vm1", addr); err != nil {
				t.Fatalf("pinned RSA key refused: %v", err)
			}

			// Another machine answering for vm1, without the pinned
			// algorithm: refused as a mismatch, naming both keys.
			impostor := newSigner(t, "ed25519")
			other := startSSH(t, n.network, n.addr, impostor)
			err = connect(t, s, "vm1", other)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("impostor: %v", err)
			}
			msg := err.Error()
			for _, want := range []string{"host key mismatch", "vm1", fp(keys["rsa"]), fp(impostor), "bastionctl hostkeys pin vm1 " + fp(impostor)} {
				if !strings.Contains(msg, want) {
					t.Errorf("mismatch message lacks %q: %s", want, msg)
				}
			}
			list, _ := s.List("vm1")
			if got := fingerprints(list); !slices.Equal(got, sorted(fp(keys["rsa"]), fp(impostor))) || list[0].State != StatePinned || list[1].State != StatePending {
				t.Errorf("after the impostor: %+v", list)
			}
			// Another target's pin does not help vm2.
			if err := connect(t, s, "vm2", addr); !errors.Is(err, ErrNotPinned) {
				t.Errorf("vm2 with vm1's key: %v", err)
			}
		})
	}
}

func TestPinForgetList(t *testing.T) {
	s := newStore(t)
	keys := signers(t)
	ed, ec := keys["ed25519"], keys["ecdsa"]
	if _, err := s.Pin("vm1", nil, "root"); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "bastionctl hostkeys scan vm1") {
		t.Errorf("pin with nothing pending: %v", err)
	}
	if _, err := s.record(KindSSH, "vm1", ed.PublicKey().Type(), ed.PublicKey().Marshal(), "198.18.1.11:22"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.record(KindSSH, "vm1", ec.PublicKey().Type(), ec.PublicKey().Marshal(), "[2001:db8:b5:1::11]:22"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pin("vm1", []string{"SHA256:nope"}, "root"); !errors.Is(err, ErrNoKey) {
		t.Errorf("pin of an unknown fingerprint: %v", err)
	}
	// Without its "SHA256:" prefix, as some tools print it.
	pinned, err := s.Pin("vm1", []string{strings.TrimPrefix(fp(ec), "SHA256:")}, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(pinned) != 1 || pinned[0].PinnedBy != "alice" || pinned[0].Pinned.IsZero() || pinned[0].SeenAt != "[2001:db8:b5:1::11]:22" {
		t.Errorf("pinned %+v", pinned)
	}
	// Pinning again changes nothing, not even who pinned it.
	again, err := s.Pin("vm1", []string{fp(ec)}, "bob")
	if err != nil || again[0].PinnedBy != "alice" {
		t.Errorf("pin again: %+v, %v", again, err)
	}
	if _, err := s.PinKey("vm2", "vm2.lab,198.18.1.12 "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed.PublicKey()))), "root"); err != nil {
		t.Fatal(err)
	}
	all, err := s.List("")
	if err != nil {
		t.Fatal(err)
	}
	var summary []string
	for _, k := range all {
		summary = append(summary, k.Target+" "+k.State+" "+k.Algorithm)
	}
	want := []string{"vm1 pinned ecdsa-sha2-nistp256", "vm1 pending ssh-ed25519", "vm2 pinned ssh-ed25519"}
	if !slices.Equal(summary, want) {
		t.Errorf("List(\"\") = %q, want %q", summary, want)
	}

	if _, err := s.Forget("vm1", "SHA256:nope"); !errors.Is(err, ErrNoKey) {
		t.Errorf("forget an unknown key: %v", err)
	}
	gone, err := s.Forget("vm1", fp(ed))
	if err != nil || len(gone) != 1 || gone[0].Fingerprint != fp(ed) {
		t.Fatalf("forget one: %+v, %v", gone, err)
	}
	gone, err = s.Forget("vm1", "")
	if err != nil || len(gone) != 1 || gone[0].Fingerprint != fp(ec) {
		t.Fatalf("forget all: %+v, %v", gone, err)
	}
	if _, err := s.Forget("vm1", ""); !errors.Is(err, ErrNoKey) {
		t.Errorf("forget on a target with no keys: %v", err)
	}
	if list, _ := s.List("vm2"); len(list) != 1 {
		t.Errorf("forgetting vm1 touched vm2: %+v", list)
	}
	for _, bad := range []string{"", "vm\x001"} {
		if _, err := s.Forget(bad, ""); err == nil {
			t.Errorf("Forget(%q) accepted", bad)
		}
	}
}

// vm1 must never see vm10's keys, nor the other way round.
func TestTargetPrefix(t *testing.T) {
	s := newStore(t)
	ed := signers(t)["ed25519"]
	if _, err := s.PinKey("vm10", string(ssh.MarshalAuthorizedKey(ed.PublicKey())), "root"); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.List("vm1"); len(list) != 0 {
		t.Errorf("vm1 lists vm10's keys: %+v", list)
	}
	cb, algs := s.Verifier("vm1")
	if algs != nil || !errors.Is(cb("vm1", nil, ed.PublicKey()), ErrNotPinned) {
		t.Error("vm10's pin counts for vm1")
	}
}

func TestPinKeyLines(t *testing.T) {
	ed := signers(t)["ed25519"]
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(ed.PublicKey())))
	cert := &ssh.Certificate{Key: ed.PublicKey(), CertType: ssh.HostCert, ValidBefore: ssh.CertTimeInfinity}
	if err := cert.SignCert(rand.Reader, ed); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, line, err string
	}{
		{"pub file", line + " root@vm1", ""},
		{"authorized_keys with options", `from="10.0.0.1",no-pty ` + line, ""},
		{"known_hosts", "vm1,198.18.1.11 " + line, ""},
		{"hashed known_hosts", "|1|c2FsdHNhbHRzYWx0c2FsdHNhbHQ=|aGFzaGhhc2hoYXNoaGFzaGhhc2g= " + line, ""},
		{"known_hosts IPv6 with port", "[2001:db8:b5:1::11]:2222 " + line, ""},
		{"surrounding blanks", "\t " + line + " \n", ""},
		{"empty", "  ", "the line is empty"},
		{"comment", "# " + line, "a comment"},
		{"two lines", line + "\n" + line, "one key per line"},
		{"CA line", "@cert-authority *.lab " + line, "@cert-authority line"},
		{"revoked line", "@revoked * " + line, "@revoked line"},
		{"certificate", string(ssh.MarshalAuthorizedKey(cert)), "a certificate"},
		{"garbage", "ssh-ed25519 bm90IGEga2V5", "not a public key line"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			k, err := s.PinKey("vm1", tt.line, "root")
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Fingerprint != fp(ed) || k.State != StatePinned || k.PinnedBy != "root" || k.Algorithm != ssh.KeyAlgoED25519 {
				t.Errorf("pinned %+v", k)
			}
			if err := s.check(KindSSH, "vm1", ed.PublicKey().Type(), ed.PublicKey().Marshal(), ""); err != nil {
				t.Errorf("key pinned from a line refused: %v", err)
			}
		})
	}
}

func TestPinKeyKeepsFirstSeen(t *testing.T) {
	s := newStore(t)
	ed := signers(t)["ed25519"]
	seen, err := s.record(KindSSH, "vm1", ed.PublicKey().Type(), ed.PublicKey().Marshal(), "198.18.1.11:22")
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return seen.FirstSeen.Add(time.Hour) }
	k, err := s.PinKey("vm1", string(ssh.MarshalAuthorizedKey(ed.PublicKey())), "root")
	if err != nil {
		t.Fatal(err)
	}
	if !k.FirstSeen.Equal(seen.FirstSeen) || k.SeenAt != "198.18.1.11:22" || !k.Pinned.After(k.FirstSeen) {
		t.Errorf("pinning a pending key from a file lost its history: %+v", k)
	}
}

func TestPendingBounded(t *testing.T) {
	s := newStore(t)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var first string
	for i := range maxPending + 5 {
		s.now = func() time.Time { return base.Add(time.Duration(i) * time.Second) }
		k, err := s.record(KindSSH, "vm1", "ssh-ed25519", []byte{byte(i)}, "")
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			first = k.Fingerprint
		}
	}
	list, _ := s.List("vm1")
	if len(list) != maxPending {
		t.Fatalf("%d pending keys kept, want %d", len(list), maxPending)
	}
	if slices.ContainsFunc(list, func(k Key) bool { return k.Fingerprint == first }) {
		t.Error("the oldest pending key was kept")
	}
}

func TestPersistence(t *testing.T) {
	keys := signers(t)
	path := filepath.Join(t.TempDir(), "state.db")
	db := openDB(t, path)
	s, err := New(Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	addr := startSSH(t, "tcp6", "[::1]:0", keys["ed25519"])
	if _, err := s.ScanSSH(context.Background(), "vm1", dialer(addr)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Pin("vm1", nil, "root"); err != nil {
		t.Fatal(err)
	}
	before, _ := s.List("")
	db.Close()

	db = openDB(t, path)
	defer db.Close()
	s, err = New(Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := s.List("")
	if len(after) != 1 || after[0].Fingerprint != before[0].Fingerprint || after[0].State != StatePinned ||
		!after[0].Pinned.Equal(before[0].Pinned) || after[0].SeenAt != addr {
		t.Fatalf("after reopening: %+v, before: %+v", after, before)
	}
	if err := connect(t, s, "vm1", addr); err != nil {
		t.Fatalf("pinned key refused after reopening: %v", err)
	}
}

func TestFingerprintMatchesOpenSSH(t *testing.T) {
	pub := signers(t)["rsa"].PublicKey()
	if got, want := Fingerprint(pub.Marshal()), ssh.FingerprintSHA256(pub); got != want {
		t.Errorf("Fingerprint = %s, ssh.FingerprintSHA256 = %s", got, want)
	}
}

// FuzzParseSSHKey checks that no line makes ParseSSHKey panic and that a key
// it accepts reads back the same from its authorized_keys form.
func FuzzParseSSHKey(f *testing.F) {
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newSigner(f, "ed25519").PublicKey())))
	f.Add(line + " root@vm1")
	f.Add("vm1,198.18.1.11 " + line)
	f.Add("@revoked * " + line)
	f.Add(`command="x" ` + line)
	f.Add("ssh-rsa AAAA")
	f.Fuzz(func(t *testing.T, line string) {
		k, err := ParseSSHKey(line)
		if err != nil {
			return
		}
		again, err := ParseSSHKey(string(ssh.MarshalAuthorizedKey(k)))
		if err != nil || string(again.Marshal()) != string(k.Marshal()) {
			t.Fatalf("round trip of %q: %v", line, err)
		}
	})
}
