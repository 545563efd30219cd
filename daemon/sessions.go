package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/auditship"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/link"
)

// openBroker starts the session broker over the state store and the audit
// file, recovering the records of sessions a crash interrupted, and the
// shipper (d.ship) that copies every line it writes to journald, the
// syslog collector and, in a cluster, the database.
func openBroker(cfg *config.Config, d *daemon) (*broker.Broker, error) {
	toDB, err := openAuditCopy(cfg, d)
	if err != nil {
		return nil, err
	}
	ship, err := openShipper(cfg.Logging, d.log.Named("ship"), d.trail, toDB...)
	if err != nil {
		return nil, err
	}
	d.ship = ship
	// An older version's live sessions may be left in a bbolt state file;
	// a database never held them.
	opt := broker.Options{LiveDir: filepath.Join(cfg.StateDir, "live"), AuditFile: cfg.Logging.AuditFile, Ship: ship.Ship,
		Instance: cfg.Cluster.Instance}
	if h, ok := d.state.(*statedb.Handle); ok {
		opt.DB = h.Bolt()
	}
	if d.registry != nil { // a nil *Registry in the interface would not be nil
		opt.Registry = d.registry
	}
	b, err := broker.New(brokerConfig(cfg, d.log), opt)
	if err != nil {
		return nil, err
	}
	ship.Start()
	if n := b.Recovered(); n > 0 {
		d.log.Warn("sessions interrupted by the last stop were recorded as abandoned", zap.Int("sessions", n),
			zap.String("audit_file", cfg.Logging.AuditFile))
	}
	return b, nil
}

// openShipper builds the audit shipper that logging asks for, besides the
// destinations given; with no destination it ships nowhere. Its failures
// are told to sink.
func openShipper(l config.Logging, log *zap.Logger, sink audit.Sink, dests ...auditship.Destination) (*auditship.Shipper, error) {
	switch {
	case l.Journald == "on" && !auditship.UnderJournald():
		return nil, errors.New("logging.journald: on, but journald is not there (no $JOURNAL_STREAM, no /run/systemd/journal/socket); use auto or off")
	case l.Journald == "on", l.Journald == "auto" && auditship.UnderJournald():
		dests = append(dests, auditship.NewJournal(auditship.JournalConfig{Logger: log, Audit: sink}))
	}
	if s := l.Syslog; s != nil {
		var tlsCfg *tls.Config
		if s.TLS {
			var err error
			if tlsCfg, err = auditship.ClientTLS(s.CAFile, s.ServerName, s.CertFile, s.KeyFile); err != nil {
				return nil, fmt.Errorf("logging.syslog: %w", err)
			}
		}
		dest, err := auditship.NewSyslog(auditship.SyslogConfig{Address: s.Address, TLS: tlsCfg, Facility: config.Facilities[s.Facility],
			AppName: s.AppName, Queue: s.Queue, Logger: log, Audit: sink})
		if err != nil {
			return nil, fmt.Errorf("logging.syslog: %w", err)
		}
		dests = append(dests, dest)
	}
	ship := auditship.New(dests...)
	if names := ship.Destinations(); len(names) > 0 {
		log.Info("shipping the audit trail", zap.Strings("to", names))
	}
	return ship, nil
}

func brokerConfig(cfg *config.Config, log *zap.Logger) broker.Config {
	inv := cfg.Inventory.Targets
	targets := make([]broker.Target, len(inv))
	for i, t := range inv {
		targets[i] = broker.Target{Name: t.Name, Addresses: t.Addresses, SSH: t.Ports.SSH, RDP: t.Ports.RDP, Tunnel: t.Ports.TunnelPorts()}
	}
	networks := make([]broker.Network, len(cfg.Inventory.Networks))
	for i, n := range cfg.Inventory.Networks {
		networks[i] = broker.Network{Name: n.Name, Prefixes: n.CIDRs, SSH: n.Ports.SSH, RDP: n.Ports.RDP, Tunnel: n.Ports.TunnelPorts()}
	}
	l := cfg.Limits
	timeouts := func(p config.ProtocolLimits) broker.Timeouts {
		return broker.Timeouts{Idle: p.IdleTimeout, Max: p.MaxSessionDuration}
	}
	return broker.Config{
		Logger:        log.Named("broker"),
		Targets:       targets,
		Networks:      networks,
		Subnets:       cfg.Bastion.Subnets,
		Capacity:      l.Capacity,
		Weights:       map[string]int{broker.SSH: l.Weights.SSH, broker.RDP: l.Weights.RDP, broker.Tunnel: l.Weights.Tunnel},
		PerUser:       l.SessionsPerUser,
		DialTimeout:   l.DialTimeout,
		TargetTimeout: l.TargetTimeout,
		Timeouts:      map[string]broker.Timeouts{broker.SSH: timeouts(l.SSH), broker.RDP: timeouts(l.RDP), broker.Tunnel: timeouts(l.Tunnel)},
	}
}

// sessionsAPI is the session registry for the admin API.
type sessionsAPI struct{ d *daemon }

var _ adminapi.Sessions = sessionsAPI{}

// List and Kill reach the sessions a previous process still carries after
// an upgrade too, and in a cluster those of every instance.
func (s sessionsAPI) List() ([]broker.Info, error) { return s.d.clusterSessions(context.Background()) }
func (s sessionsAPI) Kill(id, reason string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return s.d.clusterKill(ctx, id, reason)
}

// endRevoked ends every live session whose right to exist is gone: its
// user was deleted or disabled, no role allows it any more (a reload, a
// revoked grant), or the token that opened it was revoked. It returns how
// many it ended. A token that merely expired does not end the sessions it
// opened; revoking it does.
func (d *daemon) endRevoked(why string) int {
	policy, store := d.front.Policy(), d.auth.Store()
	type account struct {
		user   auth.User
		ok     bool
		tokens []string
	}
	accounts := map[string]*account{}
	var mu sync.Mutex // this and the previous process's sessions are checked at once
	lookup := func(name string) *account {
		mu.Lock()
		defer mu.Unlock()
		if a, ok := accounts[name]; ok {
			return a
		}
		a := &account{}
		if u, err := store.User(name); err == nil && !u.Disabled {
			a.user, a.ok = u, true
			ts, _ := store.Tokens(name)
			for _, t := range ts {
				a.tokens = append(a.tokens, t.ID)
			}
		}
		accounts[name] = a
		return a
	}
	links := d.linkRevoked()
	revoked := func(s broker.Info) bool {
		if id, ok := link.IDOf(s.User); ok {
			return links(id, s)
		}
		a := lookup(s.User)
		if !a.ok {
			return true
		}
		if s.Token != "" && !slices.Contains(a.tokens, s.Token) {
			return true
		}
		port := uint16(0)
		if s.Protocol == broker.Tunnel {
			port = s.Port
		}
		return !policy.Check(access.Request{User: s.User, Granted: a.user.Roles, Groups: a.user.Subjects(), Target: s.Target, Protocol: s.Protocol, Port: port, Login: s.Login}).Allowed
	}
	// The sessions of a process this one replaced lose their right too.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	older := make(chan int, 1)
	go func() { older <- d.pred.endWhere(ctx, revoked, broker.ReasonAccessRevoked) }()
	n := d.broker.EndWhere(revoked, broker.ReasonAccessRevoked) + <-older
	if n > 0 {
		d.log.Info("ended sessions whose access was revoked", zap.Int("sessions", n), zap.String("why", why))
	}
	return n
}
