package adminapi

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/api/adminclient"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/sshca"
)

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

// sshServer answers SSH handshakes with hostKey on a loopback address of
// network and returns the address; it skips when network has no loopback.
func sshServer(t *testing.T, network, addr string, hostKey ssh.Signer) string {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	cfg := &ssh.ServerConfig{NoClientAuth: true}
	cfg.AddHostKey(hostKey)
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
				ssh.NewServerConn(c, cfg) // the scan ends it after the host key
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func newHostKeyStore(t *testing.T) *hostkeys.Store {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	s, err := hostkeys.New(hostkeys.Config{DB: db, ScanTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// statusOf sends a raw request to the admin socket sock and returns the
// HTTP status.
func statusOf(t *testing.T, sock, method, path, body string) int {
	t.Helper()
	req, err := http.NewRequest(method, "http://bastiond"+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func me(t *testing.T) string {
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func TestHostKeysAPI(t *testing.T) {
	for _, n := range []struct{ name, network, addr string }{{"IPv4", "tcp4", "127.0.0.1:0"}, {"IPv6", "tcp6", "[::1]:0"}} {
		t.Run(n.name, func(t *testing.T) {
			key1, key2, rekeyed := newHostKey(t), newHostKey(t), newHostKey(t)
			var mu sync.Mutex
			addrs := map[string]string{
				"vm1": sshServer(t, n.network, n.addr, key1),
				"vm2": sshServer(t, n.network, n.addr, key2),
			}
			dial := func(ctx context.Context, target, _ string) (net.Conn, error) {
				mu.Lock()
				addr, ok := addrs[target]
				mu.Unlock()
				if !ok {
					return nil, errors.New("refused by the dial guard: not an inventory target")
				}
				var d net.Dialer
				return d.DialContext(ctx, "tcp", addr)
			}
			store := newHostKeyStore(t)
			path := startServer(t, "", func(c *Config) { c.HostKeys, c.ScanDial = store, dial })
			c := adminclient.NewClient(path)
			ctx := context.Background()

			if keys, err := c.HostKeys(ctx, ""); err != nil || keys == nil || len(keys) != 0 {
				t.Fatalf("empty list: %v, %v", keys, err)
			}

			// scan, then pin what is pending.
			keys, err := c.ScanHostKeys(ctx, "vm1", ScanRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0].Fingerprint != ssh.FingerprintSHA256(key1.PublicKey()) || keys[0].State != hostkeys.StatePending || keys[0].SeenAt != addrs["vm1"] {
				t.Fatalf("scan vm1: %+v", keys)
			}
			keys, err = c.PinHostKeys(ctx, "vm1", PinRequest{})
			if err != nil {
				t.Fatal(err)
			}
			if len(keys) != 1 || keys[0].State != hostkeys.StatePinned || keys[0].PinnedBy != me(t) {
				t.Fatalf("pin vm1: %+v", keys)
			}

			// scan --pin.
			keys, err = c.ScanHostKeys(ctx, "vm2", ScanRequest{Pin: true})
			if err != nil || len(keys) != 1 || keys[0].State != hostkeys.StatePinned {
				t.Fatalf("scan --pin vm2: %+v, %v", keys, err)
			}
			// vm2 re-keyed: scan --pin leaves the new key pending.
			mu.Lock()
			addrs["vm2"] = sshServer(t, n.network, n.addr, rekeyed)
			mu.Unlock()
			newFP := ssh.FingerprintSHA256(rekeyed.PublicKey())
			if _, err := c.ScanHostKeys(ctx, "vm2", ScanRequest{Pin: true}); err == nil || !strings.Contains(err.Error(), "vm2 already has pinned keys and now also presents "+newFP) {
				t.Fatalf("scan --pin of a re-keyed target: %v", err)
			}
			if got := statusOf(t, path, "POST", "/v1/hostkeys/vm2/scan", `{"pin":true}`); got != http.StatusConflict {
				t.Errorf("status %d, want 409", got)
			}
			list, _ := c.HostKeys(ctx, "vm2")
			if len(list) != 2 || list[0].State != hostkeys.StatePinned || list[1].Fingerprint != newFP || list[1].State != hostkeys.StatePending {
				t.Fatalf("vm2 after the re-key: %+v", list)
			}
			// The admin checked it: pin it by fingerprint, forget the old one.
			if keys, err := c.PinHostKeys(ctx, "vm2", PinRequest{Fingerprints: []string{newFP}}); err != nil || len(keys) != 1 || keys[0].Fingerprint != newFP {
				t.Fatalf("pin by fingerprint: %+v, %v", keys, err)
			}
			old := ssh.FingerprintSHA256(key2.PublicKey())
			if keys, err := c.ForgetHostKeys(ctx, "vm2", old); err != nil || len(keys) != 1 || keys[0].Fingerprint != old {
				t.Fatalf("forget: %+v, %v", keys, err)
			}

			// Keys from a file: every line checked before any is pinned.
			line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newHostKey(t).PublicKey())))
			if _, err := c.PinHostKeys(ctx, "vm3", PinRequest{Keys: []string{line, "not a key"}}); err == nil || !strings.Contains(err.Error(), "key 2: hostkeys: not a public key line") {
				t.Fatalf("bad key line: %v", err)
			}
			if list, _ := c.HostKeys(ctx, "vm3"); len(list) != 0 {
				t.Fatalf("a refused request pinned %+v", list)
			}
			line2 := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(newHostKey(t).PublicKey())))
			keys, err = c.PinHostKeys(ctx, "vm3", PinRequest{Keys: []string{line + " root@vm3", "vm3.lab " + line2, "198.18.1.13 " + line}})
			if err != nil || len(keys) != 2 || keys[0].State != hostkeys.StatePinned || keys[1].State != hostkeys.StatePinned {
				t.Fatalf("pin from lines: %+v, %v", keys, err)
			}
			if _, err := c.PinHostKeys(ctx, "vm3", PinRequest{Keys: []string{line}, Fingerprints: []string{"SHA256:x"}}); err == nil || !strings.Contains(err.Error(), "only one of them") {
				t.Errorf("fingerprints and keys: %v", err)
			}

			all, err := c.HostKeys(ctx, "")
			if err != nil || len(all) != 4 || all[0].Target != "vm1" || all[1].Target != "vm2" || all[2].Target != "vm3" || all[3].Target != "vm3" {
				t.Fatalf("list all: %+v, %v", all, err)
			}

			// Errors: unknown key 404, unreachable target 502.
			if _, err := c.ForgetHostKeys(ctx, "vm1", "SHA256:nope"); err == nil || !strings.Contains(err.Error(), "vm1 has no key SHA256:nope") {
				t.Errorf("forget unknown: %v", err)
			}
			if got := statusOf(t, path, "POST", "/v1/hostkeys/vm1/forget", `{"fingerprint":"SHA256:nope"}`); got != http.StatusNotFound {
				t.Errorf("forget unknown: status %d, want 404", got)
			}
			if got := statusOf(t, path, "POST", "/v1/hostkeys/vm9/pin", `{}`); got != http.StatusNotFound {
				t.Errorf("pin with nothing pending: status %d, want 404", got)
			}
			if _, err := c.ScanHostKeys(ctx, "vm9", ScanRequest{}); err == nil || !strings.Contains(err.Error(), "refused by the dial guard") {
				t.Errorf("scan of an unreachable target: %v", err)
			}
			if got := statusOf(t, path, "POST", "/v1/hostkeys/vm9/scan", `{}`); got != http.StatusBadGateway {
				t.Errorf("scan of an unreachable target: status %d, want 502", got)
			}
			if got := statusOf(t, path, "POST", "/v1/hostkeys/vm1/pin", `{"fingerprint":"typo"}`); got != http.StatusBadRequest {
				t.Errorf("unknown field: status %d, want 400", got)
			}

			if keys, err := c.ForgetHostKeys(ctx, "vm3", ""); err != nil || len(keys) != 2 {
				t.Errorf("forget all of vm3: %+v, %v", keys, err)
			}
		})
	}
}

func TestHostKeysAPIWithoutScanner(t *testing.T) {
	path := startServer(t, "", func(c *Config) { c.HostKeys = newHostKeyStore(t) })
	c := adminclient.NewClient(path)
	_, err := c.ScanHostKeys(context.Background(), "vm1", ScanRequest{})
	if err == nil || !strings.Contains(err.Error(), "cannot scan host keys") || !strings.Contains(err.Error(), "bastionctl hostkeys pin vm1 --key-file") {
		t.Fatalf("scan without a dialer: %v", err)
	}
	if got := statusOf(t, path, "POST", "/v1/hostkeys/vm1/scan", `{}`); got != http.StatusServiceUnavailable {
		t.Errorf("status %d, want 503", got)
	}
}

// unknownTargets refuses every target, as the daemon does for names not in
// the inventory.
type unknownTargets struct{ HostKeys }

func (unknownTargets) Scan(_ context.Context, target string, _ []string, _ func(context.Context, string) (net.Conn, error)) ([]hostkeys.Key, error) {
	return nil, fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
}

func (unknownTargets) PinKey(target, _, _ string) (hostkeys.Key, error) {
	return hostkeys.Key{}, fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
}

func TestHostKeysAPIUnknownTarget(t *testing.T) {
	h := unknownTargets{newHostKeyStore(t)}
	path := startServer(t, "", func(c *Config) {
		c.HostKeys = h
		c.ScanDial = func(context.Context, string, string) (net.Conn, error) { return nil, errors.New("not called") }
	})
	line := string(ssh.MarshalAuthorizedKey(newHostKey(t).PublicKey()))
	if got := statusOf(t, path, "POST", "/v1/hostkeys/vm9/pin", `{"keys":[`+strconv.Quote(line)+`]}`); got != http.StatusNotFound {
		t.Errorf("pin a key for a target not in the inventory: status %d, want 404", got)
	}
	if got := statusOf(t, path, "POST", "/v1/hostkeys/vm9/scan", `{}`); got != http.StatusNotFound {
		t.Errorf("scan a target not in the inventory: status %d, want 404", got)
	}
}

func TestCAAPI(t *testing.T) {
	ca, err := sshca.Open(sshca.Config{Dir: t.TempDir(), ServerName: "bastion.lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	c := adminclient.NewClient(startServer(t, "", func(c *Config) { c.SSHCA = ca }))
	info, err := c.CA(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.PublicKey != ca.PublicKey() || !strings.HasSuffix(info.PublicKey, " bastiond-ca@bastion.lab.example") {
		t.Errorf("CA = %q, want %q", info.PublicKey, ca.PublicKey())
	}

	// Without them configured, the endpoints do not exist.
	bare := adminclient.NewClient(startServer(t, ""))
	if _, err := bare.CA(context.Background()); err == nil || !strings.Contains(err.Error(), "no such admin endpoint: GET /v1/ca") {
		t.Errorf("CA without an SSHCA: %v", err)
	}
	if _, err := bare.HostKeys(context.Background(), ""); err == nil || !strings.Contains(err.Error(), "no such admin endpoint") {
		t.Errorf("host keys without a store: %v", err)
	}
}
