package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/audit"
)

// Protocols, as in the configuration and the access package.
const (
	SSH    = "ssh"
	RDP    = "rdp"
	Tunnel = "tunnel"
)

// Target is an inventory machine as the broker sees it.
type Target struct {
	Name      string
	Addresses []netip.Addr // dialled in this order
	SSH, RDP  uint16       // 0: not offered
	Tunnel    []uint16     // further ports a tunnel may reach
	// Network is set on an address of an inventory network (see
	// Config.Networks): Name is then the address.
	Network string
}

// Network is an inventory network: a request whose target is an address
// inside one of its prefixes reaches that address on the network's ports.
type Network struct {
	Name     string
	Prefixes []netip.Prefix
	SSH, RDP uint16   // 0: not offered
	Tunnel   []uint16 // further ports a tunnel may reach
}

// Timeouts bound one protocol's sessions. Zero: no limit.
type Timeouts struct {
	Idle time.Duration // no bytes either way for this long ends the session
	Max  time.Duration // a session ends this long after it started
}

// Config is what the broker enforces. SetConfig replaces it on reload.
type Config struct {
	// Logger is required. The broker logs with New's for its whole life;
	// SetConfig's is only checked.
	Logger *zap.Logger
	// Targets are the inventory; the broker dials nothing else.
	Targets []Target
	// Networks are the inventory's networks: an address inside one of
	// them is a target too (the caller checked the user's right to it).
	Networks []Network
	// Subnets are the bastion's own subnets: never dialled, even when a
	// network's prefix covers them (the configuration refuses that, and
	// the guard holds whatever the configuration says).
	Subnets []netip.Prefix
	// Capacity is the instance's size in weighted units. Default 100.
	Capacity int
	// Weights are the units one session of a protocol takes. Default ssh
	// 1, rdp 2, tunnel 1.
	Weights map[string]int
	// PerUser caps one user's concurrent sessions. Default 10. With a
	// Registry, the user's sessions on every instance count.
	PerUser int
	// DialTimeout bounds connecting to a target, all its addresses
	// together. Default 10s.
	DialTimeout time.Duration
	// TargetTimeout is TCP_USER_TIMEOUT on target sockets, and drives TCP
	// keepalive (first probe after TargetTimeout/2 idle, then every
	// TargetTimeout/6, 3 probes): a machine that stops answering ends its
	// sessions ("target unreachable") after about this long. Default 30s.
	TargetTimeout time.Duration
	// Timeouts are per protocol; a protocol not listed has no limits. A
	// reload's timeouts apply to live sessions too.
	Timeouts map[string]Timeouts
	// LocalAddrs returns the host's own addresses, which are never
	// dialled. Default: net.InterfaceAddrs, cached for a second. Tests
	// replace it. An error refuses the dial.
	LocalAddrs func() ([]netip.Addr, error)
}

// config is a Config with defaults filled in and the inventory indexed.
type config struct {
	Config
	targets map[string]Target
}

// build checks c and fills in the defaults, on a copy.
func (c Config) build() (*config, error) {
	if c.Logger == nil {
		return nil, errors.New("broker: config: a Logger is required")
	}
	switch {
	case c.Capacity < 0:
		return nil, fmt.Errorf("broker: config: capacity %d is negative", c.Capacity)
	case c.PerUser < 0:
		return nil, fmt.Errorf("broker: config: sessions per user %d is negative", c.PerUser)
	case c.DialTimeout < 0 || c.TargetTimeout < 0:
		return nil, errors.New("broker: config: negative dial or target timeout")
	}
	if c.Capacity == 0 {
		c.Capacity = 100
	}
	w := map[string]int{SSH: 1, RDP: 2, Tunnel: 1}
	for p, n := range c.Weights {
		switch {
		case n < 0:
			return nil, fmt.Errorf("broker: config: weight %d of %s is negative", n, p)
		case n > 0:
			w[p] = n
		}
	}
	c.Weights = w
	if c.PerUser == 0 {
		c.PerUser = 10
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 10 * time.Second
	}
	if c.TargetTimeout == 0 {
		c.TargetTimeout = 30 * time.Second
	}
	for p, t := range c.Timeouts {
		if t.Idle < 0 || t.Max < 0 {
			return nil, fmt.Errorf("broker: config: negative timeout for %s", p)
		}
	}
	c.Timeouts = maps.Clone(c.Timeouts)
	cc := &config{Config: c, targets: make(map[string]Target, len(c.Targets))}
	for _, t := range c.Targets {
		if _, dup := cc.targets[t.Name]; dup {
			return nil, fmt.Errorf("broker: config: target %q is listed twice", t.Name)
		}
		t.Addresses, t.Tunnel = slices.Clone(t.Addresses), slices.Clone(t.Tunnel) // the caller may reuse its slices
		cc.targets[t.Name] = t
	}
	nets := make([]Network, 0, len(c.Networks))
	for _, n := range c.Networks {
		for _, p := range n.Prefixes {
			if !p.IsValid() || p.Addr().Is4In6() || p.Addr().Zone() != "" {
				return nil, fmt.Errorf("broker: config: network %q: %s is not an IPv4 or IPv6 prefix", n.Name, p)
			}
		}
		n.Prefixes, n.Tunnel = slices.Clone(n.Prefixes), slices.Clone(n.Tunnel)
		nets = append(nets, n)
	}
	cc.Networks = nets
	cc.Subnets = slices.Clone(c.Subnets)
	return cc, nil
}

