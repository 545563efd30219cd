package e2e

import (
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
)

// rdpBridge lets a native RDP client (xfreerdp) use the RDCleanPath
// gateway as the browser client does. It accepts the client's connection
// on loopback, sends the client's X.224 request in an RDCleanPath request
// with a fresh ticket, hands the server's confirm back, does the TLS
// handshake with the client in the server's place and relays the plain
// bytes between that TLS connection and the WebSocket. Only TLS security
// works through it: CredSSP would bind the bridge's certificate, not the
// server's.
type rdpBridge struct {
	u      *WebUser
	target string
	ln     net.Listener
	cert   tls.Certificate

	up, down atomic.Int64 // plain bytes relayed after the answer
	mu       sync.Mutex
	errs     []error
	sessions []string // the outcomes' session IDs, as connections end
	// ended receives a value as each connection ends.
	ended chan struct{}
}

func newRDPBridge(t testing.TB, u *WebUser, target string) *rdpBridge {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &rdpBridge{u: u, target: target, ln: ln, cert: testcert.New(t, testcert.Options{Name: "bridge"}), ended: make(chan struct{}, 100)}
	var wg sync.WaitGroup
	accepting := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-accepting // no Add after this
		wg.Wait()
	})
	go func() {
		defer close(accepting)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				if err := b.serve(c); err != nil {
					b.mu.Lock()
					b.errs = append(b.errs, err)
					b.mu.Unlock()
				}
				b.ended <- struct{}{}
			})
		}
	}()
	return b
}

// waitEnded waits for the end of one connection through the bridge.
func (b *rdpBridge) waitEnded(t testing.TB) {
	t.Helper()
	select {
	case <-b.ended:
	case <-time.After(30 * time.Second):
		t.Fatal("the connection through the bridge did not end")
	}
}

// addr is where the RDP client connects.
func (b *rdpBridge) addr() string { return b.ln.Addr().String() }

func (b *rdpBridge) serve(c net.Conn) error {
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	cr, err := rdcleanpath.ReadTPKT(c, 4096)
	if err != nil {
		return fmt.Errorf("bridge: the client's X.224 request: %w", err)
	}
	tk, err := b.u.Ticket(b.target, "rdp")
	if err != nil {
		return err
	}
	rc, err := b.u.dialDesktop()
	if err != nil {
		return err
	}
	defer rc.ws.CloseNow()
	req := &rdcleanpath.PDU{Version: rdcleanpath.Version, Destination: b.target, ProxyAuth: tk, X224ConnectionPDU: cr}
	msg, err := req.Marshal()
	if err != nil {
		return err
	}
	if _, err := rc.conn.Write(msg); err != nil {
		return err
	}
	resp, err := rdcleanpath.Read(rc.conn, 1<<20)
	if err != nil {
		return fmt.Errorf("bridge: the gateway's answer: %w", err)
	}
	if resp.Error != nil {
		if resp.X224ConnectionPDU != nil {
			c.Write(resp.X224ConnectionPDU) // the server's refusal, for the client to report
		}
		return fmt.Errorf("bridge: the gateway refused: %v", resp.Error)
	}
	if _, err := c.Write(resp.X224ConnectionPDU); err != nil {
		return err
	}
	tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{b.cert}})
	if err := tc.Handshake(); err != nil {
		return fmt.Errorf("bridge: TLS with the client: %w", err)
	}
	c.SetDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		n, _ := io.Copy(rc.conn, tc)
		b.up.Add(n)
		rc.conn.Close()
		close(done)
	}()
	n, _ := io.Copy(tc, rc.conn)
	b.down.Add(n)
	tc.Close()
	<-done
	if _, o, _ := b.u.outcomeOf(tk); o.Session != "" {
		b.mu.Lock()
		b.sessions = append(b.sessions, o.Session)
		b.mu.Unlock()
	}
	return nil
}

// errors are the failures of the connections served so far.
func (b *rdpBridge) errors() []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]error(nil), b.errs...)
}

// xfreerdp runs FreeRDP's client against the bridge, with TLS security;
// args are added (+auth-only, /timeout...).
func (b *rdpBridge) xfreerdp(args ...string) *exec.Cmd {
	return exec.Command("xvfb-run", append([]string{"-a", "xfreerdp", "/v:" + b.addr(), "/u:" + lab["LAB_USER"],
		"/p:" + lab["LAB_PASSWORD"], "/cert:ignore", "/sec:tls", "/log-level:ERROR"}, args...)...)
}
