package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"go.uber.org/zap"
	"golang.org/x/sync/errgroup"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/gather"
	"github.com/bastiond/bastiond/internal/store"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/proxy/gate"
	"github.com/bastiond/bastiond/proxy/handover"
	"github.com/bastiond/bastiond/proxy/internal/servername"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/portal"
	"github.com/bastiond/bastiond/proxy/websession"
)

// ALPNTunnel is the QUIC application protocol of the native tunnel.
const ALPNTunnel = tunnelwire.ALPN

// Config is what the front door needs. It can be replaced on reload with SetConfig.
type Config struct {
	// Logger is required.
	Logger *zap.Logger
	// Audit receives the security events of everything on port 443:
	// sign-outs, tickets, refused connects, recordings played. Default
	// audit.Discard.
	Audit audit.Sink
	// ServerName is the DNS name users connect to. Required.
	ServerName string
	// Certs provides the certificate. Required.
	Certs *certs.Store
	// MinTLSVersion is tls.VersionTLS13 (default) or tls.VersionTLS12.
	MinTLSVersion uint16
	// HandshakeTimeout bounds the TLS handshake, reading request headers,
	// and reading a request's body (which is refused with 408 past it).
	// Default 10s.
	HandshakeTimeout time.Duration
	// IdleTimeout closes keep-alive connections without requests. Default 2m.
	IdleTimeout time.Duration
	// ClientTimeout ends a user's connection that stops answering: TCP
	// keepalives from half of it on and TCP_USER_TIMEOUT on TCP, the idle
	// timeout (with pings every third of it) on QUIC. A user who vanishes
	// without closing (a laptop shut, a network gone) is reaped after about
	// this long, and their sessions recorded. Default 30s. QUIC takes the
	// value at start; TCP that of each connection's accept.
	ClientTimeout time.Duration
	// MaxConnsPerSource caps the TCP connections one source address holds
	// open; past it, new ones are closed with nothing sent. Default 256.
	// It caps the QUIC connections of one source too, counted apart from
	// its TCP ones: an IPv4 address or an IPv6 /64 (source.Of). Past it, a
	// new QUIC connection is refused before its TLS handshake.
	MaxConnsPerSource int
	// TunnelsPerConn is how many tunnels one QUIC connection may carry at
	// once; with the requests that may be pending on it, quic-go's
	// MaxIncomingStreams. A client opens one connection per process and
	// the broker caps a user's sessions anyway: the daemon passes that
	// cap (limits.sessions_per_user). Default 10.
	TunnelsPerConn int
	// MaxPendingTunnels caps the QUIC streams, over every connection,
	// whose tunnel request has not arrived yet; at the cap, the one that
	// has waited longest is reset (tunnel.ErrCodeBusy) to make room. One
	// connection may have at most 8 of them and one source 64 (past
	// those, a new stream is reset at once), and each has
	// HandshakeTimeout to send its request. Default 1024.
	MaxPendingTunnels int
	// Balancers are the TCP load balancers in front of 443: each of
	// their connections must start with a PROXY protocol v2 header, whose
	// user is the connection's source from then on (throttles, records,
	// audit), and they alone may ask GET portal.ReadyPath. Empty: none.
	Balancers []netip.Prefix
	// Access is the authorization policy. Required.
	Access *access.Policy
	// WebSessions bounds browser sessions.
	WebSessions websession.Config
	// MFA is the second factor after a password (portal.Config.MFA).
	MFA string
	// Shared, when set, keeps the web sessions and connect tickets in this
	// database, shared by every instance of a cluster (see portal.Config);
	// nil keeps them in memory (one host). Read by New only.
	Shared store.DB
	// SSH is what browser SSH terminals need besides the broker.
	SSH SSHConfig
	// RDP is what browser remote desktops need.
	RDP RDPConfig
	// Links are the shareable links.
	Links LinksConfig
	// Broker opens and carries sessions; nil refuses every tunnel as
	// unavailable. It outlives reloads: pass the same one each time.
	Broker *broker.Broker
	// SSO signs users in through single sign-on providers; nil: local
	// accounts only.
	SSO *oidc.Set
	// AccessChanged is called when a single sign-on took groups away from
	// a user: the caller ends the sessions they gave. Optional.
	AccessChanged func(why string)
	// SessionOwner and ClusterSessions, in a cluster, name the instance
	// that carries a live session and list every instance's, for the
	// auditors' live view (portal.Config). nil: one host.
	SessionOwner    func(id string) (instance string, err error)
	ClusterSessions func() ([]broker.Info, error)
	// Lineage is the line of processes this one continues across
	// upgrades: its predecessor's Lineage().Next(). nil:
	// handover.NewLineage(), a line of its own. Read by New only;
	// SetConfig ignores it.
	Lineage *handover.Lineage
}

