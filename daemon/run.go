package daemon

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	sdaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/auditship"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/version"
	"github.com/bastiond/bastiond/netpolicy"
	"github.com/bastiond/bastiond/netpolicy/discover"
	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/auth"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/certs"
	"github.com/bastiond/bastiond/proxy/handover"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/oidc"
	"github.com/bastiond/bastiond/proxy/portal"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/registry"
	"github.com/bastiond/bastiond/proxy/sshca"
	"github.com/bastiond/bastiond/proxy/websession"
)

// Config is what the bastiond command passes to Run.
type Config struct {
	// ConfigFile is the YAML configuration. Default config.DefaultFile.
	ConfigFile string
}

// daemon is one running bastiond.
type daemon struct {
	file    string
	exe     string // this binary's path at start, where an upgrade finds the new one
	log     *zap.Logger
	level   zap.AtomicLevel
	started time.Time
	lns     *listeners
	certs   *certs.Store
	kernel  *netpolicy.Kernel
	front   *proxy.Server
	state   stateStore
	auth    *auth.Authenticator
	broker  *broker.Broker
	admin   *adminapi.Server
	// trail is the audit sink every subsystem is given: the broker's
	// writer once it is open.
	trail   *trail
	adminLn net.Listener
	metrics *metricsServer
	ship    *auditship.Shipper // copies the audit file's lines to journald and syslog
	// retention keeps the recordings directory within its limits until
	// stopRetention.
	retention     *recording.Retention
	stopRetention func()
	// recordDir is recordings_dir as it was at start (changing it takes
	// a restart); catalog describes the recordings of every instance in
	// the cluster's store (nil on a single host); instance is this one's
	// name in the cluster.
	recordDir string
	catalog   *recording.Catalog
	instance  string

	// hostKeys are the targets' pinned SSH host keys; sshCA signs the
	// certificates of targets with ssh_certificates.
	hostKeys *hostkeys.Store
	sshCA    *sshca.CA

	// registry is the cluster's live-session registry, nil on a single
	// host (see cluster.go); stopRegistry stops its heartbeat.
	registry     *registry.Registry
	stopRegistry func()

	// pred is the process this one replaced in a binary upgrade, while it
	// still serves sessions (see upgrade.go); nil otherwise.
	pred *predecessor

	// webClientMissing says this binary lacks its browser client
	// (portal.WebClientMissing): a configuration that needs it is refused,
	// at start and on reload.
	webClientMissing bool

	mu         sync.Mutex // guards the fields below
	cfg        *config.Config
	loaded     time.Time
	lastReload *adminapi.ReloadResult
	draining   bool
	upgrading  bool

	adminPath     string
	serveErrs     chan error
	stopReconcile context.CancelFunc
	reconciled    chan error
	upgrades      chan upgradeRequest
	reloads       chan reloadRequest
}

// Run runs the daemon until ctx is cancelled or SIGTERM or SIGINT arrives,
// then drains and returns nil. It returns an error when the daemon cannot
// start (bad configuration, host not as configured, sockets not available)
// or a listener fails. SIGHUP reloads the configuration, SIGUSR2 upgrades
// the binary (as `bastionctl upgrade` does).
func Run(ctx context.Context, dc Config) error {
	file := dc.ConfigFile
	if file == "" {
		file = config.DefaultFile
	}
	// The predecessor of a binary upgrade waits for an answer whatever
	// happens: it is told why this process could not start.
	pred, err := inheritPredecessor()
	if err != nil {
		return err
	}
	cfg, err := config.Load(file)
	if err != nil {
		pred.fail(err)
		return err
	}
	log, level, err := newLogger(cfg.Logging)
	if err != nil {
		pred.fail(err)
		return err
	}
	defer log.Sync()
	exe, err := os.Executable()
	if err != nil {
		pred.fail(err)
		return fmt.Errorf("daemon: cannot find this binary: %w", err)
	}
	d := &daemon{file: file, exe: exe, log: log, level: level, started: time.Now(), cfg: cfg, loaded: time.Now(),
		certs: &certs.Store{}, pred: pred, upgrades: make(chan upgradeRequest), reloads: make(chan reloadRequest),
		trail: newTrail(log.Named("audit")), webClientMissing: portal.WebClientMissing()}
	defer d.trail.close()

	// Signals are taken before anything slow so that a SIGTERM during
	// start-up is not lost (the default action would kill us mid-way).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2)
	defer signal.Stop(sigs)

	if err := d.start(); err != nil {
		log.Error("cannot start", zap.Error(err))
		pred.fail(err)
		notify("STATUS=failed to start: " + firstLine(err.Error()))
		return err
	}
	if pred != nil {
		d.takeOver()
	}
	return d.serve(ctx, sigs)
}

