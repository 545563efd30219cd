package daemon

// A binary upgrade, seen from both processes.
//
// The old process (the one systemd started, or the last upgrade's) starts
// the binary installed at its own path with the same arguments, handing it
// its sockets: TCP and UDP 443, the admin socket, the metrics listener,
// and one QUIC link per UDP socket (proxy.QUICLinkPair). Then, on the
// control socket:
//
//	old -> new  hello     the listeners' origin, the QUIC lineage
//	new -> old  release   firewall, certificate and sockets are taken
//	old -> new  released  the old process paused accepting and let go of
//	                      the state store; the signed-in web sessions
//	new -> old  ready     the new process serves
//	old -> new  retired   the old process stopped accepting for good,
//	                      reads QUIC from its links, and told systemd the
//	                      new process is the main one
//
// Until "ready" the old process can take everything back: if the new one
// fails (it says why in a "failed" message), exits, or takes longer than
// upgradeTimeout, it is killed and the old one resumes serving. After
// "retired" the old process serves its live sessions for up to
// limits.upgrade_grace, answering the new one's questions about them
// (sessions, kill, end), and exits when the last one ends.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/version"
	"github.com/bastiond/bastiond/proxy"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/handover"
)

// upgradeTimeout bounds a new process's start, from exec to "ready".
const upgradeTimeout = time.Minute

// notMain is set while this process is not the one systemd watches (a new
// process before the hand-over, an old one after): systemd refuses its
// notifications, and would log each one.
var notMain atomic.Bool

// Control messages.
type (
	helloMsg struct {
		Lineage   []byte              `json:"lineage"`
		Listeners []adminapi.Listener `json:"listeners"`
		PID       int                 `json:"pid"`
		Version   string              `json:"version"`
	}
	releasedMsg struct {
		Sessions []byte `json:"sessions"`
	}
	readyMsg struct {
		PID     int    `json:"pid"`
		Version string `json:"version"`
	}
	killMsg struct {
		ID     string `json:"id"`
		Reason string `json:"reason"`
	}
	endMsg struct {
		IDs    []string `json:"ids"`
		Reason string   `json:"reason"`
	}
)

type upgradeRequest struct {
	actor  string // who asked, for the audit trail
	result chan<- upgradeResult
}

type upgradeResult struct {
	succ *handover.Successor
	err  error
}

// requestUpgrade is the admin API's `bastionctl upgrade`: it asks the main
// loop to upgrade and waits for the outcome.
func (d *daemon) requestUpgrade(ctx context.Context) (adminapi.UpgradeResult, error) {
	res := make(chan upgradeResult, 1)
	select {
	case d.upgrades <- upgradeRequest{actor: actorOf(ctx), result: res}:
	case <-ctx.Done():
		return adminapi.UpgradeResult{}, ctx.Err()
	}
	select {
	case r := <-res:
		if r.err != nil {
			return adminapi.UpgradeResult{}, r.err
		}
		return adminapi.UpgradeResult{OldPID: os.Getpid(), NewPID: r.succ.PID(), Binary: d.exe, Sessions: d.broker.Live()}, nil
	case <-ctx.Done():
		return adminapi.UpgradeResult{}, ctx.Err()
	}
}

// upgrade starts the new binary and hands over to it; on error this
// process still serves, as before. actor and how are who asked and how,
// for the audit trail.
func (d *daemon) upgrade(actor, how string) upgradeResult {
	log := d.log.With(zap.String("binary", d.exe))
	log.Info("upgrade: starting the new binary")
	d.event(audit.Event{Event: audit.UpgradeStarted, Actor: actor, Version: version.Version,
		Detail: fmt.Sprintf("%s: pid %d starts %s", how, os.Getpid(), d.exe)})
	succ, newVersion, err := d.handOver(log)
	if err != nil {
		log.Error("upgrade failed; this process still serves", zap.Error(err))
		d.event(audit.Event{Event: audit.UpgradeFailed, Actor: actor, Version: version.Version, Reason: "upgrade_failed",
			Detail: "pid " + strconv.Itoa(os.Getpid()) + " still serves: " + firstLine(err.Error())})
		return upgradeResult{err: fmt.Errorf("upgrade failed, the running bastiond still serves: %w", err)}
	}
	d.event(audit.Event{Event: audit.UpgradeFinished, Actor: actor, Version: newVersion,
		Detail: fmt.Sprintf("pid %d (version %s) handed over to pid %d (version %s)", os.Getpid(), version.Version, succ.PID(), newVersion)})
	return upgradeResult{succ: succ}
}