// Options are where the broker keeps its records.
type Options struct {
	// LiveDir holds the live journals; required, created 0750 if missing
	// (the daemon passes state_dir/live). The broker keeps its own there,
	// live-<pid>-<random>.db (bbolt, 0600), under an exclusive lock for its
	// whole life: one entry per open session (its start record and the byte
	// counts last saved), committed before the session carries a byte and
	// deleted after its end record is synced. Close removes it when every
	// end record was written. The other journals whose lock can be taken
	// belong to processes that are gone: New, RecoverOrphans and the
	// sweeper record their sessions as abandoned and remove them. A locked
	// one (the old process during an upgrade) is left alone.
	LiveDir string
	// DB is the state store of a version that kept the live entries in it
	// (bucket live_sessions); optional. New records the sessions it holds
	// as abandoned and drops the bucket; the broker does not keep DB, which
	// may then be handed to another process.
	DB *bbolt.DB
	// AuditFile receives one JSON line per session start and end; required.
	// It is opened O_APPEND, created 0640 (its directory 0750), synced
	// before Open returns (start) and before a session is forgotten (end),
	// and reopened when logrotate moves it. While it cannot be written, Open
	// refuses sessions (ErrAuditUnavailable) and end records wait in memory
	// (see Session.End).
	AuditFile string
	// Instance is this bastiond's name in its cluster (cluster.instance):
	// every line the broker writes carries it, and every session.
	Instance string
	// Registry is the cluster's live-session registry, or nil on a single
	// host (the live journal is then all there is). See Registry.
	Registry Registry
	// Ship, if set, receives the lines of every write to the audit file
	// once it is synced, in order, as written (without newlines): the
	// shippers' feed (journald, syslog). It must not block.
	Ship func(lines [][]byte)

	// tuning is the zero value everywhere but in this package's tests.
	tuning tuning
}

// tuning is what this package's tests change so that they run quickly, dial
// listeners on loopback, or see the audit file fail. Its zero value is the
// product's behaviour, and being unexported, nothing outside this package
// (the daemon, its configuration) can set it: the dial guard's rules hold
// for every broker the daemon makes.
type tuning struct {
	// allowLoopback lifts the dial guard's loopback rule, and only that
	// one, so that tests can use listeners on 127.0.0.1 and ::1 as targets.
	allowLoopback bool
	// sweepTick is how often idle and maximum times are checked. Zero:
	// once a second.
	sweepTick time.Duration
	// orphanScan is how often the sweeper looks for the journals of dead
	// processes (RecoverOrphans). Zero: every 30 s.
	orphanScan time.Duration
	// auditRetry is how often the writer tries again to write the records
	// the audit file refused. Zero: once a second.
	auditRetry time.Duration
	// openAuditFile opens the audit file for appending. nil: openAuditFile.
	openAuditFile func(path string) (auditFile, error)
	// saveEvery is how often the live entries' byte counts are saved.
	// Zero: saveEvery.
	saveEvery time.Duration
}

// withDefaults is t with its zero fields set to the product's values.
func (t tuning) withDefaults() tuning {
	if t.sweepTick == 0 {
		t.sweepTick = time.Second
	}
	if t.orphanScan == 0 {
		t.orphanScan = 30 * time.Second
	}
	if t.auditRetry == 0 {
		t.auditRetry = time.Second
	}
	if t.openAuditFile == nil {
		t.openAuditFile = openAuditFile
	}
	if t.saveEvery == 0 {
		t.saveEvery = saveEvery
	}
	return t
}