// start checks the host, puts the firewall in force, takes the sockets and
// starts serving. The firewall comes first: nothing is served before the
// policy that guards it is loaded. A failure closes what was opened.
func (d *daemon) start() (err error) {
	defer func() {
		if err != nil {
			d.abort()
		}
	}()
	cfg := d.cfg
	if err := portal.CheckWebClient(accessPolicy(cfg), d.webClientMissing); err != nil {
		return err
	}
	if err := checkHost(cfg); err != nil {
		return err
	}
	if err := checkRecordDir(cfg, false); err != nil {
		return err
	}
	d.recordDir, d.instance = cfg.RecordingsDir, cfg.Cluster.Instance
	kernel, err := netpolicy.Open()
	if err != nil {
		return err
	}
	d.kernel = kernel
	if err := d.applyPolicy(cfg); err != nil {
		return err
	}
	if err := d.certs.Load(certConfig(cfg)); err != nil {
		return err
	}
	d.lns, err = acquireListeners(cfg, d.pred.handover(), d.pred.listeners())
	if err != nil {
		return err
	}
	// In an upgrade, everything that could fail without the state store
	// has been done: now the previous process lets go of it.
	if err := d.pred.release(); err != nil {
		return err
	}
	d.state, d.auth, err = openState(cfg, d.log, d.trail)
	if err != nil {
		return err
	}
	// The line of processes this one belongs to: its predecessor's in an
	// upgrade, a new one otherwise (the QUIC connection IDs' key, and the
	// registry's name for this process's line).
	lineage := d.pred.lineage()
	if lineage == nil {
		l := handover.NewLineage()
		lineage = &l
	}
	if d.registry, err = openRegistry(cfg, d, d.state, lineage.ID()); err != nil {
		return err
	}
	d.openCatalog(cfg)
	d.hostKeys, d.sshCA, err = openSSHTrust(cfg, d.state, d.log)
	if err != nil {
		return err
	}
	if d.adminLn, err = d.pred.adminListener(); d.adminLn == nil && err == nil {
		d.adminLn, err = adminapi.Listen(cfg.Listen.AdminSocket)
	}
	if err != nil {
		return err
	}
	d.adminPath = cfg.Listen.AdminSocket
	d.broker, err = openBroker(cfg, d)
	if err != nil {
		return err
	}
	d.trail.attach(d.broker)
	d.runRegistry()
	d.startRetention(cfg)
	sso, err := d.ssoSet(cfg)
	if err != nil {
		return err
	}
	pcfg := d.proxyConfig(cfg, sso)
	pcfg.Lineage = lineage
	d.front, err = proxy.New(pcfg, d.auth)
	if err != nil {
		return err
	}
	if err := d.pred.importSessions(d.front); err != nil {
		return err
	}
	d.admin, err = adminapi.NewServer(adminapi.Config{Logger: d.log.Named("admin"), Group: cfg.Listen.AdminGroup, Status: d.status,
		Policy: policyAPI{d}, Targets: targetsAPI{d}, Users: usersAPI{d}, Sessions: sessionsAPI{d},
		HostKeys: hostKeysAPI{d.hostKeys, d}, SSHCA: d.sshCA, Upgrade: d.requestUpgrade, Reload: d.requestReload, Audit: d.trail,
		Recordings: recordingsAPI{d}, AuditEvents: auditAPI{d}, Links: d.linkSettings,
		ScanDial: func(ctx context.Context, target, protocol string) (net.Conn, error) {
			return d.broker.Probe(ctx, target, protocol)
		}})
	if err != nil {
		return err
	}
	metricsLn, err := d.pred.metricsListener()
	if metricsLn == nil && err == nil {
		if metricsLn, err = net.Listen("tcp", cfg.Listen.Metrics.String()); err != nil {
			err = fmt.Errorf("metrics listener (listen.metrics): %w", err)
		}
	}
	if err != nil {
		return err
	}
	d.metrics = newMetricsServer(metricsLn, d.kernel, d.log.Named("metrics"), d.broker, d.auth,
		d.front.RequestMetrics(), d.front.TCPMetrics(), d.front.QUICMetrics(), d.ship)
	d.metrics.reg.MustRegister(recording.Collectors()...)
	if c, ok := d.state.(prometheus.Collector); ok {
		d.metrics.reg.MustRegister(c) // PostgreSQL's transactions, conflicts, pool
	}
	if d.pred != nil {
		d.front.SetPredecessor(d.pred.quicLinks())
	}
	d.startReconcile()
	d.serveErrs = make(chan error, 3)
	go func() { d.serveErrs <- d.front.Serve(d.lns.tcp, d.lns.udp) }()
	go func() { d.serveErrs <- d.admin.Serve(d.adminLn) }()
	go func() { d.serveErrs <- d.metrics.Serve() }()
	for _, l := range d.lns.info {
		d.log.Info("listening", zap.String("network", l.Network), zap.String("address", l.Address), zap.Bool("socket_activated", l.Activated))
	}
	d.log.Info("admin socket", zap.String("path", cfg.Listen.AdminSocket))
	d.log.Info("metrics", zap.String("url", "http://"+metricsLn.Addr().String()+"/metrics"))
	return nil
}

