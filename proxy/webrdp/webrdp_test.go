package webrdp

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
)

// confirm is an X.224 Connection Confirm with a negotiation structure of
// type typ carrying value (the selected protocol or the failure code).
func confirm(typ uint8, value uint32) []byte {
	b := []byte{3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, typ, 0, 8, 0}
	return binary.LittleEndian.AppendUint32(b, value)
}

// rdpServer is an RDP server's negotiation as the gateway sees it: it
// reads the X.224 request, then behaves as mode says.
type rdpServer struct {
	t    testing.TB
	ln   net.Listener
	cert tls.Certificate
	mode string
	// got is what the server read before its answer: the preconnection
	// PDU, if any, and the X.224 request.
	mu  sync.Mutex
	got []byte
	// clipDone is closed when serveClip has its stream's end (modeClip).
	clipDone chan struct{}
}

// Modes of rdpServer.
const (
	modeTLS      = "tls"      // select TLS, then echo over TLS, upper-cased
	modeNLA      = "nla"      // a failure: HYBRID_REQUIRED_BY_SERVER
	modeStandard = "standard" // no negotiation structure: standard RDP security
	modeReset    = "reset"    // reset the connection instead of answering
	modeClip     = "clip"     // select TLS, answer the Connect Initial, offer files (serveClip)
	modeAlert    = "alert"    // select TLS, then refuse the client's TLS handshake
)

func newRDPServer(t testing.TB, network, mode string) *rdpServer {
	t.Helper()
	addr := map[string]string{"tcp4": "127.0.0.1:0", "tcp6": "[::1]:0"}[network]
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	s := &rdpServer{t: t, ln: ln, cert: testcert.New(t, testcert.Options{Name: "vm2"}), mode: mode}
	t.Cleanup(func() { ln.Close() })
	go s.serve()
	return s
}

func (s *rdpServer) serve() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		go s.handle(c)
	}
}

func (s *rdpServer) handle(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var got bytes.Buffer
	for {
		// The preconnection PDU first, if any: its length is its first u32.
		var head [4]byte
		if _, err := io.ReadFull(c, head[:]); err != nil {
			return
		}
		got.Write(head[:])
		if head[0] == 3 && head[1] == 0 { // TPKT
			rest := make([]byte, int(binary.BigEndian.Uint16(head[2:]))-4)
			io.ReadFull(c, rest)
			got.Write(rest)
			break
		}
		rest := make([]byte, binary.LittleEndian.Uint32(head[:])-4)
		io.ReadFull(c, rest)
		got.Write(rest)
	}
	s.mu.Lock()
	s.got = got.Bytes()
	s.mu.Unlock()
	switch s.mode {
	case modeReset:
		c.(*net.TCPConn).SetLinger(0)
		return
	case modeNLA:
		c.Write(confirm(rdcleanpath.RDPNegFailure, 5))
		return
	case modeStandard:
		c.Write([]byte{3, 0, 0, 11, 6, 0xd0, 0, 0, 0x12, 0x34, 0})
		return
	}
	c.Write(confirm(rdcleanpath.RDPNegRsp, rdcleanpath.ProtocolSSL))
	cfg := &tls.Config{Certificates: []tls.Certificate{s.cert}}
	if s.mode == modeAlert {
		// TLS 1.2: the server refuses before the client's handshake is done.
		cfg.ClientAuth, cfg.MaxVersion = tls.RequireAnyClientCert, tls.VersionTLS12
	}
	tc := tls.Server(c, cfg)
	if err := tc.Handshake(); err != nil {
		return
	}
	if s.mode == modeClip {
		s.serveClip(tc)
		return
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := tc.Read(buf)
		if n > 0 {
			tc.Write(asciiUpper(buf[:n]))
		}
		if err != nil {
			return
		}
	}
}

// asciiUpper upper-cases the ASCII letters of p and nothing else.
func asciiUpper(p []byte) []byte {
	out := bytes.Clone(p)
	for i, c := range out {
		if 'a' <= c && c <= 'z' {
			out[i] = c - 'a' + 'A'
		}
	}
	return out
}

func (s *rdpServer) received() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got
}

// testSession is a broker session over a plain connection to rdpServer:
// the real broker refuses to dial loopback addresses. Its relay copies
// both ways and counts.
type testSession struct {
	conn     net.Conn
	mu       sync.Mutex
	reason   string
	up, down int64
	once     sync.Once
	client   net.Conn
}

func (s *testSession) ID() string       { return "s1" }
func (s *testSession) Target() net.Conn { return s.conn }