// Registry is the cluster's live-session registry (proxy/registry) as the
// broker uses it. An entry is added before a session carries a byte (and
// the session refused if that fails), refreshed with the live journal's
// byte counts, and removed once the end record is durable. process is the
// broker's live journal's file name, for the registry to tell the entries
// of a process that is gone.
type Registry interface {
	// Add enters s, unless its user has perUser sessions in the cluster
	// already: then it enters nothing and returns an error that has a
	// method UserLimit() int (the limit), which refuses the session as
	// KindUserLimit.
	Add(process string, s Info, perUser int) error
	// UserSessions is how many sessions user has in the cluster: Open
	// refuses a user at the limit before it dials (Add checks again).
	UserSessions(user string) (int, error)
	Refresh(process string, list []Info) error
	Remove(ids []string) error
	// Claim takes the entries of ids, sessions of this instance a dead
	// process left in its journal, for the registry to record (see
	// Abandoned), and returns those it found: the others were
	// recorded by whoever removed them.
	Claim(ids []string) (map[string]bool, error)
}

// Broker admits, dials, registers, relays and accounts for sessions.
type Broker struct {
	cfg     atomic.Pointer[config]
	log     *zap.Logger
	audit   *auditLog
	addrs   addrCache
	metrics *metrics
	// allowLoopback lifts the dial guard's loopback rule (tuning, tests only).
	allowLoopback bool
	instance      string
	reg           Registry // nil on a single host

	unregMu    sync.Mutex // guards unreg
	unreg      []string   // ended sessions whose registry entries could not be removed yet
	refreshing atomic.Bool

	// stopCtx is cancelled when Close gives up waiting: dials in flight
	// abort, and sessions that register afterwards end at once.
	stopCtx context.Context
	stopAll context.CancelFunc

	mu       sync.Mutex // guards the fields below
	sessions map[string]*Session
	perUser  map[string]int // sessions open or opening, by user
	used     int            // capacity units held by open and opening sessions
	opening  int            // admitted sessions not yet registered or refused
	closed   bool           // Drain or Close: no new sessions
	stopping bool           // Close's grace is over: end everything
	emptied  chan struct{}  // closed once closed is set and nothing is open or opening
	isEmpty  bool           // emptied is closed

	liveDir    string
	journal    string // the path of this broker's live journal
	recovered  int
	tick       time.Duration // the sweeper's period
	saveEvery  time.Duration // how often the sweeper saves byte counts
	orphanScan time.Duration // how often the sweeper calls RecoverOrphans
	stop       chan struct{} // closed to stop the sweeper
	swept      chan struct{} // closed when the sweeper has returned
	finalOnce  sync.Once

	eventsMu sync.Mutex       // guards events
	events   map[string]int64 // audit events submitted, by type
}

var _ audit.Sink = (*Broker)(nil)

// Audit appends e to the audit trail, after every line submitted before it.
// It does not wait for the write: the event is durable with the writer's
// next group commit, a few milliseconds later. While the audit file cannot
// be written, events wait in memory (up to a bound, then the oldest are
// counted as lost). After Close, events are logged and dropped.
func (b *Broker) Audit(e audit.Event) {
	b.countEvent(e.Event)
	if e.Instance == "" {
		e.Instance = b.instance
	}
	b.audit.closeMu.RLock()
	defer b.audit.closeMu.RUnlock()
	if b.audit.closed {
		b.log.Warn("audit event after the broker closed, not written", zap.String("event", e.Event), zap.String("actor", e.Actor))
		return
	}
	b.audit.event(audit.Marshal(e))
}

func (b *Broker) countEvent(ev string) {
	b.eventsMu.Lock()
	if b.events == nil {
		b.events = map[string]int64{}
	}
	b.events[ev]++
	b.eventsMu.Unlock()
}