// abort closes what a failed start opened. The admin socket's file stays:
// it is the previous process's in an upgrade, and a stale one is replaced
// at the next start anyway.
func (d *daemon) abort() {
	if d.lns != nil {
		d.lns.Close()
	}
	if d.adminLn != nil {
		d.adminLn.Close()
	}
	if d.metrics != nil {
		d.metrics.ln.Close()
	}
	if d.stopRetention != nil {
		d.stopRetention()
	}
	if d.broker != nil {
		d.broker.Close(context.Background())
	}
	if d.stopRegistry != nil {
		d.stopRegistry()
	}
	if d.ship != nil {
		d.ship.Close(time.Second)
	}
	if d.state != nil {
		d.state.Close()
	}
}

// startReconcile keeps the policy in force: it repairs whatever anyone
// changes in our tables, until stopReconcile.
func (d *daemon) startReconcile() {
	ctx, cancel := context.WithCancel(context.Background())
	d.stopReconcile, d.reconciled = cancel, make(chan error, 1)
	d.kernel.OnRepair(d.auditDrift)
	go func() { d.reconciled <- d.kernel.Reconcile(ctx, d.log.Named("firewall"), 0) }()
}

// serve is the main loop: it answers signals and keeps the watchdog fed. The
// watchdog is fed from this loop, not from a goroutine of its own, so that a
// wedged loop stops the keepalives and systemd restarts the daemon.
func (d *daemon) serve(ctx context.Context, sigs <-chan os.Signal) error {
	watchdog := watchdogTicker()
	defer watchdog.Stop()
	d.log.Info("ready", zap.String("version", version.Version), zap.String("config", d.file), zap.String("digest", short(d.cfg.Digest)))
	d.auditStarted()
	notify(sdaemon.SdNotifyReady, "STATUS="+d.statusLine())
	if !d.webClientMissing && len(accessPolicy(d.cfg).BrowserRoles()) > 0 {
		// The browser client's files are compressed once, on first use
		// (seconds for the desktop's module on a busy host): now, so that
		// the first user after a start, or a fail-over to this instance,
		// does not wait for it.
		go portal.WarmAssets()
	}
	upgraded := make(chan upgradeResult, 1)
	var waiting []chan<- upgradeResult // bastionctl upgrade calls waiting for the result
	startUpgrade := func(actor, how string) {
		d.mu.Lock()
		busy := d.upgrading
		d.upgrading = true
		d.mu.Unlock()
		if !busy {
			go func() { upgraded <- d.upgrade(actor, how) }()
		}
	}
	for {
		select {
		case <-ctx.Done():
			return d.drain(sigs, watchdog, "asked to stop")
		case err := <-d.serveErrs:
			// A listener died: nothing can be served any more.
			d.log.Error("listener failed", zap.Error(err))
			d.auditStopped("listener_failed", firstLine(err.Error()))
			d.close()
			return err
		case <-watchdog.C:
			notify(sdaemon.SdNotifyWatchdog)
		case req := <-d.upgrades:
			waiting = append(waiting, req.result)
			startUpgrade(req.actor, "bastionctl upgrade")
		case req := <-d.reloads:
			d.serveReload(req)
		case res := <-upgraded:
			d.mu.Lock()
			d.upgrading = false
			d.mu.Unlock()
			for _, w := range waiting {
				w <- res
			}
			waiting = nil
			if res.err == nil {
				return d.retired(res.succ, sigs)
			}
			notify("STATUS=upgrade failed, still serving: " + firstLine(res.err.Error()))
		case s := <-sigs:
			switch s {
			case syscall.SIGHUP:
				if d.isUpgrading() {
					d.log.Warn("reload ignored: an upgrade is under way")
					continue
				}
				d.reload(audit.ActorDaemon, "on SIGHUP")
				continue
			case syscall.SIGUSR2:
				startUpgrade(audit.ActorDaemon, "on SIGUSR2")
				continue
			}
			d.log.Info("signal received, draining", zap.String("signal", s.String()))
			return d.drain(sigs, watchdog, "on "+signalName(s))
		}
	}
}