// SSHConfig is what browser SSH terminals need besides the broker and
// the policy.
type SSHConfig = portal.SSHConfig

// RDPConfig is what browser remote desktops need besides the broker and
// the policy.
type RDPConfig = portal.RDPConfig

// LinksConfig is what shareable links need.
type LinksConfig = portal.LinksConfig

// Server serves port 443 on the listeners given to Serve.
type Server struct {
	cfg  atomic.Pointer[Config]
	log  *zap.Logger
	http *http.Server
	auth *auth.Authenticator
	// portal serves the HTTP routes; authz answers and records the
	// access requests of its routes and of the native tunnel.
	portal *portal.Portal
	authz  *authz.Authorizer
	// door holds the TCP and QUIC gates, their per-source limits and the
	// pause of a hand-over.
	door *gate.Door

	lineage handover.Lineage
	ids     *handover.ConnIDs // the QUIC connection IDs of this generation

	mu      sync.Mutex // guards the fields below
	quic    []*quicEndpoint
	pred    []*net.UnixConn // SetPredecessor's links
	links   []*net.UnixConn // every link given to s, for Close
	retired bool
	// movedTunnels counts the new tunnels sent on to a new process
	// (tunnelwire.StatusMoved) during or after a hand-over.
	movedTunnels atomic.Int64
	closed       bool

	// notReady is why the daemon said s takes no new users (NotReady),
	// "" while it does.
	notReady atomic.Pointer[string]
}

// New checks cfg and returns a Server that signs users in with a.
func New(cfg Config, a *auth.Authenticator) (*Server, error) {
	return newServer(cfg, a, tuning{})
}

// tuning is what this package's tests change to see a check from the
// other side. Its zero value is the product's behaviour (what New gives),
// and being unexported, nothing outside this package can set it.
type tuning struct {
	// quicPendingPerSource and quicMaxUnauth lower the caps of the QUIC
	// limits, so that tests reach them with a few connections. Zero: the
	// defaults (gate.Config).
	quicPendingPerSource int
	quicMaxUnauth        int
}

// newServer is New with the tests' tuning tn.
func newServer(cfg Config, a *auth.Authenticator, tn tuning) (*Server, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, errors.New("proxy: an Authenticator is required")
	}
	l := handover.NewLineage()
	if c.Lineage != nil {
		if l = *c.Lineage; l.Born.IsZero() {
			return nil, errors.New("proxy: Config.Lineage has no Born time")
		}
	}
	s := &Server{log: c.Logger, auth: a, lineage: l, ids: handover.NewConnIDs(l)}
	s.door = gate.New(gate.Config{Log: c.Logger, Audit: c.Audit, Settings: s.gateSettings, ALPN: ALPNTunnel, IDs: s.ids,
		HandshakeFailed:  func() { s.handshakeFailed("tls") },
		PendingPerSource: tn.quicPendingPerSource, MaxUnauthConns: tn.quicMaxUnauth})
	if s.authz, err = authz.New(authz.Config{Logger: c.Logger, Access: c.Access, Audit: c.Audit}); err != nil {
		return nil, err
	}
	if s.portal, err = portal.New(s.portalConfig(c), a); err != nil {
		return nil, err
	}
	s.cfg.Store(c)
	s.http = &http.Server{
		Handler:           s.portal.Handler(),
		ReadHeaderTimeout: c.HandshakeTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    32 << 10,
		// OPTIONS * goes to the handler, which answers it like any
		// request that is not for a route, security headers included.
		DisableGeneralOptionsHandler: true,
		// Handshake errors from scanners are noise at the default level.
		ErrorLog: zap.NewStdLog(c.Logger.Named("http").WithOptions(zap.IncreaseLevel(zap.WarnLevel))),
		// The real peer of a connection a balancer opened, for readiness.
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if b, ok := gate.Balancer(c); ok {
				ctx = context.WithValue(ctx, balancerKey{}, b)
			}
			if tc, ok := c.(*tls.Conn); ok {
				if g, ok := tc.NetConn().(*gather.Conn); ok {
					ctx = gather.NewContext(ctx, g)
				}
			}
			return ctx
		},
	}
	return s, nil
}

