package e2e

import (
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/proxy/recording"
)

// BenchmarkRDPRecording measures what recording a remote desktop costs:
// the recording's bytes per minute, compressed (as stored) and not, and
// bastiond's CPU per session with and without the recording, for an idle
// desktop (vm2's clock, redrawn each second) and a busy one (ico's
// animation, 50 frames a second). The client is xfreerdp through rdpBridge
// (the gateway sees what the browser client sends), the server vm2's
// FreeRDP shadow server with TLS security. BASTIOND_RDPREC_SAMPLE=DIR
// writes the first MiB of the busy recording to DIR/sample.rdp.gz (the
// tap's benchmark input, proxy/recording/testdata).
func BenchmarkRDPRecording(b *testing.B) {
	NeedLab(b)
	const limits = "  capacity: 1000\n  sessions_per_user: 100\n"
	d := StartDaemonWith(b, ViaFDs, func(dir string) string { return WebRDPConfig(dir, true, limits) })
	AddLabUsers(b, d, "alice")
	if out, err := d.Ctl(nil, "hostkeys", "scan", "vm2", "--pin"); err != nil {
		b.Fatalf("hostkeys scan vm2 --pin: %v\n%s", err, out)
	}
	bridge := newRDPBridge(b, SignedIn(b, lab["BASTION_PUB4"], "alice"), "vm2")
	reload := func(cfg string) {
		d.WriteConfig(cfg)
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
	}
	cpu0 := cpuOf(b, d.Cmd.Process.Pid)
	time.Sleep(5 * time.Second)
	idle := float64(cpuOf(b, d.Cmd.Process.Pid)-cpu0) / float64(5*time.Second)
	const warmUp, window = 6 * time.Second, 30 * time.Second
	var lines []string
	for _, screen := range []string{"idle", "busy"} {
		for _, recorded := range []bool{false, true} {
			name := screen + "-plain"
			if recorded {
				name = screen + "-recorded"
			}
			b.Run(name, func(b *testing.B) {
				if recorded {
					reload(RecordedRDPConfig(d.Dir, true, limits))
				} else {
					reload(WebRDPConfig(d.Dir, true, limits))
				}
				if screen == "busy" {
					defer animate(b)()
				}
				before := rdpRecordingsB(d)
				var share float64
				var moved int64
				for b.Loop() {
					c := exec.Command("xvfb-run", "-a", "-s", "-screen 0 1280x800x24", "xfreerdp", "/v:"+bridge.addr(),
						"/u:"+lab["LAB_USER"], "/p:"+lab["LAB_PASSWORD"], "/cert:ignore", "/sec:tls", "/size:1280x800",
						"/log-level:ERROR")
					c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
					if err := c.Start(); err != nil {
						b.Fatal(err)
					}
					time.Sleep(warmUp)
					bytes0, cpu0, t0 := liveBytesDown(b, d, "vm2"), cpuOf(b, d.Cmd.Process.Pid), time.Now()
					time.Sleep(window)
					bytes1, cpu1, elapsed := liveBytesDown(b, d, "vm2"), cpuOf(b, d.Cmd.Process.Pid), time.Since(t0)
					syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
					c.Wait()
					bridge.waitEnded(b)
					share = max(0, float64(cpu1-cpu0)/float64(elapsed)-idle)
					moved = bytes1 - bytes0
				}
				b.ReportMetric(share*100, "%core/session")
				line := fmt.Sprintf("%s: bastiond %.2f%% of a core, %.1f KB/s relayed to the user", name, share*100,
					float64(moved)/window.Seconds()/1e3)
				if recorded {
					var f string
					for id, path := range rdpRecordingsB(d) {
						if _, ok := before[id]; !ok {
							f = path
						}
					}
					if f == "" {
						b.Fatal("the recorded session left no recording")
					}
					fi, _ := os.Stat(f)
					sum, err := recording.SummarizeRDP(f)
					if err != nil {
						b.Fatal(err)
					}
					raw := rawSize(b, f)
					minutes := sum.Duration.Minutes()
					b.ReportMetric(float64(fi.Size())/minutes/1e6, "MB(gz)/min")
					b.ReportMetric(float64(raw)/minutes/1e6, "MB(raw)/min")
					line += fmt.Sprintf("; recording %s: %.0f s, %.3f MB/min compressed, %.3f MB/min uncompressed (ratio %.1f), "+
						"server %d bytes, client %d bytes", f, sum.Duration.Seconds(), float64(fi.Size())/minutes/1e6,
						float64(raw)/minutes/1e6, float64(raw)/float64(fi.Size()), sum.ServerBytes, sum.ClientBytes)
					if out := os.Getenv("BASTIOND_RDPREC_SAMPLE"); out != "" && screen == "busy" {
						sample(b, f, out, 1<<20)
					}
				}
				lines = append(lines, line)
			})
		}
	}
	fmt.Printf("BenchmarkRDPRecording: bastiond idle %.2f%% of a core\n", idle*100)
	for _, l := range lines {
		fmt.Println("BenchmarkRDPRecording: " + l)
	}
}

// rdpRecordingsB are the RDP recordings in the daemon's store, by ID.
func rdpRecordingsB(d *Daemon) map[string]string {
	files, _ := filepath.Glob(d.Dir + "/state/recordings/*" + recording.RDPExt)
	out := map[string]string{}
	for _, f := range files {
		out[f[len(f)-len("0123456789ab"+recording.RDPExt):len(f)-len(recording.RDPExt)]] = f
	}
	return out
}

// rawSize is the decompressed size of the recording f.
func rawSize(t testing.TB, f string) int64 {
	r, err := os.Open(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	zr, err := gzip.NewReader(r)
	if err != nil {
		t.Fatal(err)
	}
	n, _ := io.Copy(io.Discard, zr)
	return n
}

// sample writes to out (a directory) the recording ID.rdp.gz with the
// header and the first records of f, up to limit payload bytes: the reads
// of a real session, for the tap's benchmark. Their times are not kept.
func sample(t testing.TB, f, out string, limit int) {
	r, err := recording.OpenRDP(f)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h := r.Header
	h.Session = "sample"
	w, err := recording.CreateRDP(out, h)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < limit; {
		rec, err := r.Next()
		if err != nil {
			break
		}
		w.Record(rec.Kind, rec.Data)
		n += len(rec.Data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}
