package security

import (
	"context"
	"crypto/tls"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 2: a TLS ClientHello or QUIC Initial without the configured
// server name gets nothing back: no certificate, no alert.
func TestInvariant02OtherServerNamesGetNothing(t *testing.T) {
	e2e.NeedLab(t)
	e2e.StartDaemon(t, e2e.ViaFDs, "")
	removeFirewallAtEnd(t)
	ns := e2e.LabValue(t, "NS_CLIENT")
	strangers := []string{"", "other.example", "lab.example", e2e.ServerName + ".attacker.example", "x" + e2e.ServerName}
	for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6"} {
		addr := e2e.LabValue(t, key)
		t.Run("TLS over "+key, func(t *testing.T) {
			if n, err := tlsHello(t, ns, addr, e2e.ServerName); err != nil || n == 0 {
				t.Fatalf("the configured name: %d bytes back, %v; want a handshake", n, err)
			}
			for _, name := range strangers {
				if n, err := tlsHello(t, ns, addr, name); n != 0 || err == nil {
					t.Errorf("server name %q: %d bytes back (%v), want none", name, n, err)
				}
			}
		})
		t.Run("QUIC over "+key, func(t *testing.T) {
			if n, err := quicHello(t, addr, e2e.ServerName, 5*time.Second); err != nil || n == 0 {
				t.Fatalf("the configured name: %d bytes back, %v; want a handshake", n, err)
			}
			for _, name := range strangers {
				if n, err := quicHello(t, addr, name, 2*time.Second); n != 0 || err == nil {
					t.Errorf("server name %q: %d bytes back (%v), want none", name, n, err)
				}
			}
		})
	}
}

// countingConn counts the bytes the bastion sent back.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// tlsHello starts a TLS handshake with the bastion at addr:443 from
// namespace ns under serverName ("": no SNI) and returns how many bytes
// came back in 2 seconds and how the handshake ended.
func tlsHello(t testing.TB, ns, addr, serverName string) (int, error) {
	t.Helper()
	var c net.Conn
	if err := e2e.InNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", net.JoinHostPort(addr, "443"), 2*time.Second)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	counted := &countingConn{Conn: c}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	err := tls.Client(counted, &tls.Config{ServerName: serverName, InsecureSkipVerify: true,
		NextProtos: []string{"h2", "http/1.1"}}).HandshakeContext(ctx)
	return int(counted.n.Load()), err
}
