package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/guac"
)

// BenchmarkGuacd puts bastiond beside Apache Guacamole's guacd, the usual
// open-source way to a desktop in the browser: the same vm2 desktop (ico
// keeps redrawing it, as in BenchmarkWebRDP), 1, 2 and 4 sessions on each
// side, one side after the other in one run. guacd runs in the bastion's
// namespace, where bastiond runs, and its clients are this test's
// Guacamole-protocol client (test/guac), which answers every frame as a browser does,
// so guacd does all its work: RDP decoding, then PNG, JPEG or WebP
// encoding of what changed. bastiond's clients are IronRDP in headless
// Chromium, one page per session, through the RDCleanPath gateway: the
// browser decodes, bastiond relays. For each side: the gateway's CPU per
// session (guacd's whole process tree: it forks one process per
// connection), its memory growth per session (PSS, so that what guacd's
// processes share is counted once), and the bytes per second each user
// receives. The figure that matters is bastiond's CPU per session over
// guacd's; the goal is under 0.1.
//
// Everything (ico, vm2's display and its RDP server, the browser, guacd)
// shares the machine's cores; the machine's busy share during each window
// is reported beside the figures.
func BenchmarkGuacd(b *testing.B) {
	NeedLab(b)
	if _, err := exec.LookPath("guacd"); err != nil {
		if os.Getenv("CI") != "" {
			b.Fatal("guacd is not installed (test/deps.sh test installs it)")
		}
		b.Skip("guacd is not installed (test/deps.sh test installs it)")
	}
	br := StartBrowser(b, "bench-guacd")
	d := StartDaemonWith(b, ViaFDs, func(dir string) string {
		// The default target_timeout, not the 2 s the kill tests use: on
		// a loaded machine vm2's server can stall that long.
		cfg := WebRDPConfig(dir, true, "  capacity: 1000\n  sessions_per_user: 100\n")
		return strings.Replace(cfg, "target_timeout: 2s", "target_timeout: 30s", 1)
	})
	AddLabUsers(b, d, "alice")
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		b.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	g := StartGuacd(b, lab["NS_BASTION"])
	stopAnimation := animate(b)
	defer stopAnimation()
	base := "https://" + ServerName + "/"
	br.PortalLogin(b, base, "alice", TunnelPassword)
	const warmUp, window = 8 * time.Second, 15 * time.Second
	const width, height = 1280, 800 // vm2's screen
	bastiond, guacd := d.Cmd.Process.Pid, g.Cmd.Process.Pid
	server := labPID(b, "rdp-tls") // vm2's FreeRDP shadow server with TLS security

	// Each side's own CPU with no session, subtracted from its figures.
	c0, t0 := cpuOf(b, bastiond), treeCPU(guacd)
	time.Sleep(3 * time.Second)
	idleBastiond := float64(cpuOf(b, bastiond)-c0) / float64(3*time.Second)
	idleGuacd := float64(treeCPU(guacd).total()-t0.total()) / float64(3*time.Second)

	type figures struct {
		side       string
		sessions   int
		coreShare  float64 // the gateway's CPU per session, in cores
		memGrowth  float64 // the gateway's PSS growth per session, bytes
		bytesPerS  float64 // per session, to the user
		framesPerS float64 // guacd: frames (syncs) per session per second
		busy       float64 // the machine's busy share of all its cores
		server     float64 // vm2's RDP server's CPU, in cores
		browser    float64 // Chromium's CPU, in cores
		visible    int     // bastiond: the pages Chromium says are visible
		carried    float64 // sessions live, the mean of the window's start and end
		syscalls   float64 // bastiond: read and write system calls per second per session
		switches   float64 // bastiond: its threads' context switches per second per session
	}
	var all []figures
	tabs := 1
	visible := 0 // bastiond: the pages Chromium says are visible, of the last run

	// open starts n sessions on one side and returns the functions that
	// read the bytes sent to the users so far and that end the sessions.
	openBastion := func(b *testing.B, n int) (down func() int64, end func()) {
		for i := range n {
			if i >= tabs {
				br.NewTab(b)
				tabs++
			}
			br.Tab(b, i)
			br.Viewport(b, width, height+60)
			br.Goto(b, base)
			br.OpenDesktop(b, "vm2")
			DesktopSignIn(b, br, lab["LAB_PASSWORD"])
			WaitClientState(b, br, "connected")
		}
		if live := liveSessions(b, d, "vm2"); live != n {
			b.Fatalf("%d live sessions to vm2, want %d", live, n)
		}
		visible = 0
		for i := range n {
			br.Tab(b, (i+1)%n) // the last tab stays in front
			var state string
			br.Eval(b, "document.visibilityState", &state)
			if state == "visible" {
				visible++
			}
		}
		seen := map[string]int64{} // the bytes of each session when last seen live
		return func() int64 {
				// A session that ended counts with what it had sent when
				// last seen, so that the sum never goes down.
				for id, n := range liveBytesByID(b, d, "vm2") {
					seen[id] = n
				}
				var sum int64
				for _, n := range seen {
					sum += n
				}
				return sum
			}, func() {
				for i := range n {
					br.Tab(b, i)
					// A page that lost its session is counted, not a failure:
					// on a machine loaded past its cores, Chromium can be
					// too slow to answer bastiond's pings (client_timeout).
					if s := ClientState(b, br); s != "connected" {
						var reasons []any
						for _, r := range EndedRecords(d, "vm2") {
							reasons = append(reasons, r["reason"])
						}
						b.Logf("page %d is %q after the window, not connected; it says %q; the sessions that ended so far: %v",
							i, s, br.Text(b, "#client"), reasons)
					} else {
						// Disconnect asks vm2's server to end the session (a
						// Shutdown Request), so that it drops the client at once
						// rather than when it notices the connection gone. The
						// page may have lost its session since the check above.
						var clicked bool
						br.Eval(b, `(() => { const d = document.querySelector("#client button.disconnect");
							if (!d || d.disabled) return false; d.click(); return true; })()`, &clicked)
						for deadline := time.Now().Add(10 * time.Second); clicked && ClientState(b, br) == "connected"; time.Sleep(100 * time.Millisecond) {
							if time.Now().After(deadline) {
								b.Logf("page %d is still connected 10 s after Disconnect", i)
								break
							}
						}
					}
					br.Goto(b, "about:blank")
				}
				for deadline := time.Now().Add(30 * time.Second); liveSessions(b, d, "vm2") > 0; time.Sleep(200 * time.Millisecond) {
					if time.Now().After(deadline) {
						b.Fatal("the desktops are still live 30 s after their pages closed")
					}
				}
			}
	}
	var frames func() int64
	openGuacd := func(b *testing.B, n int) (down func() int64, end func()) {
		sessions := make([]*guac.Session, n)
		for i := range sessions {
			// Half the sessions reach vm2 over IPv6, half over IPv4.
			host := lab["VM2_6"]
			if i%2 == 1 {
				host = lab["VM2_4"]
			}
			var conn net.Conn
			if err := InNetns(lab["NS_BASTION"], func() (err error) {
				conn, err = net.DialTimeout("tcp", g.Addr, 5*time.Second)
				return err
			}); err != nil {
				b.Fatalf("guacd: %v", err)
			}
			s, err := guac.Dial(conn, guac.RDP{Host: host, Port: lab["VM2_RDP_TLS_PORT"], Username: lab["LAB_USER"],
				Password: lab["LAB_PASSWORD"], Security: "tls", Width: width, Height: height})
			if err != nil {
				b.Fatalf("%v\nguacd: %s", err, tail(g.Log.String(), 3000))
			}
			sessions[i] = s
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i, s := range sessions {
			wg.Go(func() { errs[i] = s.Run(20 * time.Second) })
		}
		frames = func() (f int64) {
			for _, s := range sessions {
				f += s.Frames.Load()
			}
			return f
		}
		return func() (n int64) {
				for _, s := range sessions {
					n += s.Bytes.Load()
				}
				return n
			}, func() {
				for _, s := range sessions {
					s.Close()
				}
				wg.Wait()
				for i, err := range errs {
					if err != nil {
						b.Errorf("guacd session %d: %v\nguacd: %s", i, err, tail(g.Log.String(), 3000))
					}
					if sessions[i].Images.Load() == 0 {
						b.Errorf("guacd session %d drew no image", i)
					}
				}
			}
	}

	run := func(side string, n int) {
		b.Run(fmt.Sprintf("%s-%d", side, n), func(b *testing.B) {
			var f figures
			for b.Loop() {
				open, cpu, idle := openBastion, func() time.Duration { return cpuOf(b, bastiond) }, idleBastiond
				mem := func() int64 { return pssOf(b, bastiond) }
				pids := func() []int { return []int{bastiond} }
				if side == "guacd" {
					open, cpu, idle = openGuacd, func() time.Duration { return treeCPU(guacd).total() }, idleGuacd
					mem = func() int64 { return treePSS(b, guacd) }
					pids = func() []int { return tree(guacd) }
				}
				frames = nil
				mem0 := mem()
				down, end := open(b, n)
				time.Sleep(warmUp)
				bytes0, cpu0, stat0, server0, browser0, at0 := down(), cpu(), machineCPU(b), cpuOf(b, server), chromiumCPU(), time.Now()
				var frames0 int64
				if frames != nil {
					frames0 = frames()
				}
				calls0, switches0 := procActivity(bastiond)
				sampled := samplePerf(b, side, n, pids(), window)
				time.Sleep(window)
				sampled()
				calls1, switches1 := procActivity(bastiond)
				bytes1, cpu1, stat1, server1, browser1, elapsed := down(), cpu(), machineCPU(b), cpuOf(b, server), chromiumCPU(), time.Since(at0)
				carried := float64(n)
				if side == "bastiond" {
					carried = float64(n+liveSessions(b, d, "vm2")) / 2
				}
				mem1 := mem()
				f = figures{side: side, sessions: n}
				if frames != nil {
					f.framesPerS = float64(frames()-frames0) / elapsed.Seconds() / float64(n)
				}
				end()
				busy := max(0, float64(cpu1-cpu0)/float64(elapsed)-idle)
				f.carried = carried
				f.coreShare = busy / carried
				f.bytesPerS = float64(bytes1-bytes0) / elapsed.Seconds() / carried
				f.memGrowth = float64(mem1-mem0) / carried
				f.busy = stat1.busySince(stat0)
				f.server = float64(server1-server0) / float64(elapsed)
				f.browser = float64(browser1-browser0) / float64(elapsed)
				if side == "bastiond" {
					f.visible = visible
					f.syscalls = float64(calls1-calls0) / elapsed.Seconds() / carried
					f.switches = float64(switches1-switches0) / elapsed.Seconds() / carried
				}
				if bytes1 == bytes0 {
					b.Fatalf("%s-%d: no bytes to the users in %s", side, n, window)
				}
			}
			b.ReportMetric(f.coreShare*100, "%core/session")
			b.ReportMetric(f.bytesPerS/1e6, "MB/s/session")
			b.ReportMetric(f.memGrowth/(1<<20), "MiB/session")
			all = append(all, f)
		})
	}
	for _, n := range []int{1, 2, 4} {
		run("guacd", n)
		run("bastiond", n)
	}

	logf := func(format string, args ...any) { fmt.Printf("BenchmarkGuacd: "+format+"\n", args...) }
	logf("idle: bastiond %.2f%%, guacd %.2f%% of a core", idleBastiond*100, idleGuacd*100)
	peer := map[int]figures{}
	for _, f := range all {
		if f.side == "guacd" {
			peer[f.sessions] = f
		}
	}
	for _, f := range all {
		extra := fmt.Sprintf(", %d of %d pages visible, %.1f sessions carried, %.0f reads and writes and %.0f context switches a second",
			f.visible, f.sessions, f.carried, f.syscalls, f.switches)
		if f.side == "guacd" {
			extra = fmt.Sprintf(", %.1f frames/s", f.framesPerS)
		}
		logf("%s-%d: per session %.2f%% of a core, %+.1f MiB, %.3f MB/s to the user%s; vm2's RDP server %.0f%% of a core, Chromium %.0f%%; machine %.0f%% busy",
			f.side, f.sessions, f.coreShare*100, f.memGrowth/(1<<20), f.bytesPerS/1e6, extra, f.server*100, f.browser*100, f.busy*100)
	}
	for _, f := range all {
		if p, ok := peer[f.sessions]; ok && f.side == "bastiond" && p.coreShare > 0 {
			logf("%d sessions: bastiond's CPU per session is %.3fx guacd's (goal < 0.1); per byte to the user %.3fx",
				f.sessions, f.coreShare/p.coreShare, (f.coreShare/f.bytesPerS)/(p.coreShare/p.bytesPerS))
		}
	}
}

// samplePerf, when $BASTIOND_BENCH_PERF names a directory, samples the
// call stacks of pids with perf for the window, into DIR/SIDE-N.data
// (`perf report -i` reads it); the function it returns waits for perf.
// Without the variable it does nothing: perf costs the sampled processes
// a little CPU, which the figures should not carry.
func samplePerf(t testing.TB, side string, n int, pids []int, window time.Duration) func() {
	dir := os.Getenv("BASTIOND_BENCH_PERF")
	if dir == "" {
		return func() {}
	}
	list := make([]string, len(pids))
	for i, p := range pids {
		list[i] = strconv.Itoa(p)
	}
	c := exec.Command("perf", "record", "-F", "1999", "-g", "-p", strings.Join(list, ","),
		"-o", filepath.Join(dir, fmt.Sprintf("%s-%d.data", side, n)), "--", "sleep", fmt.Sprint(window.Seconds()-1))
	if err := c.Start(); err != nil {
		t.Logf("perf: %v", err)
		return func() {}
	}
	return func() { c.Wait() }
}

// liveBytesByID is the bytes sent to the user of each of target's live
// sessions so far, by session ID, from `bastionctl sessions`.
func liveBytesByID(t testing.TB, d *Daemon, target string) map[string]int64 {
	t.Helper()
	out, err := d.Ctl(nil, "sessions", "--json")
	if err != nil {
		t.Fatalf("sessions: %v\n%s", err, out)
	}
	var live []struct {
		ID        string `json:"id"`
		Target    string `json:"target"`
		BytesDown int64  `json:"bytes_down"`
	}
	if err := json.Unmarshal([]byte(out), &live); err != nil {
		t.Fatalf("sessions --json: %v\n%s", err, out)
	}
	m := map[string]int64{}
	for _, s := range live {
		if s.Target == target {
			m[s.ID] = s.BytesDown
		}
	}
	return m
}

// liveSessions is how many of target's sessions are live, from
// `bastionctl sessions`.
func liveSessions(t testing.TB, d *Daemon, target string) int {
	t.Helper()
	return len(liveBytesByID(t, d, target))
}

// processCPU is the CPU time of each process of a tree, by PID.
type processCPU map[int]time.Duration

func (p processCPU) total() (sum time.Duration) {
	for _, c := range p {
		sum += c
	}
	return sum
}

// treeCPU is the CPU time (user and system, with that of reaped children)
// of pid and every process below it. guacd forks one process per
// connection.
func treeCPU(pid int) processCPU {
	cpu := processCPU{}
	for _, p := range tree(pid) {
		if f := procStat(p); f != nil {
			var ticks int64
			for _, i := range []int{11, 12, 13, 14} { // utime stime cutime cstime
				n, _ := strconv.ParseInt(f[i], 10, 64)
				ticks += n
			}
			cpu[p] = time.Duration(ticks) * time.Second / 100 // USER_HZ
		}
	}
	return cpu
}

// chromiumCPU is the CPU time of this test's Chromium: the processes below
// this one whose name begins with "chrom".
func chromiumCPU() (sum time.Duration) {
	for pid, c := range treeCPU(os.Getpid()) {
		if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.HasPrefix(string(comm), "chrom") {
			sum += c
		}
	}
	return sum
}

// treePSS is the proportional set size of pid and every process below it:
// pages they share count once in all.
func treePSS(t testing.TB, pid int) (sum int64) {
	for _, p := range tree(pid) {
		sum += pssOf(t, p)
	}
	return sum
}

// pssOf is a process's proportional set size, in bytes.
func pssOf(t testing.TB, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0 // gone
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("Pss: %v", err)
			}
			return kb << 10
		}
	}
	t.Fatalf("/proc/%d/smaps_rollup has no Pss", pid)
	return 0
}

