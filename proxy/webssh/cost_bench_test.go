package webssh

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// The two benchmarks below measure what the bastion's side of a browser
// terminal costs, as the lab's BenchmarkWebSSH (test/e2e) does with 1,000
// terminals, without the lab: the page is a Go WebSocket client in a child
// process (this test binary, running TestTerminalClient), so that this
// process holds only what bastiond would hold for the terminals: Serve, its
// SSH client to a real sshd on loopback, the recording and the live view's
// stream. Its CPU time (getrusage), allocations, heap and RSS are then the
// bastion's alone.

// Environment of the client process.
const (
	clientURLEnv       = "WEBSSH_BENCH_URL"
	clientPasswordEnv  = "WEBSSH_BENCH_PASSWORD"
	clientTerminalsEnv = "WEBSSH_BENCH_TERMINALS"
)

// costHarness serves recorded, watchable terminals (as a role that
// records does) with the daemon's default keepalive period.
func costHarness(b *testing.B) (*harness, *sshd) {
	d := startSSHD(b, sshdConfig{})
	dir := filepath.Join(b.TempDir(), "recordings")
	hub := watch.NewHub()
	h := newHarness(b, d, d.addr(false), func(p *Params) {
		p.Record, p.RecordDir, p.Watch, p.KeepAlive = true, dir, hub, 15*time.Second
	})
	return h, d
}

// terminalClient is the child process: its stdin takes commands, its
// stdout says when each is done.
type terminalClient struct {
	b    *testing.B
	cmd  *exec.Cmd
	in   io.WriteCloser
	out  *bufio.Reader
	done chan error
}

// startClient opens n terminals from a child process, each logged in with
// its shell echoing every byte typed (raw mode, cat), and returns once
// all are.
func startClient(b *testing.B, h *harness, d *sshd, n int) *terminalClient {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestTerminalClient$", "-test.v=false")
	cmd.Env = append(os.Environ(), clientURLEnv+"=ws"+strings.TrimPrefix(h.srv.URL, "http"),
		clientPasswordEnv+"="+d.password, clientTerminalsEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &terminalClient{b: b, cmd: cmd, in: in, out: bufio.NewReader(out), done: make(chan error, 1)}
	b.Cleanup(c.stop)
	c.await("ready")
	return c
}

// do sends one command and waits for the client's answer.
func (c *terminalClient) do(command string) {
	c.b.Helper()
	if _, err := fmt.Fprintln(c.in, command); err != nil {
		c.b.Fatalf("client: %v", err)
	}
	c.await("done")
}

func (c *terminalClient) await(want string) {
	c.b.Helper()
	var said []string // what the client printed instead: its failure
	for {
		line, err := c.out.ReadString('\n')
		if err != nil {
			c.b.Fatalf("client: waiting for %q: %v\n%s", want, err, strings.Join(said, ""))
		}
		said = append(said, line)
		if strings.TrimSpace(line) == want {
			return
		}
	}
}

// stop has the client close its terminals and exit, and waits for it.
func (c *terminalClient) stop() {
	if c.in == nil {
		return
	}
	c.in.Close() // EOF: the client closes its terminals and exits
	c.in = nil
	go func() { c.done <- c.cmd.Wait() }()
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// cpuTime is this process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heap is the Go heap and stacks in use, after a few collections (each
// halves the stacks that use less than a quarter of theirs, as the
// collections a running daemon makes do), and the stacks alone.
func heap() (all, stacks int64) {
	for range gcs {
		runtime.GC()
	}
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapInuse + m.StackInuse), int64(m.StackInuse)
}

// BenchmarkTerminalKeystroke: the bastion's cost of one keystroke and its
// echo in a recorded, watchable browser terminal (no one watching): the
// page's WebSocket frame in, the SSH channel write, the machine's echo
// read, recorded, published and framed to the page. One op is one
// keystroke typed and its echo received by the page, one at a time.
// bastion-CPU-ns/key is this process's CPU time (getrusage) per keystroke:
// it does not include the page (a child process) or sshd; allocs/op and
// B/op are the bastion's too. The recording is flushed once a second,
// whatever the rate: BenchmarkKeystrokeFlush in proxy/recording says what
// a flush adds when each keystroke is flushed alone.
func BenchmarkTerminalKeystroke(b *testing.B) {
	h, d := costHarness(b)
	c := startClient(b, h, d, 1)
	b.ReportAllocs()
	cpu := cpuTime(b)
	b.ResetTimer()
	c.do("keys " + strconv.Itoa(b.N))
	b.StopTimer()
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "bastion-CPU-ns/key")
}

