package e2e

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/api/tunnelwire"
)

// A password guesser gets a handful of tries, then waits longer and longer,
// and the account locks; the right password does not get through while it
// waits; the same user from elsewhere, and other users, are not held up
// beyond the account's own backoff.
func TestLoginBruteForce(t *testing.T) {
	// The firewall's per-source connection rate would drop some of the
	// guesser's connections: raised, so that every guess reaches the
	// sign-in and is counted there.
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return upgradeConfig(dir) + "firewall: {conn_rate: 1000}\n" })
	AddLabUsers(t, d, "alice", "bob")
	attacker := lab["BASTION_PUB4"]

	// Guesses as fast as the bastion answers, for at most 8 s or 40 tries.
	start := time.Now()
	tries := 0
	for ; tries < 40 && time.Since(start) < 8*time.Second; tries++ {
		if code, _ := NewWebUser(t, attacker).SignIn("alice", "guess "+string(rune('a'+tries%26)), ""); code == 303 {
			t.Fatal("a wrong password signed in")
		}
	}
	log := d.Log.String()
	evaluated := strings.Count(log, `"reason":"wrong password"`)
	throttled := strings.Count(log, `"msg":"login refused: throttled"`)
	t.Logf("brute force: %d tries in %s, %d checked against the password, %d refused unchecked (throttled)",
		tries, time.Since(start).Round(100*time.Millisecond), evaluated, throttled)
	if evaluated >= 10 || throttled == 0 || evaluated+throttled < tries {
		t.Errorf("%d tries: %d checked, %d throttled", tries, evaluated, throttled)
	}
	// The right password is refused while the backoff runs.
	if code, _ := NewWebUser(t, attacker).SignIn("alice", TunnelPassword, ""); code == 303 {
		t.Error("the right password got through during the backoff")
	}
	// Another user, from the same address, is not locked out of their
	// account (the source's own backoff may hold them a moment).
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, _ := NewWebUser(t, lab["BASTION_PUB6"]).SignIn("bob", TunnelPassword, "")
		if code == 303 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("bob cannot sign in after alice's guesser: %d", code)
		}
		time.Sleep(time.Second)
	}
	// More guesses from the other address; an admin's unlock then clears
	// the backoff and any lockout at once.
	for range 12 {
		NewWebUser(t, lab["BASTION_PUB6"]).SignIn("alice", "more guesses", "")
	}
	if out, err := d.Ctl(nil, "users", "unlock", "alice"); err != nil {
		t.Fatalf("unlock: %v\n%s", err, out)
	}
	if code, page := NewWebUser(t, lab["BASTION_PUB6"]).SignIn("alice", TunnelPassword, ""); code != 303 {
		t.Errorf("alice after the unlock: %d\n%s", code, page)
	}
}

// retryCounter is a client socket that counts what the bastion answers to
// Initials, by packet type, and never lets quic-go see it: every handshake
// stalls at its first flight, as a flood's would.
type retryCounter struct {
	net.PacketConn
	retries, other *atomic.Int64
}

func (r retryCounter) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, addr, err := r.PacketConn.ReadFrom(p)
		if err != nil || n == 0 {
			return n, addr, err
		}
		if p[0]&0xb0 == 0xb0 { // long header, type 3: Retry
			r.retries.Add(1)
		} else {
			r.other.Add(1)
		}
	}
}