// New creates the broker's live journal, opens the audit file, records as
// abandoned the sessions of processes that are gone (Options.DB's, and the
// journals in Options.LiveDir whose lock it can take), and starts the
// sweeper that ends idle and overlong sessions. Close stops it. A journal
// it cannot record (a full disk, a damaged file) is logged and left to the
// sweeper; Options.DB's sessions, which it sees only now, fail New.
func New(cfg Config, opt Options) (*Broker, error) {
	c, err := cfg.build()
	if err != nil {
		return nil, err
	}
	if opt.LiveDir == "" || opt.AuditFile == "" {
		return nil, errors.New("broker: Options.LiveDir and Options.AuditFile are required")
	}
	journal, path, err := createJournal(opt.LiveDir)
	if err != nil {
		return nil, err
	}
	tn := opt.tuning.withDefaults()
	audit, err := openAudit(opt.AuditFile, journal, c.Logger, opt.Ship, tn.openAuditFile, tn.auditRetry, opt.Instance)
	if err != nil {
		journal.Close()
		os.Remove(path)
		return nil, err
	}
	b := &Broker{log: c.Logger, audit: audit, metrics: newMetrics(), sessions: map[string]*Session{}, perUser: map[string]int{},
		emptied: make(chan struct{}), liveDir: opt.LiveDir, journal: path, tick: tn.sweepTick, orphanScan: tn.orphanScan, saveEvery: tn.saveEvery,
		allowLoopback: tn.allowLoopback, stop: make(chan struct{}), swept: make(chan struct{}), instance: opt.Instance, reg: opt.Registry}
	b.stopCtx, b.stopAll = context.WithCancel(context.Background())
	b.cfg.Store(c)
	if b.reg != nil {
		audit.queued = b.pendUnregister
	}
	go audit.run()
	if opt.DB != nil {
		n, err := b.recordAbandoned(opt.DB)
		if err != nil {
			b.stopAll()
			audit.close()
			b.closeJournal()
			return nil, fmt.Errorf("broker: live sessions in the state store: %w", err)
		}
		b.recovered = n
	}
	n, err := b.RecoverOrphans()
	if err != nil {
		b.log.Error(orphansFailed, zap.Error(err))
	}
	b.recovered += n
	go b.sweep()
	return b, nil
}

// Recovered is how many sessions of processes that are gone (a crash, a
// kill) New recorded as abandoned.
func (b *Broker) Recovered() int { return b.recovered }

// SetConfig applies a reloaded configuration: inventory, capacity, weights
// and limits to new sessions, timeouts to live ones too. It ends nothing
// itself (the caller ends what lost its access with EndWhere). A session
// keeps the units it was admitted with. A config that does not build
// leaves the old one in force.
func (b *Broker) SetConfig(cfg Config) error {
	c, err := cfg.build()
	if err != nil {
		return err
	}
	b.cfg.Store(c)
	return nil
}

func (b *Broker) localAddrs() ([]netip.Addr, error) {
	if f := b.cfg.Load().LocalAddrs; f != nil {
		return f()
	}
	return b.addrs.get()
}

// Request is an authorized session request.
type Request struct {
	User     string
	Client   netip.AddrPort // the user's address
	Target   string         // an inventory name, or an address inside an inventory network
	Protocol string         // SSH, RDP or Tunnel
	// Port is the port a tunnel asks for; for SSH and RDP, 0 means the
	// target's SSH or RDP port.
	Port  uint16
	Login string   // the account on the target, when known (browser SSH)
	Via   string   // how the client came in: quic, websocket, browser
	Token string   // the API token's ID, for sessions opened with one
	Roles []string // the roles that allowed it
}

// portFor is the port r may reach on t, or 0.
func portFor(t Target, r Request) uint16 {
	switch r.Protocol {
	case SSH:
		if t.SSH != 0 && (r.Port == 0 || r.Port == t.SSH) {
			return t.SSH
		}
	case RDP:
		if t.RDP != 0 && (r.Port == 0 || r.Port == t.RDP) {
			return t.RDP
		}
	case Tunnel:
		if r.Port != 0 && (r.Port == t.SSH || r.Port == t.RDP || slices.Contains(t.Tunnel, r.Port)) {
			return r.Port
		}
	}
	return 0
}

// lookup finds the inventory target called name, or the address name
// (as netip writes it, unmapped) inside an inventory network.
func (c *config) lookup(name string) (Target, bool) {
	if t, ok := c.targets[name]; ok {
		return t, true
	}
	a, err := netip.ParseAddr(name)
	if err != nil || a.Zone() != "" || a.Unmap().String() != name {
		// Only the canonical form: what the access policy resolved and
		// the records carry.
		return Target{}, false
	}
	for _, n := range c.Networks {
		if slices.ContainsFunc(n.Prefixes, func(p netip.Prefix) bool { return p.Contains(a) }) {
			return Target{Name: name, Addresses: []netip.Addr{a}, SSH: n.SSH, RDP: n.RDP, Tunnel: n.Tunnel, Network: n.Name}, true
		}
	}
	return Target{}, false
}

