package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/tunnel"
)

// BenchmarkTunnel measures the native tunnel against the peers issue 5
// names, in one run, and logs the ratios:
//
//   - bulk SSH (1 GiB into cat >/dev/null on vm1) through the tunnel over TLS
//     and over QUIC, vs `ssh -J` through an OpenSSH jump host on the bastion,
//     vs direct ssh from the bastion host;
//   - raw TCP (iperf3 to vm1) through the tunnel vs socat terminating TLS on
//     both ends;
//   - session setup (`ssh vm1 true`) through the tunnel vs `ssh -J` vs direct;
//   - memory per idle tunnelled session at 10,000 sessions.
//
// The peers run first, with no bastiond firewall in the bastion namespace
// (the jump host and socat listen on ports it would drop), then bastiond.
func BenchmarkTunnel(b *testing.B) {
	NeedLab(b)
	env := newBenchEnv(b)
	results := map[string]float64{}
	// bulk pushes 1 GiB through ssh; relay, when not 0, is the process on
	// the bastion that carries it (the jump host's sshd, bastiond), whose
	// CPU per GiB is reported.
	bulk := func(name string, ssh []string, relay int) {
		b.Run("bulk-ssh-1GiB/"+name, func(b *testing.B) {
			b.SetBytes(1 << 30)
			var cpu time.Duration
			for b.Loop() {
				var before time.Duration
				if relay != 0 {
					before = cpuOf(b, relay)
				}
				script := `head -c 1073741824 /dev/zero | "$@" 'cat >/dev/null'`
				if out, err := exec.Command("sh", append([]string{"-c", script, "sh"}, ssh...)...).CombinedOutput(); err != nil {
					b.Fatalf("%s: %v\n%s", name, err, out)
				}
				if relay != 0 {
					waitReaped(b, relay)
					cpu += cpuOf(b, relay) - before
				}
			}
			results["bulk/"+name] = float64(b.N) * (1 << 30) / b.Elapsed().Seconds() / 1e6
			if relay != 0 {
				results["cpu/"+name] = cpu.Seconds() / float64(b.N)
				b.ReportMetric(results["cpu/"+name], "relay-cpu-s/GiB")
			}
		})
	}
	setup := func(name string, ssh []string) {
		b.Run("ssh-setup/"+name, func(b *testing.B) {
			var total time.Duration
			n := 0
			for b.Loop() {
				for range 10 {
					start := time.Now()
					if out, err := exec.Command(ssh[0], append(ssh[1:], "true")...).CombinedOutput(); err != nil {
						b.Fatalf("%s: %v\n%s", name, err, out)
					}
					total += time.Since(start)
					n++
				}
			}
			ms := float64(total.Microseconds()) / 1000 / float64(n)
			b.ReportMetric(ms, "ms/setup")
			results["setup/"+name] = ms
		})
	}
	iperf := func(name, port string) {
		b.Run("iperf3/"+name, func(b *testing.B) {
			var bps float64
			for b.Loop() {
				out, err := exec.Command("ip", "netns", "exec", env.ns("NS_CLIENT"), "iperf3", "-c", "127.0.0.1", "-p", port, "-t", "5", "-J").Output()
				if err != nil {
					b.Fatalf("%s: %v\n%s", name, err, out)
				}
				var r struct {
					End struct {
						SumReceived struct {
							BitsPerSecond float64 `json:"bits_per_second"`
						} `json:"sum_received"`
					} `json:"end"`
				}
				if err := json.Unmarshal(out, &r); err != nil {
					b.Fatalf("iperf3 output: %v", err)
				}
				bps = r.End.SumReceived.BitsPerSecond
			}
			b.ReportMetric(bps/8e6, "MB/s")
			results["iperf/"+name] = bps / 8e6
		})
	}

	// Peers.
	env.cleanupFirewall()
	env.startJump()
	env.startSocat()
	bulk("direct", env.sshDirect(), 0)
	bulk("ssh-J", env.sshJump(), env.jump.Process.Pid)
	setup("direct", env.sshDirect())
	setup("ssh-J", env.sshJump())
	iperf("socat-tls", "15202")
	env.stopPeers()

	// bastiond, with the binaries users run (no race detector).
	d := StartDaemonWith(b, ViaFDs, func(dir string) string {
		return TunnelConfig(dir, `access:
  roles:
    - name: tunnels
      subjects: [user:bench]
      targets: ["*"]
      protocols: [tunnel]
limits:
  capacity: 30000
  sessions_per_user: 30000
`)
	})
	AddLabUsers(b, d, "bench")
	env.creds = LoginAs(b, "bench", LabValue(b, "BASTION_PUB4"))
	bulk("tunnel-tls", env.sshTunnel("tcp"), d.Cmd.Process.Pid)
	bulk("tunnel-quic", env.sshTunnel("quic"), d.Cmd.Process.Pid)
	setup("tunnel-quic", env.sshTunnel("quic"))
	setup("tunnel-tls", env.sshTunnel("tcp"))
	for _, tr := range []string{"tcp", "quic"} {
		stop := env.startTunnel(tr, "vm1", "5201", "15201")
		iperf("tunnel-"+map[string]string{"tcp": "tls", "quic": "quic"}[tr], "15201")
		stop()
	}
	b.Run("idle-sessions-10000", func(b *testing.B) {
		for b.Loop() {
			perSession := env.idleSessions(b, d, 10000)
			b.ReportMetric(perSession/1024, "KiB/session")
			results["memory"] = perSession / 1024
		}
	})

	// The ratios, as the issue states its targets.
	ratio := func(a, b string) float64 { return results[a] / results[b] }
	// Printed, not logged: a parent benchmark's log is shown only when it
	// fails.
	logf := func(format string, args ...any) { fmt.Printf("BenchmarkTunnel: "+format+"\n", args...) }
	// Issue 24's targets (issue 5's 1.6x over TLS could not be reached: see
	// BENCHMARKS.md).
	logf("bulk SSH through the tunnel over TLS/TCP vs ssh -J: %.2fx (target >= 1.0x)", ratio("bulk/tunnel-tls", "bulk/ssh-J"))
	logf("bulk SSH through the tunnel over QUIC vs ssh -J: %.2fx (target >= 1.0x)", ratio("bulk/tunnel-quic", "bulk/ssh-J"))
	logf("bulk SSH, direct vs ssh -J: %.2fx", ratio("bulk/direct", "bulk/ssh-J"))
	for _, tr := range []string{"tunnel-tls", "tunnel-quic"} {
		target := "target <= 1.5 s"
		if tr == "tunnel-tls" {
			target = "target <= 0.6 s and half the jump host's"
		}
		logf("bastion CPU per GiB relayed: bastiond (%s) %.2f s, the jump host's sshd %.2f s: %.2fx less (%s)",
			tr, results["cpu/"+tr], results["cpu/ssh-J"], ratio("cpu/ssh-J", "cpu/"+tr), target)
	}
	logf("iperf3 through the tunnel over TLS/TCP vs socat TLS splice: %.2fx (target >= 1.0x)", ratio("iperf/tunnel-tls", "iperf/socat-tls"))
	logf("iperf3 through the tunnel over QUIC vs socat TLS splice: %.2fx", ratio("iperf/tunnel-quic", "iperf/socat-tls"))
	jumpAdds := results["setup/ssh-J"] - results["setup/direct"]
	for _, tr := range []string{"tunnel-quic", "tunnel-tls"} {
		logf("session setup: %s adds %.1f ms over direct, ssh -J adds %.1f ms: %.2f of it (target <= 0.25)",
			tr, results["setup/"+tr]-results["setup/direct"], jumpAdds, (results["setup/"+tr]-results["setup/direct"])/jumpAdds)
	}
	logf("memory per idle tunnelled session at 10,000 sessions: %.1f KiB (target <= 64 KiB)", results["memory"])
}