func (s *testSession) RelayOver(client, target net.Conn) {
	s.mu.Lock()
	s.client = client
	s.mu.Unlock()
	var wg sync.WaitGroup
	wg.Go(func() {
		n, _ := io.Copy(target, client)
		s.mu.Lock()
		s.up = n
		s.mu.Unlock()
		s.End(broker.ReasonClientClosed)
	})
	n, _ := io.Copy(client, target)
	s.mu.Lock()
	s.down = n
	s.mu.Unlock()
	s.End(broker.ReasonTargetClosed)
	wg.Wait()
}

func (s *testSession) End(reason string) {
	s.once.Do(func() {
		s.mu.Lock()
		s.reason = reason
		client := s.client
		s.mu.Unlock()
		s.conn.Close()
		if client != nil {
			client.Close()
		}
	})
}

func (s *testSession) EndReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reason
}

// gatewayTest runs Serve on one end of a pipe; the test is the page on
// the other.
type gatewayTest struct {
	t       *testing.T
	page    net.Conn
	outcome chan Outcome
	store   *hostkeys.Store
	mu      sync.Mutex
	session *testSession
}

// newGateway serves a desktop whose ticket "good" names vm2 at srv's
// address; edit changes the Params.
func newGateway(t *testing.T, srv *rdpServer, edit func(*Params)) *gatewayTest {
	t.Helper()
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := hostkeys.New(hostkeys.Config{DB: db})
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayTest{t: t, outcome: make(chan Outcome, 1), store: store}
	p := Params{
		Authorize: func(ticket string) (Grant, error) {
			switch ticket {
			case "good":
				return Grant{Target: "vm2", Clipboard: true, FileTransfer: true}, nil
			case "no-clipboard":
				return Grant{Target: "vm2"}, nil
			case "no-files":
				return Grant{Target: "vm2", Clipboard: true}, nil
			case "revoked":
				return Grant{}, &Refusal{Status: 403, Outcome: Outcome{Class: ClassDenied, Message: "no longer allowed"}}
			}
			return Grant{}, errors.New("unknown ticket")
		},
		Open: func(ctx context.Context, target string) (Session, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", srv.ln.Addr().String())
			if err != nil {
				return nil, err
			}
			s := &testSession{conn: c}
			g.mu.Lock()
			g.session = s
			g.mu.Unlock()
			return s, nil
		},
		Certificate:      store.CertificateCheck,
		HandshakeTimeout: 5 * time.Second,
		Logger:           zaptest.NewLogger(t),
	}
	if edit != nil {
		edit(&p)
	}
	page, conn := net.Pipe()
	t.Cleanup(func() { page.Close() })
	go func() {
		g.outcome <- Serve(context.Background(), conn, p)
		conn.Close()
	}()
	g.page = page
	return g
}

// pin pins the certificate of srv for vm2.
func (g *gatewayTest) pin(srv *rdpServer) {
	g.t.Helper()
	if _, err := g.store.PinCertificate("vm2", srv.cert.Certificate[0], "test"); err != nil {
		g.t.Fatal(err)
	}
}

// send writes a request for ticket with an X.224 request for protocols.
func (g *gatewayTest) send(req *rdcleanpath.PDU) *rdcleanpath.PDU {
	g.t.Helper()
	b, err := req.Marshal()
	if err != nil {
		g.t.Fatal(err)
	}
	go g.page.Write(b)
	g.page.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := rdcleanpath.Read(g.page, 1<<20)
	if err != nil {
		g.t.Fatalf("the gateway's answer: %v", err)
	}
	return resp
}

func request(ticket string, protocols uint32) *rdcleanpath.PDU {
	return &rdcleanpath.PDU{Version: rdcleanpath.Version, ProxyAuth: ticket, Destination: "ignored:3389",
		X224ConnectionPDU: rdcleanpath.ConnectionRequestPDU("alice", protocols)}
}

func (g *gatewayTest) wait() Outcome {
	g.t.Helper()
	select {
	case o := <-g.outcome:
		return o
	case <-time.After(15 * time.Second):
		g.t.Fatal("Serve did not return")
	}
	return Outcome{}
}

func (g *gatewayTest) reason() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.session == nil {
		return ""
	}
	return g.session.EndReason()
}

const anyTLS = rdcleanpath.ProtocolSSL | rdcleanpath.ProtocolHybrid | rdcleanpath.ProtocolHybridEx

