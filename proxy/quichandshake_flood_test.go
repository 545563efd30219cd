package proxy

import (
	"bufio"
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/vishvananda/netns"

	"github.com/bastiond/bastiond/proxy/gate/gatetest"
	"github.com/bastiond/bastiond/proxy/gate/quicinitial"
)

// The handshake flood: in a network namespace of the benchmark's own, the
// front door (this process, a release build under go test -bench) listens
// on 127.0.0.1 and on fd24::1; another process floods it with new QUIC
// connections at a fixed rate, from 64 IPv4 and 32 IPv6 addresses (IPv6
// /64s: 32 sources), 8 source ports each, every one to a fresh Destination
// Connection ID, and each then stalls. Meanwhile a user, from 127.0.0.1
// and fd24:0:0:ffff::1, does paced handshakes as bastionctl tunnel does.
const (
	hfloodRate     = 2000 // new connections a second
	hfloodSeconds  = 20   // how long the flood lasts (QUIC_HFLOOD_SECONDS overrides it)
	hfloodUser     = 50   // the user's handshakes, spread over the flood
	hfloodV4Srcs   = 64
	hfloodV6Srcs   = 32
	hfloodPorts    = 8
	hfloodServer6  = "fd24::1"
	hfloodUser6    = "fd24:0:0:ffff::1"
	hfloodUserWait = 5 * time.Second // bastionctl tunnel's QUIC handshake idle timeout
)

// The ways the flood's connections stall, as an attacker would pick them.
const (
	// stallFirstFlight sends the first of the two datagrams of a
	// ClientHello and never the second: the gate holds it, incomplete.
	stallFirstFlight = "first-flight"
	// stallNoRetry sends the whole first flight, naming the server, and
	// never answers the Retry it gets.
	stallNoRetry = "unanswered-retry"
	// stallAfterRetry answers the Retry with the same ClientHello and
	// the token, from an address that receives, and then answers nothing:
	// the server runs the TLS handshake and waits for the client's
	// Finished until its handshake timeout.
	stallAfterRetry = "retry-then-stall"
)

// BenchmarkQUICHandshakeUnderFlood measures a user's QUIC handshakes while
// 2,000 new connections a second stall in each of the ways above, for 20
// s: the handshakes' p50, p99 and max (the user's handshake includes its
// Retry), how many failed, the CPU this process (the server, and the
// user's client) spent a second of flood and per flood connection, and
// the UDP receive buffer overflows in the namespace. "none" is the same
// user without a flood. Needs root (a network namespace).
func BenchmarkQUICHandshakeUnderFlood(b *testing.B) {
	ns := hfloodNetns(b)
	seconds := hfloodSeconds
	if s, err := strconv.Atoi(os.Getenv("QUIC_HFLOOD_SECONDS")); err == nil && s > 0 {
		seconds = s
	}
	var idleCPU time.Duration
	for _, mode := range []string{"none", stallFirstFlight, stallNoRetry, stallAfterRetry} {
		b.Run(mode, func(b *testing.B) {
			for range b.N {
				r := hfloodRun(b, ns, mode, seconds)
				if mode == "none" {
					idleCPU = r.cpu
				}
				times := slices.Clone(r.handshakes)
				slices.Sort(times)
				ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
				var p50, p99, mx time.Duration
				if n := len(times); n > 0 {
					p50, p99, mx = times[(n-1)/2], times[(n*99+99)/100-1], times[n-1]
				}
				b.ReportMetric(ms(p50), "p50-ms")
				b.ReportMetric(ms(p99), "p99-ms")
				b.ReportMetric(ms(mx), "max-ms")
				b.ReportMetric(float64(r.failed), "failed")
				b.ReportMetric(float64(r.cpu.Milliseconds())/float64(seconds), "cpu-ms/s")
				if r.conns > 0 {
					b.ReportMetric(float64((r.cpu-idleCPU).Nanoseconds())/1000/float64(r.conns), "cpu-µs/conn")
				}
				b.ReportMetric(float64(r.rcvbufErrs), "rcvbuf-errors")
				b.Logf("%s: %d flood connections (%d datagrams sent, %d Retry received, %d answered, %d other datagrams received; the flood's CPU %v); "+
					"user: %d handshakes, %d failed, p50 %v p99 %v max %v; this process's CPU %v (%v/s; idle run %v); UDP RcvbufErrors +%d; load %s",
					mode, r.conns, r.datagrams, r.retries, r.answered, r.other, r.floodCPU.Round(time.Millisecond),
					len(r.handshakes), r.failed, p50.Round(time.Millisecond), p99.Round(time.Millisecond), mx.Round(time.Millisecond),
					r.cpu.Round(time.Millisecond), (r.cpu / time.Duration(seconds)).Round(time.Millisecond), idleCPU.Round(time.Millisecond), r.rcvbufErrs, loadAvg())
			}
		})
	}
}