// benchEnv is the benchmark's peers and files.
type benchEnv struct {
	b     testing.TB
	dir   string
	creds string
	jump  *exec.Cmd // the jump host's sshd
	peers []*exec.Cmd
}

func newBenchEnv(b testing.TB) *benchEnv {
	e := &benchEnv{b: b, dir: b.TempDir()}
	os.Chmod(e.dir, 0o755)
	e.start(exec.Command("ip", "netns", "exec", e.ns("NS_VM1"), "iperf3", "-s", "-p", "5201"))
	b.Cleanup(e.stopAll)
	return e
}

func (e *benchEnv) ns(key string) string { return LabValue(e.b, key) }

// start runs a long-lived helper process and remembers it to stop it.
func (e *benchEnv) start(cmd *exec.Cmd) *exec.Cmd {
	e.b.Helper()
	out, _ := os.Create(filepath.Join(e.dir, fmt.Sprintf("proc-%d.log", len(e.peers))))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		e.b.Fatalf("%v: %v", cmd.Args, err)
	}
	e.peers = append(e.peers, cmd)
	return cmd
}

func stopProc(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
}

func (e *benchEnv) stopAll() {
	for _, c := range e.peers {
		stopProc(c)
	}
}

// stopPeers stops the jump host and socat, keeping iperf3's server.
func (e *benchEnv) stopPeers() {
	for _, c := range e.peers[1:] {
		stopProc(c)
	}
	e.peers = e.peers[:1]
}