// A flood of QUIC Initials that name the server is answered with Retry
// packets only: the bastion keeps no state for a source that has not shown
// it receives at its address, and a real client connects after it.
func TestQUICInitialFlood(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return upgradeConfig(dir) })
	AddLabUsers(t, d, "alice")
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9001", SinkEcho)
	rssBefore := rssOf(t, d.Cmd.Process.Pid)

	const sockets, perSocket = 40, 50 // 2,000 handshakes, from 40 source ports each family
	var retries, other, sent atomic.Int64
	var wg sync.WaitGroup
	for i := range sockets {
		addr := lab["BASTION_PUB4"]
		if i%2 == 1 {
			addr = lab["BASTION_PUB6"]
		}
		pc := ClientUDP(t)
		tr := &quic.Transport{Conn: retryCounter{PacketConn: pc, retries: &retries, other: &other}}
		defer tr.Close()
		raddr := net.UDPAddrFromAddrPort(netipAddrPort(t, addr, 443))
		wg.Add(1)
		go func() {
			defer wg.Done()
			var inner sync.WaitGroup
			for range perSocket {
				inner.Add(1)
				sent.Add(1)
				go func() {
					defer inner.Done()
					ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
					defer cancel()
					tr.Dial(ctx, raddr, &tls.Config{ServerName: ServerName, NextProtos: []string{tunnelwire.ALPN}, InsecureSkipVerify: true},
						&quic.Config{HandshakeIdleTimeout: 300 * time.Millisecond})
				}()
			}
			inner.Wait()
		}()
	}

	wg.Wait()
	time.Sleep(200 * time.Millisecond) // the last answers

	// A real user after it. (During it, with the tests' race-enabled
	// daemon on the lab's two cores, a user's Initial can wait behind the
	// flood's for longer than the client's handshake timeout.) The user
	// comes from the flood's own address: the handshakes the flood left
	// half done count against its source's QUIC connections
	// (connections_per_source) until the handshake timeout ends them, and
	// a source holds up only itself. So wait for its places to come back.
	freed := time.Now()
	for Metric(t, "bastiond_quic_connections") >= 256 && time.Since(freed) < 30*time.Second {
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("the flood's half-done handshakes held its source at the cap for %s more", time.Since(freed).Round(100*time.Millisecond))
	creds := LoginAs(t, "alice", lab["BASTION_PUB4"])
	// Under CI's load (the race-enabled daemon, other packages' tests on
	// the same two cores), the flood's retransmitted Initials can keep the
	// daemon from answering the user's first hello within the client's 5 s
	// handshake timeout; a user whose first attempt timed out tries again,
	// as bastionctl's user would.
	var c net.Conn
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		if c, err = Dial(t, TunnelClient(t, creds, lab["BASTION_PUB4"], "quic"), "vm1", 9001); err == nil {
			break
		}
		t.Logf("a tunnel after the flood, attempt %d: %v", attempt, err)
	}
	if err != nil {
		t.Fatalf("a tunnel after the flood: %v", err)
	}
	(&echoTunnel{c: c}).roundTrip(t, "after the flood\n")
	c.Close()
	rssAfter := rssOf(t, d.Cmd.Process.Pid)
	t.Logf("QUIC flood: %d handshakes started, %d Retry packets back, %d other packets; bastiond RSS %d -> %d MiB",
		sent.Load(), retries.Load(), other.Load(), rssBefore>>20, rssAfter>>20)
	// UDP under a flood loses datagrams both ways (the lab's two cores run
	// the flood, the daemon and the kernel, and in CI other packages' tests
	// too: 730 of 2,000 came back in one such run, over 3,000 with
	// retransmissions on a quiet machine): what matters is that whatever
	// comes back is a Retry, so no handshake left state behind. The lower
	// bound only shows that the flood reached the daemon and was answered.
	if other.Load() != 0 || retries.Load() < sent.Load()/5 {
		t.Errorf("%d handshakes: %d Retry packets and %d others back, want Retry packets only, for a fifth of them at least",
			sent.Load(), retries.Load(), other.Load())
	}
}

func netipAddrPort(t testing.TB, addr string, port uint16) netip.AddrPort {
	t.Helper()
	a, err := netip.ParseAddr(addr)
	if err != nil {
		t.Fatal(err)
	}
	return netip.AddrPortFrom(a, port)
}

// floodSockets are TCP sockets a flood opened, raw, so that 14,000 of them
// need no goroutine each.
type floodSockets struct{ fds []int }

func (f *floodSockets) close() {
	for _, fd := range f.fds {
		unix.Close(fd)
	}
	f.fds = nil
}

// connect starts a non-blocking connection from src to dst and keeps it.
func (f *floodSockets) connect(src, dst netip.Addr) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: src.As4()}); err != nil {
		unix.Close(fd)
		return err
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Port: 443, Addr: dst.As4()}); err != nil && err != unix.EINPROGRESS {
		unix.Close(fd)
		return err
	}
	f.fds = append(f.fds, fd)
	return nil
}

