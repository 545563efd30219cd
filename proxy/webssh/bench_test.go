package webssh

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// adminSession is a scripted terminal session as an administrator works:
// commands typed at about 8 characters a second (each keystroke echoed,
// and recorded, on its own), their output, and a pause to read it.
var adminSession = []string{
	"uname -a",
	"ls -la /etc",
	"ps aux",
	"df -h; free -m",
	"head -120 /etc/services",
	"ip addr",
	"top -b -n 1 | head -40",
	"for i in 1 2 3 4 5; do date; sleep 1; done",
	"ls -la /usr/bin | head -300",
	"cat /etc/passwd",
	"env | sort",
	"ls -la /var/log",
}

// BenchmarkRecordingSize: bytes per minute of a recorded browser SSH
// session, through the real terminal path (a page's WebSocket, the
// bastion's SSH client, OpenSSH's sshd, a shell), compressed as stored
// and decompressed, and their ratio. One iteration is one session of
// about a minute or more: "admin" types and reads adminSession; "top"
// watches top(1) redraw a 120x40 screen every second for a minute.
func BenchmarkRecordingSize(b *testing.B) {
	d := startSSHD(b, sshdConfig{})
	b.Run("admin", func(b *testing.B) {
		for b.Loop() {
			recordSession(b, d, func(c *client) {
				for i, cmd := range adminSession {
					line := fmt.Sprintf("%s; echo M$((%d*7))-OK", cmd, i+1)
					for _, ch := range line {
						c.typeText(string(ch))
						time.Sleep(125 * time.Millisecond)
					}
					c.typeText("\r")
					c.waitFor(fmt.Sprintf("M%d-OK", (i+1)*7))
					time.Sleep(2 * time.Second) // reading
				}
			})
		}
	})
	b.Run("top", func(b *testing.B) {
		for b.Loop() {
			recordSession(b, d, func(c *client) {
				c.typeText("top -d 1 -n 60; echo T$((6*7))-OK\r")
				waitLong(b, c, "T42-OK", 2*time.Minute)
			})
		}
	})
}

// recordSession records one session in which work runs, and reports its
// recording's size per minute.
func recordSession(b *testing.B, d *sshd, work func(*client)) {
	dir := filepath.Join(b.TempDir(), "recordings")
	// The page reads only between commands here: no pings meanwhile.
	h := newHarness(b, d, d.addr(false), func(p *Params) { p.Record, p.RecordDir, p.KeepAlive = true, dir, time.Hour })
	c := h.dial()
	c.login(map[string]any{"password": d.password})
	start := time.Now()
	work(c)
	c.typeText("exit\r")
	c.expectEnd(endExit)
	h.waitServed()
	elapsed := time.Since(start)
	path := filepath.Join(dir, h.session(0).id+".cast.gz")
	fi, err := os.Stat(path)
	if err != nil {
		b.Fatal(err)
	}
	plain := gunzip(b, path)
	// The same bytes compressed in one go, without the flush every
	// second: what the flushes cost.
	var oneShot bytes.Buffer
	zw := gzip.NewWriter(&oneShot)
	zw.Write(plain)
	zw.Close()
	minutes := elapsed.Minutes()
	b.ReportMetric(float64(len(plain))/minutes, "plain-B/min")
	b.ReportMetric(float64(fi.Size())/minutes, "gzip-B/min")
	b.ReportMetric(float64(len(plain))/float64(fi.Size()), "ratio")
	b.ReportMetric(float64(oneShot.Len())/minutes, "gzip-unflushed-B/min")
	b.ReportMetric(elapsed.Seconds(), "session-s")
}

// waitLong is client.waitFor with a longer deadline.
func waitLong(b *testing.B, c *client, want string, limit time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for !strings.Contains(c.out.String(), want) {
		typ, p, err := c.ws.Read(ctx)
		if err != nil {
			b.Fatalf("waiting for %q: %v", want, err)
		}
		if typ == websocket.MessageBinary {
			c.out.Write(p)
		}
	}
}