// resolve finds the inventory target and port req asks for.
func (c *config) resolve(req Request) (Target, uint16, error) {
	t, ok := c.lookup(req.Target)
	if !ok {
		return Target{}, 0, &Error{Kind: KindUnknownTarget, Msg: fmt.Sprintf("there is no machine called %q on this bastion", req.Target)}
	}
	port := portFor(t, req)
	if port == 0 {
		var what string
		switch {
		case req.Protocol != SSH && req.Protocol != RDP && req.Protocol != Tunnel:
			what = fmt.Sprintf("the protocol %q", req.Protocol)
		case req.Port != 0:
			what = fmt.Sprintf("port %d", req.Port)
			if req.Protocol != Tunnel {
				what += " for " + req.Protocol
			}
		case req.Protocol == Tunnel:
			what = "a tunnel without a port"
		default:
			what = req.Protocol
		}
		return Target{}, 0, &Error{Kind: KindUnknownTarget, Msg: fmt.Sprintf("target %s does not offer %s", req.Target, what)}
	}
	return t, port, nil
}

// Probe connects to the port protocol uses on target as a session would
// (the inventory's addresses only, through the dial guard) but without
// admission or accounting: for an admin's task such as scanning the
// target's host keys. The caller closes the connection.
func (b *Broker) Probe(ctx context.Context, target, protocol string) (net.Conn, error) {
	c := b.cfg.Load()
	t, port, err := c.resolve(Request{Target: target, Protocol: protocol})
	if err != nil {
		return nil, err
	}
	conn, addr, err := b.dial(ctx, c, t, port)
	if err != nil {
		return nil, err
	}
	b.log.Info("probe connection", zap.String("target", target), zap.String("protocol", protocol), zap.Stringer("address", addr))
	return conn, nil
}

// Timeouts are the idle and maximum times in force for protocol's sessions.
func (b *Broker) Timeouts(protocol string) Timeouts { return b.cfg.Load().Timeouts[protocol] }

// Open admits, dials and registers a session, and returns once its start
// record is in the audit file and its live entry in the live journal, both
// synced. Refusals are *Error; while the audit file cannot be written they
// are KindAuditUnavailable and wrap ErrAuditUnavailable. ctx bounds the
// dial (with Config.DialTimeout); the session outlives it.
func (b *Broker) Open(ctx context.Context, req Request) (*Session, error) {
	c := b.cfg.Load()
	t, port, err := c.resolve(req)
	if err != nil {
		return nil, err
	}
	weight := c.Weights[req.Protocol]

	fault := b.audit.unavailable()
	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, &Error{Kind: KindClosed, Msg: "the bastion is shutting down"}
	case fault != nil:
		// Not even a dial: the start record could not be written.
		b.mu.Unlock()
		return nil, b.auditRefusal(fault)
	case b.perUser[req.User] >= c.PerUser:
		b.mu.Unlock()
		b.metrics.refusals.WithLabelValues("user_limit").Inc()
		return nil, userLimit(c.PerUser)
	case b.used+weight > c.Capacity:
		b.mu.Unlock()
		b.metrics.refusals.WithLabelValues("capacity").Inc()
		return nil, &Error{Kind: KindCapacity, Msg: "bastion at capacity"}
	}
	// The units are held from here: a burst of Opens cannot all pass the
	// check and then overrun the capacity while they dial.
	b.used += weight
	b.perUser[req.User]++
	b.opening++
	b.mu.Unlock()
	registered := false
	defer func() {
		b.mu.Lock()
		b.opening--
		if !registered {
			b.release(req.User, weight)
		}
		b.checkEmptied()
		b.mu.Unlock()
	}()

	if b.reg != nil {
		// The user's sessions on the other instances: a user at the limit
		// is refused before the machine sees a connection. An error here
		// is Add's to report.
		if n, err := b.reg.UserSessions(req.User); err == nil && n >= c.PerUser {
			b.metrics.refusals.WithLabelValues("user_limit").Inc()
			return nil, userLimit(c.PerUser)
		}
	}
	conn, addr, err := b.dial(ctx, c, t, port)
	if err != nil {
		return nil, err
	}
	s := newSession(b, Info{ID: newID(), Instance: b.instance, User: req.User, Client: req.Client, Target: req.Target, Address: addr, Network: t.Network,
		Protocol: req.Protocol, Port: port, Login: req.Login, Via: req.Via, Token: req.Token, Roles: slices.Clone(req.Roles),
		Start: time.Now()}, weight, conn)
	start := startRecord(s.info)
	if b.reg != nil {
		// Before the journal entry and the start record, as they are
		// ordered: a crash after any of them leaves an entry that someone
		// records as abandoned.
		if err := b.reg.Add(b.process(), s.info, c.PerUser); err != nil {
			conn.Close()
			var limit interface{ UserLimit() int }
			if errors.As(err, &limit) {
				// The user's sessions on the other instances count too.
				s.log.Info("session refused: the user has the most sessions allowed in the cluster", zap.String("user", req.User),
					zap.Int("limit", limit.UserLimit()))
				b.metrics.refusals.WithLabelValues("user_limit").Inc()
				return nil, userLimit(limit.UserLimit())
			}
			s.log.Error("session refused: it cannot be entered in the cluster's registry", zap.Error(err))
			b.metrics.refusals.WithLabelValues("registry").Inc()
			return nil, &Error{Kind: KindInternal, Msg: "the bastion cannot register the session at the moment (its state store is unavailable)", Err: err}
		}
	}
	entry, _ := json.Marshal(liveEntry{Start: start, Registered: b.reg != nil})
	if err := b.audit.submit(auditOp{opening: s.info.ID, entry: entry, lines: [][]byte{marshalLine(start)}}); err != nil {
		conn.Close()
		if !errors.Is(err, ErrAuditUnavailable) {
			// Nothing was queued: the session is as if never opened. A
			// refusal for the audit file queues its records, and its
			// entry goes once they are written (pendUnregister).
			b.unregister(s.info.ID)
		}
		if errors.Is(err, ErrAuditUnavailable) {
			// The writer logs the fault itself, once.
			s.log.Warn("session refused: the audit file cannot be written", zap.Error(err))
			return nil, b.auditRefusal(err)
		}
		s.log.Error("session refused: its start record cannot be written", zap.Error(err))
		return nil, &Error{Kind: KindInternal, Msg: "the bastion cannot record the session", Err: err}
	}
	b.countEvent(audit.SessionStart)
	if ce := s.log.Check(zap.InfoLevel, "session started"); ce != nil {
		ce.Write(fields(start)...)
	}
	b.mu.Lock()
	b.sessions[s.info.ID] = s
	registered = true
	stopping := b.stopping
	b.mu.Unlock()
	b.metrics.active.WithLabelValues(req.Protocol).Inc()
	if stopping {
		// Close gave up waiting while this one was dialling: it listed the
		// sessions before this one registered.
		s.End(ReasonShutdown)
		return nil, &Error{Kind: KindClosed, Msg: "the bastion is shutting down"}
	}
	return s, nil
}