func (c Config) withDefaults() (*Config, error) {
	if c.Logger == nil || c.Certs == nil || c.ServerName == "" || c.Access == nil {
		return nil, errors.New("proxy: Logger, Certs, ServerName and Access are required")
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.MinTLSVersion == 0 {
		c.MinTLSVersion = tls.VersionTLS13
	}
	if c.HandshakeTimeout == 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	if c.ClientTimeout == 0 {
		c.ClientTimeout = 30 * time.Second
	}
	if c.MaxConnsPerSource == 0 {
		c.MaxConnsPerSource = 256
	}
	if c.TunnelsPerConn == 0 {
		c.TunnelsPerConn = 10
	}
	if c.MaxPendingTunnels == 0 {
		c.MaxPendingTunnels = 1024
	}
	return &c, nil
}

// SetConfig swaps the configuration for new connections; connections already
// open keep the settings they started with.
func (s *Server) SetConfig(cfg Config) error {
	c, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	if err := s.authz.SetConfig(authz.Config{Logger: c.Logger, Access: c.Access, Audit: c.Audit}); err != nil {
		return err
	}
	if err := s.portal.SetConfig(s.portalConfig(c)); err != nil {
		return err
	}
	s.cfg.Store(c)
	return nil
}

// gateSettings are the settings in force, as the gates read them.
func (s *Server) gateSettings() gate.Settings {
	c := s.cfg.Load()
	return gate.Settings{ServerName: c.ServerName, HandshakeTimeout: c.HandshakeTimeout, ClientTimeout: c.ClientTimeout,
		MaxConnsPerSource: c.MaxConnsPerSource, MaxPendingTunnels: c.MaxPendingTunnels, Balancers: c.Balancers}
}

// portalConfig is the portal's part of c.
func (s *Server) portalConfig(c *Config) portal.Config {
	return portal.Config{Logger: c.Logger, Audit: c.Audit, ServerName: c.ServerName, HandshakeTimeout: c.HandshakeTimeout,
		Authz: s.authz, WebSessions: c.WebSessions, MFA: c.MFA, Shared: c.Shared, SSH: c.SSH, RDP: c.RDP, Broker: c.Broker, Tunnel: s.tunnelWebSocket,
		Readiness: s.readiness, SSO: c.SSO, AccessChanged: c.AccessChanged, Links: c.Links,
		SessionOwner: c.SessionOwner, ClusterSessions: c.ClusterSessions}
}

// Policy is the authorization policy in force.
func (s *Server) Policy() *access.Policy { return s.authz.Policy() }

// WebSessions counts the browsers signed in.
func (s *Server) WebSessions() (int, error) { return s.portal.WebSessions() }

// EndUser ends the web sessions of user (disabled, password changed) and
// returns how many there were.
func (s *Server) EndUser(user string) (int, error) { return s.portal.EndUser(user) }

// RequestMetrics are the portal's Prometheus series
// (bastiond_http_refusals_total) and the connects refused
// (bastiond_connect_refusals_total).
func (s *Server) RequestMetrics() prometheus.Collector {
	return collectors{s.portal.RequestMetrics(), s.authz.Metrics()}
}

func (s *Server) tlsConfig(alpn ...string) *tls.Config {
	return &tls.Config{
		// Read the live config on every handshake so that a reload applies.
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			c := s.cfg.Load()
			// The gates refuse other names before TLS starts; this is the
			// backstop for a hello they did not read (a QUIC packet
			// coalesced behind the one they did).
			if !servername.Same(chi.ServerName, c.ServerName) {
				return nil, errors.New("proxy: unknown server name")
			}
			tc := &tls.Config{
				MinVersion:     c.MinTLSVersion,
				GetCertificate: c.Certs.GetCertificate,
				NextProtos:     alpn,
			}
			tc.VerifyConnection = func(tls.ConnectionState) error {
				gate.Handshook(chi.Conn) // a connection the TCP gate passed
				return nil
			}
			return tc, nil
		},
	}
}