type hfloodResult struct {
	handshakes []time.Duration // the user's, completed
	failed     int             // the user's handshakes that did not complete
	cpu        time.Duration   // this process's, over the flood
	floodCPU   time.Duration   // the flood process's
	rcvbufErrs int64           // UDP and UDP6 RcvbufErrors in the namespace, over the flood
	// What the flood process counted.
	conns, datagrams, retries, answered, other int64
}

func hfloodRun(b *testing.B, ns hfloodNS, mode string, seconds int) hfloodResult {
	s := newTestServer(b, Config{})
	var pcs []net.PacketConn
	ns.do(b, func() error {
		for _, a := range []string{"127.0.0.1", hfloodServer6} {
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(a), 0)))
			if err != nil {
				return err
			}
			pcs = append(pcs, pc)
		}
		return nil
	})
	done := make(chan error, 1)
	go func() { done <- s.Serve(nil, pcs) }()
	defer func() {
		s.Close()
		<-done
	}()
	// One handshake before measuring, so that nothing is measured the
	// first time.
	if _, err := hfloodHandshake(b, ns, "127.0.0.1", pcs[0].LocalAddr()); err != nil {
		b.Fatalf("a handshake without a flood: %v", err)
	}

	var r hfloodResult
	var cmd *exec.Cmd
	var out *bufio.Scanner
	if mode != "none" {
		cmd = exec.Command("ip", "netns", "exec", ns.name, os.Args[0], "-test.run=^TestQUICHandshakeFloodClient$")
		cmd.Env = append(os.Environ(), "QUIC_HFLOOD_MODE="+mode, "QUIC_HFLOOD_SECONDS="+strconv.Itoa(seconds),
			"QUIC_HFLOOD_TARGETS="+pcs[0].LocalAddr().String()+","+pcs[1].LocalAddr().String())
		cmd.Stderr = os.Stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			b.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		defer cmd.Process.Kill() // by its own PID, should the benchmark fail first
		out = bufio.NewScanner(stdout)
		if !out.Scan() || out.Text() != "flooding" {
			b.Fatalf("the flood process: %q, %v", out.Text(), out.Err())
		}
	}
	rcvbuf0, cpu0 := ns.rcvbufErrors(b), processCPU()
	start := time.Now()
	for i := range hfloodUser {
		time.Sleep(time.Until(start.Add(time.Duration(i) * time.Duration(seconds) * time.Second / hfloodUser)))
		from, to := "127.0.0.1", pcs[0].LocalAddr()
		if i%2 == 1 {
			from, to = hfloodUser6, pcs[1].LocalAddr()
		}
		d, err := hfloodHandshake(b, ns, from, to)
		if err != nil {
			b.Logf("the user's handshake %d from %s: %v after %v", i, from, err, d.Round(time.Millisecond))
			r.failed++
			continue
		}
		r.handshakes = append(r.handshakes, d)
	}
	if cmd != nil {
		var line string
		if out.Scan() {
			line = out.Text()
		}
		if err := cmd.Wait(); err != nil {
			b.Fatalf("the flood process: %v", err)
		}
		if _, err := fmt.Sscanf(line, "flooded %d %d %d %d %d", &r.conns, &r.datagrams, &r.retries, &r.answered, &r.other); err != nil {
			b.Fatalf("the flood process said %q: %v", line, err)
		}
		if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
			r.floodCPU = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	} else {
		time.Sleep(time.Until(start.Add(time.Duration(seconds) * time.Second)))
	}
	r.cpu, r.rcvbufErrs = processCPU()-cpu0, ns.rcvbufErrors(b)-rcvbuf0
	return r
}

// hfloodHandshake is one handshake of a tunnel client from the address
// from to the front door at to, as bastionctl tunnel makes it: a new
// socket, and the QUIC settings of the tunnel package.
func hfloodHandshake(b *testing.B, ns hfloodNS, from string, to net.Addr) (time.Duration, error) {
	var pc *net.UDPConn
	ns.do(b, func() (err error) {
		pc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(from), 0)))
		return err
	})
	w := &wireLog{PacketConn: pc, start: time.Now()}
	tr := &quic.Transport{Conn: w}
	defer tr.Close()
	ctx, cancel := context.WithTimeout(context.Background(), hfloodUserWait)
	defer cancel()
	start := time.Now()
	conn, err := tr.Dial(ctx, to, gatetest.TunnelTLS(testName), &quic.Config{Versions: []quic.Version{quic.Version1}, HandshakeIdleTimeout: hfloodUserWait})
	d := time.Since(start)
	if d > 500*time.Millisecond {
		b.Logf("a slow handshake from %s (%v): %s", from, d.Round(time.Millisecond), w)
	}
	if err != nil {
		return d, err
	}
	conn.CloseWithError(0, "")
	return d, nil
}