// userLimit is Open's refusal of a user who has limit sessions open: on
// this instance, or in the cluster.
func userLimit(limit int) *Error {
	return &Error{Kind: KindUserLimit, Msg: fmt.Sprintf("you have %d sessions open, the most allowed", limit)}
}

// Load is how much of its capacity the broker's sessions use: capacity
// and used units (the open and opening sessions'), open sessions, and
// whether it refuses new ones (Drain, Close).
func (b *Broker) Load() admin.Load {
	capacity := b.cfg.Load().Capacity
	b.mu.Lock()
	defer b.mu.Unlock()
	return admin.Load{Capacity: capacity, Used: b.used, Sessions: len(b.sessions), Draining: b.closed}
}

// auditRefusal counts and returns Open's refusal while the audit file
// cannot be written: the message for the user says no more, the error it
// wraps says the file and why.
func (b *Broker) auditRefusal(fault error) *Error {
	b.metrics.refusals.WithLabelValues(KindAuditUnavailable.String()).Inc()
	return &Error{Kind: KindAuditUnavailable, Msg: "the bastion cannot record new sessions at the moment", Err: fault}
}

// release gives back a session's units; b.mu is held.
func (b *Broker) release(user string, weight int) {
	b.used -= weight
	if b.perUser[user]--; b.perUser[user] <= 0 {
		delete(b.perUser, user)
	}
}

// checkEmptied wakes Close when the last session is gone; b.mu is held.
func (b *Broker) checkEmptied() {
	if b.closed && !b.isEmpty && len(b.sessions) == 0 && b.opening == 0 {
		b.isEmpty = true
		close(b.emptied)
	}
}

// forget is the last step of End: the end record is on disk, or queued, or
// its failure logged (the live entry stays until it is written). The
// session's bytes move from the live sum to the ended totals under b.mu,
// the lock Collect reads both under, so the bytes counter never goes down.
func (b *Broker) forget(s *Session) {
	b.mu.Lock()
	if b.sessions[s.info.ID] == s {
		delete(b.sessions, s.info.ID)
	}
	b.metrics.addBytes(s.info.Protocol, s.up.Load(), s.down.Load())
	b.release(s.info.User, s.weight)
	b.checkEmptied()
	b.mu.Unlock()
}