// gcs is how many collections heap makes before it measures.
var gcs = 4

// BenchmarkIdleTerminals: the bastion's memory per open browser terminal
// (recorded and watchable, as in the lab), for 200 terminals logged in and
// echoing, with no one typing; then once each has echoed one more
// keystroke. heap-B/terminal is the growth of the Go heap and stacks in
// use (after a collection) divided by the terminals (stack-B/terminal the
// stacks' part); rss-B/terminal the
// growth of the process's RSS; goroutines/terminal the goroutines each
// adds.
func BenchmarkIdleTerminals(b *testing.B) {
	const n = 200
	if os.Getenv("WEBSSH_BENCH_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1 // every allocation, for the profile
	}
	h, d := costHarness(b)
	for b.Loop() {
		heap0, stack0 := heap()
		rss0, g0 := rss(b), runtime.NumGoroutine()
		c := startClient(b, h, d, n)
		time.Sleep(2 * recording.FlushInterval) // the recordings' first flushes are done
		heap1, stack1 := heap()
		rss1, g1 := rss(b), runtime.NumGoroutine()
		c.do("type")
		time.Sleep(2 * recording.FlushInterval)
		heap2, _ := heap()
		rss2 := rss(b)
		b.ReportMetric(float64(heap1-heap0)/n, "idle-heap-B/terminal")
		b.ReportMetric(float64(rss1-rss0)/n, "idle-rss-B/terminal")
		b.ReportMetric(float64(heap2-heap0)/n, "typed-heap-B/terminal")
		b.ReportMetric(float64(rss2-rss0)/n, "typed-rss-B/terminal")
		b.ReportMetric(float64(stack1-stack0)/n, "idle-stack-B/terminal")
		b.ReportMetric(float64(g1-g0)/n, "goroutines/terminal")
		if os.Getenv("WEBSSH_BENCH_HEAPPROFILE") != "" {
			writeProfile(b, "heap", os.Getenv("WEBSSH_BENCH_HEAPPROFILE"))
			writeProfile(b, "goroutine", os.Getenv("WEBSSH_BENCH_HEAPPROFILE")+".goroutines")
		}
		c.stop()
		h.waitServed()
	}
}

// TestTerminalClient is the page of the benchmarks above when run as their
// child process; otherwise it skips.
func TestTerminalClient(t *testing.T) {
	url := os.Getenv(clientURLEnv)
	if url == "" {
		t.Skip("the benchmarks' client process only")
	}
	n, _ := strconv.Atoi(os.Getenv(clientTerminalsEnv))
	// Each terminal is read all the time, as a page does, so that the
	// bastion's pings are answered; a read of terminal output is an echo.
	type term struct {
		ws     *websocket.Conn
		echoes chan struct{}
	}
	terms := make([]term, 0, n)
	var reading sync.WaitGroup
	defer reading.Wait()
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{Subprotocol}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		defer ws.CloseNow()
		ws.SetReadLimit(1 << 20)
		c := &client{t: t, ws: ws}
		c.login(map[string]any{"password": os.Getenv(clientPasswordEnv)})
		c.run("stty raw -echo; echo RAW-$((1+1)); cat", "RAW-2")
		tm := term{ws: ws, echoes: make(chan struct{}, 1)}
		reading.Go(func() {
			for {
				typ, p, err := tm.ws.Read(context.Background())
				if err != nil {
					return
				}
				if typ == websocket.MessageBinary && len(p) > 0 {
					tm.echoes <- struct{}{}
				}
			}
		})
		terms = append(terms, tm)
	}
	fmt.Println("ready")
	key := []byte("x")
	ctx := context.Background()
	echo := func(c term) {
		if err := c.ws.Write(ctx, websocket.MessageBinary, key); err != nil {
			t.Fatal(err)
		}
		<-c.echoes
	}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch {
		case len(f) == 2 && f[0] == "keys":
			k, _ := strconv.Atoi(f[1])
			for range k {
				echo(terms[0])
			}
		case len(f) == 1 && f[0] == "type":
			for _, c := range terms {
				echo(c)
			}
		default:
			t.Fatalf("unknown command %q", in.Text())
		}
		fmt.Println("done")
	}
	for _, c := range terms {
		c.ws.CloseNow()
	}
}

// writeProfile writes the profile name (heap, goroutine) to path.
func writeProfile(b *testing.B, name, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup(name).WriteTo(f, 0); err != nil {
		b.Fatal(err)
	}
}
