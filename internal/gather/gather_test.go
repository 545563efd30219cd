package gather

import (
	"bytes"
	"context"
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

// pieces writes each Write to its connection in three pieces, as
// coder/websocket and TLS do with a message: header, records.
type pieces struct {
	net.Conn
	under net.Conn
}

func (p *pieces) Write(b []byte) (int, error) {
	third := len(b) / 3
	for _, part := range [][]byte{b[:third], b[third : 2*third], b[2*third:]} {
		if _, err := p.under.Write(part); err != nil {
			return 0, err
		}
	}
	return len(b), nil
}

func TestMessagesLeaveInOneWrite(t *testing.T) {
	r := &recorder{}
	under := NewConn(r)
	m := Messages(&pieces{under: under}, under)
	for _, msg := range []string{"first message", "second message"} {
		if n, err := m.Write([]byte(msg)); n != len(msg) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
	}
	if len(r.writes) != 2 || string(r.writes[0]) != "first message" || string(r.writes[1]) != "second message" {
		t.Fatalf("writes %q, want one per message", r.writes)
	}
	if under.holding {
		t.Fatal("still holding after the message")
	}

	// Without a gather.Conn (a connection not from the TLS listener), the
	// conn is returned as it is.
	p := &pieces{under: r}
	if Messages(p, nil) != net.Conn(p) {
		t.Fatal("Messages without a Conn wrapped its conn")
	}
}

func TestContext(t *testing.T) {
	c := NewConn(&recorder{})
	if FromContext(NewContext(context.Background(), c)) != c {
		t.Fatal("FromContext does not return the Conn NewContext put")
	}
	if FromContext(context.Background()) != nil {
		t.Fatal("FromContext of a context without a Conn is not nil")
	}
}