func (d *daemon) isUpgrading() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.upgrading
}

// drain stops accepting, lets sessions finish for up to the grace period,
// then closes them. A second SIGTERM or SIGINT ends the wait at once. why
// says what asked for the stop, in the audit trail.
func (d *daemon) drain(sigs <-chan os.Signal, watchdog *time.Ticker, why string) error {
	d.mu.Lock()
	d.draining = true
	grace, delay := d.cfg.Limits.DrainGrace, d.cfg.Listen.ProxyProtocol.DrainDelay
	d.mu.Unlock()
	notify(sdaemon.SdNotifyStopping, fmt.Sprintf("STATUS=draining %d sessions (up to %s)", d.front.LiveSessions(), grace))

	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		// Tell the balancers first (their readiness checks get 503
		// draining), and keep taking users for drain_delay while they
		// notice; a second signal ends the wait.
		d.front.NotReady("draining")
		if delay > 0 {
			d.log.Info("telling the balancers, still serving", zap.Duration("drain_delay", delay))
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		// Stop accepting, let HTTP requests and then sessions finish; the
		// broker ends what is left when ctx ends.
		d.front.Shutdown(ctx)
		d.auditStopped("", fmt.Sprintf("%s; %d sessions were still open after the drain and are ended", why, d.broker.Live()))
		done <- d.broker.Close(ctx)
	}()
	for {
		select {
		case err := <-done:
			if err != nil {
				d.log.Warn("grace period over; closed the remaining sessions", zap.Duration("grace", grace))
			}
			d.close()
			d.log.Info("stopped")
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP || s == syscall.SIGUSR2 {
				d.log.Info("reload or upgrade ignored while draining")
				continue
			}
			d.log.Warn("second signal: closing every session now", zap.String("signal", s.String()))
			cancel()
		case <-watchdog.C:
			notify(sdaemon.SdNotifyWatchdog)
		}
	}
}

// close ends what drain leaves: the admin socket (kept until the end so
// that `bastionctl status` shows the drain) and the listeners.
func (d *daemon) close() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d.front.Shutdown(ctx)
	d.broker.Close(ctx) // drain has done this already, unless a listener died
	if d.stopRegistry != nil {
		d.stopRegistry() // after the broker: its last sessions leave the registry
	}
	d.ship.Close(2 * time.Second)
	d.front.Close()
	d.admin.Shutdown(ctx)
	d.metrics.Shutdown(ctx)
	d.stopReconcile()
	<-d.reconciled
	if d.stopRetention != nil {
		d.stopRetention()
	}
	os.Remove(d.adminPath)
	d.lns.Close()
	d.pred.close()
	if err := d.state.Close(); err != nil {
		d.log.Error("closing the state store", zap.Error(err))
	}
}

