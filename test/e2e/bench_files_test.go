package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkFiles moves a 1 GiB file to vm1 and back through the browser
// terminal's file panel (the page's HTTPS requests, from the client
// namespace, through bastiond's SFTP on the terminal's SSH connection),
// and through `scp` via an OpenSSH jump host on the bastion (`ssh -J`),
// in one run, and prints the ratios; it reports bastiond's resident
// memory growth during the panel's transfers (VmRSS sampled every 10 ms).
func BenchmarkFiles(b *testing.B) {
	NeedLab(b)
	env := newBenchEnv(b)
	src := filepath.Join(env.dir, "src.bin")
	if out, err := exec.Command("dd", "if=/dev/urandom", "of="+src, "bs=1M", "count=1024", "status=none").CombinedOutput(); err != nil {
		b.Fatalf("dd: %v\n%s", err, out)
	}
	os.Chmod(src, 0o644)
	mbps := map[string]float64{}
	timed := func(name string, f func(b *testing.B)) {
		b.Run(name, func(b *testing.B) {
			b.SetBytes(1 << 30)
			for b.Loop() {
				f(b)
			}
			mbps[name] = float64(b.N) * (1 << 30) / b.Elapsed().Seconds() / 1e6
		})
	}

	// The peer: scp through the jump host, before bastiond's firewall.
	env.cleanupFirewall()
	env.startJump()
	scp := func(args ...string) func(b *testing.B) {
		return func(b *testing.B) {
			cmd := exec.Command("ip", append([]string{"netns", "exec", env.ns("NS_CLIENT"), "scp", "-F", filepath.Join(env.dir, "ssh_config")}, args...)...)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("scp %v: %v\n%s", args, err, out)
			}
		}
	}
	timed("upload/scp-J", scp(src, "vm1-jump:bl-bench-scp.bin"))
	timed("download/scp-J", scp("vm1-jump:bl-bench-scp.bin", filepath.Join(env.dir, "scp-back.bin")))
	env.stopPeers()

	d := StartDaemonWith(b, ViaFDs, FilesConfig)
	AddLabUsers(b, d, "alice")
	PinVM1(b, d)
	u := SignedIn(b, lab["BASTION_PUB4"], "alice")
	tc := u.OpenTerminal("vm1")
	session := tc.Shell(lab["LAB_PASSWORD"]).Session
	home := u.Files(http.MethodGet, session, "list", nil, nil)
	var listing struct{ Path string }
	if json.Unmarshal([]byte(home.Body), &listing); home.Status != http.StatusOK || listing.Path == "" {
		b.Fatalf("list home: %d %s", home.Status, home.Body)
	}
	pid := d.Cmd.Process.Pid
	var growth [2]atomic.Int64 // upload, download: peak RSS growth
	sampled := func(i int, f func(b *testing.B)) func(b *testing.B) {
		return func(b *testing.B) {
			base := rssNow(pid)
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				t := time.NewTicker(10 * time.Millisecond)
				defer t.Stop()
				for {
					select {
					case <-stop:
						return
					case <-t.C:
						if g := rssNow(pid) - base; g > growth[i].Load() {
							growth[i].Store(g)
						}
					}
				}
			})
			f(b)
			close(stop)
			wg.Wait()
		}
	}
	n := 0
	timed("upload/panel", sampled(0, func(b *testing.B) {
		f, err := os.Open(src)
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		n++
		a := u.Files(http.MethodPut, session, "upload", url.Values{"dir": {listing.Path}, "name": {"bl-bench-panel-" + strconv.Itoa(n) + ".bin"}}, f)
		if a.Status != http.StatusCreated {
			b.Fatalf("upload: %d %s", a.Status, a.Body)
		}
	}))
	timed("download/panel", sampled(1, func(b *testing.B) {
		a := u.Files(http.MethodGet, session, "download", url.Values{"path": {listing.Path + "/bl-bench-panel-1.bin"}}, nil)
		if a.Status != http.StatusOK {
			b.Fatalf("download: %d %s", a.Status, a.Body)
		}
	}))
	b.ReportMetric(float64(growth[0].Load())/(1<<20), "upload-rss-growth-MiB")
	b.ReportMetric(float64(growth[1].Load())/(1<<20), "download-rss-growth-MiB")
	tc.TypeText("rm -f bl-bench-scp.bin bl-bench-panel-*.bin; exit\n")
	tc.Ended()
	// Printed, not logged: a parent benchmark's log is shown only when it fails.
	fmt.Printf("BenchmarkFiles: 1 GiB upload: panel %.0f MB/s, scp -J %.0f MB/s (%.2fx); download: panel %.0f MB/s, scp -J %.0f MB/s (%.2fx); "+
		"bastiond RSS growth: upload %.1f MiB, download %.1f MiB (target < 32)\n",
		mbps["upload/panel"], mbps["upload/scp-J"], mbps["upload/panel"]/mbps["upload/scp-J"],
		mbps["download/panel"], mbps["download/scp-J"], mbps["download/panel"]/mbps["download/scp-J"],
		float64(growth[0].Load())/(1<<20), float64(growth[1].Load())/(1<<20))
}

// rssNow is process pid's resident set size, 0 if it cannot be read.
func rssNow(pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