// wireLog notes when a user's datagrams went and came, and what they
// were, for a slow handshake's log line.
type wireLog struct {
	net.PacketConn
	start time.Time
	mu    sync.Mutex
	log   []string
}

func (w *wireLog) note(dir string, b []byte) {
	kind := "short"
	if len(b) > 0 && b[0]&0x80 != 0 {
		kind = [...]string{"Initial", "0-RTT", "Handshake", "Retry"}[b[0]>>4&3]
	}
	w.mu.Lock()
	w.log = append(w.log, fmt.Sprintf("%s %s %d at %v", dir, kind, len(b), time.Since(w.start).Round(time.Millisecond)))
	w.mu.Unlock()
}

func (w *wireLog) ReadFrom(p []byte) (int, net.Addr, error) {
	n, a, err := w.PacketConn.ReadFrom(p)
	if err == nil {
		w.note("in", p[:n])
	}
	return n, a, err
}

func (w *wireLog) WriteTo(p []byte, a net.Addr) (int, error) {
	w.note("out", p)
	return w.PacketConn.WriteTo(p, a)
}

func (w *wireLog) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(w.log, ", ")
}

// processCPU is the CPU time this process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func loadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.Join(strings.Fields(string(b))[:min(3, len(strings.Fields(string(b))))], " ")
}

// hfloodNS is the benchmark's network namespace.
type hfloodNS struct {
	name string
	h    netns.NsHandle
}

var hfloodSeq atomic.Int64

// hfloodNetns makes the namespace, with loopback up and the IPv6
// addresses of the server, the user and the flood's sources on it.
func hfloodNetns(b *testing.B) hfloodNS {
	b.Helper()
	if os.Geteuid() != 0 {
		b.Skip("needs root: floods a network namespace of its own")
	}
	name := fmt.Sprintf("bastiond-hflood-%d-%d", os.Getpid(), hfloodSeq.Add(1))
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		b.Skipf("cannot make a network namespace: %v: %s", err, out)
	}
	b.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	script := "link set lo up\naddr add " + hfloodServer6 + "/128 dev lo nodad\naddr add " + hfloodUser6 + "/128 dev lo nodad\n"
	for i := range hfloodV6Srcs {
		script += fmt.Sprintf("addr add %s/128 dev lo nodad\n", hfloodSource6(i))
	}
	cmd := exec.Command("ip", "-n", name, "-batch", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("ip -batch: %v: %s", err, out)
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return hfloodNS{name: name, h: h}
}

func hfloodSource4(i int) string { return fmt.Sprintf("127.0.1.%d", 1+i) }
func hfloodSource6(i int) string { return fmt.Sprintf("fd24:0:0:%x::1", 1+i) }

// do runs f on a thread in the namespace: the sockets it opens stay there.
func (ns hfloodNS) do(b *testing.B, f func() error) {
	b.Helper()
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		runtime.LockOSThread()
		orig, gerr := netns.Get()
		if gerr != nil {
			err = gerr
			runtime.UnlockOSThread()
			return
		}
		defer orig.Close()
		if err = netns.Set(ns.h); err != nil {
			runtime.UnlockOSThread()
			return
		}
		err = f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread() // else the thread ends with the goroutine
		}
	}()
	<-done
	if err != nil {
		b.Fatal(err)
	}
}

// rcvbufErrors is the namespace's UDP and UDP6 RcvbufErrors.
func (ns hfloodNS) rcvbufErrors(b *testing.B) int64 {
	var n int64
	ns.do(b, func() error {
		snmp, err := os.ReadFile("/proc/thread-self/net/snmp")
		if err != nil {
			return err
		}
		var names []string
		for line := range strings.SplitSeq(string(snmp), "\n") {
			f := strings.Fields(line)
			if len(f) == 0 || f[0] != "Udp:" {
				continue
			}
			if names == nil {
				names = f
				continue
			}
			if i := slices.Index(names, "RcvbufErrors"); i > 0 && i < len(f) {
				v, _ := strconv.ParseInt(f[i], 10, 64)
				n += v
			}
		}
		snmp6, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for line := range strings.SplitSeq(string(snmp6), "\n") {
			if f := strings.Fields(line); len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				n += v
			}
		}
		return nil
	})
	return n
}

