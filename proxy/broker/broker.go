package broker

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"
	"go.uber.org/zap"
)

// sweepTick is how often idle and maximum times are checked.
var sweepTick = time.Second

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
}

// Timeouts bound one protocol's sessions. Zero: no limit.
type Timeouts struct {
	Idle time.Duration // no bytes either way for this long ends the session
	Max  time.Duration // a session ends this long after it started
}

// Config is what the broker enforces. SetConfig replaces it on reload.
type Config struct {
	// Logger is required.
	Logger *zap.Logger
	// Targets are the inventory; the broker dials nothing else.
	Targets []Target
	// Capacity is the instance's size in weighted units. Default 100.
	Capacity int
	// Weights are the units one session of a protocol takes. Default ssh
	// 1, rdp 2, tunnel 1.
	Weights map[string]int
	// PerUser caps one user's concurrent sessions. Default 10.
	PerUser int
	// DialTimeout bounds connecting to a target, all its addresses
	// together. Default 10s.
	DialTimeout time.Duration
	// TargetTimeout is TCP_USER_TIMEOUT on target sockets, and drives TCP
	// keepalive (idle half of it, then 3 probes): a machine that stops
	// answering ends its sessions after about this long. Default 30s.
	TargetTimeout time.Duration
	// Timeouts are per protocol; a protocol not listed has no limits.
	Timeouts map[string]Timeouts
	// LocalAddrs returns the host's own addresses, which are never
	// dialled. Default: the interfaces' addresses, cached for a second.
	LocalAddrs func() ([]netip.Addr, error)
}

// config is a Config with defaults and the inventory indexed.
type config struct {
	Config
	targets map[string]Target
}

