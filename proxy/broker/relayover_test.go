package broker

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"

	"github.com/bastiond/bastiond/internal/testcert"
)

// TestRelayOverTLS relays to a TLS layer on the target connection, as the
// RDP gateway does: the counts are the plaintext both ways, and a kill
// ends the session through the connection beneath.
func TestRelayOverTLS(t *testing.T) {
	const up, down = 5<<20 + 3, 7<<20 + 1
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
			srv := listen(t, network, addr)
			e := newEnv(t, Config{Targets: []Target{targetAt("vm1", srv.addrPort())}})
			s, err := e.b.Open(context.Background(), tunnelTo("alice", "vm1", srv.addrPort().Port()))
			if err != nil {
				t.Fatal(err)
			}
			cert := testcert.New(t, testcert.Options{})
			served := make(chan error, 1)
			go func() {
				conn := tls.Server(srv.next(t), &tls.Config{Certificates: []tls.Certificate{cert}})
				defer conn.Close()
				if _, err := io.CopyN(io.Discard, conn, up); err != nil {
					served <- err
					return
				}
				_, err := conn.Write(make([]byte, down))
				served <- err
				// Hold the connection open: the kill below ends the session.
				io.Copy(io.Discard, conn)
			}()
			tc := tls.Client(s.Target(), &tls.Config{InsecureSkipVerify: true})
			if err := tc.Handshake(); err != nil {
				t.Fatal(err)
			}
			relaySide, user := clientPair(t, clientPipe)
			done := make(chan struct{})
			go func() { s.RelayOver(relaySide, tc); close(done) }()
			go user.Write(make([]byte, up))
			if _, err := io.ReadFull(user, make([]byte, down)); err != nil {
				t.Fatal(err)
			}
			if err := <-served; err != nil {
				t.Fatal(err)
			}
			if err := e.b.Kill(s.ID(), "by test"); err != nil {
				t.Fatal(err)
			}
			waitDone(t, done)
			end := e.record(s.ID(), "session_end")
			if *end.BytesUp != up || *end.BytesDown != down || end.Reason != ReasonKilled+"by test" {
				t.Errorf("end record: up %d down %d reason %q; want %d, %d, killed", *end.BytesUp, *end.BytesDown, end.Reason, up, down)
			}
			if _, err := s.Target().Write([]byte{0}); !errors.Is(err, net.ErrClosed) {
				t.Errorf("the connection beneath the TLS layer is still open: %v", err)
			}
		})
	}
}