// tree is pid and the PIDs of every process below it, from /proc.
func tree(pid int) []int {
	children := map[int][]int{}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		p, _ := strconv.Atoi(filepath.Base(dir))
		if f := procStat(p); f != nil {
			ppid, _ := strconv.Atoi(f[1])
			children[ppid] = append(children[ppid], p)
		}
	}
	out := []int{pid}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// procStat is the fields of /proc/PID/stat after the command name (state
// is [0], ppid [1], utime [11]), or nil when the process is gone.
func procStat(pid int) []string {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return nil
	}
	return strings.Fields(s[i+2:])
}

// cpuTimes is the first line of /proc/stat: the whole machine's CPU time
// by kind, in ticks.
type cpuTimes []int64

func machineCPU(t testing.TB) cpuTimes {
	t.Helper()
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	var c cpuTimes
	for _, f := range strings.Fields(line)[1:] {
		n, _ := strconv.ParseInt(f, 10, 64)
		c = append(c, n)
	}
	return c
}

// busySince is the share of all the machine's CPU time that was not idle
// (idle, iowait) between before and c.
func (c cpuTimes) busySince(before cpuTimes) float64 {
	var total, idle int64
	for i := range min(len(c), len(before), 8) { // user nice system idle iowait irq softirq steal
		d := c[i] - before[i]
		total += d
		if i == 3 || i == 4 {
			idle += d
		}
	}
	if total == 0 {
		return 0
	}
	return 1 - float64(idle)/float64(total)
}

// procActivity is pid's read and write system calls so far (/proc/PID/io:
// syscr, syscw) and its threads' context switches (voluntary and not).
func procActivity(pid int) (calls, switches int64) {
	if data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid)); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ": "); ok && (k == "syscr" || k == "syscw") {
				n, _ := strconv.ParseInt(v, 10, 64)
				calls += n
			}
		}
	}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that ended
		}
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.HasSuffix(k, "ctxt_switches") {
				n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				switches += n
			}
		}
	}
	return calls, switches
}
