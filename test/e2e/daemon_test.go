package e2e

import (
	"context"
	"crypto/tls"
	"errors"
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

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/api/tunnelwire"
)

// TestLifecycleSocketActivated drives the daemon as systemd would through
// one life: on-demand start, READY, watchdog, status, a reload that fails and
// one that works, refusal on the admin socket, and a drain on SIGTERM.
func TestLifecycleSocketActivated(t *testing.T) {
	d := StartDaemon(t, ViaTool, "")

	t.Run("serves TLS on IPv4 and IPv6", func(t *testing.T) {
		for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
			resp, err := HTTPSGet(t, LabValue(t, key), "/")
			if err != nil {
				t.Fatalf("%s: %v", key, err)
			}
			if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") == "" {
				t.Errorf("%s: status %d, headers %v", key, resp.StatusCode, resp.Header)
			}
		}
	})

	t.Run("watchdog keepalives", func(t *testing.T) {
		d.WaitNotify("WATCHDOG=1", 2*time.Second)
	})

	t.Run("status shows the inherited listener", func(t *testing.T) {
		out, err := d.Ctl(nil, "status")
		if err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		for _, want := range []string{"listener  tcp [::]:443 (from systemd)", "listener  udp [::]:443\n", "config    " + d.cfgPath, "sessions  0"} {
			if !strings.Contains(out, want) {
				t.Errorf("status lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("broken reload keeps the old config", func(t *testing.T) {
		before, _ := d.Ctl(nil, "status", "--json")
		good, _ := os.ReadFile(d.cfgPath)
		d.WriteConfig(strings.Replace(string(good), "server_name:", "sever_name:", 1))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		n := d.WaitNotify("READY=1", 5*time.Second)
		if !strings.Contains(n, "STATUS=reload failed, running previous configuration") {
			t.Errorf("READY after failed reload says %q", n)
		}
		d.WaitLog(`bastiond.yaml:2: listen.sever_name: unknown key (did you mean \"server_name\"?)`, 5*time.Second)
		out, err := d.Ctl(nil, "status")
		if err != nil || !strings.Contains(out, "last reload  FAILED") {
			t.Errorf("status after failed reload: %v\n%s", err, out)
		}
		if after, _ := d.Ctl(nil, "status", "--json"); digestOf(after) != digestOf(before) {
			t.Errorf("config digest changed after a failed reload")
		}
		if resp, err := HTTPSGet(t, LabValue(t, "BASTION_PUB4"), "/"); err != nil || resp.StatusCode != 200 {
			t.Errorf("not serving after a failed reload: %v", err)
		}

		// Fixing the file and reloading again applies it.
		d.WriteConfig(string(good) + "limits: {drain_grace: 7s}\n")
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("RELOADING=1", 5*time.Second)
		if n := d.WaitNotify("READY=1", 5*time.Second); strings.Contains(n, "failed") {
			t.Errorf("good reload reported %q", n)
		}
		if after, _ := d.Ctl(nil, "status", "--json"); digestOf(after) == digestOf(before) {
			t.Errorf("config digest unchanged after a good reload")
		}
	})

	t.Run("SIGTERM drains and exits 0", func(t *testing.T) {
		d.Signal(syscall.SIGTERM)
		d.WaitNotify("STOPPING=1", 5*time.Second)
		if err := d.Wait(15 * time.Second); err != nil {
			t.Fatalf("exit: %v\n%s", err, d.Log.String())
		}
		if _, err := os.Stat(d.admin); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("admin socket left behind: %v", err)
		}
	})
}

func digestOf(statusJSON string) string {
	_, rest, _ := strings.Cut(statusJSON, `"config_digest": "`)
	digest, _, _ := strings.Cut(rest, `"`)
	return digest
}

// TestSocketActivationBothSockets passes TCP and UDP 443 as bastiond.socket
// does, checks that QUIC is served on the inherited UDP socket, and that a
// drain waits for an open connection until a second signal ends it.
func TestSocketActivationBothSockets(t *testing.T) {
	d := StartDaemon(t, ViaFDs, "limits: {drain_grace: 5m}\n")

	out, err := d.Ctl(nil, "status")
	if err != nil || !strings.Contains(out, "tcp [::]:443 (from systemd)") || !strings.Contains(out, "udp [::]:443 (from systemd)") {
		t.Fatalf("status: %v\n%s", err, out)
	}

	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		t.Run("QUIC answers the tunnel ALPN over "+key, func(t *testing.T) {
			pc := ClientUDP(t)
			defer pc.Close()
			raddr, _ := net.ResolveUDPAddr("udp", net.JoinHostPort(LabValue(t, key), "443"))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			tr := &quic.Transport{Conn: pc}
			defer tr.Close()
			conn, err := tr.Dial(ctx, raddr, &tls.Config{ServerName: ServerName, InsecureSkipVerify: true, NextProtos: []string{"bastion-tunnel/1"}}, nil)
			if err != nil {
				t.Fatalf("QUIC handshake: %v", err)
			}
			// The tunnel answers on the socket systemd passed: a request
			// with a token that is not valid is refused in words.
			str, err := conn.OpenStreamSync(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req, _ := tunnelwire.Request{Token: "bst_0000000000000000_notvalid", Target: "vm1", Port: 22}.Marshal()
			str.Write(req)
			resp, err := tunnelwire.ReadResponse(str)
			if err != nil || resp.Status != tunnelwire.StatusUnauthorized {
				t.Errorf("tunnel answer: %+v %v, want unauthorized", resp, err)
			}
			conn.CloseWithError(0, "")
		})
	}

	t.Run("drain waits for open connections; a second signal ends it", func(t *testing.T) {
		// A connection in the middle of a request keeps the drain waiting.
		var c net.Conn
		if err := InNetns(LabValue(t, "NS_CLIENT"), func() (err error) {
			c, err = tls.Dial("tcp", net.JoinHostPort(LabValue(t, "BASTION_PUB4"), "443"),
				&tls.Config{ServerName: ServerName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+ServerName+"\r\n")

		d.Signal(syscall.SIGTERM)
		d.WaitNotify("STOPPING=1", 5*time.Second)
		out, err := d.Ctl(nil, "status")
		if err != nil || !strings.Contains(out, "draining") {
			t.Fatalf("status while draining: %v\n%s", err, out)
		}
		// New connections are no longer accepted.
		err = InNetns(LabValue(t, "NS_CLIENT"), func() error {
			nc, err := net.DialTimeout("tcp", net.JoinHostPort(LabValue(t, "BASTION_PUB4"), "443"), 2*time.Second)
			if err == nil {
				// The socket may still queue the connection: then it must never be served.
				nc.SetDeadline(time.Now().Add(2 * time.Second))
				tc := tls.Client(nc, &tls.Config{ServerName: ServerName, InsecureSkipVerify: true})
				err = tc.Handshake()
				nc.Close()
				if err == nil {
					return errors.New("a new connection was served during the drain")
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		d.Signal(syscall.SIGINT)
		if err := d.Wait(10 * time.Second); err != nil {
			t.Fatalf("exit after second signal: %v\n%s", err, d.Log.String())
		}
		if !strings.Contains(d.Log.String(), "second signal: closing every session now") {
			t.Errorf("log lacks the second-signal message:\n%s", d.Log.String())
		}
	})
}

// TestCheckConfig runs `bastiond -check-config` as an admin would.
func TestCheckConfig(t *testing.T) {
	NeedLab(t)
	dir := t.TempDir()
	good := LabConfig(dir, "")
	tests := []struct {
		name   string
		config string
		ok     bool
		want   string
	}{
		{"valid", good, true, "configuration is valid"},
		{"misspelt key", strings.Replace(good, "vnet_interface:", "vnet_interfce:", 1), false,
			`bastiond.yaml:8: bastion.vnet_interfce: unknown key (did you mean "vnet_interface"?)`},
		{"VNet address outside the bastion subnet", strings.Replace(good, LabValue(t, "BASTION_SUBNET4"), "198.18.2.0/27", 1), false,
			"is outside the dedicated bastion subnet"},
		{"missing interface", strings.Replace(good, "public_interface: "+lab["PUB_IFACE"], "public_interface: nope0", 1), false,
			`bastion.public_interface: discover: interface "nope0"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, "bastiond.yaml")
			os.WriteFile(path, []byte(tt.config), 0o644)
			out, err := exec.Command("ip", "netns", "exec", LabValue(t, "NS_BASTION"), filepath.Join(binDir, "bastiond"), "-check-config", "-config", path).CombinedOutput()
			if (err == nil) != tt.ok || !strings.Contains(string(out), tt.want) {
				t.Errorf("exit error %v, output:\n%s\nwant ok=%v and %q", err, out, tt.ok, tt.want)
			}
		})
	}
}