// Serve serves TLS on each of tcp and QUIC on each of udp until Shutdown. It
// returns nil after Shutdown, or the first error of a listener.
func (s *Server) Serve(tcp []net.Listener, udp []net.PacketConn) error {
	s.mu.Lock()
	pred := s.pred
	s.mu.Unlock()
	if pred != nil && len(pred) != len(udp) {
		return fmt.Errorf("proxy: %d predecessor links for %d UDP sockets", len(pred), len(udp))
	}
	var g errgroup.Group
	for _, ln := range tcp {
		tl := tls.NewListener(gather.Listener{Listener: s.door.TCP(ln)}, s.tlsConfig("h2", "http/1.1"))
		g.Go(func() error {
			if err := s.http.Serve(tl); !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("proxy: serve %s: %w", ln.Addr(), err)
			}
			return nil
		})
	}
	for i, pc := range udp {
		var link *net.UnixConn
		if pred != nil {
			link = pred[i]
		}
		ql, err := s.listenQUIC(pc, link)
		if err != nil {
			s.http.Close()
			return err
		}
		g.Go(func() error { return s.acceptQUIC(ql) })
	}
	return g.Wait()
}

// listenQUIC serves QUIC on pc, with the link to the predecessor that
// takes the datagrams of its connections, if there is one.
func (s *Server) listenQUIC(pc net.PacketConn, pred *net.UnixConn) (*quic.Listener, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, http.ErrServerClosed
	}
	var link *handover.Link
	if pred != nil {
		var err error
		if link, err = handover.NewLink(pred); err != nil {
			return nil, err
		}
	}
	c := s.cfg.Load()
	// quic-go reads through the gate, which drops every hello that does not
	// name the server. Every source without a token must answer a Retry
	// first (address validation, RFC 9000 section 8.1.2), and only version
	// 1 is spoken, without Version Negotiation. No StatelessResetKey: a
	// reset would answer datagrams of connections that do not exist.
	g := s.door.QUIC(pc, link)
	tr := &quic.Transport{
		Conn:                             g.Conn(),
		ConnectionIDGenerator:            s.ids,
		VerifySourceAddress:              func(net.Addr) bool { return true },
		DisableVersionNegotiationPackets: true,
		// The per-source connection cap, checked once the source has
		// answered the Retry and before any TLS state exists.
		ConnContext: s.door.ConnContext,
	}
	qc := s.quicConfig(c)
	// Each new connection takes the settings in force when it starts, so
	// that a reload applies to the next ones.
	qc.GetConfigForClient = func(*quic.ClientInfo) (*quic.Config, error) { return s.quicConfig(s.cfg.Load()), nil }
	ql, err := tr.Listen(s.tlsConfig(ALPNTunnel), qc)
	if err != nil {
		tr.Close()
		return nil, fmt.Errorf("proxy: quic on %s: %w", pc.LocalAddr(), err)
	}
	s.quic = append(s.quic, &quicEndpoint{ln: ql, tr: tr, gate: g})
	return ql, nil
}