func (c Config) build() (*config, error) {
	if c.Logger == nil {
		return nil, errors.New("broker: a Logger is required")
	}
	if c.Capacity == 0 {
		c.Capacity = 100
	}
	w := map[string]int{SSH: 1, RDP: 2, Tunnel: 1}
	for p, n := range c.Weights {
		if n > 0 {
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
	cc := &config{Config: c, targets: make(map[string]Target, len(c.Targets))}
	for _, t := range c.Targets {
		cc.targets[t.Name] = t
	}
	return cc, nil
}

// Options are where the broker keeps its records.
type Options struct {
	// DB is the state store. The broker keeps the bucket live_sessions in
	// it: one entry per open session, written before the session carries a
	// byte and deleted after its end record is on disk.
	DB *bbolt.DB
	// AuditFile receives one JSON line per session start and end, synced
	// before Open returns and before a session is forgotten.
	AuditFile string
}

// Broker admits, dials, registers, relays and accounts for sessions.
type Broker struct {
	cfg     atomic.Pointer[config]
	log     *zap.Logger
	audit   *auditLog
	addrs   addrCache
	metrics *metrics

	mu       sync.Mutex // guards the fields below
	sessions map[string]*Session
	perUser  map[string]int
	used     int // capacity units held by open and opening sessions
	opening  int // admitted sessions not yet registered
	closed   bool

	recovered int
	tick      time.Duration // the sweeper's period
	stop      chan struct{}
	swept     chan struct{}
	closeOnce sync.Once
}

// New opens the audit file, completes the records of sessions a crash
// interrupted, and starts the sweeper that ends idle and overlong sessions.
func New(cfg Config, opt Options) (*Broker, error) {
	c, err := cfg.build()
	if err != nil {
		return nil, err
	}
	if opt.DB == nil || opt.AuditFile == "" {
		return nil, errors.New("broker: Options.DB and Options.AuditFile are required")
	}
	audit, err := openAudit(opt.AuditFile, opt.DB, c.Logger)
	if err != nil {
		return nil, err
	}
	b := &Broker{log: c.Logger, audit: audit, metrics: newMetrics(), sessions: map[string]*Session{}, perUser: map[string]int{},
		tick: sweepTick, stop: make(chan struct{}), swept: make(chan struct{})}
	b.cfg.Store(c)
	ends, err := audit.recover(time.Now())
	if err != nil {
		audit.f.Close()
		return nil, err
	}
	for _, r := range ends {
		b.metrics.ended.WithLabelValues(r.Protocol, reasonClass(ReasonAbandoned)).Inc()
	}
	b.recovered = len(ends)
	go audit.run()
	go b.sweep()
	return b, nil
}

// Recovered is how many abandoned sessions New recorded.
func (b *Broker) Recovered() int { return b.recovered }

// SetConfig applies a reloaded configuration: to new sessions, and its
// timeouts to live ones too. It ends nothing itself.
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
	Target   string         // an inventory name, never an address
	Protocol string         // SSH, RDP or Tunnel
	// Port is the port a tunnel asks for; for SSH and RDP, 0 means the
	// target's SSH or RDP port.
	Port  uint16
	Login string   // the account on the target, when known
	Via   string   // how the client came in: quic, websocket, browser
	Token string   // the API token's ID, for sessions opened with one
	Roles []string // the roles that allowed it
}

// portFor is the port r may reach on t, or 0.
func portFor(t Target, r Request) uint16 {
	switch r.Protocol {
	case SSH:
		if r.Port == 0 || r.Port == t.SSH {
			return t.SSH
		}
	case RDP:
		if r.Port == 0 || r.Port == t.RDP {
			return t.RDP
		}
	case Tunnel:
		if r.Port != 0 && (r.Port == t.SSH || r.Port == t.RDP || slices.Contains(t.Tunnel, r.Port)) {
			return r.Port
		}
	}
	return 0
}

// Open admits, dials and registers a session, and returns once its start
// record is on disk. Refusals are *Error.
func (b *Broker) Open(ctx context.Context, req Request) (*Session, error) {
	c := b.cfg.Load()
	t, ok := c.targets[req.Target]
	if !ok {
		return nil, &Error{Kind: KindUnknownTarget, Msg: fmt.Sprintf("there is no machine called %q on this bastion", req.Target)}
	}
	port := portFor(t, req)
	if port == 0 {
		what := fmt.Sprintf("port %d", req.Port)
		if req.Protocol != Tunnel {
			what = req.Protocol
		}
		return nil, &Error{Kind: KindUnknownTarget, Msg: fmt.Sprintf("%s does not offer %s through the bastion", req.Target, what)}
	}
	weight := c.Weights[req.Protocol]
	if weight == 0 {
		weight = 1
	}

	b.mu.Lock()
	switch {
	case b.closed:
		b.mu.Unlock()
		return nil, &Error{Kind: KindClosed, Msg: "the bastion is shutting down"}
	case b.perUser[req.User] >= c.PerUser:
		b.mu.Unlock()
		b.metrics.refusals.WithLabelValues("user_limit").Inc()
		return nil, &Error{Kind: KindUserLimit, Msg: fmt.Sprintf("you have %d sessions open, the most allowed", c.PerUser)}
	case b.used+weight > c.Capacity:
		b.mu.Unlock()
		b.metrics.refusals.WithLabelValues("capacity").Inc()
		return nil, &Error{Kind: KindCapacity, Msg: "bastion at capacity"}
	}
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
		b.mu.Unlock()
	}()

	conn, addr, err := b.dial(ctx, c, t, port)
	if err != nil {
		return nil, err
	}
	s := newSession(b, Info{ID: newID(), User: req.User, Client: req.Client, Target: req.Target, Address: addr,
		Protocol: req.Protocol, Port: port, Login: req.Login, Via: req.Via, Token: req.Token, Roles: req.Roles,
		Start: time.Now()}, weight, conn)
	start := startRecord(s.info)
	entry, _ := json.Marshal(liveEntry{Start: start})
	if err := b.audit.submit(auditOp{lines: [][]byte{marshalLine(start)}, put: map[string][]byte{s.info.ID: entry}}); err != nil {
		conn.Close()
		return nil, &Error{Kind: KindInternal, Msg: "the bastion cannot record the session", Err: err}
	}
	b.log.Info("session started", start.fields()...)
	b.mu.Lock()
	b.sessions[s.info.ID] = s
	registered = true
	b.mu.Unlock()
	b.metrics.active.WithLabelValues(req.Protocol).Inc()
	return s, nil
}

// release gives back a session's units; b.mu is held.
func (b *Broker) release(user string, weight int) {
	b.used -= weight
	if b.perUser[user]--; b.perUser[user] <= 0 {
		delete(b.perUser, user)
	}
}

