package auditship

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/internal/audit"
)

// SyslogConfig describes a syslog collector.
type SyslogConfig struct {
	// Address is the collector's host:port. Required.
	Address string
	// TLS, when set, makes the connection TLS (RFC 5425); nil is plain
	// TCP. Its ServerName must be set (or InsecureSkipVerify, for tests).
	TLS *tls.Config
	// Name is the collector's name in metrics and audit events. Default
	// "syslog+tls://ADDRESS" or "syslog+tcp://ADDRESS".
	Name string
	// Facility is the messages' facility code (RFC 5424), 0 to 23; zero
	// is kern, so callers pass one (the configuration's default is auth,
	// 4).
	Facility int
	// AppName is the messages' APP-NAME. Default bastiond.
	AppName string
	// Hostname is the messages' HOSTNAME. Default os.Hostname().
	Hostname string
	// Queue bounds the lines waiting, sent or not yet known to be
	// delivered. Default 100000.
	Queue int
	// Resend is how long a line stays after the collector's TCP
	// acknowledged it, to be sent again if the connection breaks
	// meanwhile: the collector's kernel may have taken lines its
	// process never read (a collector stopping). Default 10s.
	Resend time.Duration
	// MinBackoff is the wait before the first reconnect, doubled after
	// each failure up to MaxBackoff. Defaults 250ms and 30s.
	MinBackoff, MaxBackoff time.Duration
	// Timeout bounds a connect (TLS handshake included) and each write;
	// it is also the connection's TCP_USER_TIMEOUT. Default 10s.
	Timeout time.Duration
	// Logger defaults to zap.NewNop(); Audit, where failures are told,
	// to audit.Discard.
	Logger *zap.Logger
	Audit  audit.Sink
}

// Syslog ships lines to one collector over one TCP or TLS connection,
// reconnecting with backoff.
type Syslog struct {
	cfg SyslogConfig
	hdr header
	q   *queue
	c   counters
	out *outage
}

// NewSyslog checks cfg and returns a Syslog that ships once Run runs.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	c := cfg
	host, port, err := net.SplitHostPort(c.Address)
	if err != nil || host == "" {
		return nil, fmt.Errorf("auditship: syslog address %q is not host:port", c.Address)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return nil, fmt.Errorf("auditship: syslog address %q: %q is not a port", c.Address, port)
	}
	if c.TLS != nil && c.TLS.ServerName == "" && !c.TLS.InsecureSkipVerify {
		return nil, errors.New("auditship: syslog over TLS needs the collector's server name")
	}
	if c.Facility < 0 || c.Facility > 23 {
		return nil, fmt.Errorf("auditship: syslog facility %d is not from 0 to 23", c.Facility)
	}
	if c.Name == "" {
		c.Name = "syslog+tcp://" + c.Address
		if c.TLS != nil {
			c.Name = "syslog+tls://" + c.Address
		}
	}
	if c.AppName == "" {
		c.AppName = "bastiond"
	}
	if c.Hostname == "" {
		c.Hostname, _ = os.Hostname()
	}
	c.Queue = cmp(c.Queue, 100000)
	c.Resend = cmp(c.Resend, 10*time.Second)
	c.MinBackoff = cmp(c.MinBackoff, 250*time.Millisecond)
	c.MaxBackoff = cmp(c.MaxBackoff, 30*time.Second)
	c.Timeout = cmp(c.Timeout, 10*time.Second)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.TLS != nil {
		c.TLS = c.TLS.Clone()
		c.TLS.MinVersion = max(c.TLS.MinVersion, tls.VersionTLS12)
	}
	s := &Syslog{cfg: c, q: newQueue(c.Queue),
		hdr: header{facility: c.Facility, hostname: token(c.Hostname, 255), appName: token(c.AppName, 48), procID: strconv.Itoa(os.Getpid())}}
	s.out = &outage{name: c.Name, log: c.Logger, audit: c.Audit, c: &s.c}
	return s, nil
}

