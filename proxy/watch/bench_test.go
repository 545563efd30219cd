package watch

import (
	"fmt"
	"testing"
)

// BenchmarkPublish: what publishing one relay read (4 KiB of terminal
// output) costs the session, by number of watchers who keep up. The
// session's relay pays this on every read while anyone watches.
func BenchmarkPublish(b *testing.B) {
	p := make([]byte, 4<<10)
	for _, n := range []int{0, 1, 4, 16} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) {
			s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
			defer s.Close()
			ws := make([]*Watcher, n)
			for i := range ws {
				ws[i], _ = s.Subscribe("w")
			}
			b.SetBytes(int64(len(p)))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				s.Publish(Output, p)
				if i%64 == 0 {
					for _, w := range ws {
						w.Next()
					}
				}
			}
		})
	}
}

// BenchmarkPublishEcho: what a keystroke's echo (one byte of output)
// costs the terminal's relay with no one watching: the copy into the
// catch-up's last chunk.
func BenchmarkPublishEcho(b *testing.B) {
	s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
	defer s.Close()
	p := []byte("x")
	b.ReportAllocs()
	for b.Loop() {
		s.Publish(Output, p)
	}
}
