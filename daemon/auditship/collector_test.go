package auditship

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/testcert"
)

// collector is a syslog collector for tests: it takes octet-counted
// messages over TCP or TLS on a loopback address, and can be stopped,
// restarted on the same address, or made to stop reading.
type collector struct {
	t    testing.TB
	addr string
	tls  *tls.Config // nil: plain TCP

	mu    sync.Mutex
	ln    net.Listener
	conns []net.Conn
	msgs  [][]byte
	deaf  bool // accept, but read nothing
	wg    sync.WaitGroup
}

// newCollector listens on host (127.0.0.1 or ::1), over TLS when tlsCfg is
// set.
func newCollector(t testing.TB, host string, tlsCfg *tls.Config) *collector {
	c := &collector{t: t, addr: net.JoinHostPort(host, "0"), tls: tlsCfg}
	c.start()
	c.addr = c.ln.Addr().String()
	t.Cleanup(c.stop)
	return c
}

func (c *collector) start() {
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		c.t.Fatal(err)
	}
	if c.tls != nil {
		ln = tls.NewListener(ln, c.tls)
	}
	c.mu.Lock()
	c.ln = ln
	c.mu.Unlock()
	c.wg.Go(func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns = append(c.conns, nc)
			deaf := c.deaf
			c.mu.Unlock()
			if deaf {
				if tc, ok := nc.(*tls.Conn); ok {
					tc.Handshake()
				}
				continue
			}
			c.wg.Go(func() { c.read(nc) })
		}
	})
}

func (c *collector) read(nc net.Conn) {
	r := bufio.NewReader(nc)
	for {
		n, err := r.ReadString(' ')
		if err != nil {
			return
		}
		size, err := strconv.Atoi(n[:len(n)-1])
		if err != nil || size <= 0 {
			c.t.Errorf("collector: bad frame length %q", n)
			nc.Close()
			return
		}
		msg := make([]byte, size)
		if _, err := io.ReadFull(r, msg); err != nil {
			return
		}
		c.mu.Lock()
		c.msgs = append(c.msgs, msg)
		c.mu.Unlock()
	}
}

// stop closes the listener and every connection.
func (c *collector) stop() {
	c.mu.Lock()
	if c.ln != nil {
		c.ln.Close()
		c.ln = nil
	}
	for _, nc := range c.conns {
		nc.Close()
	}
	c.conns = nil
	c.mu.Unlock()
	c.wg.Wait()
}

func (c *collector) setDeaf(deaf bool) {
	c.mu.Lock()
	c.deaf = deaf
	c.mu.Unlock()
}

func (c *collector) connections() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// messages are the messages received so far.
func (c *collector) messages() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.msgs...)
}

// waitLines waits until every line of want has arrived (as a message's
// MSG) and returns the messages.
func (c *collector) waitLines(want [][]byte, timeout time.Duration) [][]byte {
	c.t.Helper()
	end := time.Now().Add(timeout)
	for {
		msgs := c.messages()
		missing := missingLines(want, msgs)
		if missing == 0 {
			return msgs
		}
		if time.Now().After(end) {
			c.t.Fatalf("collector: %d of %d lines missing after %s (%d messages)", missing, len(want), timeout, len(msgs))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// msgOf is a message's MSG: what follows the structured data.
func msgOf(m []byte) []byte {
	_, after, ok := bytes.Cut(m, []byte("] "))
	if !ok {
		return nil
	}
	return after
}

func missingLines(want, msgs [][]byte) int {
	got := map[string]bool{}
	for _, m := range msgs {
		got[string(msgOf(m))] = true
	}
	n := 0
	for _, w := range want {
		if !got[string(w)] {
			n++
		}
	}
	return n
}

// collectorTLS is a server configuration for name and the loopback
// addresses, and a client configuration that trusts it.
func collectorTLS(t testing.TB) (server, client *tls.Config) {
	cert := testcert.New(t, testcert.Options{Name: "collector.test", CA: true, IPs: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}})
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	return &tls.Config{Certificates: []tls.Certificate{cert}}, &tls.Config{RootCAs: pool, ServerName: "collector.test"}
}

// trailLines are n stamped audit lines, chained, as the broker writes them.
func trailLines(n int, from audit.Hash) ([][]byte, audit.Hash) {
	lines := make([][]byte, n)
	for i := range lines {
		e := audit.Event{Event: audit.SigninFailed, Actor: "alice", Source: "198.51.100.7", Reason: "bad_password",
			Detail: fmt.Sprintf("attempt %d", i)}
		if i%3 == 1 {
			e = audit.Event{Event: audit.SessionStart, Actor: "bob", Source: "2001:db8::7", Session: fmt.Sprintf("s%d", i),
				Target: "vm1", Protocol: "ssh", Roles: []string{"ops", "dev"}, Detail: "ünïcode ✓ \"quoted\" ]"}
		}
		lines[i] = audit.Stamp(audit.Marshal(e), from)
		from = audit.HashLine(lines[i])
	}
	return lines, from
}

// events is an audit sink that keeps what it gets.
type events struct {
	mu sync.Mutex
	ev []audit.Event
}

func (e *events) Audit(ev audit.Event) {
	e.mu.Lock()
	e.ev = append(e.ev, ev)
	e.mu.Unlock()
}

func (e *events) of(typ string) []audit.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []audit.Event
	for _, ev := range e.ev {
		if ev.Event == typ {
			out = append(out, ev)
		}
	}
	return out
}

func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(timeout); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
	}
}

var errTest = errors.New("test")