// Flow-control windows of a QUIC connection. Before a stream is authorized
// the server reads only its request (at most 7+1024 bytes) and nothing
// after it, so what a client sends beyond that waits in quic-go's buffers
// until the token is checked: these initial windows bound those bytes,
// per stream and per connection (quic-go's defaults are 512 KiB each).
// Once a tunnel relays, quic-go grows its windows as the relay reads,
// doubling them up to its defaults' maximums (6 MB a stream, 15 MB a
// connection), so bulk transfers reach full speed after a few round trips.
const (
	quicStreamWindow = 64 << 10
	quicConnWindow   = 128 << 10
)

// quicConfig is the QUIC configuration of a new connection under c.
func (s *Server) quicConfig(c *Config) *quic.Config {
	return &quic.Config{
		Versions: []quic.Version{quic.Version1},
		// A client that stops mid-handshake is dropped after this (and
		// one that keeps trickling after twice this).
		HandshakeIdleTimeout: c.HandshakeTimeout,
		MaxIdleTimeout:       c.ClientTimeout,
		KeepAlivePeriod:      c.ClientTimeout / 3,
		// The tunnels a connection may carry, and the requests that may
		// be waiting on it besides: a peer cannot even open more streams
		// (quic-go's default is 100, ours was 1024).
		MaxIncomingStreams:             int64(c.TunnelsPerConn + gate.PendingPerConn),
		MaxIncomingUniStreams:          -1, // the tunnel uses bidirectional streams only
		InitialStreamReceiveWindow:     quicStreamWindow,
		InitialConnectionReceiveWindow: quicConnWindow,
	}
}

// acceptQUIC accepts tunnel connections until the listener closes.
func (s *Server) acceptQUIC(ql *quic.Listener) error {
	for {
		conn, err := ql.Accept(context.Background())
		if err != nil {
			if errors.Is(err, quic.ErrServerClosed) {
				return nil
			}
			return fmt.Errorf("proxy: quic accept: %w", err)
		}
		go s.serveQUIC(conn)
	}
}

// Shutdown stops accepting connections (TLS and QUIC), then waits for open
// HTTP requests until ctx ends. Tunnels and browser sessions live on in the
// broker, over QUIC connections and WebSockets that Shutdown leaves open:
// drain them with the broker, then call Close.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	for _, e := range s.quic {
		e.ln.Close()
	}
	s.mu.Unlock()
	err := s.http.Shutdown(ctx)
	if err != nil {
		s.http.Close()
	}
	return err
}

// Close ends every connection, QUIC ones included, and closes the sockets
// and the links.
func (s *Server) Close() {
	s.mu.Lock()
	s.closed = true
	eps, links := s.quic, s.links
	s.quic, s.links = nil, nil
	s.mu.Unlock()
	for _, e := range eps {
		e.Close()
	}
	for _, l := range links {
		l.Close()
	}
	s.http.Close()
}

// LiveSessions counts the sessions being carried.
func (s *Server) LiveSessions() int {
	if b := s.cfg.Load().Broker; b != nil {
		return b.Live()
	}
	return 0
}

// collectors is a prometheus.Collector made of several.
type collectors []prometheus.Collector

func (cs collectors) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range cs {
		c.Describe(ch)
	}
}

func (cs collectors) Collect(ch chan<- prometheus.Metric) {
	for _, c := range cs {
		c.Collect(ch)
	}
}

// TCPMetrics is the collector of the TCP gates' per-source tables.
func (s *Server) TCPMetrics() prometheus.Collector { return s.door.TCPMetrics() }

// QUICMetrics is the collector of the QUIC front door's bounded tables:
// connections per source, pending tunnel requests, the gates' pending
// hellos, and what each cap refused or evicted.
func (s *Server) QUICMetrics() prometheus.Collector { return s.door.QUICMetrics() }

// quicEndpoint is one socket's QUIC listener, transport and gate.
type quicEndpoint struct {
	ln   *quic.Listener
	tr   *quic.Transport
	gate *gate.QUIC
}

// Close stops accepting, ends the connections, waits for quic-go to stop
// reading and closes the socket.
func (e *quicEndpoint) Close() error {
	e.ln.Close()
	e.tr.Close()
	return e.gate.Close()
}