// handOver returns the new process and its version.
func (d *daemon) handOver(log *zap.Logger) (_ *handover.Successor, newVersion string, err error) {
	files, err := d.lns.handoverFiles()
	if err != nil {
		return nil, "", err
	}
	defer func() { closeFiles(files) }()
	for _, s := range []struct {
		name string
		c    syscall.Conn
	}{{"admin", d.adminLn.(syscall.Conn)}, {"metrics", d.metrics.ln.(syscall.Conn)}} {
		f, err := handover.Dup(s.c, s.name)
		if err != nil {
			return nil, "", err
		}
		files = append(files, handover.File{Name: s.name, File: f})
	}
	var links []*net.UnixConn
	closeLinks := func() {
		for _, l := range links {
			l.Close()
		}
	}
	for i := range d.lns.udp {
		mine, theirs, err := handover.LinkPair()
		if err != nil {
			closeLinks()
			return nil, "", err
		}
		links = append(links, mine)
		f, err := handover.Dup(theirs, fmt.Sprintf("quic/%d", i))
		theirs.Close()
		if err != nil {
			closeLinks()
			return nil, "", err
		}
		files = append(files, handover.File{Name: f.Name(), File: f})
	}

	succ, err := handover.Start(d.exe, os.Args, files)
	if err != nil {
		closeLinks()
		return nil, "", err
	}
	log = log.With(zap.Int("new_pid", succ.PID()))
	timer := time.AfterFunc(upgradeTimeout, succ.Kill)
	defer timer.Stop()
	paused := false
	defer func() {
		if err == nil {
			return
		}
		succ.Kill()
		closeLinks()
		if paused {
			d.resume(log)
		}
		select {
		case <-succ.Exited():
			if xerr := succ.Err(); xerr != nil && !errors.Is(err, errFromNewProcess) {
				err = fmt.Errorf("the new process ended (%v): %w", xerr, err)
			}
		default:
		}
	}()

	lineage, err := d.front.Lineage().Next().MarshalBinary()
	if err != nil {
		return nil, "", err
	}
	if err := succ.Send("hello", 0, helloMsg{Lineage: lineage, Listeners: d.lns.info, PID: os.Getpid(), Version: version.Version}); err != nil {
		return nil, "", err
	}
	if _, err := expect(succ.Conn, "release"); err != nil {
		return nil, "", err
	}

	// Stop taking new connections and let go of the state store. The live
	// sessions go on: they need neither.
	paused = true
	d.stopReconcile()
	<-d.reconciled
	d.front.Pause()
	sessions, err := d.front.ExportSessions()
	if err != nil {
		return nil, "", err
	}
	if err := d.state.Release(); err != nil {
		return nil, "", fmt.Errorf("state store: %w", err)
	}
	if err := succ.Send("released", 0, releasedMsg{Sessions: sessions}); err != nil {
		return nil, "", err
	}
	m, err := expect(succ.Conn, "ready")
	if err != nil {
		return nil, "", err
	}
	var ready readyMsg
	if err := m.Decode(&ready); err != nil {
		return nil, "", err
	}

	// The new process serves: from here on there is no way back. The admin
	// socket's file is its now: closing ours must not remove it.
	timer.Stop()
	if ul, ok := d.adminLn.(*net.UnixListener); ok {
		ul.SetUnlinkOnClose(false)
	}
	if err := d.front.Retire(links); err != nil {
		log.Error("upgrade: retiring the front door", zap.Error(err))
	}
	notify(fmt.Sprintf("MAINPID=%d", succ.PID()), fmt.Sprintf("STATUS=upgraded to %s (pid %d)", ready.Version, succ.PID()))
	notMain.Store(true)
	if err := succ.Send("retired", 0, nil); err != nil {
		log.Error("upgrade: telling the new process", zap.Error(err))
	}
	log.Info("upgrade: the new process serves", zap.String("new_version", ready.Version))
	return succ, ready.Version, nil
}

