package handover

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// envFiles names the descriptors a new process got from its predecessor,
// in order from descriptor 3.
const envFiles = "BASTIOND_HANDOVER_FILES"

// controlFile is the name of the control socket among the files.
const controlFile = "control"

// maxMessage bounds one message: the largest carries the signed-in web
// sessions.
const maxMessage = 64 << 20

// A File is a descriptor to hand over, under a name both sides know.
type File struct {
	Name string
	File *os.File
}

// Successor is the new process, seen from the old one.
type Successor struct {
	*Conn
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how it exited; read after exited is closed
}

// Start runs exe with args (args[0] included) as the successor, with the
// environment of this process, standard output and error shared, and the
// files. The files stay open here: the caller closes them when it is done.
func Start(exe string, args []string, files []File) (*Successor, error) {
	mine, theirs, err := socketPair()
	if err != nil {
		return nil, err
	}
	defer theirs.Close()
	names := []string{controlFile}
	extra := []*os.File{theirs}
	for _, f := range files {
		if f.Name == "" || strings.ContainsAny(f.Name, ",=") || f.Name == controlFile {
			mine.Close()
			return nil, fmt.Errorf("handover: bad file name %q", f.Name)
		}
		names = append(names, f.Name)
		extra = append(extra, f.File)
	}
	cmd := &exec.Cmd{
		Path:       exe,
		Args:       args,
		Env:        append(environ(), envFiles+"="+strings.Join(names, ",")),
		Stdout:     os.Stdout,
		Stderr:     os.Stderr,
		ExtraFiles: extra,
	}
	if err := cmd.Start(); err != nil {
		mine.Close()
		return nil, fmt.Errorf("handover: start %s: %w", exe, err)
	}
	s := &Successor{Conn: newConn(mine), cmd: cmd, exited: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		close(s.exited)
	}()
	return s, nil
}

// environ is this process's environment without what systemd meant for it
// alone: the new process is not the one systemd started (LISTEN_*) and
// becomes the one it watches only once the old one says so (WATCHDOG_PID
// would make it ignore WATCHDOG_USEC).
func environ() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "WATCHDOG_PID", envFiles:
			continue
		}
		env = append(env, kv)
	}
	return env
}

// PID is the new process's.
func (s *Successor) PID() int { return s.cmd.Process.Pid }

// Exited is closed once the new process has exited.
func (s *Successor) Exited() <-chan struct{} { return s.exited }

// Err is how the new process exited, once Exited is closed.
func (s *Successor) Err() error {
	<-s.exited
	return s.err
}

// Kill ends the new process (a failed upgrade) and waits for it.
func (s *Successor) Kill() {
	s.cmd.Process.Kill()
	s.Conn.Close()
	<-s.exited
}

// Predecessor is the old process, seen from the new one.
type Predecessor struct {
	*Conn
	files map[string]*os.File
}

// Inherit returns the files and control socket a predecessor handed this
// process, or nil when it was not started by one.
func Inherit() (*Predecessor, error) {
	list, ok := os.LookupEnv(envFiles)
	if !ok {
		return nil, nil
	}
	os.Unsetenv(envFiles)
	p := &Predecessor{files: map[string]*os.File{}}
	for i, name := range strings.Split(list, ",") {
		fd := 3 + i
		unix.CloseOnExec(fd)
		p.files[name] = os.NewFile(uintptr(fd), name)
	}
	ctl := p.File(controlFile)
	if ctl == nil {
		p.Close()
		return nil, errors.New("handover: no control socket among the inherited files")
	}
	c, err := net.FileConn(ctl)
	ctl.Close()
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("handover: control socket: %w", err)
	}
	p.Conn = newConn(c)
	return p, nil
}

// File takes the inherited file called name (nil if there is none): the
// caller owns it from then on.
func (p *Predecessor) File(name string) *os.File {
	f := p.files[name]
	delete(p.files, name)
	return f
}

// Names lists the files not taken yet.
func (p *Predecessor) Names() []string {
	var names []string
	for n := range p.files {
		names = append(names, n)
	}
	return names
}

// Close closes the files not taken and the control socket.
func (p *Predecessor) Close() {
	for n, f := range p.files {
		f.Close()
		delete(p.files, n)
	}
	if p.Conn != nil {
		p.Conn.Close()
	}
}

// Dup returns a new descriptor of the socket c (a listener, a UDP socket,
// a connection), to hand over. Unlike the File method of package net's
// types, it leaves the socket in non-blocking mode: a File from those turns
// blocking when exec takes its descriptor, and blocking mode belongs to the
// socket, so this process's own reads of it would then hang in the kernel,
// deaf to deadlines.
func Dup(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("handover: %s: %w", name, err)
	}
	nfd := -1
	cerr := rc.Control(func(fd uintptr) {
		nfd, err = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	})
	if cerr != nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("handover: dup %s: %w", name, err)
	}
	return os.NewFile(uintptr(nfd), name), nil
}

