// Package guac is a headless client of the Guacamole protocol, as much of
// it as a benchmark needs to have guacd (Apache Guacamole's proxy) carry a
// remote desktop. The protocol is a stream of instructions, each a comma-separated list of elements ended by a
// semicolon, the first element the opcode; every element is LENGTH.VALUE,
// LENGTH the number of Unicode characters (not bytes) in VALUE, in decimal:
//
//	4.size,1.0,4.1024,3.768;
//
// The handshake: the client selects a protocol, guacd answers with the
// names of that protocol's parameters (args), the client states what it
// can show (size, audio, video, image, timezone) and connects with one
// value per parameter name, in guacd's order; guacd answers ready. Then
// guacd draws (img and blob streams, copy, rect, ...) and ends each frame
// with sync, which the client echoes when it has drawn it: guacd holds
// back frames when the echoes stop coming, so a client that answers every
// sync sees as much as a browser would.
package guac

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// MaxElement bounds one element, in characters: guacd's blobs are a
// few kilobytes of base64; anything near this is not guacd talking.
const MaxElement = 1 << 20

// Instruction is one instruction: an opcode and its arguments.
type Instruction struct {
	Opcode string
	Args   []string
}

func (in Instruction) String() string {
	return string(Append(nil, in.Opcode, in.Args...))
}

// Append appends the instruction opcode(args...) to b in the
// protocol's encoding.
func Append(b []byte, opcode string, args ...string) []byte {
	for i, e := range append([]string{opcode}, args...) {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(utf8.RuneCountInString(e)), 10)
		b = append(b, '.')
		b = append(b, e...)
	}
	return append(b, ';')
}

// Reader reads instructions from a stream.
type Reader struct {
	r *bufio.Reader
}

func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Next reads one instruction. A malformed one is an error that says what
// was wrong; io.EOF only at an instruction's boundary.
func (g *Reader) Next() (Instruction, error) {
	var in Instruction
	for first := true; ; first = false {
		e, end, err := g.element(first)
		if err != nil {
			return in, err
		}
		if first {
			in.Opcode = e
		} else {
			in.Args = append(in.Args, e)
		}
		if end == ';' {
			return in, nil
		}
	}
}

// element reads LENGTH.VALUE and the ',' or ';' after it.
func (g *Reader) element(first bool) (value string, end byte, err error) {
	n, digits := 0, 0
	for {
		c, err := g.r.ReadByte()
		if err != nil {
			if err == io.EOF && (digits > 0 || !first) {
				err = io.ErrUnexpectedEOF
			}
			return "", 0, err
		}
		if c == '.' {
			break
		}
		if c < '0' || c > '9' {
			return "", 0, fmt.Errorf("guacamole: %q in an element's length", c)
		}
		n, digits = n*10+int(c-'0'), digits+1
		if n > MaxElement {
			return "", 0, fmt.Errorf("guacamole: an element of more than %d characters", MaxElement)
		}
	}
	if digits == 0 {
		return "", 0, errors.New("guacamole: an element without a length")
	}
	var b strings.Builder
	b.Grow(n)
	for range n {
		r, size, err := g.r.ReadRune()
		if err != nil {
			return "", 0, unexpected(err)
		}
		if r == utf8.RuneError && size == 1 {
			return "", 0, errors.New("guacamole: an element that is not UTF-8")
		}
		b.WriteRune(r)
	}
	end, err = g.r.ReadByte()
	if err != nil {
		return "", 0, unexpected(err)
	}
	if end != ',' && end != ';' {
		return "", 0, fmt.Errorf("guacamole: %q after an element of %d characters, not ',' or ';'", end, n)
	}
	return b.String(), end, nil
}

// unexpected is err inside an instruction, where an end is unexpected.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// RDP is what a Guacamole RDP session connects to.
type RDP struct {
	Host, Port         string // the RDP server, as guacd dials it
	Username, Password string
	Security           string // guacd's "security": "tls", "nla", ...
	Width, Height      int    // the display the client asks for
}

// Session is one desktop through guacd, seen by a client that draws
// nothing but answers every frame, as a browser does.
type Session struct {
	conn   net.Conn
	in     *Reader
	ID     string       // guacd's connection ID, from ready
	closed atomic.Bool  // Close was called: guacd's disconnect is the answer
	Bytes  atomic.Int64 // received from guacd since the handshake
	Frames atomic.Int64 // syncs answered
	Images atomic.Int64 // img streams begun
}

