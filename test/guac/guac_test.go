package guac

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   Instruction
		wire string
	}{
		{"size", Instruction{"size", []string{"0", "1024", "768"}}, "4.size,1.0,4.1024,3.768;"},
		{"no arguments", Instruction{"video", nil}, "5.video;"},
		{"an empty argument", Instruction{"connect", []string{"VERSION_1_3_0", "", "x"}}, "7.connect,13.VERSION_1_3_0,0.,1.x;"},
		// Lengths count characters, not bytes.
		{"unicode", Instruction{"name", []string{"é€😀", "a,b;c"}}, "4.name,3.é€😀,5.a,b;c;"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(Append(nil, tc.in.Opcode, tc.in.Args...)); got != tc.wire {
				t.Fatalf("encoded %q, want %q", got, tc.wire)
			}
			r := NewReader(strings.NewReader(tc.wire + tc.wire))
			for range 2 {
				got, err := r.Next()
				if err != nil || !reflect.DeepEqual(got, tc.in) {
					t.Fatalf("decoded %#v, %v; want %#v", got, err, tc.in)
				}
			}
			if _, err := r.Next(); err != io.EOF {
				t.Fatalf("after the last instruction: %v, want io.EOF", err)
			}
		})
	}
	for _, tc := range []struct{ name, wire, err string }{
		{"no length", ".size;", "without a length"},
		{"a letter in the length", "4x.size;", `'x' in an element's length`},
		{"a length too long", "4.size,2.ab,3.abcd;", `'d' after an element of 3 characters`},
		{"a length too short", "4.size,5.abcd;", "unexpected EOF"},
		{"cut in a length", "4.size,1", "unexpected EOF"},
		{"cut after an element", "4.size,1.0", "unexpected EOF"},
		{"cut before the next element", "4.size,", "unexpected EOF"},
		{"not UTF-8", "4.size,1.\xff;", "not UTF-8"},
		{"huge", "4.size,99999999999.a;", "more than 1048576 characters"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewReader(strings.NewReader(tc.wire)).Next()
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("%q: %v, want an error with %q", tc.wire, err, tc.err)
			}
		})
	}
}

// FuzzCodec: whatever the reader takes, encoding it again gives
// an instruction the reader reads back the same.
func FuzzCodec(f *testing.F) {
	for _, seed := range []string{"4.size,1.0,4.1024,3.768;", "4.sync,8.12345678;", "4.args,13.VERSION_1_3_0,8.hostname,4.port;",
		"3.img,1.1,2.14,1.0,9.image/png,1.0,1.0;", "4.blob,1.1,8.iVBORw0K;", "5.error,3.é€😀,3.519;", "4.size,1.", ".;", "0.;"} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := NewReader(bytes.NewReader(wire))
		for range 100 {
			in, err := r.Next()
			if err != nil {
				return
			}
			again, err := NewReader(bytes.NewReader(Append(nil, in.Opcode, in.Args...))).Next()
			if err != nil || again.Opcode != in.Opcode || len(again.Args) != len(in.Args) || (len(in.Args) > 0 && !reflect.DeepEqual(again.Args, in.Args)) {
				t.Fatalf("%#v encodes to %q, read back as %#v, %v", in, Append(nil, in.Opcode, in.Args...), again, err)
			}
		}
	})
}

// TestSessionClose: against a server that speaks guacd's side of the
// handshake and then sends frames as fast as they are answered, the client
// fills connect's values in the order args named them, answers every
// sync, and a Close while it does so ends Run with nil, not an error;
// IPv4 and IPv6.
func TestSessionClose(t *testing.T) {
	for _, loopback := range []string{"127.0.0.1", "::1"} {
		t.Run(loopback, func(t *testing.T) {
			ln, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			served := make(chan error, 1)
			go func() {
				served <- func() error {
					c, err := ln.Accept()
					if err != nil {
						return err
					}
					defer c.Close()
					c.SetDeadline(time.Now().Add(30 * time.Second))
					r := NewReader(c)
					if in, err := r.Next(); err != nil || in.String() != "6.select,3.rdp;" {
						return fmt.Errorf("first: %v, %v", in, err)
					}
					c.Write(Append(nil, "args", "VERSION_1_3_0", "port", "security", "hostname", "color-depth"))
					for {
						in, err := r.Next()
						if err != nil {
							return err
						}
						if in.Opcode == "connect" {
							if want := []string{"VERSION_1_3_0", "3390", "tls", "vm2", ""}; !reflect.DeepEqual(in.Args, want) {
								return fmt.Errorf("connect %q, want %q", in.Args, want)
							}
							break
						}
					}
					c.Write(Append(nil, "ready", "$id"))
					for i := range 1_000_000 {
						if _, err := c.Write(Append(nil, "sync", fmt.Sprint(i))); err != nil {
							return nil // the client went away
						}
						in, err := r.Next()
						if err != nil {
							return nil
						}
						if in.Opcode == "disconnect" {
							c.Write(Append(nil, "disconnect"))
							return nil
						}
						if in.Opcode != "sync" || in.Args[0] != fmt.Sprint(i) {
							return fmt.Errorf("the answer to sync %d: %s", i, in)
						}
					}
					return errors.New("a million frames and no Close")
				}()
			}()
			conn, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Dial(conn, RDP{Host: "vm2", Port: "3390", Security: "tls"})
			if err != nil {
				t.Fatal(err)
			}
			if s.ID != "$id" {
				t.Errorf("ID %q", s.ID)
			}
			ran := make(chan error, 1)
			go func() { ran <- s.Run(10 * time.Second) }()
			for deadline := time.Now().Add(10 * time.Second); s.Frames.Load() < 100; time.Sleep(time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("%d frames answered in 10 s", s.Frames.Load())
				}
			}
			s.Close()
			if err := <-ran; err != nil {
				t.Errorf("Run after Close: %v", err)
			}
			if err := <-served; err != nil {
				t.Errorf("the server: %v", err)
			}
		})
	}
}
