package daemon

import (
	"net"
	"os"
	"strings"
	"testing"
)

func TestAdoptByType(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", "[::1]:0")
	if err != nil {
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
	}
	defer pc.Close()
	tf, _ := ln.(*net.TCPListener).File()
	uf, _ := pc.(*net.UDPConn).File()
	defer tf.Close()
	defer uf.Close()

	var l listeners
	defer l.Close()
	// Datagram first: the order systemd passes them in must not matter.
	for _, f := range []*os.File{uf, tf} {
		if err := l.adopt(f); err != nil {
			t.Fatal(err)
		}
	}
	if len(l.tcp) != 1 || len(l.udp) != 1 {
		t.Fatalf("adopted %d tcp, %d udp", len(l.tcp), len(l.udp))
	}
	if got, want := l.tcp[0].Addr().String(), ln.Addr().String(); got != want {
		t.Errorf("tcp listener %s, want %s", got, want)
	}
	if !l.info[0].Activated || l.info[0].Network != "udp" {
		t.Errorf("info = %+v", l.info)
	}

	// A unix socket is neither TCP nor UDP.
	ul, err := net.Listen("unix", t.TempDir()+"/x.sock")
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	f, _ := ul.(*net.UnixListener).File()
	defer f.Close()
	if err := l.adopt(f); err == nil || !strings.Contains(err.Error(), "is not TCP") {
		t.Errorf("adopting a unix socket: %v", err)
	}
	// A regular file is not a socket.
	rf, _ := os.Open(os.Args[0])
	defer rf.Close()
	if err := l.adopt(rf); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("adopting a file: %v", err)
	}
}