// reload builds and checks the new configuration, and only when all of it is
// good swaps it in. Any error leaves the running configuration untouched.
// actor and how are who asked and how, for the audit trail.
func (d *daemon) reload(actor, how string) adminapi.ReloadResult {
	notify(sdaemon.SdNotifyReloading, sdaemon.SdNotifyMonotonicUsec())
	d.log.Info("reloading", zap.String("config", d.file))
	prev := d.config()
	next, err := d.tryReload()
	d.auditReload(actor, how, prev, next, err)
	res := &adminapi.ReloadResult{Time: time.Now(), OK: err == nil}
	if err != nil {
		res.Error = err.Error()
		d.log.Error("reload failed; still running the previous configuration", zap.Error(err))
	}
	d.mu.Lock()
	d.lastReload = res
	d.mu.Unlock()
	status := d.statusLine()
	if err != nil {
		status = "reload failed, running previous configuration: " + firstLine(err.Error())
	}
	notify(sdaemon.SdNotifyReady, "STATUS="+status)
	return *res
}

// tryReload returns the configuration it swapped in, or why it did not
// (a *reloadError).
func (d *daemon) tryReload() (*config.Config, error) {
	next, err := config.Load(d.file)
	if err != nil {
		return nil, refused("config_invalid", err)
	}
	if err := portal.CheckWebClient(accessPolicy(next), d.webClientMissing); err != nil {
		return nil, refused("config_invalid", err)
	}
	if err := checkHost(next); err != nil {
		return nil, refused("host_mismatch", err)
	}
	level, err := zap.ParseAtomicLevel(next.Logging.Level)
	if err != nil {
		return nil, refused("config_invalid", err)
	}
	sso, err := d.ssoSet(next)
	if err != nil {
		return nil, refused("config_invalid", err)
	}
	// The policy is applied before the rest is swapped: if the kernel
	// refuses it, the old policy is still in force and so is the old config.
	if err := d.applyPolicy(next); err != nil {
		return nil, refused("firewall_refused", err)
	}
	// The certificate is the last thing that can fail; certs.Load keeps the
	// old certificate on error, so nothing has changed when it returns one.
	if err := d.certs.Load(certConfig(next)); err != nil {
		return nil, refused("certificate_unusable", err)
	}
	if err := d.front.SetConfig(d.proxyConfig(next, sso)); err != nil {
		return nil, refused("not_applied", err)
	}
	if err := d.broker.SetConfig(brokerConfig(next, d.log)); err != nil {
		return nil, refused("not_applied", err)
	}
	d.admin.SetGroup(next.Listen.AdminGroup)
	d.retention.SetLimits(recordingLimits(next))
	d.level.SetLevel(level.Level())

	d.mu.Lock()
	prev := d.cfg
	d.cfg, d.loaded = next, time.Now()
	d.mu.Unlock()
	for _, key := range restartOnly(prev, next) {
		d.log.Warn("changed setting takes effect at the next restart", zap.String("key", key))
	}
	d.log.Info("reloaded", zap.String("digest", short(next.Digest)))
	d.revoke("configuration reloaded")
	return next, nil
}

// applyPolicy compiles the firewall for cfg and puts it in force atomically.
func (d *daemon) applyPolicy(cfg *config.Config) error {
	addrs, err := vnetAddrs(cfg)
	if err != nil {
		return err
	}
	rs, err := netpolicy.Compile(policyInput(cfg, addrs, lookupEgressFacts(cfg, d.log)))
	if err != nil {
		return err
	}
	if err := d.kernel.Apply(rs); err != nil {
		return fmt.Errorf("cannot put the firewall in force: %w", err)
	}
	rules := 0
	for _, t := range rs.Tables {
		for _, c := range t.Chains {
			rules += len(c.Rules)
		}
	}
	d.log.Info("firewall in force", zap.Int("tables", len(rs.Tables)), zap.Int("rules", rules), zap.String("mode", cfg.Bastion.Mode))
	return nil
}

// Cleanup removes the daemon's nftables tables: the explicit opt-out of
// leaving the firewall closed when the daemon is gone.
func Cleanup() error {
	k, err := netpolicy.Open()
	if err != nil {
		return err
	}
	return k.Cleanup()
}

// storeKey is the store section, to compare.
func storeKey(c *config.Config) string {
	if c.Store.Postgres == nil {
		return c.Store.Backend
	}
	return fmt.Sprint(c.Store.Backend, *c.Store.Postgres)
}

