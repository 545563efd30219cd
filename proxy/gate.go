package proxy

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// gate is the first thing a TCP connection on 443 meets. It reads the
// ClientHello itself, before any TLS state exists, and hands on only the
// connections that name the bastion's server name. Anything else (no server
// name, another name, not TLS at all, too slow) is closed with nothing sent:
// no certificate, no alert, so a scanner learns nothing about what answers.
type gate struct {
	ln  net.Listener
	s   *Server
	out chan net.Conn

	once   sync.Once
	closed chan struct{}
	err    error // the listener's accept error, set before closed is closed
}

func newGate(ln net.Listener, s *Server) *gate {
	g := &gate{ln: ln, s: s, out: make(chan net.Conn), closed: make(chan struct{})}
	go g.acceptLoop()
	return g
}

func (g *gate) acceptLoop() {
	var delay time.Duration
	for {
		c, err := g.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: back off as
				// net/http does, rather than spin.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				g.s.log.Warn("accept", zap.Error(err), zap.Duration("retry_in", delay))
				time.Sleep(delay)
				continue
			}
			g.shut(err)
			return
		}
		delay = 0
		go g.screen(c)
	}
}

// screen reads the ClientHello of c within the handshake timeout and passes
// c on when it names the server.
func (g *gate) screen(c net.Conn) {
	cfg := g.s.cfg.Load()
	c.SetReadDeadline(time.Now().Add(cfg.HandshakeTimeout))
	raw, hello, err := readClientHello(c)
	if err != nil || !sameName(hello.serverName, cfg.ServerName) {
		g.s.log.Debug("closed without an answer", zap.Stringer("remote", c.RemoteAddr()),
			zap.String("server_name", hello.serverName), zap.Error(err))
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{}) // the TLS stack sets its own
	select {
	case g.out <- &replayConn{Conn: c, head: raw}:
	case <-g.closed:
		c.Close()
	}
}

// Accept returns the next connection that passed the gate.
func (g *gate) Accept() (net.Conn, error) {
	select {
	case c := <-g.out:
		return c, nil
	case <-g.closed:
		return nil, g.err
	}
}

func (g *gate) shut(err error) {
	g.once.Do(func() {
		g.err = err
		close(g.closed)
	})
}

// Close stops accepting; connections being screened are closed.
func (g *gate) Close() error {
	err := g.ln.Close()
	g.shut(net.ErrClosed)
	return err
}

func (g *gate) Addr() net.Addr { return g.ln.Addr() }

// replayConn gives the TLS stack back the bytes the gate read.
type replayConn struct {
	net.Conn
	head []byte
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}
