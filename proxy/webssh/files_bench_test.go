package webssh

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fileBenchSize is the file BenchmarkFilesMemory moves each way.
const fileBenchSize = 1 << 30

// BenchmarkFilesMemory moves a 1 GiB file through the file panel's
// handler (HTTP on loopback, Files.Serve, SFTP on the terminal's SSH
// connection, OpenSSH's sftp-server) each way, and reports the growth of
// this process's resident memory (VmRSS, sampled every 10 ms) over its
// level before the transfer, and the throughput. The process is the
// bastion and the browser both: the growth bounds the bastion's.
func BenchmarkFilesMemory(b *testing.B) {
	d := startSSHD(b, sshdConfig{})
	for _, dir := range []string{DirectionUpload, DirectionDownload} {
		b.Run(dir, func(b *testing.B) {
			for b.Loop() {
				benchTransfer(b, d, dir)
			}
		})
	}
}

// pattern is an endless, cheap, incompressible-enough byte stream.
type pattern struct {
	block []byte
	off   int
	left  int64
}

func newPattern(n int64) *pattern {
	block := randomBytes(nil, 1<<20)
	return &pattern{block: block, left: n}
}

func (p *pattern) Read(b []byte) (int, error) {
	if p.left == 0 {
		return 0, io.EOF
	}
	if int64(len(b)) > p.left {
		b = b[:p.left]
	}
	n := copy(b, p.block[p.off:])
	p.off = (p.off + n) % len(p.block)
	p.left -= int64(n)
	return n, nil
}

func benchTransfer(b *testing.B, d *sshd, direction string) {
	b.StopTimer()
	f, _ := openFiles(b, d, false, nil)
	name := "bench-" + direction + ".bin"
	full := filepath.Join(f.dir, name)
	if direction == DirectionDownload {
		out, err := os.Create(full)
		if err != nil {
			b.Fatal(err)
		}
		bw := bufio.NewWriterSize(out, 1<<20)
		io.Copy(bw, newPattern(fileBenchSize))
		bw.Flush()
		out.Close()
	}
	base := rss(b)
	var peak atomic.Int64
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
				if v := rss(b); v > peak.Load() {
					peak.Store(v)
				}
			}
		}
	})
	start := time.Now()
	b.StartTimer()
	var n int64
	if direction == DirectionUpload {
		req, _ := http.NewRequest(http.MethodPut, f.srv.URL+"/files/"+f.session+"/"+FileUpload+"?"+
			url.Values{"dir": {f.dir}, "name": {name}}.Encode(), newPattern(fileBenchSize))
		req.Header.Set("X-Owner", testOwner)
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusCreated {
			b.Fatalf("upload: %v %v", res, err)
		}
		res.Body.Close()
		n = fileBenchSize
	} else {
		res := f.do(http.MethodGet, FileDownload, url.Values{"path": {full}}, nil, testOwner)
		h := sha256.New()
		n, _ = io.Copy(h, res.Body)
		if n != fileBenchSize {
			b.Fatalf("downloaded %d bytes", n)
		}
		_ = hex.EncodeToString(h.Sum(nil))
	}
	b.StopTimer()
	elapsed := time.Since(start)
	close(stop)
	wg.Wait()
	b.ReportMetric(float64(max(peak.Load()-base, 0))/(1<<20), "rss-growth-MiB")
	b.ReportMetric(float64(n)/(1<<20)/elapsed.Seconds(), "MiB/s")
	os.Remove(full)
	b.StartTimer()
}

// rss is this process's resident set size, in bytes.
func rss(tb testing.TB) int64 {
	s, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.SplitSeq(string(s), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	tb.Fatal("no VmRSS in /proc/self/status")
	return 0
}