// restartOnly lists the settings that changed but that a reload cannot apply.
func restartOnly(a, b *config.Config) []string {
	var keys []string
	if fmt.Sprint(a.Listen.Addresses) != fmt.Sprint(b.Listen.Addresses) {
		keys = append(keys, "listen.addresses")
	}
	checks := []struct {
		key  string
		a, b string
	}{
		{"listen.admin_socket", a.Listen.AdminSocket, b.Listen.AdminSocket},
		{"logging.format", a.Logging.Format, b.Logging.Format},
		{"logging.audit_file", a.Logging.AuditFile, b.Logging.AuditFile},
		{"logging.journald", a.Logging.Journald, b.Logging.Journald},
		{"logging.syslog", fmt.Sprint(a.Logging.Syslog), fmt.Sprint(b.Logging.Syslog)},
		{"state_dir", a.StateDir, b.StateDir},
		{"recordings_dir", a.RecordingsDir, b.RecordingsDir},
		{"store", storeKey(a), storeKey(b)},
		{"listen.metrics", a.Listen.Metrics.String(), b.Listen.Metrics.String()},
	}
	for _, c := range checks {
		if c.a != c.b {
			keys = append(keys, c.key)
		}
	}
	return keys
}

// checkHost checks the configuration against this host: both interfaces
// exist and the VNet side lives in the dedicated bastion subnet.
func checkHost(cfg *config.Config) error {
	if _, err := discover.Lookup(cfg.Bastion.PublicInterface); err != nil {
		return fmt.Errorf("bastion.public_interface: %w", err)
	}
	vnet, err := discover.Lookup(cfg.Bastion.VNetInterface)
	if err != nil {
		return fmt.Errorf("bastion.vnet_interface: %w", err)
	}
	if err := discover.CheckDedicatedSubnet(vnet, cfg.Bastion.Subnets); err != nil {
		return fmt.Errorf("bastion.subnets: %w", err)
	}
	return nil
}

// CheckConfig loads the file and checks it against this host, as start-up
// would, without starting anything. It is `bastiond -check-config`.
func CheckConfig(file string) (*config.Config, error) {
	cfg, err := config.Load(file)
	if err != nil {
		return nil, err
	}
	if err := portal.CheckWebClient(accessPolicy(cfg), portal.WebClientMissing()); err != nil {
		return cfg, fmt.Errorf("%s: %w", file, err)
	}
	if err := checkHost(cfg); err != nil {
		return cfg, fmt.Errorf("%s: host check: %w", file, err)
	}
	if err := checkRecordDir(cfg, true); err != nil {
		return cfg, fmt.Errorf("%s: %w", file, err)
	}
	if s := cfg.Logging.Syslog; s != nil && s.TLS {
		if _, err := auditship.ClientTLS(s.CAFile, s.ServerName, s.CertFile, s.KeyFile); err != nil {
			return cfg, fmt.Errorf("%s: logging.syslog: %w", file, err)
		}
	}
	line, err := checkStore(cfg)
	if err != nil {
		return cfg, fmt.Errorf("%s: %w", file, err)
	}
	if line != "" {
		fmt.Println(line)
	}
	return cfg, nil
}

func certConfig(cfg *config.Config) certs.Config {
	return certs.Config{
		CertFile:   cfg.Listen.TLS.Certificate,
		KeyFile:    cfg.Listen.TLS.Key,
		SelfSigned: cfg.Listen.TLS.SelfSigned,
		ServerName: cfg.Listen.ServerName,
		Dir:        cfg.StateDir,
	}
}

