package gather

import (
	"bytes"
	"errors"
	"net"
	"sync"
	"testing"
)

// recorder is a net.Conn that keeps each write apart.
type recorder struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
	err    error
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return 0, r.err
	}
	r.writes = append(r.writes, bytes.Clone(p))
	return len(p), nil
}

func (r *recorder) joined() []byte { return bytes.Join(r.writes, nil) }

func TestHeldWritesLeaveInOne(t *testing.T) {
	r := &recorder{}
	c := NewConn(r)
	c.Write([]byte("before"))
	c.Hold()
	for _, s := range []string{"header", "record 1", "record 2"} {
		if n, err := c.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("held write: %d, %v", n, err)
		}
	}
	if len(r.writes) != 1 {
		t.Fatalf("held writes left before Flush: %q", r.writes)
	}
	if c.held == nil {
		t.Fatal("nothing held")
	}
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("after"))
	want := [][]byte{[]byte("before"), []byte("headerrecord 1record 2"), []byte("after")}
	if len(r.writes) != len(want) {
		t.Fatalf("writes %q, want %q", r.writes, want)
	}
	for i := range want {
		if !bytes.Equal(r.writes[i], want[i]) {
			t.Fatalf("write %d: %q, want %q", i, r.writes[i], want[i])
		}
	}
	if c.held != nil {
		t.Fatal("a buffer is kept after Flush")
	}
	if err := c.Flush(); err != nil || len(r.writes) != 3 {
		t.Fatalf("a Flush with nothing held: %v, %d writes", err, len(r.writes))
	}
}

func TestHoldBounded(t *testing.T) {
	r := &recorder{}
	c := NewConn(r)
	c.Hold()
	record := bytes.Repeat([]byte{'r'}, 16<<10+22)
	for range 10 {
		c.Write(record)
	}
	big := bytes.Repeat([]byte{'b'}, maxHeld+1)
	c.Write(big)
	c.Write([]byte("end"))
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	for i, w := range r.writes {
		if len(w) > maxHeld && !bytes.Equal(w, big) {
			t.Fatalf("write %d of %d bytes, over the bound %d", i, len(w), maxHeld)
		}
	}
	want := append(bytes.Repeat(record, 10), big...)
	want = append(want, "end"...)
	if !bytes.Equal(r.joined(), want) {
		t.Fatal("bytes lost or out of order")
	}
	if len(r.writes) != 5 { // 4+4+2 records, the big one alone, "end"
		t.Fatalf("%d writes, want 5", len(r.writes))
	}
}

// Writes from other goroutines (a WebSocket's pong under a message being
// relayed) keep their order: TLS numbers its records.
func TestConcurrentWritesKeepOrder(t *testing.T) {
	r := &recorder{}
	c := NewConn(r)
	var mu sync.Mutex // stands for the TLS connection's lock, which orders its writes
	var seq []byte
	write := func(b byte) {
		mu.Lock()
		defer mu.Unlock()
		seq = append(seq, b)
		c.Write([]byte{b})
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 200 {
				if g == 0 && i%10 == 0 {
					c.Hold()
				}
				write(byte('a' + g))
				if g == 0 && i%10 == 9 {
					c.Flush()
				}
			}
		})
	}
	wg.Wait()
	c.Flush()
	if !bytes.Equal(r.joined(), seq) {
		t.Fatal("writes left out of the order they were made")
	}
}

func TestFlushReportsTheWriteError(t *testing.T) {
	boom := errors.New("boom")
	r := &recorder{err: boom}
	c := NewConn(r)
	c.Hold()
	c.Write([]byte("x"))
	if err := c.Flush(); !errors.Is(err, boom) {
		t.Fatalf("Flush: %v, want %v", err, boom)
	}
	if _, err := c.Write([]byte("y")); !errors.Is(err, boom) {
		t.Fatalf("a write after Flush is not held: %v", err)
	}
}

func TestNetConn(t *testing.T) {
	r := &recorder{}
	if NewConn(r).NetConn() != r {
		t.Fatal("NetConn does not return the connection under")
	}
}
