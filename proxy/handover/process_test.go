package handover

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"
)

// The test binary plays the new process when this is set.
const childEnv = "HANDOVER_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		if err := child(); err != nil {
			fmt.Fprintln(os.Stderr, "child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// child takes the listener it was handed, tells the old process it is
// ready, asks it a question, and serves one connection.
func child() error {
	p, err := Inherit()
	if err != nil || p == nil {
		return fmt.Errorf("inherit: %v, %v", p, err)
	}
	defer p.Close()
	f := p.File("tcp")
	if f == nil {
		return fmt.Errorf("no file tcp among %v", p.Names())
	}
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		return err
	}
	if os.Getenv("WATCHDOG_PID") != "" || os.Getenv(envFiles) != "" {
		return errors.New("environment not cleaned")
	}
	if err := p.Send("ready", 0, map[string]int{"pid": os.Getpid()}); err != nil {
		return err
	}
	go p.Dispatch(nil)
	var answer string
	if err := p.Call(context.Background(), "question", "six times seven", &answer); err != nil {
		return err
	}
	if err := p.Call(context.Background(), "fail", nil, nil); err == nil || err.Error() != "no such thing" {
		return fmt.Errorf("call that fails: %v", err)
	}
	c, err := ln.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = fmt.Fprintf(c, "new process says %s\n", answer)
	return err
}

func TestHandOverAListener(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skip("no", network, "loopback:", err)
			}
			defer ln.Close()
			f, err := Dup(ln.(*net.TCPListener), "tcp")
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv(childEnv, "1")
			t.Setenv("WATCHDOG_PID", "1")
			s, err := Start(os.Args[0], []string{os.Args[0], "-test.run=^$"}, []File{{Name: "tcp", File: f}})
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			defer s.Kill()
			m, err := s.Expect("ready")
			if err != nil {
				t.Fatal(err)
			}
			var ready struct{ PID int }
			if err := m.Decode(&ready); err != nil || ready.PID != s.PID() {
				t.Fatalf("ready %+v, %v; child pid %d", ready, err, s.PID())
			}
			served := make(chan error, 1)
			go func() {
				served <- s.Dispatch(func(m Message) {
					switch m.Type {
					case "question":
						var q string
						m.Decode(&q)
						s.Reply(m, "42 ("+q+")")
					default:
						s.Reply(m, errors.New("no such thing"))
					}
				})
			}()

			// The socket is still non-blocking here: a deadline on it works.
			ln.(*net.TCPListener).SetDeadline(time.Now().Add(50 * time.Millisecond))
			if _, err := ln.Accept(); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("accept with a deadline after the hand-over: %v", err)
			}

			// The old process stops accepting; the connection reaches the
			// new one through the same socket.
			ln.Close()
			c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if err != nil || line != "new process says 42 (six times seven)\n" {
				t.Fatalf("read %q, %v", line, err)
			}
			if err := s.Err(); err != nil {
				t.Fatalf("child: %v", err)
			}
			select {
			case err := <-served:
				if err != io.EOF {
					t.Fatalf("dispatch ended with %v, want EOF", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("dispatch still running after the child exited")
			}
		})
	}
}

func TestStartRefusesBadNames(t *testing.T) {
	for _, name := range []string{"", "a,b", "control", "x=y"} {
		if _, err := Start("/bin/true", []string{"true"}, []File{{Name: name, File: os.Stdin}}); err == nil || !strings.Contains(err.Error(), "bad file name") {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

func TestNotAnUpgrade(t *testing.T) {
	if p, err := Inherit(); p != nil || err != nil {
		t.Fatalf("Inherit without a predecessor: %v, %v", p, err)
	}
}

func TestReceiveRefusesGarbage(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	c := newConn(b)
	go a.Write([]byte("not json\n"))
	if _, err := c.Receive(); err == nil || !strings.Contains(err.Error(), "unreadable message") {
		t.Fatalf("garbage: %v", err)
	}
	go a.Write([]byte(`{"type":"failed","error":"boom"}` + "\n"))
	if _, err := c.Expect("ready"); err == nil || err.Error() != "boom" {
		t.Fatalf("failed message: %v", err)
	}
	a.Close()
	if _, err := c.Receive(); err != io.EOF {
		t.Fatalf("closed: %v", err)
	}
}

// FuzzReceive: whatever arrives on the control socket is a message, an
// error, or the end of the stream; never a panic, never a message without
// a type.
func FuzzReceive(f *testing.F) {
	for _, s := range []string{`{"type":"hello","body":{"pid":1}}` + "\n", `{"type":"reply","id":3,"error":"no"}` + "\n",
		`{"type":""}` + "\n", "{\n", "\n\n", `{"type":"a","body":nul}` + "\n", strings.Repeat("x", 70000)} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &Conn{r: bufio.NewReaderSize(bytes.NewReader(in), 64<<10)}
		for range 100 {
			m, err := c.Receive()
			if err != nil {
				return
			}
			if m.Type == "" {
				t.Fatalf("%q: a message without a type", in)
			}
		}
	})
}