func (d *daemon) proxyConfig(cfg *config.Config, sso *oidc.Set) proxy.Config {
	minTLS := uint16(tls.VersionTLS13)
	if cfg.Listen.TLS.MinVersion == "1.2" {
		minTLS = tls.VersionTLS12
	}
	pc := proxy.Config{Audit: d.trail,
		Logger:            d.log.Named("proxy"),
		ServerName:        cfg.Listen.ServerName,
		Certs:             d.certs,
		MinTLSVersion:     minTLS,
		HandshakeTimeout:  cfg.Limits.HandshakeTimeout,
		ClientTimeout:     cfg.Limits.ClientTimeout,
		MaxConnsPerSource: cfg.Limits.ConnectionsPerSource,
		TunnelsPerConn:    cfg.Limits.SessionsPerUser,
		MaxPendingTunnels: cfg.Limits.PendingTunnelRequests,
		Balancers:         cfg.Listen.ProxyProtocol.From,
		Access:            accessPolicy(cfg),
		WebSessions:       websession.Config{Idle: cfg.Access.SessionIdle, Absolute: cfg.Access.SessionLifetime},
		MFA:               cfg.Access.MFA,
		Shared:            sharedState(d.state),
		Broker:            d.broker,
		SSO:               sso,
		// In the background: the sign-in that took a group away
		// does not wait for the sessions it ends, here and on the
		// other instances.
		AccessChanged: func(why string) { go d.revoke(why) },
		SSH: proxy.SSHConfig{
			HostKeys: d.hostKeys.Verifier,
			Sign: func(login, keyID string) (ssh.Signer, error) {
				return d.sshCA.Sign(login, keyID, sshca.DefaultValidity)
			},
			RecordDir:        d.recordDir,
			RecordingWritten: d.retention.Written,
			RecordingStarted: d.recordingStarted,
			RecordingClosed:  d.recordingClosed,
		},
		RDP:   proxy.RDPConfig{Certificate: d.hostKeys.CertificateCheck},
		Links: d.linksConfig(cfg),
	}
	if d.registry != nil {
		// A live view is served by the instance that carries the session;
		// the others name it.
		pc.SessionOwner, pc.ClusterSessions = d.registry.Owner, d.registry.List
	}
	return pc
}

func (d *daemon) status() adminapi.Status {
	var prev *adminapi.PreviousProcess
	if list, err := d.pred.list(context.Background()); err == nil {
		prev = &adminapi.PreviousProcess{PID: d.pred.hello.PID, Version: d.pred.hello.Version, Sessions: len(list)}
	}
	cluster, err := d.clusterInstances()
	if err != nil {
		d.log.Warn("status: cannot read the cluster's instances from the state store", zap.Error(err))
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	st := adminapi.Status{
		Version:      version.Version,
		PID:          os.Getpid(),
		Started:      d.started,
		Now:          time.Now(),
		ConfigFile:   d.file,
		ConfigDigest: d.cfg.Digest,
		ConfigLoaded: d.loaded,
		LastReload:   d.lastReload,
		Listeners: slices.Concat(d.lns.info, []adminapi.Listener{
			{Network: "unix", Address: d.adminPath},
			{Network: "tcp", Address: "http://" + d.metrics.ln.Addr().String() + "/metrics"},
		}),
		Sessions: d.front.LiveSessions(),
		Draining: d.draining,
		Previous: prev,
		Cluster:  cluster,
	}
	if d.registry != nil {
		st.Instance = d.registry.Instance()
	}
	if d.cfg != nil {
		st.ServerName = d.cfg.Listen.ServerName
	}
	return st
}

func (d *daemon) statusLine() string {
	return fmt.Sprintf("serving %s; %d sessions; config %s", d.cfg.Listen.ServerName, d.front.LiveSessions(), short(d.cfg.Digest))
}

// notify sends states to systemd; outside systemd it does nothing.
// Between the two halves of an upgrade, only the process systemd knows as
// the main one speaks (see notMain).
func notify(states ...string) {
	if notMain.Load() {
		return
	}
	sdaemon.SdNotify(false, strings.Join(states, "\n"))
}

// watchdogTicker ticks at half the watchdog interval systemd asked for, or
// never when no watchdog is set.
func watchdogTicker() *time.Ticker {
	interval, err := sdaemon.SdWatchdogEnabled(false)
	if err != nil || interval <= 0 {
		t := time.NewTicker(time.Hour)
		t.Stop()
		return t
	}
	return time.NewTicker(interval / 2)
}

func short(digest string) string {
	if len(digest) > 12 {
		return digest[:12]
	}
	return digest
}

// signalName is SIGTERM for terminated, as admins know signals.
func signalName(s os.Signal) string {
	if n, ok := s.(syscall.Signal); ok {
		if name := unix.SignalName(n); name != "" {
			return name
		}
	}
	return s.String()
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
