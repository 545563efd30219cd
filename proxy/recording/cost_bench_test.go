package recording

import (
	"bytes"
	"syscall"
	"testing"
	"time"
)

// cpuTime is this process's user and system CPU time so far: on shared
// cores it is steadier than the wall-clock ns/op.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkKeystrokeFlush: what a terminal's recording costs per keystroke
// echo when each is flushed alone, as when a user types slower than one key
// per FlushInterval (the lab's 1,000 terminals typing a key every 2 s): one
// op is one byte of output recorded and the flush that follows it, written
// to the file.
func BenchmarkKeystrokeFlush(b *testing.B) {
	r, err := Create(b.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p := []byte("x")
	b.ReportAllocs()
	cpu := cpuTime(b)
	for b.Loop() {
		if err := r.Output(p); err != nil {
			b.Fatal(err)
		}
		r.flushLater()
	}
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "CPU-ns/op")
}

// BenchmarkScreenFlush: a full-screen program's redraw (a 120x40 screen of
// text and colours, changing a little each time) recorded and flushed, as
// top(1) does once a second. It reports the compressed bytes per redraw.
func BenchmarkScreenFlush(b *testing.B) {
	r, err := Create(b.TempDir(), "s1", Header{Width: 120, Height: 40})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	var screen bytes.Buffer
	b.ReportAllocs()
	i := 0
	cpu := cpuTime(b)
	for b.Loop() {
		screen.Reset()
		screen.WriteString("\x1b[H\x1b[2J")
		for row := range 40 {
			screen.WriteString("\x1b[1;34m")
			for col := range 12 {
				screen.WriteString("pid ")
				screen.WriteByte(byte('0' + (row*7+col*3+i)%10))
				screen.WriteString(" 0.3 ")
			}
			screen.WriteString("\x1b[0m\r\n")
		}
		i++
		if err := r.Output(screen.Bytes()); err != nil {
			b.Fatal(err)
		}
		r.flushLater()
	}
	b.ReportMetric(float64(cpuTime(b)-cpu)/float64(b.N), "CPU-ns/op")
	b.ReportMetric(float64(r.Size())/float64(b.N), "file-B/redraw")
}