// forget is the last step of End: the record is on disk. The session's
// bytes move from the live sum to the ended total in one step, so that the
// bytes counter never goes down.
func (b *Broker) forget(s *Session, up, down int64) {
	b.mu.Lock()
	delete(b.sessions, s.info.ID)
	b.metrics.addBytes(s.info.Protocol, up, down)
	b.release(s.info.User, s.weight)
	b.mu.Unlock()
}

func newID() string {
	var b [6]byte
	rand.Read(b[:])
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
	b.mu.Lock()
	list := make([]Info, 0, len(b.sessions))
	for _, s := range b.sessions {
		list = append(list, s.Info())
	}
	b.mu.Unlock()
	sort.Slice(list, func(i, j int) bool { return list[i].Start.Before(list[j].Start) })
	return list
}

// Live is how many sessions are open.
func (b *Broker) Live() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.sessions)
}

// Kill ends the session id with reason "killed: " + reason.
func (b *Broker) Kill(id, reason string) error {
	if reason == "" {
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

// EndWhere ends every live session match accepts, with reason, and returns
// how many once their records are on disk.
func (b *Broker) EndWhere(match func(Info) bool, reason string) int {
	b.mu.Lock()
	var victims []*Session
	for _, s := range b.sessions {
		if match(s.Info()) {
			victims = append(victims, s)
		}
	}
	b.mu.Unlock()
	b.endAll(victims, reason)
	return len(victims)
}

func (b *Broker) endAll(list []*Session, reason string) {
	var wg sync.WaitGroup
	for _, s := range list {
		wg.Go(func() { s.End(reason) })
	}
	wg.Wait()
}

// Drain refuses new sessions; live ones go on.
func (b *Broker) Drain() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

// Close refuses new sessions, waits for the live ones until ctx is done,
// ends the rest with reason "shutdown", and closes the audit file. Later
// calls return at once.
func (b *Broker) Close(ctx context.Context) error {
	var err error
	b.closeOnce.Do(func() {
		b.Drain()
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			b.mu.Lock()
			n, opening := len(b.sessions), b.opening
			list := make([]*Session, 0, n)
			if ctx.Err() != nil {
				for _, s := range b.sessions {
					list = append(list, s)
				}
			}
			b.mu.Unlock()
			if n == 0 && opening == 0 {
				break
			}
			if len(list) > 0 {
				err = ctx.Err()
				b.endAll(list, ReasonShutdown)
				continue
			}
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		close(b.stop)
		<-b.swept
		b.audit.close()
	})
	return err
}

// HandshakeFailed counts a failed handshake at layer (tls, quic, tunnel,
// ssh, rdp) in bastiond_handshake_failures_total.
func (b *Broker) HandshakeFailed(layer string) {
	b.metrics.handshakes.WithLabelValues(layer).Inc()
}

// sweep ends sessions past their protocol's idle or maximum time, and
// refreshes the byte counts kept with the live entries (what an abandoned
// record reports after a crash).
func (b *Broker) sweep() {
	defer close(b.swept)
	t := time.NewTicker(b.tick)
	defer t.Stop()
	lastSave := time.Now()
	for {
		select {
		case <-b.stop:
			return
		case now := <-t.C:
			c := b.cfg.Load()
			list := b.list()
			for _, s := range list {
				lim := c.Timeouts[s.info.Protocol]
				switch {
				case lim.Max > 0 && now.Sub(s.info.Start) >= lim.Max:
					go s.End(ReasonMaxDuration)
				case lim.Idle > 0 && now.Sub(s.lastActive()) >= lim.Idle:
					go s.End(ReasonIdle)
				}
			}
			if now.Sub(lastSave) >= 10*time.Second && len(list) > 0 {
				lastSave = now
				b.saveCounts(list)
			}
		}
	}
}

func (b *Broker) saveCounts(list []*Session) {
	op := auditOp{put: map[string][]byte{}, update: true}
	for _, s := range list {
		if s.ended.Load() {
			continue
		}
		v, _ := json.Marshal(liveEntry{Start: startRecord(s.info), BytesUp: s.up.Load(), BytesDown: s.down.Load()})
		op.put[s.info.ID] = v
	}
	b.audit.offer(op)
}