// newID is a session ID: 12 lower-case hex digits, 48 random bits.
func newID() string {
	var b [6]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

func (b *Broker) list() []*Session {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := make([]*Session, 0, len(b.sessions))
	for _, s := range b.sessions {
		list = append(list, s)
	}
	return list
}

// Sessions lists the live sessions, oldest first.
func (b *Broker) Sessions() []Info {
	list := b.list()
	infos := make([]Info, len(list))
	for i, s := range list {
		infos[i] = s.Info()
	}
	slices.SortFunc(infos, func(x, y Info) int {
		if c := x.Start.Compare(y.Start); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	return infos
}

// Live is how many sessions are open.
func (b *Broker) Live() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Kill ends the session id with reason "killed: " + reason, and returns
// once its end record is on disk or queued (see Session.End). reason says
// who asked and why ("by root: maintenance"); it is required. An unknown id
// is ErrNoSession.
func (b *Broker) Kill(id, reason string) error {
	if strings.TrimSpace(reason) == "" {
		return errors.New("broker: a reason is required to kill a session")
	}
	b.mu.Lock()
	s, ok := b.sessions[id]
	b.mu.Unlock()
	if !ok {
		return ErrNoSession
	}
	s.End(ReasonKilled + reason)
	return nil
}

// EndWhere ends every live session match accepts, with reason, all at once,
// and returns how many once their end records are on disk or queued (see
// Session.End). match runs without the broker's lock held: it may take its
// time (look users up).
func (b *Broker) EndWhere(match func(Info) bool, reason string) int {
	var victims []*Session
	for _, s := range b.list() {
		if match(s.Info()) {
			victims = append(victims, s)
		}
	}
	endAll(victims, reason)
	return len(victims)
}

func endAll(list []*Session, reason string) {
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Go(func() { s.End(reason) })
	}
	wg.Wait()
}

// Drain refuses new sessions (KindClosed); live ones go on.
func (b *Broker) Drain() {
	b.mu.Lock()
	b.closed = true
	b.checkEmptied()
	b.mu.Unlock()
}

// Close refuses new sessions, waits for the live ones until ctx is done,
// then ends the rest with reason "shutdown" (and aborts dials in flight),
// stops the sweeper, closes the audit file, and removes the live journal.
// End records the audit file still refuses after one more try are logged
// and left in the journal, which is then kept: the next start records
// those sessions as abandoned. It returns ctx's error when it had to end
// sessions, else nil. It may be called again, with a shorter deadline:
// every call returns once everything is closed.
func (b *Broker) Close(ctx context.Context) error {
	b.Drain()
	var err error
	select {
	case <-b.emptied:
	case <-ctx.Done():
		err = ctx.Err()
		b.mu.Lock()
		b.stopping = true
		b.mu.Unlock()
		b.stopAll()
		// A session that registers after this list ends itself (Open
		// checks stopping), so one pass and the wait are enough.
		endAll(b.list(), ReasonShutdown)
		<-b.emptied
	}
	b.finalOnce.Do(func() {
		b.stopAll()
		close(b.stop)
		<-b.swept
		b.audit.close()
		if b.reg != nil {
			b.retryUnregister() // once more: an entry left would be taken for a dead process's
		}
		b.closeJournal()
	})
	return err
}

// HandshakeFailed counts a failed handshake at layer (tls, quic, tunnel,
// ssh, rdp) in bastiond_handshake_failures_total.
func (b *Broker) HandshakeFailed(layer string) {
	b.metrics.handshakes.WithLabelValues(layer).Inc()
}

// saveEvery is how often the sweeper refreshes the byte counts kept with
// the live entries.
const saveEvery = 10 * time.Second

// sweep ends sessions past their protocol's idle or maximum time,
// refreshes the byte counts kept with the live entries (what an abandoned
// record reports after a crash), and records the sessions of processes
// that died since (RecoverOrphans).
func (b *Broker) sweep() {
	defer close(b.swept)
	t := time.NewTicker(b.tick)
	defer t.Stop()
	lastSave, lastScan := time.Now(), time.Now()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			c := b.cfg.Load()
			list := b.list()
			for _, s := range list {
				if s.ending.Load() {
					continue
				}
				lim := c.Timeouts[s.info.Protocol]
				// End waits for the record: never in the sweep itself, so
				// that one slow end does not hold up the others.
				switch {
				case lim.Max > 0 && now.Sub(s.info.Start) >= lim.Max:
					go s.End(ReasonMaxDuration)
				case lim.Idle > 0 && now.Sub(s.lastActive()) >= lim.Idle:
					go s.End(ReasonIdle)
				}
			}
			if now.Sub(lastSave) >= b.saveEvery && len(list) > 0 {
				lastSave = now
				b.saveCounts(list)
			}
			b.retryUnregister()
			if now.Sub(lastScan) >= b.orphanScan {
				lastScan = now
				if _, err := b.RecoverOrphans(); err != nil {
					b.log.Error(orphansFailed, zap.Error(err))
				}
			}
		}
	}
}

