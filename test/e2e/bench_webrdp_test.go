package e2e

import (
	"fmt"
	"io"
	"net"
	"os/exec"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// BenchmarkWebRDP measures what a remote desktop whose screen keeps
// changing costs the bastion: bytes per second and bastiond's CPU per
// session, with 1, 2 and 4 such sessions, and from that how many sessions
// one instance carries before its CPU saturates. The clients are FreeRDP's
// own (xfreerdp, through rdpBridge: the gateway sees exactly what the
// browser client sends), the server is vm2's FreeRDP shadow server with TLS
// security, and the screen is an animation on vm2's display (ico, a
// rotating solid, redrawn 50 times a second). The same client straight to
// the server, through a byte counter, is the baseline: the bastion must
// not slow the stream down.
//
// On this machine the server, its display, the animation and the clients
// share the bastion's two cores, so what saturates first is them, not
// bastiond: the capacity is bastiond's CPU per session extrapolated to the
// machine's cores, not a count of sessions run.
func BenchmarkWebRDP(b *testing.B) {
	NeedLab(b)
	d := StartDaemonWith(b, ViaFDs, func(dir string) string {
		return WebRDPConfig(dir, true, "  capacity: 1000\n  sessions_per_user: 100\n")
	})
	AddLabUsers(b, d, "alice")
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		b.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	stopAnimation := animate(b)
	defer stopAnimation()
	bridge := newRDPBridge(b, SignedIn(b, lab["BASTION_PUB4"], "alice"), "vm2")
	direct := newCountingForward(b, "["+lab["VM2_6"]+"]:"+lab["VM2_RDP_TLS_PORT"])
	const warmUp, window = 6 * time.Second, 20 * time.Second

	type figures struct {
		name       string
		sessions   int
		bytesPerS  float64 // per session, from the server to the user
		coreShare  float64 // bastiond's CPU per session, in cores
		cpuPerMiB  time.Duration
		bastionCPU bool
	}
	var all []figures
	// idle is bastiond's own CPU with no session, subtracted from the rest.
	cpu0 := cpuOf(b, d.Cmd.Process.Pid)
	time.Sleep(5 * time.Second)
	idle := float64(cpuOf(b, d.Cmd.Process.Pid)-cpu0) / float64(5*time.Second)

	run := func(name string, n int, addr string, down func() int64) {
		b.Run(name, func(b *testing.B) {
			var f figures
			for b.Loop() {
				clients := make([]*exec.Cmd, n)
				for i := range clients {
					c := exec.Command("xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "xfreerdp", "/v:"+addr,
						"/u:"+lab["LAB_USER"], "/p:"+lab["LAB_PASSWORD"], "/cert:ignore", "/sec:tls", "/size:1280x800",
						"/log-level:ERROR")
					c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
					if err := c.Start(); err != nil {
						b.Fatal(err)
					}
					clients[i] = c
				}
				time.Sleep(warmUp)
				bytes0, cpu0, t0 := down(), cpuOf(b, d.Cmd.Process.Pid), time.Now()
				time.Sleep(window)
				bytes1, cpu1, elapsed := down(), cpuOf(b, d.Cmd.Process.Pid), time.Since(t0)
				for _, c := range clients {
					syscall.Kill(-c.Process.Pid, syscall.SIGTERM) // xvfb-run, its Xvfb and xfreerdp
				}
				for _, c := range clients {
					c.Wait()
				}
				busy := max(0, float64(cpu1-cpu0)/float64(elapsed)-idle)
				moved := float64(bytes1 - bytes0)
				f = figures{name: name, sessions: n, bytesPerS: moved / elapsed.Seconds() / float64(n),
					coreShare: busy / float64(n), bastionCPU: addr == bridge.addr()}
				if moved > 0 {
					f.cpuPerMiB = time.Duration(busy * float64(elapsed) / (moved / (1 << 20)))
				}
				if moved == 0 {
					b.Fatalf("%s: no bytes moved in %s (bridge errors: %v)", name, window, bridge.errors())
				}
			}
			b.ReportMetric(f.bytesPerS/1e6, "MB/s/session")
			if f.bastionCPU {
				b.ReportMetric(f.coreShare*100, "%core/session")
			}
			all = append(all, f)
		})
	}
	run("direct-1", 1, direct.addr(), direct.down.Load)
	for _, n := range []int{1, 2, 4} {
		run(fmt.Sprintf("bastion-%d", n), n, bridge.addr(), func() int64 { return liveBytesDown(b, d, "vm2") })
	}

	logf := func(format string, args ...any) { fmt.Printf("BenchmarkWebRDP: "+format+"\n", args...) }
	logf("bastiond idle: %.2f%% of a core", idle*100)
	for _, f := range all {
		if !f.bastionCPU {
			logf("%s: %.2f MB/s per session, server to user (the baseline: no bastion)", f.name, f.bytesPerS/1e6)
			continue
		}
		capacity := "-"
		if f.coreShare > 0 {
			capacity = fmt.Sprintf("%.0f", float64(runtime.NumCPU())/f.coreShare)
		}
		logf("%s: %.2f MB/s per session; bastiond %.2f%% of a core per session, %s CPU per MiB relayed; "+
			"%s such sessions would saturate this machine's %d cores", f.name, f.bytesPerS/1e6, f.coreShare*100,
			f.cpuPerMiB.Round(time.Microsecond), capacity, runtime.NumCPU())
	}
}

// animate starts a screen that keeps changing on vm2's display: ico, a
// rotating solid with filled faces bouncing in a 900x700 window, redrawn
// every 20 ms. It returns the function that stops it, and fails the test
// if ico does not stay up.
func animate(t testing.TB) func() {
	t.Helper()
	c := exec.Command("ip", "netns", "exec", lab["NS_VM2"], "env", "DISPLAY="+lab["LAB_DISPLAY"],
		"ico", "-faces", "-noedges", "-sleep", "0.02", "-geometry", "900x700+40+40", "-size", "500x500")
	var out syncbuf.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatalf("ico on vm2's display: %v", err)
	}
	exited := make(chan struct{})
	go func() { c.Wait(); close(exited) }()
	select {
	case <-exited:
		t.Fatalf("ico on vm2's display exited: %s", out.String())
	case <-time.After(time.Second):
	}
	return func() {
		c.Process.Kill()
		<-exited
	}
}