// errFromNewProcess marks the reason the new process gave for failing.
var errFromNewProcess = errors.New("the new process could not start")

// expect waits for a message of type typ, turning a "failed" one into the
// error it carries and a closed socket into "exited".
func expect(c *handover.Conn, typ string) (handover.Message, error) {
	m, err := c.Expect(typ)
	switch {
	case err == nil:
		return m, nil
	case m.Type == "failed":
		return m, fmt.Errorf("%w: %s", errFromNewProcess, m.Error)
	case errors.Is(err, net.ErrClosed) || errors.Is(err, io.EOF):
		return m, errors.New("the new process exited or was stopped before it was ready")
	}
	return m, err
}

// resume undoes a hand-over's pause: the state store, the firewall's
// watch and accepting come back.
func (d *daemon) resume(log *zap.Logger) {
	if err := d.state.Reopen(); err != nil {
		log.Error("upgrade: cannot take the state store back; sign-ins fail until a restart", zap.Error(err))
	}
	d.startReconcile()
	if err := d.applyPolicy(d.config()); err != nil {
		log.Error("upgrade: cannot put the firewall back in force", zap.Error(err))
	}
	d.front.Resume()
}

// retired serves the live sessions after a hand-over until they end or
// limits.upgrade_grace passes (SIGTERM shortens that to drain_grace, a
// second SIGTERM ends them now), then closes what is left and returns.
func (d *daemon) retired(succ *handover.Successor, sigs <-chan os.Signal) error {
	d.mu.Lock()
	d.draining = true
	grace, drainGrace := d.cfg.Limits.UpgradeGrace, d.cfg.Limits.DrainGrace
	d.mu.Unlock()
	log := d.log.With(zap.Int("new_pid", succ.PID()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	d.admin.Shutdown(ctx) // after the answer to `bastionctl upgrade`
	d.metrics.Shutdown(ctx)
	cancel()
	log.Info("upgrade: serving the live sessions until they end", zap.Int("sessions", d.broker.Live()), zap.Duration("upgrade_grace", grace))
	d.auditStopped("upgraded", fmt.Sprintf("handed over to pid %d; serves its %d live sessions until they end (up to %s), and their ends are the last lines it writes",
		succ.PID(), d.broker.Live(), grace))
	go succ.Dispatch(func(m handover.Message) { d.answer(succ.Conn, m) })
	if d.registry != nil {
		d.registry.Retire() // the new process serves kills and rechecks, for both
	}

	ctx, cancel = context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan error, 2)
	go func() { done <- d.broker.Close(ctx) }()
	// An older process, still serving after an earlier upgrade, gets its
	// QUIC datagrams through this one: this one stays until it has gone.
	var older <-chan struct{}
	terms := 0
	for {
		select {
		case err := <-done:
			if err != nil {
				log.Warn("upgrade grace over; ended the remaining sessions", zap.Duration("grace", grace))
			}
			if d.pred.alive() {
				log.Info("upgrade: waiting for the older process this one relays QUIC to", zap.Int("older_pid", d.pred.hello.PID))
				older = d.pred.gone
				continue
			}
			return d.closeRetired(succ, log)
		case <-older:
			return d.closeRetired(succ, log)
		case s := <-sigs:
			if s == syscall.SIGHUP || s == syscall.SIGUSR2 {
				log.Info("reload or upgrade ignored: this process handed over to a new one", zap.String("signal", s.String()))
				continue
			}
			if terms++; terms == 1 {
				log.Info("signal received, draining the live sessions", zap.String("signal", s.String()), zap.Duration("drain_grace", drainGrace))
				ctx, cancel := context.WithTimeout(context.Background(), drainGrace)
				defer cancel()
				go func() { done <- d.broker.Close(ctx) }()
				continue
			}
			log.Warn("second signal: closing every session now", zap.String("signal", s.String()))
			cancel()
		}
	}
}

// closeRetired closes what a retired process still holds, once its
// sessions (and those of older processes it relays to) are over.
func (d *daemon) closeRetired(succ *handover.Successor, log *zap.Logger) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	d.front.Shutdown(ctx)
	cancel()
	d.front.Close()
	if d.stopRegistry != nil {
		d.stopRegistry()
	}
	d.ship.Close(2 * time.Second) // the broker has written its last lines
	d.lns.Close()
	succ.Close()
	d.pred.close()
	log.Info("stopped after the upgrade")
	return nil
}