// saveCounts queues the live entries' byte counts for the writer, without
// waiting: it batches them with the records (one bbolt commit). If the
// writer is busy, the next sweep tries again. They reach the journal even
// while the audit file cannot be written.
func (b *Broker) saveCounts(list []*Session) {
	op := auditOp{refresh: map[string][]byte{}}
	var infos []Info
	for _, s := range list {
		if s.ending.Load() {
			continue
		}
		info := s.Info()
		infos = append(infos, info)
		v, _ := json.Marshal(liveEntry{Start: startRecord(info), BytesUp: s.up.Load(), BytesDown: s.down.Load(), Registered: b.reg != nil})
		op.refresh[s.info.ID] = v
	}
	b.audit.offer(op)
	// The registry may be a database across the network: the sweep does
	// not wait for it, and skips a refresh while the last one runs.
	if b.reg != nil && len(infos) > 0 && b.refreshing.CompareAndSwap(false, true) {
		go func() {
			defer b.refreshing.Store(false)
			if err := b.reg.Refresh(b.process(), infos); err != nil {
				b.log.Warn("cannot refresh the byte counts in the cluster's registry", zap.Error(err))
			}
		}()
	}
}

// process is the name the registry knows this broker's process by: its
// live journal's file name.
func (b *Broker) process() string { return filepath.Base(b.journal) }

// ProcessAlive says whether a process of this host with a live journal
// called process (Registry.Add) may still carry sessions: its journal is
// there. A dead process's journal is recovered and removed (New, the
// sweeper), so one that is gone left no session unrecorded.
func (b *Broker) ProcessAlive(process string) bool {
	if process == "" || process != filepath.Base(process) {
		return false
	}
	_, err := os.Stat(filepath.Join(b.liveDir, process))
	return err == nil
}

// unregister removes an ended session's registry entry, now that its end
// record is durable (or will be, or is lost); if the registry cannot be
// reached, the sweeper tries again.
func (b *Broker) unregister(id string) {
	if b.reg == nil {
		return
	}
	if err := b.reg.Remove([]string{id}); err != nil {
		b.log.Warn("cannot remove an ended session from the cluster's registry; trying again every second", zap.String("session", id), zap.Error(err))
		b.pendUnregister([]string{id})
	}
}

// pendUnregister has the sweeper remove the registry entries of sessions
// whose end records were durable only after waiting for the audit file.
func (b *Broker) pendUnregister(ids []string) {
	b.unregMu.Lock()
	b.unreg = append(b.unreg, ids...)
	b.unregMu.Unlock()
}

// retryUnregister tries again to remove the registry entries unregister
// could not.
func (b *Broker) retryUnregister() {
	b.unregMu.Lock()
	ids := b.unreg
	b.unreg = nil
	b.unregMu.Unlock()
	if len(ids) == 0 {
		return
	}
	if err := b.reg.Remove(ids); err != nil {
		b.unregMu.Lock()
		b.unreg = append(b.unreg, ids...)
		b.unregMu.Unlock()
	}
}

// Abandoned writes, with reason abandoned, the end records of
// sessions nobody carries any more: another instance's, which died (each
// one's Info.Instance), or this instance's, whose process did. The records
// name the instance that carried the session, and this one as recorded_by
// when they differ. It returns once they are durable. A session whose end
// record is in the audit file's tail gets no second one. The registry calls
// it (registry.Handler).
func (b *Broker) Abandoned(list []Info) error {
	ended := b.audit.endedInTail(1 << 20)
	now := time.Now()
	var op auditOp
	var ends []record
	for _, i := range list {
		if ended[i.ID] {
			continue
		}
		end := endOf(startRecord(i), now, i.BytesUp, i.BytesDown, ReasonAbandoned, false)
		if end.Instance == "" {
			end.Instance = b.instance
		}
		if end.Instance != b.instance {
			end.RecordedBy = b.instance
		}
		op.lines = append(op.lines, marshalLine(end))
		ends = append(ends, end)
	}
	if len(ends) == 0 {
		return nil
	}
	if err := b.audit.submit(op); err != nil {
		return err
	}
	for _, end := range ends {
		b.log.Warn("session interrupted by a crash or a kill", append(fields(end), zap.String("session", end.Session),
			zap.String("instance", end.Instance))...)
		b.countEvent(audit.SessionEnd)
		b.metrics.ended.WithLabelValues(end.Protocol, reasonClass(ReasonAbandoned)).Inc()
	}
	return nil
}