// liveBytesDown is the bytes sent to the users of target's live sessions
// so far, from `bastionctl sessions`.
func liveBytesDown(t testing.TB, d *Daemon, target string) int64 {
	t.Helper()
	var n int64
	for _, b := range liveBytesByID(t, d, target) {
		n += b
	}
	return n
}

// countingForward is a plain TCP forward from loopback to an address in
// the lab, dialled from the bastion's namespace, that counts the bytes
// coming back: the baseline's byte meter.
type countingForward struct {
	ln   net.Listener
	down atomic.Int64
	wg   sync.WaitGroup
}

func newCountingForward(t testing.TB, to string) *countingForward {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &countingForward{ln: ln}
	accepting := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-accepting // no Add after this
		f.wg.Wait()
	})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.wg.Go(func() {
				defer c.Close()
				var s net.Conn
				if err := InNetns(lab["NS_BASTION"], func() (err error) {
					s, err = net.DialTimeout("tcp", to, 5*time.Second)
					return err
				}); err != nil {
					return
				}
				defer s.Close()
				go func() { io.Copy(s, c); s.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, io.TeeReader(s, counter{&f.down}))
			})
		}
	}()
	return f
}

func (f *countingForward) addr() string { return f.ln.Addr().String() }

// counter counts what is written to it.
type counter struct{ n *atomic.Int64 }

func (c counter) Write(p []byte) (int, error) { c.n.Add(int64(len(p))); return len(p), nil }