// cleanupFirewall removes the tables an earlier test's daemon left (they
// stay on purpose when a daemon stops).
func (e *benchEnv) cleanupFirewall() {
	if out, err := exec.Command("ip", "netns", "exec", e.ns("NS_BASTION"), filepath.Join(binDir, "bastiond"), "-cleanup").CombinedOutput(); err != nil {
		e.b.Fatalf("bastiond -cleanup: %v\n%s", err, out)
	}
}

func (e *benchEnv) sshBase() []string {
	return []string{"ip", "netns", "exec", e.ns("NS_CLIENT"), "ssh", "-F", filepath.Join(e.dir, "ssh_config")}
}

// startJump writes the client's ssh_config and starts an OpenSSH jump host
// in the bastion namespace, on the public address, port 2222.
func (e *benchEnv) startJump() {
	key := e.ns("LAB_KEY")
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		e.b.Fatal(err)
	}
	hostKey := filepath.Join(e.dir, "jump_host_key")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		e.b.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	os.WriteFile(filepath.Join(e.dir, "authorized_keys"), pub, 0o600)
	sshd := fmt.Sprintf(`Port 2222
ListenAddress %s
HostKey %s
PidFile %s/jump.pid
AllowUsers root
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
AuthorizedKeysFile %s/authorized_keys
StrictModes no
AllowTcpForwarding yes
`, e.ns("BASTION_PUB4"), hostKey, e.dir, e.dir)
	os.WriteFile(filepath.Join(e.dir, "sshd_config"), []byte(sshd), 0o600)
	client := fmt.Sprintf(`Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
  IdentityFile %s
Host jump
  HostName %s
  Port 2222
  User root
Host vm1-jump
  HostName %s
  User lab
  ProxyJump jump
Host vm1-direct
  HostName %s
  User lab
Host vm1-tunnel
  HostName vm1
  User lab
`, key, e.ns("BASTION_PUB4"), e.ns("VM1_4"), e.ns("VM1_4"))
	os.WriteFile(filepath.Join(e.dir, "ssh_config"), []byte(client), 0o644)
	os.MkdirAll("/run/sshd", 0o755)
	e.jump = e.start(exec.Command("ip", "netns", "exec", e.ns("NS_BASTION"), "/usr/sbin/sshd", "-D", "-e", "-f", filepath.Join(e.dir, "sshd_config")))
	waitTCP(e.b, e.ns("NS_CLIENT"), net.JoinHostPort(e.ns("BASTION_PUB4"), "2222"))
}

func (e *benchEnv) sshJump() []string { return append(e.sshBase(), "vm1-jump") }

// sshDirect is ssh from the bastion host itself: what the jump and the
// tunnel add is measured against it.
func (e *benchEnv) sshDirect() []string {
	return []string{"ip", "netns", "exec", e.ns("NS_BASTION"), "ssh", "-F", filepath.Join(e.dir, "ssh_config"), "vm1-direct"}
}

func (e *benchEnv) sshTunnel(transport string) []string {
	proxy := fmt.Sprintf("ProxyCommand=env BASTION_CREDENTIALS=%s %s ssh-proxy vm1 --transport %s", e.creds, filepath.Join(binDir, "bastionctl"), transport)
	return append(e.sshBase(), "-o", proxy, "vm1-tunnel")
}

// startSocat is the peer of the raw TCP tunnel: socat terminating TLS on
// the bastion and originating it on the client, splicing to iperf3 on vm1.
func (e *benchEnv) startSocat() {
	cert, key := writeSelfSigned(e.b, e.dir)
	e.start(exec.Command("ip", "netns", "exec", e.ns("NS_BASTION"), "socat",
		fmt.Sprintf("OPENSSL-LISTEN:8443,reuseaddr,fork,cert=%s,key=%s,verify=0", cert, key),
		"TCP:"+net.JoinHostPort(e.ns("VM1_4"), "5201")))
	e.start(exec.Command("ip", "netns", "exec", e.ns("NS_CLIENT"), "socat",
		"TCP-LISTEN:15202,bind=127.0.0.1,reuseaddr,fork",
		fmt.Sprintf("OPENSSL:%s:8443,verify=0", e.ns("BASTION_PUB4"))))
	waitTCP(e.b, e.ns("NS_CLIENT"), net.JoinHostPort(e.ns("BASTION_PUB4"), "8443"))
	waitTCP(e.b, e.ns("NS_CLIENT"), "127.0.0.1:15202")
}