// While 10,000 half-open connections and 4,000 clients that send their
// ClientHello a byte at a time hold port 443, from 70 addresses, a user
// signs in and opens a tunnel. Times and memory are logged (BENCHMARKS.md
// has the benchmark); the test checks that the user gets through, that the
// slow clients are cut off at the handshake timeout, and that nothing of
// the flood reaches a session.
func TestTCPFlood(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, func(dir string) string {
		// The per-source rate limit would drop most of the flood before the
		// daemon sees it: raised, so that the daemon and kernel take it.
		return upgradeConfig(dir) + "firewall: {conn_rate: 1000}\n"
	})
	AddLabUsers(t, d, "alice")
	StartSink(t, LabValue(t, "NS_VM1"), "[::]:9001", SinkEcho)
	client := LabValue(t, "NS_CLIENT")
	bastion := netip.MustParseAddr(lab["BASTION_PUB4"])

	var lim unix.Rlimit
	unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	if lim.Cur < 20000 {
		lim.Cur = min(max(lim.Max, 20000), 1<<20)
		lim.Max = max(lim.Max, lim.Cur)
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
			t.Skipf("cannot raise the descriptor limit for the flood: %v", err)
		}
	}

	// 50 half-open sources (their SYN-ACKs are dropped on the way back, so
	// they never complete) and 20 slow ones, beside the user's 203.0.113.10.
	var halfOpen, slow []netip.Addr
	var batch strings.Builder
	for i := range 70 {
		a := netip.AddrFrom4([4]byte{203, 0, 113, byte(100 + i)})
		if i < 50 {
			halfOpen = append(halfOpen, a)
		} else {
			slow = append(slow, a)
		}
		fmt.Fprintf(&batch, "addr add %s/24 dev eth0\n", a)
	}
	runBatch := func(cmds string) error {
		cmd := exec.Command("ip", "-n", client, "-batch", "-")
		cmd.Stdin = strings.NewReader(cmds)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	}
	if err := runBatch(batch.String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { runBatch(strings.ReplaceAll(batch.String(), "addr add", "addr del")) })
	var set []string
	for _, a := range halfOpen {
		set = append(set, a.String())
	}
	nft(t, client, "halfopen", fmt.Sprintf(`table inet halfopen {
	chain in { type filter hook input priority -10; ip daddr { %s } tcp flags & (syn | ack) == syn | ack drop; }
}`, strings.Join(set, ", ")))

	signInTime := func() time.Duration {
		start := time.Now()
		if code, page := NewWebUser(t, lab["BASTION_PUB4"]).SignIn("alice", TunnelPassword, ""); code != 303 {
			t.Fatalf("sign in: %d\n%s", code, page)
		}
		return time.Since(start)
	}
	idle := signInTime()
	rssIdle := rssOf(t, d.Cmd.Process.Pid)

	var flood floodSockets
	defer flood.close()
	if err := InNetns(client, func() error {
		for _, src := range halfOpen {
			for range 200 {
				if err := flood.connect(src, bastion); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("half-open flood: %v", err)
	}
	var slowConns floodSockets
	defer slowConns.close()
	if err := InNetns(client, func() error {
		for _, src := range slow {
			for range 200 {
				if err := slowConns.connect(src, bastion); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		t.Fatalf("slow clients: %v", err)
	}
	// The slow clients trickle a ClientHello: its first bytes, one a second,
	// for 16 s (the gate closes them at its 10 s handshake timeout; a write
	// after that fails, at the latest the second one after the close).
	hello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0x00, 0x11, 0x22, 0x33, 0x44}
	trickled := make(chan int, 1)
	go func() {
		cut := map[int]bool{}
		for i := range hello {
			time.Sleep(time.Second)
			for _, fd := range slowConns.fds {
				if _, err := unix.Write(fd, hello[i:i+1]); err != nil && err != unix.EAGAIN {
					cut[fd] = true
				}
			}
		}
		trickled <- len(cut)
	}()
	time.Sleep(2 * time.Second) // the flood is in place
	synRecv, _ := exec.Command("ip", "netns", "exec", LabValue(t, "NS_BASTION"), "ss", "-Htn", "state", "syn-recv", "sport", "= :443").Output()
	estab, _ := exec.Command("ip", "netns", "exec", LabValue(t, "NS_BASTION"), "ss", "-Htn", "state", "established", "sport", "= :443").Output()

	underLoad := signInTime()
	creds := LoginAs(t, "alice", lab["BASTION_PUB4"])
	c, err := Dial(t, TunnelClient(t, creds, lab["BASTION_PUB4"], "tcp"), "vm1", 9001)
	if err != nil {
		t.Fatalf("a tunnel during the flood: %v", err)
	}
	(&echoTunnel{c: c}).roundTrip(t, "through the flood\n")
	c.Close()
	rssLoad := rssOf(t, d.Cmd.Process.Pid)
	cut := <-trickled
	t.Logf("TCP flood: %d half-open and %d slow connections started; bastion side: %d SYN-RECV, %d established on 443",
		len(flood.fds), len(slowConns.fds), strings.Count(string(synRecv), "\n"), strings.Count(string(estab), "\n"))
	t.Logf("sign-in: %s idle, %s under the flood; bastiond RSS %d MiB idle, %d MiB under the flood; %d slow clients cut off by their 16th second",
		idle.Round(time.Millisecond), underLoad.Round(time.Millisecond), rssIdle>>20, rssLoad>>20, cut)
	if cut < len(slowConns.fds)*9/10 {
		t.Errorf("only %d of %d slow clients were cut off at the handshake timeout", cut, len(slowConns.fds))
	}
	if live := d.liveSessions(); len(live) != 0 {
		t.Errorf("sessions after the flood: %v", live)
	}
}