// TestGatewayRelays: the answer carries the server's confirm, its
// certificate and address, and then the page talks to the server inside
// the gateway's TLS connection; the preconnection blob goes first.
func TestGatewayRelays(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			srv := newRDPServer(t, network, modeTLS)
			g := newGateway(t, srv, nil)
			g.pin(srv)
			req := request("good", anyTLS)
			req.PreconnectionBlob = "vm-id-1"
			resp := g.send(req)
			if resp.Error != nil {
				t.Fatalf("error answer: %+v", resp.Error)
			}
			if !bytes.Equal(resp.X224ConnectionPDU, confirm(rdcleanpath.RDPNegRsp, rdcleanpath.ProtocolSSL)) {
				t.Errorf("confirm % x", resp.X224ConnectionPDU)
			}
			if len(resp.ServerCertChain) != 1 || !bytes.Equal(resp.ServerCertChain[0], srv.cert.Certificate[0]) {
				t.Errorf("chain: %d certificates", len(resp.ServerCertChain))
			}
			if resp.ServerAddr != srv.ln.Addr().String() {
				t.Errorf("server address %q, want %s", resp.ServerAddr, srv.ln.Addr())
			}
			want := append(rdcleanpath.PreconnectionPDU("vm-id-1"), req.X224ConnectionPDU...)
			if got := srv.received(); !bytes.Equal(got, want) {
				t.Errorf("the server received % x\nwant % x", got, want)
			}

			go g.page.Write([]byte("hello, desktop"))
			echo := make([]byte, len("hello, desktop"))
			if _, err := io.ReadFull(g.page, echo); err != nil || string(echo) != "HELLO, DESKTOP" {
				t.Errorf("relayed echo %q, %v", echo, err)
			}
			g.page.Close()
			if o := g.wait(); o.Class != ClassClientClosed || o.Session != "s1" || o.Target != "vm2" {
				t.Errorf("outcome %+v", o)
			}
		})
	}
}

// TestGatewayRefusals: each way a desktop cannot start has its answer for
// the client, its outcome for the page and, once a session is open, its
// end reason.
func TestGatewayRefusals(t *testing.T) {
	for _, c := range []struct {
		name   string
		mode   string
		pin    string // "server", "other" or none
		req    *rdcleanpath.PDU
		open   error // from Open
		check  func(*rdcleanpath.Error) bool
		class  string
		msg    string
		reason string // prefix of the session's end reason
	}{
		{name: "expired ticket", mode: modeTLS, req: request("old", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 401 }, class: ClassExpired, msg: "expired"},
		{name: "right withdrawn", mode: modeTLS, req: request("revoked", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 403 }, class: ClassDenied, msg: "no longer allowed"},
		{name: "standard RDP security asked", mode: modeTLS, req: request("good", rdcleanpath.ProtocolRDP),
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 400 }, class: ClassNegotiation, msg: "standard RDP security"},
		{name: "no X.224 request", mode: modeTLS, req: &rdcleanpath.PDU{Version: rdcleanpath.Version, ProxyAuth: "good"},
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 400 }, class: ClassError, msg: "does not understand"},
		{name: "at capacity", mode: modeTLS, req: request("good", anyTLS), open: &broker.Error{Kind: broker.KindCapacity, Msg: "bastion at capacity"},
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 503 }, class: ClassCapacity, msg: "at capacity"},
		{name: "user limit", mode: modeTLS, req: request("good", anyTLS), open: &broker.Error{Kind: broker.KindUserLimit, Msg: "10 sessions"},
			check: func(e *rdcleanpath.Error) bool { return e.HTTPStatus == 429 }, class: ClassCapacity, msg: "Close one"},
		{name: "unreachable", mode: modeTLS, req: request("good", anyTLS),
			open:  &broker.Error{Kind: broker.KindUnreachable, Msg: "vm2 did not answer", Err: &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}},
			check: func(e *rdcleanpath.Error) bool { return e.WSALastError == rdcleanpath.WSAECONNREFUSED }, class: ClassUnreachable, msg: "did not answer"},
		{name: "certificate not pinned", mode: modeTLS, req: request("good", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.TLSAlert == 42 }, class: ClassCertificate, msg: "no pinned certificate",
			reason: broker.ReasonHostKey + "not pinned: "},
		{name: "certificate changed", mode: modeTLS, pin: "other", req: request("good", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.TLSAlert == 42 }, class: ClassCertificate, msg: "has changed",
			reason: broker.ReasonHostKey + "mismatch: "},
		{name: "server requires NLA", mode: modeNLA, pin: "server", req: request("good", rdcleanpath.ProtocolSSL),
			check: func(e *rdcleanpath.Error) bool { return e.Code == rdcleanpath.ErrorNegotiation }, class: ClassNegotiation, msg: "NLA",
			reason: broker.ReasonNegotiation},
		{name: "server offers only standard security", mode: modeStandard, pin: "server", req: request("good", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.Code == rdcleanpath.ErrorNegotiation }, class: ClassNegotiation, msg: "standard RDP security",
			reason: broker.ReasonNegotiation},
		{name: "server resets", mode: modeReset, pin: "server", req: request("good", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.WSALastError == rdcleanpath.WSAECONNRESET }, class: ClassUnreachable, msg: "stopped answering",
			reason: broker.ReasonTargetError},
		{name: "server refuses the TLS handshake", mode: modeAlert, pin: "server", req: request("good", anyTLS),
			check: func(e *rdcleanpath.Error) bool { return e.TLSAlert != 0 }, class: ClassNegotiation, msg: "TLS handshake",
			reason: broker.ReasonNegotiation + "TLS: "},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := newRDPServer(t, "tcp4", c.mode)
			g := newGateway(t, srv, func(p *Params) {
				if c.open != nil {
					p.Open = func(context.Context, string) (Session, error) { return nil, c.open }
				}
			})
			switch c.pin {
			case "server":
				g.pin(srv)
			case "other":
				g.pin(newRDPServer(t, "tcp4", modeTLS))
			}
			resp := g.send(c.req)
			if resp.Error == nil || !c.check(resp.Error) || resp.ServerCertChain != nil {
				t.Errorf("answer: %+v", resp.Error)
			}
			o := g.wait()
			if o.Class != c.class || !strings.Contains(o.Message, c.msg) {
				t.Errorf("outcome %+v, want class %s mentioning %q", o, c.class, c.msg)
			}
			if r := g.reason(); c.reason != "" && !strings.HasPrefix(r, c.reason) || c.reason == "" && r != "" {
				t.Errorf("end reason %q, want %q...", r, c.reason)
			}
		})
	}
}

