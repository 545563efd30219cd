package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"golang.org/x/crypto/ssh"
)

// echoProbe is one terminal whose keystroke echo can be timed: its shell
// has become `cat >/dev/null` with the line discipline non-canonical, so
// every byte typed is echoed at once by the machine's tty.
type echoProbe interface {
	// key sends one byte and returns once its echo arrives.
	key(c byte) (time.Duration, error)
	close()
}

// echoShell is the command every measured terminal runs.
const echoShell = "stty -icanon; exec cat >/dev/null\r"

// directProbe is ssh from the bastion's namespace straight to vm1, the
// baseline: what the keystroke costs without the bastion in between.
type directProbe struct {
	client *ssh.Client
	stdin  io.Writer
	out    chan []byte
}

func newDirectProbe(t testing.TB) *directProbe {
	t.Helper()
	var conn net.Conn
	err := InNetns(lab["NS_BASTION"], func() (err error) {
		conn, err = net.DialTimeout("tcp", net.JoinHostPort(lab["VM1_4"], "22"), 5*time.Second)
		return err
	})
	if err != nil {
		t.Fatalf("dial vm1: %v", err)
	}
	cc, chans, reqs, err := ssh.NewClientConn(conn, "vm1", &ssh.ClientConfig{User: lab["LAB_USER"],
		Auth:            []ssh.AuthMethod{ssh.Password(lab["LAB_PASSWORD"])},
		HostKeyCallback: ssh.InsecureIgnoreHostKey(), // the baseline's identity is not what is measured
		Timeout:         10 * time.Second})
	if err != nil {
		t.Fatalf("ssh vm1: %v", err)
	}
	p := &directProbe{client: ssh.NewClient(cc, chans, reqs), out: make(chan []byte, 64)}
	sess, err := p.client.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.RequestPty("xterm-256color", 24, 80, ssh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	p.stdin, _ = sess.StdinPipe()
	stdout, _ := sess.StdoutPipe()
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			buf := make([]byte, 4096)
			n, err := stdout.Read(buf)
			if err != nil {
				close(p.out)
				return
			}
			p.out <- buf[:n]
		}
	}()
	p.stdin.Write([]byte(echoShell))
	settle(p.out)
	return p
}

func (p *directProbe) key(c byte) (time.Duration, error) {
	start := time.Now()
	if _, err := p.stdin.Write([]byte{c}); err != nil {
		return 0, err
	}
	return waitEcho(p.out, c, start)
}

func (p *directProbe) close() { p.client.Close() }

// wsProbe is a browser SSH session through the bastion, speaking the
// page's protocol.
type wsProbe struct {
	ws  *websocket.Conn
	out chan []byte
}

// openWSProbe opens a terminal on vm1 as u and turns it into an echo
// terminal.
func openWSProbe(t testing.TB, u *WebUser) (*wsProbe, error) {
	ws, _, err := u.DialWS("vm1", "ssh")
	if err != nil {
		return nil, err
	}
	ctx := context.Background()
	p := &wsProbe{ws: ws, out: make(chan []byte, 64)}
	auth := fmt.Sprintf(`{"type":"auth","login":%q,"password":%q,"cols":80,"rows":24}`, lab["LAB_USER"], lab["LAB_PASSWORD"])
	if err := ws.Write(ctx, websocket.MessageText, []byte(auth)); err != nil {
		return nil, err
	}
	for { // hello, then ready (or end)
		typ, data, err := ws.Read(ctx)
		if err != nil {
			return nil, err
		}
		if typ == websocket.MessageText && jsonType(data) == "ready" {
			break
		}
		if typ == websocket.MessageText && jsonType(data) == "end" {
			return nil, fmt.Errorf("the session ended: %s", data)
		}
	}
	go func() {
		defer close(p.out)
		for {
			typ, data, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			if typ == websocket.MessageBinary {
				p.out <- data
			}
		}
	}()
	ws.Write(ctx, websocket.MessageBinary, []byte(echoShell))
	settle(p.out)
	return p, nil
}

func (p *wsProbe) key(c byte) (time.Duration, error) {
	start := time.Now()
	if err := p.ws.Write(context.Background(), websocket.MessageBinary, []byte{c}); err != nil {
		return 0, err
	}
	return waitEcho(p.out, c, start)
}

func (p *wsProbe) close() { p.ws.CloseNow() }