// answer serves the new process's questions about the sessions this one
// (and its own predecessors) still carry.
func (d *daemon) answer(conn *handover.Conn, m handover.Message) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		switch m.Type {
		case "sessions":
			conn.Reply(m, d.allSessions(ctx))
		case "kill":
			var k killMsg
			if err := m.Decode(&k); err != nil {
				conn.Reply(m, err)
				return
			}
			if err := d.kill(ctx, k.ID, k.Reason); err != nil {
				conn.Reply(m, err)
				return
			}
			conn.Reply(m, struct{}{})
		case "end":
			var e endMsg
			if err := m.Decode(&e); err != nil {
				conn.Reply(m, err)
				return
			}
			match := func(i broker.Info) bool { return slices.Contains(e.IDs, i.ID) }
			conn.Reply(m, d.broker.EndWhere(match, e.Reason)+d.pred.endWhere(ctx, match, e.Reason))
		default:
			conn.Reply(m, fmt.Errorf("unknown request %q", m.Type))
		}
	}()
}

// allSessions lists the sessions of this process and of its predecessors.
func (d *daemon) allSessions(ctx context.Context) []broker.Info {
	return append(d.broker.Sessions(), d.pred.sessions(ctx, d.log)...)
}

// kill ends a session of this process or of a predecessor.
func (d *daemon) kill(ctx context.Context, id, reason string) error {
	err := d.broker.Kill(id, reason)
	if errors.Is(err, broker.ErrNoSession) && d.pred.alive() {
		return d.pred.kill(ctx, id, reason)
	}
	return err
}

// predecessor is the process this one replaced, seen from this one, while
// it serves its sessions. Its methods do nothing on a nil predecessor.
type predecessor struct {
	*handover.Predecessor
	hello    helloMsg
	webState []byte // the signed-in web sessions, until imported
	links    []*net.UnixConn
	gone     chan struct{} // closed once it has exited
}

// inheritPredecessor reads what the previous process handed this one, when
// it was started by an upgrade.
func inheritPredecessor() (*predecessor, error) {
	hp, err := handover.Inherit()
	if hp == nil || err != nil {
		return nil, err
	}
	notMain.Store(true)
	p := &predecessor{Predecessor: hp, gone: make(chan struct{})}
	m, err := hp.Expect("hello")
	if err == nil {
		err = m.Decode(&p.hello)
	}
	for i := 0; err == nil; i++ {
		f := hp.File(fmt.Sprintf("quic/%d", i))
		if f == nil {
			break
		}
		var c net.Conn
		c, err = net.FileConn(f)
		f.Close()
		if err == nil {
			p.links = append(p.links, c.(*net.UnixConn))
		}
	}
	if err != nil {
		err = fmt.Errorf("daemon: taking over from the previous process: %w", err)
		p.fail(err)
		return nil, err
	}
	return p, nil
}

func (p *predecessor) handover() *handover.Predecessor {
	if p == nil {
		return nil
	}
	return p.Predecessor
}

func (p *predecessor) listeners() []adminapi.Listener {
	if p == nil {
		return nil
	}
	return p.hello.Listeners
}

func (p *predecessor) quicLinks() []*net.UnixConn {
	if p == nil {
		return nil
	}
	return p.links
}

func (p *predecessor) lineage() *handover.Lineage {
	if p == nil {
		return nil
	}
	var l handover.Lineage
	if err := l.UnmarshalBinary(p.hello.Lineage); err != nil {
		return nil // a fresh lineage: the old connections are then lost, not misrouted
	}
	return &l
}

// release asks the previous process to let go of the state store.
func (p *predecessor) release() error {
	if p == nil {
		return nil
	}
	if err := p.Send("release", 0, nil); err != nil {
		return err
	}
	m, err := p.Expect("released")
	if err != nil {
		return fmt.Errorf("daemon: the previous process did not release the state store: %w", err)
	}
	var r releasedMsg
	if err := m.Decode(&r); err != nil {
		return err
	}
	p.webState = r.Sessions
	return nil
}

