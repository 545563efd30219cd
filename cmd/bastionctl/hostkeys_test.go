//go:build linux

package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/sshca"
)

func hostKey(t *testing.T) ssh.Signer {
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

// adminServer serves the host key and CA endpoints on a socket and
// returns its path; scans reach an SSH server with key on IPv6 loopback,
// or IPv4 where there is none.
func adminServer(t *testing.T, key ssh.Signer) string {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		ln, err = net.Listen("tcp4", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	sshCfg := &ssh.ServerConfig{NoClientAuth: true}
	sshCfg.AddHostKey(key)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				ssh.NewServerConn(c, sshCfg)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close() })

	dir := t.TempDir()
	db, err := statedb.Open(filepath.Join(dir, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := hostkeys.New(hostkeys.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := sshca.Open(sshca.Config{Dir: dir, ServerName: "bastion.lab.example"})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "admin.sock")
	aln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{
		Logger: zaptest.NewLogger(t), Status: func() admin.Status { return admin.Status{} },
		HostKeys: store, SSHCA: ca,
		ScanDial: func(ctx context.Context, target, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(aln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

// run runs bastionctl with args against the socket and returns its
// standard output and error.
func run(t *testing.T, socket string, stdin string, args ...string) (string, string, error) {
	t.Helper()
	root := newRoot()
	var out, errOut bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errOut)
	root.SetIn(strings.NewReader(stdin))
	root.SetArgs(append([]string{"--socket", socket}, args...))
	err := root.Execute()
	return out.String(), errOut.String(), err
}

func TestHostKeysCommands(t *testing.T) {
	key := hostKey(t)
	fp := ssh.FingerprintSHA256(key.PublicKey())
	socket := adminServer(t, key)

	out, _, err := run(t, socket, "", "hostkeys", "list")
	if err != nil || out != "no host keys seen or pinned\n" {
		t.Fatalf("list, empty: %q, %v", out, err)
	}
	out, hint, err := run(t, socket, "", "hostkeys", "scan", "vm1")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "TARGET") || !strings.Contains(out, "vm1") || !strings.Contains(out, fp) || !strings.Contains(out, "pending") {
		t.Errorf("scan output:\n%s", out)
	}
	if !strings.Contains(hint, "1 key(s) pending") || !strings.Contains(hint, "bastionctl hostkeys pin vm1") {
		t.Errorf("scan hint: %q", hint)
	}
	out, _, err = run(t, socket, "", "hostkeys", "pin", "vm1")
	if err != nil || out != "vm1: pinned ssh-ed25519 "+fp+"\n" {
		t.Fatalf("pin: %q, %v", out, err)
	}

	// A key file, from standard input, with comments and blank lines.
	other := hostKey(t)
	file := "# vm2's keys\n\n" + string(ssh.MarshalAuthorizedKey(other.PublicKey()))
	out, _, err = run(t, socket, file, "hostkeys", "pin", "vm2", "--key-file", "-")
	if err != nil || !strings.Contains(out, "vm2: pinned ssh-ed25519 "+ssh.FingerprintSHA256(other.PublicKey())) {
		t.Fatalf("pin --key-file -: %q, %v", out, err)
	}
	bad := filepath.Join(t.TempDir(), "keys.pub")
	os.WriteFile(bad, []byte(string(ssh.MarshalAuthorizedKey(other.PublicKey()))+"ssh-ed25519 garbage\n"), 0o600)
	if _, _, err := run(t, socket, "", "hostkeys", "pin", "vm2", "--key-file", bad); err == nil || !strings.Contains(err.Error(), bad+":2: hostkeys: not a public key line") {
		t.Errorf("bad key file: %v", err)
	}
	if _, _, err := run(t, socket, "", "hostkeys", "pin", "vm2", fp, "--key-file", bad); err == nil || !strings.Contains(err.Error(), "only one of them") {
		t.Errorf("fingerprint and --key-file: %v", err)
	}

	out, _, err = run(t, socket, "", "hostkeys", "list", "--json")
	if err != nil || !strings.Contains(out, `"state": "pinned"`) || !strings.Contains(out, `"target": "vm2"`) {
		t.Errorf("list --json: %s, %v", out, err)
	}
	out, _, err = run(t, socket, "", "hostkeys", "list", "vm1")
	if err != nil || !strings.Contains(out, "by ") || strings.Contains(out, "vm2") {
		t.Errorf("list vm1:\n%s, %v", out, err)
	}
	out, _, err = run(t, socket, "", "hostkeys", "forget", "vm1", fp)
	if err != nil || out != "vm1: forgot ssh-ed25519 "+fp+" (pinned)\n" {
		t.Errorf("forget: %q, %v", out, err)
	}
	if _, _, err := run(t, socket, "", "hostkeys", "forget", "vm1"); err == nil || !strings.Contains(err.Error(), "vm1 has no keys") {
		t.Errorf("forget with nothing left: %v", err)
	}
	out, _, err = run(t, socket, "", "hostkeys", "scan", "vm1", "--pin")
	if err != nil || !strings.Contains(out, "pinned") {
		t.Errorf("scan --pin:\n%s, %v", out, err)
	}
}

func TestCAShow(t *testing.T) {
	out, hint, err := run(t, adminServer(t, hostKey(t)), "", "ca", "show")
	if err != nil {
		t.Fatal(err)
	}
	if _, comment, _, _, err := ssh.ParseAuthorizedKey([]byte(out)); err != nil || comment != "bastiond-ca@bastion.lab.example" || strings.Count(out, "\n") != 1 {
		t.Errorf("ca show printed %q (%v)", out, err)
	}
	if !strings.Contains(hint, "TrustedUserCAKeys") {
		t.Errorf("ca show hint: %q", hint)
	}
}