func socketPair() (mine net.Conn, theirs *os.File, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("handover: socketpair: %w", err)
	}
	a, b := os.NewFile(uintptr(fds[0]), "handover"), os.NewFile(uintptr(fds[1]), controlFile)
	mine, err = net.FileConn(a)
	a.Close()
	if err != nil {
		b.Close()
		return nil, nil, fmt.Errorf("handover: socketpair: %w", err)
	}
	return mine, b, nil
}

// A Message is one line on the control socket. A request that wants an
// answer (Call) carries an ID; the answer is of type "reply" with the same
// ID, and Error set when the request failed.
type Message struct {
	Type  string          `json:"type"`
	ID    uint64          `json:"id,omitempty"`
	Error string          `json:"error,omitempty"`
	Body  json.RawMessage `json:"body,omitempty"`
}

// Decode reads the message's body into v.
func (m Message) Decode(v any) error {
	if len(m.Body) == 0 {
		return fmt.Errorf("handover: %s: no body", m.Type)
	}
	if err := json.Unmarshal(m.Body, v); err != nil {
		return fmt.Errorf("handover: %s: %w", m.Type, err)
	}
	return nil
}

// Conn frames messages on the control socket: one JSON object a line.
// Send is safe from any goroutine; Receive from one at a time.
type Conn struct {
	c   net.Conn
	r   *bufio.Reader
	wmu sync.Mutex

	callMu  sync.Mutex
	nextID  uint64
	pending map[uint64]chan Message
}

func newConn(c net.Conn) *Conn {
	return &Conn{c: c, r: bufio.NewReaderSize(c, 64<<10), pending: map[uint64]chan Message{}}
}

// Send writes one message with body (nil for none).
func (c *Conn) Send(typ string, id uint64, body any) error {
	m := Message{Type: typ, ID: id}
	if err, ok := body.(error); ok {
		m.Error = err.Error()
	} else if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("handover: %s: %w", typ, err)
		}
		m.Body = b
	}
	line, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("handover: %s: %w", typ, err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.c.Write(append(line, '\n'))
	return err
}

// Receive reads the next message; io.EOF when the other process closed
// the socket or exited.
func (c *Conn) Receive() (Message, error) {
	var line []byte
	for {
		chunk, isPrefix, err := c.r.ReadLine()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, unix.ECONNRESET) {
				err = io.EOF
			}
			return Message{}, err
		}
		line = append(line, chunk...)
		if len(line) > maxMessage {
			return Message{}, errors.New("handover: message too long")
		}
		if !isPrefix {
			break
		}
	}
	var m Message
	if err := json.Unmarshal(line, &m); err != nil || m.Type == "" {
		return Message{}, fmt.Errorf("handover: unreadable message: %.80q", line)
	}
	return m, nil
}

// Expect receives the next message and checks that it is of type typ:
// a message of type "failed" is returned as the error it carries.
func (c *Conn) Expect(typ string) (Message, error) {
	m, err := c.Receive()
	switch {
	case err != nil:
		return m, err
	case m.Type == "failed":
		return m, errors.New(m.Error)
	case m.Type != typ:
		return m, fmt.Errorf("handover: got %q, want %q", m.Type, typ)
	}
	return m, nil
}

// Call sends a request and waits for its answer, decoded into out (nil to
// ignore the body). Calls need Dispatch running: the answers come back
// through it.
func (c *Conn) Call(ctx context.Context, typ string, body, out any) error {
	c.callMu.Lock()
	if c.pending == nil {
		c.callMu.Unlock()
		return io.EOF
	}
	c.nextID++
	id := c.nextID
	ch := make(chan Message, 1)
	c.pending[id] = ch
	c.callMu.Unlock()
	defer func() {
		c.callMu.Lock()
		if c.pending != nil {
			delete(c.pending, id)
		}
		c.callMu.Unlock()
	}()
	if err := c.Send(typ, id, body); err != nil {
		return err
	}
	select {
	case m, ok := <-ch:
		switch {
		case !ok:
			return io.EOF
		case m.Error != "":
			return errors.New(m.Error)
		case out != nil:
			return m.Decode(out)
		}
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Dispatch reads messages until the socket closes: replies go to the Call
// that waits for them, anything else to handle (in this goroutine). It
// returns the error that ended it (io.EOF when the other process went
// away), after failing the calls still waiting.
func (c *Conn) Dispatch(handle func(Message)) error {
	defer func() {
		c.callMu.Lock()
		for _, ch := range c.pending {
			close(ch)
		}
		c.pending = nil
		c.callMu.Unlock()
	}()
	for {
		m, err := c.Receive()
		if err != nil {
			return err
		}
		if m.Type == replyType {
			c.callMu.Lock()
			ch, ok := c.pending[m.ID]
			delete(c.pending, m.ID)
			c.callMu.Unlock()
			if ok {
				ch <- m
			}
			continue
		}
		if handle != nil {
			handle(m)
		}
	}
}

const replyType = "reply"

// Reply answers the request m with body, or with the error when body is
// one.
func (c *Conn) Reply(m Message, body any) error { return c.Send(replyType, m.ID, body) }

// Close closes the control socket.
func (c *Conn) Close() error { return c.c.Close() }