// TestQUICHandshakeFloodClient is the flood process of
// BenchmarkQUICHandshakeUnderFlood, started in the benchmark's namespace:
// it prints "flooding", sends hfloodRate new connections a second for the
// time asked, each stalled in the way asked, and then prints "flooded
// CONNS DATAGRAMS RETRIES ANSWERED OTHER".
func TestQUICHandshakeFloodClient(t *testing.T) {
	mode := os.Getenv("QUIC_HFLOOD_MODE")
	if mode == "" {
		t.Skip("the flood process of BenchmarkQUICHandshakeUnderFlood")
	}
	seconds, _ := strconv.Atoi(os.Getenv("QUIC_HFLOOD_SECONDS"))
	var targets []*net.UDPAddr
	for a := range strings.SplitSeq(os.Getenv("QUIC_HFLOOD_TARGETS"), ",") {
		ua, err := net.ResolveUDPAddr("udp", a)
		if err != nil {
			t.Fatal(err)
		}
		targets = append(targets, ua)
	}
	hello, scid := realClientHello(t)
	// The ClientHello in two datagrams, as a client with a post-quantum
	// key share sends it.
	half := len(hello) / 2
	chunks := [][2]int{{0, half}, {half, len(hello)}}

	type source struct {
		pc *net.UDPConn
		to *net.UDPAddr
	}
	var srcs []source
	for i := range hfloodV4Srcs + hfloodV6Srcs {
		ip, to := hfloodSource4(i), targets[0]
		if i >= hfloodV4Srcs {
			ip, to = hfloodSource6(i-hfloodV4Srcs), targets[1]
		}
		for range hfloodPorts {
			pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(ip), 0)))
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			srcs = append(srcs, source{pc, to})
		}
	}
	// flight sends the ClientHello's datagrams up to last to dcid.
	flight := func(dst []byte, src source, dcid, token []byte, pn uint32, last int) (int, []byte) {
		keys, err := gatetest.ClientInitialKeys(dcid)
		if err != nil {
			panic(err) // only in FIPS 140-only mode, for IDs this short
		}
		for i, c := range chunks[:last] {
			frames := gatetest.CryptoFrame(nil, uint64(c[0]), hello[c[0]:c[1]])
			dst = keys.SealInitial(dst[:0], dcid, scid, token, pn+uint32(i), frames, 1200)
			src.pc.WriteToUDP(dst, src.to)
		}
		return last, dst
	}
	last := len(chunks)
	if mode == stallFirstFlight {
		last = 1
	}

	var conns, datagrams, retries, answered, other atomic.Int64
	end := time.Now().Add(time.Duration(seconds) * time.Second)
	var wg sync.WaitGroup
	for _, src := range srcs {
		wg.Go(func() {
			buf, out := make([]byte, 2048), make([]byte, 0, 1500)
			for {
				// The reads end with the flood, or a second after, for the
				// last Retry to come in.
				src.pc.SetReadDeadline(end.Add(time.Second))
				n, _, err := src.pc.ReadFromUDP(buf)
				if err != nil {
					return
				}
				retry, err := gatetest.ParseRetry(buf[:n])
				if err != nil {
					other.Add(1)
					continue
				}
				retries.Add(1)
				if mode == stallAfterRetry && time.Now().Before(end) {
					var sent int
					sent, out = flight(out, src, retry.SCID, retry.Token, 2, last)
					datagrams.Add(int64(sent))
					answered.Add(1)
				}
			}
		})
	}
	fmt.Println("flooding")
	// The rate limiter: at most hfloodRate*seconds connections, none after
	// the end, sent in ticks of 5 ms to catch up with the rate.
	start, total := time.Now(), hfloodRate*seconds
	out, dcid := make([]byte, 0, 1500), make([]byte, 8)
	for i := 0; i < total && time.Now().Before(end); {
		due := min(total, int(time.Since(start).Seconds()*hfloodRate))
		for ; i < due; i++ {
			rand.Read(dcid)
			var sent int
			sent, out = flight(out, srcs[i%len(srcs)], dcid, nil, 0, last)
			datagrams.Add(int64(sent))
			conns.Add(1)
		}
		time.Sleep(5 * time.Millisecond)
	}
	wg.Wait()
	fmt.Printf("flooded %d %d %d %d %d\n", conns.Load(), datagrams.Load(), retries.Load(), answered.Load(), other.Load())
}

// realClientHello is the ClientHello a tunnel client (quic-go) sends, and
// the Source Connection ID its transport parameters name.
func realClientHello(t *testing.T) ([]byte, []byte) {
	var asm quicinitial.Assembler
	var scid []byte
	for _, d := range gatetest.FirstFlight(t, "udp4", gatetest.TunnelTLS(testName)) {
		hdr, frames, err := quicinitial.OpenInitial(d)
		if err != nil {
			t.Fatal(err)
		}
		scid = slices.Clone(hdr.SCID)
		if err := asm.Add(frames); err != nil {
			t.Fatal(err)
		}
	}
	hello, ok, err := asm.ClientHello()
	if err != nil || !ok {
		t.Fatalf("the first flight holds no whole ClientHello: %v", err)
	}
	return slices.Clone(hello), scid
}
