package gather

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
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

// A write that comes while a Flush is blocked on a peer that reads nothing
// is queued and returns at once; closing the connection then ends the
// Flush. This is what the TLS connection's Close does: its close_notify,
// then the socket's close.
func TestWriteDuringBlockedFlush(t *testing.T) {
	mine, peer := net.Pipe() // a write waits until the peer reads
	defer peer.Close()
	c := NewConn(mine)
	c.Hold()
	c.Write([]byte("a message nobody reads"))
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush() }()
	waitSending(t, c)

	wrote := make(chan error, 1)
	go func() {
		_, err := c.Write([]byte("close_notify"))
		wrote <- err
	}()
	select {
	case err := <-wrote:
		if err != nil {
			t.Fatalf("the queued write: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a write waited for a blocked Flush")
	}
	c.Close()
	select {
	case err := <-flushed:
		if err == nil {
			t.Fatal("a Flush cut by Close reported no error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not end the blocked Flush")
	}
	if _, err := c.Write([]byte("x")); err == nil {
		t.Fatal("a write after a failed send succeeded")
	}
}

// The same under a real TLS connection: Close returns at once while a
// message's Flush is blocked (before, it waited for close_notify's 5 s
// write deadline), and the bytes that reached the peer before are intact.
func TestTLSCloseDuringBlockedFlush(t *testing.T) {
	mine, peer := net.Pipe()
	cert := testcert.New(t, testcert.Options{Name: "gather.test"})
	c := NewConn(mine)
	server := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
	client := tls.Client(peer, &tls.Config{InsecureSkipVerify: true})
	defer client.Close()
	handshook := make(chan error, 1)
	go func() { handshook <- client.Handshake() }()
	if err := server.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-handshook; err != nil {
		t.Fatal(err)
	}

	// One message the client reads whole, in one write of the pipe.
	c.Hold()
	server.Write(bytes.Repeat([]byte("m"), 40<<10))
	got := make(chan []byte, 1)
	go func() {
		b := make([]byte, 40<<10)
		_, err := io.ReadFull(client, b)
		if err != nil {
			b = nil
		}
		got <- b
	}()
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, bytes.Repeat([]byte("m"), 40<<10)) {
		t.Fatal("the message arrived altered")
	}

	// A second one that nobody reads: its Flush blocks.
	c.Hold()
	server.Write([]byte("unread"))
	flushed := make(chan error, 1)
	go func() { flushed <- c.Flush() }()
	waitSending(t, c)
	closed := make(chan error, 1)
	start := time.Now()
	go func() { closed <- server.Close() }()
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("the TLS connection's Close did not return")
	}
	if d := time.Since(start); d >= 4*time.Second {
		t.Fatalf("Close took %s: it waited for close_notify's write deadline behind the blocked Flush", d)
	}
	if err := <-flushed; err == nil {
		t.Fatal("the cut Flush reported no error")
	}
}

// waitSending waits until a goroutine is blocked sending on c.
func waitSending(t *testing.T, c *Conn) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		if !c.mu.TryLock() {
			return // a send that keeps mu (which this test is about) is under way
		}
		sending := c.sending
		c.mu.Unlock()
		if sending {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("no send began")
		}
	}
}
