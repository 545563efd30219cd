package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestTunnelFileCopy: scp (both ways) and sftp (batch mode) work through
// `bastionctl ssh-proxy` as OpenSSH's ProxyCommand, over QUIC and over
// TLS on TCP, to both of the bastion's addresses: what reaches vm1 has
// the SHA-256 of what was sent (read on vm1 by sha256sum), and what comes
// back has it too. The tunnel carries the SSH connection whole, so these
// work by construction; this proves it.
func TestTunnelFileCopy(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, TunnelAccess(""))
	})
	AddLabUsers(t, d, "alice")
	dir := t.TempDir()
	src := filepath.Join(dir, "src.bin")
	data := make([]byte, 3<<20+17)
	rand.Read(data)
	if err := os.WriteFile(src, data, 0o644); err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(data)
	wantHex := hex.EncodeToString(want[:])
	for _, fam := range []struct{ name, addr string }{{"ipv4", LabValue(t, "BASTION_PUB4")}, {"ipv6", LabValue(t, "BASTION_PUB6")}} {
		creds := LoginAs(t, "alice", fam.addr)
		for _, transport := range []string{"quic", "tcp"} {
			t.Run(fam.name+"/"+transport, func(t *testing.T) {
				opts := []string{"-F", "none",
					"-o", "ProxyCommand=" + filepath.Join(binDir, "bastionctl") + " ssh-proxy vm1 --transport " + transport,
					"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
					"-o", "LogLevel=ERROR", "-i", LabValue(t, "LAB_KEY")}
				run := func(tool string, args ...string) string {
					t.Helper()
					cmd := exec.Command("ip", append([]string{"netns", "exec", LabValue(t, "NS_CLIENT"), tool}, append(opts, args...)...)...)
					cmd.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
					cmd.WaitDelay = 5 * time.Second
					out, err := cmd.CombinedOutput()
					if err != nil {
						t.Fatalf("%s %s: %v\n%s\ndaemon log:\n%s", tool, strings.Join(args, " "), err, out, d.Log.String())
					}
					return string(out)
				}
				onVM1 := func(path string) string {
					t.Helper()
					out := run("ssh", "lab@vm1", "sha256sum "+path)
					sum, _, _ := strings.Cut(strings.TrimSpace(out), " ")
					return sum
				}
				back := func(path string) {
					t.Helper()
					b, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					if got := sha256.Sum256(b); got != want {
						t.Errorf("%s came back with SHA-256 %x, want %s", filepath.Base(path), got, wantHex)
					}
				}
				remote := fmt.Sprintf("bl-scp-%s-%s.bin", fam.name, transport)
				run("scp", src, "lab@vm1:"+remote)
				if got := onVM1(remote); got != wantHex {
					t.Errorf("scp put: vm1 read SHA-256 %s, want %s", got, wantHex)
				}
				run("scp", "lab@vm1:"+remote, filepath.Join(dir, remote))
				back(filepath.Join(dir, remote))

				remote2 := fmt.Sprintf("bl-sftp-%s-%s.bin", fam.name, transport)
				batch := filepath.Join(dir, remote2+".batch")
				os.WriteFile(batch, []byte(fmt.Sprintf("put %s %s\nget %s %s\n", src, remote2, remote2, filepath.Join(dir, remote2))), 0o644)
				run("sftp", "-b", batch, "lab@vm1")
				if got := onVM1(remote2); got != wantHex {
					t.Errorf("sftp put: vm1 read SHA-256 %s, want %s", got, wantHex)
				}
				back(filepath.Join(dir, remote2))
				run("ssh", "lab@vm1", "rm -f "+remote+" "+remote2)
			})
		}
	}
}