func jsonType(data []byte) string {
	var m struct{ Type string }
	json.Unmarshal(data, &m)
	return m.Type
}

// settle drains out until the terminal has been quiet for a moment.
func settle(out chan []byte) {
	for {
		select {
		case <-out:
		case <-time.After(300 * time.Millisecond):
			return
		}
	}
}

func waitEcho(out chan []byte, c byte, start time.Time) (time.Duration, error) {
	timeout := time.After(5 * time.Second)
	for {
		select {
		case data, ok := <-out:
			if !ok {
				return 0, io.EOF
			}
			if slices.Contains(data, c) {
				return time.Since(start), nil
			}
		case <-timeout:
			return 0, fmt.Errorf("no echo of %q within 5s", c)
		}
	}
}

// latencies times n keystrokes on each probe, interleaved so that both see
// the same load, and returns their sorted samples.
func latencies(b testing.TB, n int, probes ...echoProbe) [][]time.Duration {
	out := make([][]time.Duration, len(probes))
	for i := range n {
		for j, p := range probes {
			d, err := p.key('a' + byte(i%26))
			if err != nil {
				b.Fatalf("probe %d: %v", j, err)
			}
			out[j] = append(out[j], d)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range out {
		slices.Sort(s)
	}
	return out
}

func pct(s []time.Duration, p float64) time.Duration { return s[min(len(s)-1, int(float64(len(s))*p))] }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// BenchmarkWebSSH measures what the bastion adds to keystroke echo in a
// browser SSH terminal (issue 6): the echo round trip through bastiond's
// WebSocket protocol against ssh straight from the bastion host to vm1,
// alone and with 1,000 other terminals typing (a key every half second
// each, driven by this process over the same protocol), and bastiond's
// memory per terminal.
func BenchmarkWebSSH(b *testing.B) {
	NeedLab(b)
	const load = 1000
	d := StartDaemonWith(b, ViaFDs, func(dir string) string {
		return WebSSHConfig(dir, "", `  capacity: 5000
  sessions_per_user: 5000
  connections_per_source: 5000
firewall: {conn_rate: 2000}
`)
	})
	AddLabUsers(b, d, "alice")
	PinVM1(b, d)
	u := SignedIn(b, lab["BASTION_PUB4"], "alice")
	direct := newDirectProbe(b)
	defer direct.close()
	probe, err := openWSProbe(b, u)
	if err != nil {
		b.Fatal(err)
	}
	defer probe.close()
	results := map[string]time.Duration{}
	measure := func(name string) {
		b.Run(name, func(b *testing.B) {
			var s [][]time.Duration
			for b.Loop() {
				s = latencies(b, 300, direct, probe)
			}
			for _, p := range []float64{0.5, 0.99} {
				added := pct(s[1], p) - pct(s[0], p)
				results[fmt.Sprintf("%s/p%.0f", name, p*100)] = added
				b.ReportMetric(ms(added), fmt.Sprintf("ms-added-p%.0f", p*100))
				results[fmt.Sprintf("%s/direct-p%.0f", name, p*100)] = pct(s[0], p)
				results[fmt.Sprintf("%s/bastion-p%.0f", name, p*100)] = pct(s[1], p)
			}
		})
	}
	measure("echo-alone")

	// The load: 1,000 terminals opened ten at a time (sshd's MaxStartups),
	// then each typing a key every 500 ms. In the lab vm1 shares the
	// bastion's two cores: its 2,000 load processes (an sshd and a shell
	// per terminal) run at nice 10, standing in for a VM on hardware of its
	// own, so that they do not starve the one bastiond process. The two
	// probes' own sshd processes, started before, keep the normal priority.
	reniceVM1(b, 10)
	defer reniceVM1(b, 0)
	rssBefore := rssOf(b, d.Cmd.Process.Pid)
	var (
		terms   []*wsProbe
		mu      sync.Mutex
		failed  atomic.Int64
		started = time.Now()
	)
	sem := make(chan struct{}, 10)
	var wg sync.WaitGroup
	for range load {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			p, err := openWSProbe(b, u)
			if err != nil {
				failed.Add(1)
				return
			}
			mu.Lock()
			terms = append(terms, p)
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(terms) < load {
		b.Fatalf("opened %d of %d terminals (%d failed)", len(terms), load, failed.Load())
	}
	fmt.Printf("BenchmarkWebSSH: opened %d terminals in %s\n", len(terms), time.Since(started).Round(time.Second))
	// type has every terminal type a key each period, measures, and stops.
	type loadFigures struct {
		name      string
		rate      float64       // keystrokes echoed per second
		cpuPerKey time.Duration // bastiond's CPU per keystroke and echo
	}
	var loads []loadFigures
	var rssAfter int64
	typeAndMeasure := func(period time.Duration) {
		stop := make(chan struct{})
		var typing sync.WaitGroup
		var keys atomic.Int64
		for i, p := range terms {
			typing.Go(func() {
				time.Sleep(time.Duration(i) * period / time.Duration(len(terms))) // spread the keys
				tick := time.NewTicker(period)
				defer tick.Stop()
				for {
					select {
					case <-stop:
						return
					case <-tick.C:
						if _, err := p.key('x'); err != nil {
							return
						}
						keys.Add(1)
					}
				}
			})
		}
		time.Sleep(2 * time.Second)
		rssAfter = max(rssAfter, rssOf(b, d.Cmd.Process.Pid))
		name := fmt.Sprintf("echo-with-%d-active-every-%s", load, period)
		cpu0, keys0, t0 := cpuOf(b, d.Cmd.Process.Pid), keys.Load(), time.Now()
		perfDone := samplePerf(b, "webssh-every-"+period.String(), load, []int{d.Cmd.Process.Pid}, 8*time.Second)
		measure(name)
		perfDone()
		n := max(1, keys.Load()-keys0)
		loads = append(loads, loadFigures{name, float64(n) / time.Since(t0).Seconds(), (cpuOf(b, d.Cmd.Process.Pid) - cpu0) / time.Duration(n)})
		close(stop)
		typing.Wait()
	}
	typeAndMeasure(500 * time.Millisecond)
	typeAndMeasure(2 * time.Second)
	for _, p := range terms {
		p.close()
	}
	perSession := float64(rssAfter-rssBefore) / float64(len(terms)) / 1024
	b.Run("memory", func(b *testing.B) {
		for b.Loop() {
		}
		b.ReportMetric(perSession, "KiB/terminal")
	})

	logf := func(format string, args ...any) { fmt.Printf("BenchmarkWebSSH: "+format+"\n", args...) }
	show := func(name, extra string) {
		logf("%s: direct ssh p50 %.2f ms p99 %.2f ms; through the bastion p50 %.2f ms p99 %.2f ms; added p50 %.2f ms, p99 %.2f ms%s",
			name, ms(results[name+"/direct-p50"]), ms(results[name+"/direct-p99"]), ms(results[name+"/bastion-p50"]),
			ms(results[name+"/bastion-p99"]), ms(results[name+"/p50"]), ms(results[name+"/p99"]), extra)
	}
	show("echo-alone", "")
	for _, l := range loads {
		show(l.name, fmt.Sprintf(" (target: p99 added <= 5 ms); %.0f keystrokes/s echoed, bastiond CPU %d µs per keystroke and echo",
			l.rate, l.cpuPerKey.Microseconds()))
	}
	logf("bastiond memory per browser SSH terminal at %d terminals: %.0f KiB (RSS %d -> %d MiB)", len(terms), perSession,
		rssBefore>>20, rssAfter>>20)
}

// reniceVM1 sets the nice value of vm1's sshd, which its new sessions'
// processes inherit.
func reniceVM1(t testing.TB, nice int) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(lab["LAB_DIR"], "pids", "sshd"))
	if err != nil {
		t.Fatalf("vm1's sshd: %v", err)
	}
	pid := strings.Fields(string(data))[0]
	if out, err := exec.Command("renice", "-n", strconv.Itoa(nice), "-p", pid).CombinedOutput(); err != nil {
		t.Fatalf("renice vm1's sshd: %v\n%s", err, out)
	}
}

// cpuOf is the CPU time pid has used, with that of the children it waited
// for: for an sshd, its per-connection processes.
func cpuOf(t testing.TB, pid int) time.Duration {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(data[strings.LastIndexByte(string(data), ')')+2:]))
	var ticks int64
	for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
		n, _ := strconv.ParseInt(f[i], 10, 64)
		ticks += n
	}
	return time.Duration(ticks) * time.Second / 100 // USER_HZ
}