// TestGatewayMalformed: bytes that are not an RDCleanPath request get a
// 400 and open nothing.
func TestGatewayMalformed(t *testing.T) {
	srv := newRDPServer(t, "tcp4", modeTLS)
	opened := false
	g := newGateway(t, srv, func(p *Params) {
		p.Open = func(context.Context, string) (Session, error) { opened = true; return nil, errors.New("no") }
	})
	go g.page.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	resp, err := rdcleanpath.Read(g.page, 1<<20)
	if err != nil || resp.Error == nil || resp.Error.HTTPStatus != 400 {
		t.Errorf("answer %+v, %v", resp, err)
	}
	if o := g.wait(); o.Class != ClassError || opened {
		t.Errorf("outcome %+v, opened %v", o, opened)
	}
}

// TestGatewaySilentPage: a page that opens the WebSocket and says nothing
// is let go after the handshake timeout.
func TestGatewaySilentPage(t *testing.T) {
	srv := newRDPServer(t, "tcp4", modeTLS)
	g := newGateway(t, srv, func(p *Params) { p.HandshakeTimeout = 200 * time.Millisecond })
	go io.Copy(io.Discard, g.page)
	if o := g.wait(); o.Class != ClassError {
		t.Errorf("outcome %+v", o)
	}
}

// TestGatewayKeepAlive: a page that answers its pings keeps its desktop;
// one that stops answering loses it, as a client error, within the ping
// period and its wait (the bound checked is loose: CI machines are busy).
func TestGatewayKeepAlive(t *testing.T) {
	srv := newRDPServer(t, "tcp4", modeTLS)
	var answering atomic.Bool
	answering.Store(true)
	g := newGateway(t, srv, func(p *Params) {
		p.KeepAlive = 100 * time.Millisecond
		p.Ping = func(ctx context.Context) error {
			if answering.Load() {
				return nil
			}
			<-ctx.Done()
			return ctx.Err()
		}
	})
	g.pin(srv)
	if resp := g.send(request("good", anyTLS)); resp.Error != nil {
		t.Fatalf("answer: %+v", resp.Error)
	}
	go io.Copy(io.Discard, g.page)
	time.Sleep(500 * time.Millisecond) // five pings answered
	if r := g.reason(); r != "" {
		t.Fatalf("a page that answers its pings lost its desktop: %q", r)
	}
	answering.Store(false)
	start := time.Now()
	g.wait()
	if r := g.reason(); r != broker.ReasonClientError+"no answer to pings" || time.Since(start) > 10*time.Second {
		t.Errorf("reason %q after %s", r, time.Since(start))
	}
}