func (p *predecessor) importSessions(front *proxy.Server) error {
	if p == nil || len(p.webState) == 0 {
		return nil
	}
	err := front.ImportSessions(p.webState)
	p.webState = nil
	return err
}

func (p *predecessor) listener(name string) (net.Listener, error) {
	if p == nil {
		return nil, nil
	}
	f := p.File(name)
	if f == nil {
		return nil, fmt.Errorf("daemon: the previous process handed over no %s socket", name)
	}
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("daemon: the %s socket handed over: %w", name, err)
	}
	return ln, nil
}

func (p *predecessor) adminListener() (net.Listener, error)   { return p.listener("admin") }
func (p *predecessor) metricsListener() (net.Listener, error) { return p.listener("metrics") }

// fail tells the previous process why this one cannot take over.
func (p *predecessor) fail(err error) {
	if p == nil {
		return
	}
	p.Send("failed", 0, err)
	p.Close()
}

func (p *predecessor) alive() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.gone:
		return false
	default:
		return true
	}
}

func (p *predecessor) close() {
	if p != nil {
		p.Close()
	}
}

// sessions lists the sessions the previous processes still carry; none if
// they are gone or do not answer in time.
func (p *predecessor) sessions(ctx context.Context, log *zap.Logger) []broker.Info {
	list, err := p.list(ctx)
	if err != nil && p.alive() {
		log.Warn("cannot list the sessions of the previous process", zap.Error(err))
	}
	return list
}

// list asks the previous processes for their sessions.
func (p *predecessor) list(ctx context.Context) ([]broker.Info, error) {
	if !p.alive() {
		return nil, errors.New("the previous process has exited")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	var list []broker.Info
	err := p.Call(ctx, "sessions", nil, &list)
	return list, err
}

func (p *predecessor) kill(ctx context.Context, id, reason string) error {
	if err := p.Call(ctx, "kill", killMsg{ID: id, Reason: reason}, nil); err != nil {
		if err.Error() == broker.ErrNoSession.Error() {
			return broker.ErrNoSession
		}
		return err
	}
	return nil
}

// endWhere ends the previous processes' sessions that match, with reason;
// it returns how many.
func (p *predecessor) endWhere(ctx context.Context, match func(broker.Info) bool, reason string) int {
	if !p.alive() {
		return 0
	}
	var ids []string
	for _, s := range p.sessions(ctx, zap.NewNop()) {
		if match(s) {
			ids = append(ids, s.ID)
		}
	}
	if len(ids) == 0 {
		return 0
	}
	var n int
	p.Call(ctx, "end", endMsg{IDs: ids, Reason: reason}, &n)
	return n
}

// takeOver finishes an upgrade in the new process, once it serves: it
// tells the previous process, becomes the one systemd watches, and from
// then on asks the previous process about its sessions until it exits.
func (d *daemon) takeOver() {
	p := d.pred
	log := d.log.With(zap.Int("old_pid", p.hello.PID), zap.String("old_version", p.hello.Version))
	if err := p.Send("ready", 0, readyMsg{PID: os.Getpid(), Version: version.Version}); err != nil {
		log.Error("upgrade: cannot tell the previous process", zap.Error(err))
	}
	if _, err := p.Expect("retired"); err != nil {
		log.Error("upgrade: the previous process did not confirm the hand-over", zap.Error(err))
	}
	notMain.Store(false)
	log.Info("upgrade: took over from the previous process")
	go func() {
		p.Dispatch(nil)
		close(p.gone)
		p.Close()
		// Its journal of live sessions is free now: empty if it ended them
		// all, else (a crash) they are recorded as abandoned.
		n, err := d.broker.RecoverOrphans()
		switch {
		case err != nil:
			log.Error("upgrade: cannot check the previous process's live sessions", zap.Error(err))
		case n > 0:
			log.Warn("upgrade: the previous process ended without recording some sessions; recorded them as abandoned", zap.Int("sessions", n))
		default:
			log.Info("upgrade: the previous process has exited")
		}
	}()
}