// Dial has a connected guacd (conn) open an RDP session to cfg, and
// returns once guacd says ready. It owns conn from then on, also on error.
func Dial(conn net.Conn, cfg RDP) (*Session, error) {
	s := &Session{conn: conn}
	counted := &countingReader{r: conn, n: &s.Bytes}
	s.in = NewReader(counted)
	fail := func(err error) (*Session, error) {
		conn.Close()
		return nil, fmt.Errorf("guacd handshake: %w", err)
	}
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := conn.Write(Append(nil, "select", "rdp")); err != nil {
		return fail(err)
	}
	args, err := s.in.Next()
	if err != nil {
		return fail(err)
	}
	if args.Opcode != "args" {
		return fail(fmt.Errorf("%s, not args", args))
	}
	values := make([]string, len(args.Args))
	for i, name := range args.Args {
		switch {
		case i == 0 && strings.HasPrefix(name, "VERSION_"):
			values[i] = name // what guacd speaks, and this client needs nothing newer
		case name == "hostname":
			values[i] = cfg.Host
		case name == "port":
			values[i] = cfg.Port
		case name == "username":
			values[i] = cfg.Username
		case name == "password":
			values[i] = cfg.Password
		case name == "security":
			values[i] = cfg.Security
		case name == "ignore-cert":
			values[i] = "true"
		}
	}
	var hello []byte
	hello = Append(hello, "size", strconv.Itoa(cfg.Width), strconv.Itoa(cfg.Height), "96")
	hello = Append(hello, "audio")
	hello = Append(hello, "video")
	// What Chromium's guacamole-common-js offers: guacd then sends JPEG or
	// WebP where the screen keeps changing, PNG elsewhere.
	hello = Append(hello, "image", "image/png", "image/jpeg", "image/webp")
	hello = Append(hello, "timezone", "UTC")
	hello = Append(hello, "connect", values...)
	if _, err := conn.Write(hello); err != nil {
		return fail(err)
	}
	for {
		in, err := s.in.Next()
		if err != nil {
			return fail(err)
		}
		switch in.Opcode {
		case "ready":
			if len(in.Args) > 0 {
				s.ID = in.Args[0]
			}
			conn.SetDeadline(time.Time{})
			s.Bytes.Store(0)
			return s, nil
		case "error":
			return fail(fmt.Errorf("guacd refused: %s", in))
		}
	}
}

// Run reads guacd's drawing and answers its frames until the connection
// ends or guacd reports an error; Close ends it with nil.
// A read that waits longer than idle is an error: the desktop keeps
// changing, so guacd is never silent that long.
func (s *Session) Run(idle time.Duration) error {
	var reply []byte
	for {
		s.conn.SetReadDeadline(time.Now().Add(idle))
		in, err := s.in.Next()
		if err != nil {
			if s.closed.Load() {
				return nil // Close's doing
			}
			return fmt.Errorf("guacd session %s: %w", s.ID, err)
		}
		switch in.Opcode {
		case "sync":
			if len(in.Args) == 0 {
				return fmt.Errorf("guacd session %s: a sync without a timestamp", s.ID)
			}
			reply = Append(reply[:0], "sync", in.Args[0])
			if _, err := s.conn.Write(reply); err != nil {
				if s.closed.Load() {
					return nil
				}
				return fmt.Errorf("guacd session %s: answer a sync: %w", s.ID, err)
			}
			s.Frames.Add(1)
		case "img":
			s.Images.Add(1)
		case "disconnect":
			if s.closed.Load() {
				return nil
			}
			return fmt.Errorf("guacd session %s ended: %s", s.ID, in)
		case "error":
			return fmt.Errorf("guacd session %s ended: %s", s.ID, in)
		}
	}
}

// Close says goodbye to guacd and closes the connection.
func (s *Session) Close() error {
	s.closed.Store(true)
	s.conn.SetWriteDeadline(time.Now().Add(time.Second))
	s.conn.Write(Append(nil, "disconnect"))
	return s.conn.Close()
}

// countingReader counts what is read through it.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}