func cmp[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// Name is the collector's name in metrics and events.
func (s *Syslog) Name() string { return s.cfg.Name }

// Ship queues lines; it never blocks.
func (s *Syslog) Ship(lines [][]byte) { s.q.push(lines) }

func (s *Syslog) counters() *counters { return &s.c }
func (s *Syslog) queue() *queue       { return s.q }

// Run connects and ships until ctx ends, reconnecting after each failure
// with backoff. It returns nil when ctx ends.
func (s *Syslog) Run(ctx context.Context) error {
	wait := s.cfg.MinBackoff
	for {
		c, err := s.dial(ctx)
		if err == nil {
			wait = s.cfg.MinBackoff
			err = s.serve(ctx, c)
			c.close()
			if n := s.q.rewind(); n > 0 {
				s.cfg.Logger.Debug("lines that may not have reached the collector will be sent again", zap.String("collector", s.cfg.Name), zap.Int("lines", n))
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		s.out.failed(err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, s.cfg.MaxBackoff)
	}
}

// conn is one connection to the collector.
type conn struct {
	tcp     *net.TCPConn
	w       net.Conn     // tcp, or the TLS client over it
	written atomic.Int64 // bytes written to tcp (TLS records included)
}

func (c *conn) close() { c.w.Close() }

// counted counts the bytes written to a TCP connection, under TLS.
type counted struct {
	*net.TCPConn
	c *conn
}

func (w counted) Write(p []byte) (int, error) {
	n, err := w.TCPConn.Write(p)
	w.c.written.Add(int64(n))
	return n, err
}

func (s *Syslog) dial(ctx context.Context) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	d := net.Dialer{KeepAlive: 15 * time.Second, Control: func(_, _ string, rc syscall.RawConn) error {
		// A collector that vanishes without a reset is noticed after
		// Timeout of unacknowledged data, not after the kernel's 15 minutes.
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(s.cfg.Timeout.Milliseconds()))
		})
		return errors.Join(err, serr)
	}}
	nc, err := d.DialContext(ctx, "tcp", s.cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("connect to %s: %w", s.cfg.Address, err)
	}
	c := &conn{tcp: nc.(*net.TCPConn)}
	c.w = counted{c.tcp, c}
	if s.cfg.TLS != nil {
		tc := tls.Client(c.w, s.cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", s.cfg.Address, err)
		}
		c.w = tc
	}
	s.cfg.Logger.Info("audit shipping connected", zap.String("collector", s.cfg.Name))
	return c, nil
}

// acked is how many of the bytes written the collector's TCP has
// acknowledged: those written less those still in the send queue.
func (c *conn) acked() (int64, bool) {
	rc, err := c.tcp.SyscallConn()
	if err != nil {
		return 0, false
	}
	written := c.written.Load() // before the queue is read: never more than sent
	var outq int
	var ierr error
	if err := rc.Control(func(fd uintptr) { outq, ierr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil || ierr != nil {
		return 0, false
	}
	return written - int64(outq), true
}

// Batches are at most this many lines and bytes per write.
const (
	batchLines = 512
	batchBytes = 256 << 10
)

// serve ships over c until it breaks or ctx ends. The collector sends
// nothing back (RFC 5425 has no acknowledgements), so a read that returns
// is the connection's end.
func (s *Syslog) serve(ctx context.Context, c *conn) error {
	broken := make(chan error, 1)
	go func() {
		var buf [512]byte
		for {
			if _, err := c.w.Read(buf[:]); err != nil {
				if errors.Is(err, io.EOF) {
					err = errors.New("the collector closed the connection")
				}
				broken <- err
				return
			}
		}
	}()
	// Stopping interrupts a write to a collector that does not read.
	stop := context.AfterFunc(ctx, func() { c.w.SetDeadline(time.Now()) })
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var buf []byte
	for ctx.Err() == nil {
		last, lines := s.q.take(batchLines, batchBytes)
		if len(lines) > 0 {
			buf = buf[:0]
			for _, l := range lines {
				buf = frame(buf, s.hdr.message(l))
			}
			c.w.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
			if ctx.Err() != nil {
				break // the stop's deadline may have come just before this one
			}
			if _, err := c.w.Write(buf); err != nil {
				return fmt.Errorf("write to %s: %w", s.cfg.Address, err)
			}
			s.q.wrote(last, c.written.Load(), time.Now())
			s.out.sent(len(lines))
			continue
		}
		s.out.caughtUp()
		select {
		case <-s.q.wake:
		case err := <-broken:
			return err
		case <-tick.C:
			s.confirm(c)
		case <-ctx.Done():
		}
	}
	return nil
}

// confirm forgets the lines the collector's TCP acknowledged more than
// Resend ago.
func (s *Syslog) confirm(c *conn) {
	acked, ok := c.acked()
	if !ok {
		return
	}
	before := time.Now().Add(-s.cfg.Resend)
	s.q.release(func(end int64, at time.Time) bool { return end <= acked && at.Before(before) })
}