// startTunnel runs `bastionctl tunnel` in the client namespace.
func (e *benchEnv) startTunnel(transport, target, port, local string) func() {
	cmd := exec.Command("ip", "netns", "exec", e.ns("NS_CLIENT"), filepath.Join(binDir, "bastionctl"), "tunnel", target,
		"--port", port, "--listen", "127.0.0.1:"+local, "--transport", transport)
	cmd.Env = append(os.Environ(), "BASTION_CREDENTIALS="+e.creds)
	cmd = e.start(cmd)
	waitTCP(e.b, e.ns("NS_CLIENT"), "127.0.0.1:"+local)
	return func() { stopProc(cmd) }
}

// idleSessions opens n tunnel sessions to a listener on vm1 that holds
// them, and returns the daemon's resident memory per session: the growth
// from 1% of n sessions to n, divided by the sessions added.
func (e *benchEnv) idleSessions(b *testing.B, d *Daemon, n int) float64 {
	StartSink(b, e.ns("NS_VM1"), "[::]:9001", sinkHold)
	pub4 := e.ns("BASTION_PUB4")
	const perClient = 1000 // tunnel streams per QUIC connection
	clients := make([]*tunnel.Client, (n+perClient-1)/perClient)
	for i := range clients {
		clients[i] = TunnelClient(b, e.creds, pub4, "quic")
	}
	var mu sync.Mutex
	var conns []net.Conn
	open := func(from, to int) {
		var wg sync.WaitGroup
		var failed atomic.Pointer[error]
		// At most 8 opening at once: a QUIC connection may have 8 streams
		// waiting for their tunnel request's answer (more are refused as a
		// flood: "too many tunnel requests waiting"), and the sessions go
		// to the clients in order.
		sem := make(chan struct{}, 8)
		for i := from; i < to && failed.Load() == nil; i++ {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				c, err := Dial(b, clients[i/perClient], "vm1", 9001)
				if err != nil {
					failed.Store(&err)
					return
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}()
		}
		wg.Wait()
		if err := failed.Load(); err != nil {
			b.Fatalf("opening idle sessions: %v", *err)
		}
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
		waitNoSessionsWithin(b, d, time.Minute)
	}()
	waitNoSessionsWithin(b, d, time.Minute) // the earlier benchmarks' tunnels
	base := n / 100
	open(0, base)
	time.Sleep(2 * time.Second)
	before := rssOf(b, d.Cmd.Process.Pid)
	open(base, n)
	time.Sleep(2 * time.Second)
	after := rssOf(b, d.Cmd.Process.Pid)
	if live := len(d.liveSessions()); live != n {
		b.Fatalf("%d live sessions, want %d", live, n)
	}
	b.Logf("bastiond RSS: %d MiB with %d sessions, %d MiB with %d", before>>20, base, after>>20, n)
	return float64(after-before) / float64(n-base)
}

// waitReaped waits, up to 5 s, until pid has no children left: their
// CPU time is counted in pid's once pid has waited for them.
func waitReaped(t testing.TB, pid int) {
	t.Helper()
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(20 * time.Millisecond) {
		children, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if err != nil || len(strings.TrimSpace(string(children))) == 0 {
			return
		}
	}
	t.Fatalf("process %d still has children 5 s after the transfer", pid)
}

func waitTCP(t testing.TB, ns, addr string) {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		err := InNetns(ns, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
		if err == nil {
			return
		}
	}
	t.Fatalf("nothing listens on %s in %s", addr, ns)
}

func writeSelfSigned(t testing.TB, dir string) (certFile, keyFile string) {
	c := testcert.New(t, testcert.Options{Name: "socat-peer"})
	certFile, keyFile = filepath.Join(dir, "socat.crt"), filepath.Join(dir, "socat.key")
	os.WriteFile(certFile, testcert.PEM(c), 0o644)
	os.WriteFile(keyFile, testcert.KeyPEM(t, c), 0o600)
	return certFile, keyFile
}
