package webssh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/internal/relaybuf"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// Buffers: a quiet terminal waits for output on a small buffer (a thousand
// idle sessions must not pin large ones) and takes a large pooled one
// while output flows (relaybuf); keystrokes are read on a small buffer
// too, and a message that fills it (a paste typed as keys) goes on a
// pooled one.
const (
	inputBuf  = 256
	smallBuf  = 512
	stderrBuf = 512
)

// drainTimeout bounds the wait for the machine's last output to reach the
// page once the shell exited.
const drainTimeout = 5 * time.Second

// missedKeepalives is how many keepalive periods the machine may leave
// unanswered.
const missedKeepalives = 3

// ptyRequest, envRequest and windowChange are RFC 4254 request payloads.
type ptyRequest struct {
	Term          string
	Columns, Rows uint32
	Width, Height uint32 // pixels, unknown
	Modes         string
}

type envRequest struct {
	Name, Value string
}

type windowChange struct {
	Columns, Rows uint32
	Width, Height uint32
}

// ptyModes tells the machine the terminal is UTF-8 (IUTF8, opcode 42, so
// that line editing erases whole characters), then TTY_OP_END.
const ptyModes = "\x2a\x00\x00\x00\x01\x00"

// openShell opens a session channel with a PTY and a shell, and the
// recording if the role requires one.
func (c *conn) openShell(cols, rows int) *ending {
	c.target.SetDeadline(time.Now().Add(c.p.HandshakeTimeout))
	ch, reqs, err := c.client.OpenChannel("session", nil)
	if err != nil {
		return c.setupEnding("opening of a session", err)
	}
	c.ch, c.reqs = ch, reqs
	ok, err := ch.SendRequest("pty-req", true, ssh.Marshal(ptyRequest{Term: "xterm-256color",
		Columns: uint32(cols), Rows: uint32(rows), Modes: ptyModes}))
	if err != nil {
		return c.setupEnding("opening of a terminal", err)
	}
	if !ok {
		return &ending{reason: broker.ReasonTargetError + "pty refused",
			msg: end(endError, fmt.Sprintf("%s refused to open a terminal for %s.", c.p.Target, c.login))}
	}
	// Machines set only the variables they accept (OpenSSH: AcceptEnv);
	// a refusal leaves the machine's default locale.
	if _, err := ch.SendRequest("env", true, ssh.Marshal(envRequest{"LANG", "C.UTF-8"})); err != nil {
		return c.setupEnding("opening of a terminal", err)
	}
	if c.p.Record {
		rec, err := recording.Create(c.p.RecordDir, c.sess.ID(), recording.Header{Width: cols, Height: rows,
			Title: fmt.Sprintf("%s@%s by %s", c.login, c.p.Target, c.p.User)})
		if err != nil {
			c.log.Error("cannot record the session", zap.Error(err))
			c.recordingFailed("create_failed", err)
			return &ending{reason: broker.ReasonRecordingFailed + ": " + recording.Cause(err),
				msg: end(endError, "This session must be recorded, and the bastion cannot write its recording ("+
					recording.Cause(err)+"), so it was not opened. Tell the bastion's administrators.")}
		}
		c.rec = rec
		if c.p.SetRecording != nil {
			c.p.SetRecording(c.sess, rec.Path())
		}
	}
	ok, err = ch.SendRequest("shell", true, nil)
	if err != nil {
		return c.setupEnding("start of the shell", err)
	}
	if !ok {
		return &ending{reason: broker.ReasonTargetError + "shell refused",
			msg: end(endError, fmt.Sprintf("%s refused to start a shell for %s.", c.p.Target, c.login))}
	}
	c.target.SetDeadline(time.Time{})
	return nil
}

// setupEnding is how a session ends when opening the shell failed.
func (c *conn) setupEnding(what string, err error) *ending {
	var oe *ssh.OpenChannelError
	switch {
	case c.sess.Context().Err() != nil:
		return c.brokerEnding(c.sess.EndReason())
	case errors.As(err, &oe):
		return &ending{reason: broker.ReasonTargetError + err.Error(),
			msg: end(endError, fmt.Sprintf("%s refused to open a session: %s.", c.p.Target, oe.Message))}
	}
	c.log.Info("cannot open the shell", zap.Error(err))
	return c.targetEnding(what, c.target, err)
}

// recordingEnding is how a session ends when its recording failed; the
// recording_failed event is sent once, by finish (Close returns err).
func recordingEnding(err error) *ending {
	return &ending{reason: broker.ReasonRecordingFailed + ": " + recording.Cause(err),
		msg: end(endError, "This session must be recorded, and its recording failed ("+recording.Cause(err)+
			"): the session was ended.")}
}

// recordingClosed sends the recording_closed event, with the closed
// recording's hash.
func (c *conn) recordingClosed() {
	e := audit.Event{Event: audit.RecordingClosed, Actor: c.p.User, Source: audit.ActorAnonymous, Session: c.sess.ID(),
		Target: c.p.Target, Protocol: "ssh", Login: c.login, Recording: c.rec.Path(), RecordingSHA256: c.rec.SHA256(), Bytes: c.rec.Size()}
	if c.p.Client.IsValid() {
		e.Source, e.Client = c.p.Client.Addr().String(), c.p.Client.String()
	}
	c.p.Audit.Audit(e)
}

// recordingFailed sends the recording_failed event: class is
// create_failed or write_failed.
func (c *conn) recordingFailed(class string, err error) {
	e := audit.Event{Event: audit.RecordingFailed, Actor: c.p.User, Source: audit.ActorAnonymous,
		Target: c.p.Target, Protocol: "ssh", Login: c.login, Reason: class, Detail: err.Error()}
	if c.p.Client.IsValid() {
		e.Source, e.Client = c.p.Client.Addr().String(), c.p.Client.String()
	}
	if c.sess != nil {
		e.Session = c.sess.ID()
	}
	if c.rec != nil {
		e.Recording = c.rec.Path()
	}
	c.p.Audit.Audit(e)
}

// relay tells the page the shell is open and carries the terminal: one
// goroutine reads the page, one the machine's output (and a small one its
// error output, which a PTY session does not normally use), while this one
// watches the channel's requests, the broker, keepalives and idleness,
// answers the machine's requests to the connection (machineConn), and
// returns how the session ends.
func (c *conn) relay(ctx context.Context, cols, rows int) *ending {
	if c.p.Files != nil {
		c.panel = newPanel(c)
		c.p.Files.add(c.sess.ID(), c.panel)
	}
	if err := c.send(readyMsg{Type: typeReady, Session: c.sess.ID()}); err != nil {
		return &ending{reason: broker.ReasonClientClosed}
	}
	c.log.Info("ssh shell open")
	c.last.Store(time.Now().UnixNano())
	c.failed = make(chan *ending, 1)
	c.outputDone = make(chan struct{})
	c.openStream(cols, rows)
	if c.banner != "" {
		if e := c.output([]byte(strings.ReplaceAll(c.banner, "\n", "\r\n"))); e != nil {
			return e
		}
	}
	c.wg.Go(c.input)
	c.outputs.Add(2)
	c.wg.Go(func() {
		defer c.outputs.Done()
		defer close(c.outputDone)
		c.copyOutput(c.ch, smallBuf)
	})
	c.wg.Go(func() {
		defer c.outputs.Done()
		c.copyOutput(c.ch.Stderr(), stderrBuf)
	})

	var exit *ending
	missed := 0
	nextProbe := time.Now().Add(c.p.KeepAlive)
	timer := time.NewTimer(c.nextWake(time.Now(), nextProbe))
	defer timer.Stop()
	var recFailed <-chan struct{} // nil: never
	if c.rec != nil {
		recFailed = c.rec.Failed()
	}
	globalReqs, newChans := c.client.reqs, c.client.chans // nil once closed
	for {
		select {
		case req, ok := <-globalReqs:
			if !ok {
				globalReqs = nil // the connection ended: c.reqs says so
				continue
			}
			refuseRequest(req)
		case nc, ok := <-newChans:
			if !ok {
				newChans = nil
				continue
			}
			refuseChannel(nc)
		case <-recFailed:
			// A flush failed between events: what the page was shown
			// since is not on disk, and nothing more may be.
			err := c.rec.Err()
			c.log.Error("recording failed", zap.Error(err))
			return recordingEnding(err)
		case req, ok := <-c.reqs:
			if !ok {
				return c.channelClosed(exit)
			}
			if e := exitEnding(req); e != nil {
				exit = e
			}
			if req.WantReply {
				req.Reply(false, nil)
			}
		case e := <-c.failed:
			return e
		case <-c.watchedC:
			if names := c.watchers.Load(); names != nil {
				c.send(watchersMsg{Type: typeWatchers, Watchers: *names})
			}
		case <-c.sess.Context().Done():
			return c.brokerEnding(c.sess.EndReason())
		case <-ctx.Done():
			return shutdownEnding()
		case now := <-timer.C:
			if !now.Before(nextProbe) {
				nextProbe = now.Add(c.p.KeepAlive)
				if c.probing.Load() {
					if missed++; missed >= missedKeepalives {
						c.log.Info("the machine stopped answering keepalives")
						m := end(endNetwork, fmt.Sprintf("%s stopped answering.", c.p.Target))
						m.Reconnect = true
						return &ending{reason: broker.ReasonTargetUnreachable, msg: m}
					}
				} else {
					missed = 0
					c.probe()
				}
				if !c.pinging.Load() {
					c.ping()
				}
			}
			timer.Reset(c.nextWake(now, nextProbe))
		}
	}
}

// exitEnding is the ending an exit-status or exit-signal request
// announces, or nil for other requests.
func exitEnding(req *ssh.Request) *ending {
	switch req.Type {
	case "exit-status":
		var st struct{ Status uint32 }
		if ssh.Unmarshal(req.Payload, &st) != nil {
			return nil
		}
		n := int(st.Status)
		m := end(endExit, fmt.Sprintf("The remote shell exited (status %d).", n))
		m.ExitStatus = &n
		return &ending{reason: fmt.Sprintf("%s (status %d)", broker.ReasonRemoteExit, n), msg: m}
	case "exit-signal":
		var sig struct {
			Signal     string
			CoreDumped bool
			Message    string
			Lang       string
		}
		if ssh.Unmarshal(req.Payload, &sig) != nil {
			return nil
		}
		return &ending{reason: broker.ReasonRemoteExit + " (signal " + sig.Signal + ")",
			msg: end(endExit, fmt.Sprintf("The remote shell was ended by signal %s.", sig.Signal))}
	}
	return nil
}

// channelClosed is how the session ends once the machine closed the
// channel: with the exit it announced, if any, once its last output
// reached the page.
func (c *conn) channelClosed(exit *ending) *ending {
	t := time.NewTimer(drainTimeout)
	defer t.Stop()
	select {
	case <-c.outputDone:
	case <-t.C:
	}
	switch {
	case exit != nil:
		return exit
	case c.sess.Context().Err() != nil:
		return c.brokerEnding(c.sess.EndReason())
	}
	if err := c.target.readErr(); err != nil && err != io.EOF {
		return c.targetEnding("session", c.target, err)
	}
	return &ending{reason: broker.ReasonTargetClosed, msg: end(endExit, fmt.Sprintf("%s closed the session.", c.p.Target))}
}

// probe sends a keepalive to the machine; c.probing is set until it is
// answered, or the connection fails.
func (c *conn) probe() {
	c.probing.Store(true)
	c.wg.Go(func() {
		defer c.probing.Store(false)
		c.client.SendRequest("keepalive@openssh.com", true, nil)
	})
}

// ping pings the page, and ends the session if no pong comes within the
// keepalive period.
func (c *conn) ping() {
	c.pinging.Store(true)
	c.wg.Go(func() {
		defer c.pinging.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), c.p.KeepAlive)
		defer cancel()
		if err := c.ws.Ping(ctx); err != nil {
			reason := broker.ReasonClientClosed
			if ctx.Err() != nil {
				reason = broker.ReasonClientError + "no answer to pings"
			}
			c.fail(&ending{reason: reason})
		}
	})
}

// nextWake checks idleness and says how long the relay may sleep: until
// the next keepalive, or until the terminal has been idle long enough for a
// warning.
func (c *conn) nextWake(now, nextProbe time.Time) time.Duration {
	next := nextProbe
	if due, ok := c.checkIdle(now); ok && due.Before(next) {
		next = due
	}
	return next.Sub(now)
}

// checkIdle warns the page when the terminal has been idle long enough,
// and otherwise returns when it next needs to look.
func (c *conn) checkIdle(now time.Time) (time.Time, bool) {
	timeout := c.p.IdleTimeout()
	if timeout <= 0 {
		return time.Time{}, false
	}
	warnAt := max(timeout-time.Minute, timeout*3/4)
	lastNs := c.last.Load()
	last := time.Unix(0, lastNs)
	idle := now.Sub(last)
	if idle < warnAt {
		return last.Add(warnAt), true
	}
	if !c.warned.Load() {
		left := int(math.Ceil((timeout - idle).Seconds()))
		c.send(idleWarningMsg{Type: typeIdleWarning, Seconds: max(left, 1)})
		c.warned.Store(true)
		// Activity since lastNs found no warning to clear.
		if c.last.Load() != lastNs {
			c.clearWarning()
		}
	}
	return time.Time{}, false
}

// activity notes a terminal byte either way.
func (c *conn) activity() {
	c.last.Store(time.Now().UnixNano())
	if c.warned.Load() {
		c.clearWarning()
	}
}

func (c *conn) clearWarning() {
	if c.warned.CompareAndSwap(true, false) {
		c.sendRaw(activeMsg)
	}
}

// fail reports a relay goroutine's failure; the first one ends the session.
func (c *conn) fail(e *ending) {
	select {
	case c.failed <- e:
	default:
	}
}

// input carries the page's messages: keystrokes to the shell, resizes and
// pastes. It stops when the page goes away, or when the shell's input is
// closed (the channel's end, which the relay learns from the machine).
func (c *conn) input() {
	buf := make([]byte, inputBuf)
	for {
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			c.fail(&ending{reason: broker.ReasonClientClosed})
			return
		}
		if typ == websocket.MessageBinary {
			if !c.keystrokes(r, buf) {
				return
			}
			continue
		}
		var m inMsg
		switch err := c.decode(typ, r, &m); {
		case err == errUnreadable:
			c.log.Debug("unreadable message from the page ignored")
			continue
		case err != nil:
			c.fail(&ending{reason: broker.ReasonClientClosed})
			return
		}
		ok := c.control(&m)
		m.wipe()
		if !ok {
			return
		}
	}
}

// keystrokes copies one binary message to the shell.
func (c *conn) keystrokes(r io.Reader, buf []byte) bool {
	var big *[]byte
	defer func() {
		if big != nil {
			relaybuf.Put(big)
		}
	}()
	for {
		n, err := r.Read(buf)
		if n > 0 {
			if _, err := c.ch.Write(buf[:n]); err != nil {
				return false
			}
			c.sess.AddUp(int64(n))
			c.activity()
			if n == len(buf) && big == nil {
				big = relaybuf.Get()
				buf = *big
			}
		}
		if err == io.EOF {
			return true
		}
		if err != nil {
			c.fail(&ending{reason: broker.ReasonClientClosed})
			return false
		}
	}
}

// control acts on a text message once the shell is open.
func (c *conn) control(m *inMsg) bool {
	switch m.Type {
	case typeResize:
		if !validSize(m.Cols, m.Rows) {
			c.log.Debug("invalid terminal size ignored", zap.Int("cols", m.Cols), zap.Int("rows", m.Rows))
			return true
		}
		if _, err := c.ch.SendRequest("window-change", false,
			ssh.Marshal(windowChange{Columns: uint32(m.Cols), Rows: uint32(m.Rows)})); err != nil {
			return false
		}
		c.publishSize(m.Cols, m.Rows)
		if c.rec != nil {
			if err := c.rec.Resize(m.Cols, m.Rows); err != nil {
				c.log.Error("recording failed", zap.Error(err))
				c.fail(recordingEnding(err))
				return false
			}
		}
	case typePaste:
		if !c.p.Clipboard {
			c.log.Info("paste refused: the clipboard is disabled for this session", zap.Int("bytes", len(m.Data)))
			return true
		}
		if _, err := c.ch.Write(m.Data); err != nil {
			return false
		}
		c.sess.AddUp(int64(len(m.Data)))
		c.activity()
	default:
		c.log.Debug("message ignored", zap.String("type", m.Type))
	}
	return true
}

// copyOutput copies the machine's output from src to the page until src
// ends, waiting on a small buffer of small bytes while it is quiet.
func (c *conn) copyOutput(src io.Reader, small int) {
	r := relaybuf.NewReader(src, small)
	defer r.Close()
	for {
		p, err := r.Read()
		if len(p) > 0 {
			if e := c.output(p); e != nil {
				c.fail(e)
				return
			}
		}
		if err != nil {
			return // the channel ended: the relay hears why from the machine
		}
	}
}

// output records p, then shows it: nothing reaches the page unrecorded,
// and nothing after the end message.
func (c *conn) output(p []byte) *ending {
	if c.ended.Load() {
		return &ending{reason: broker.ReasonClientClosed}
	}
	if c.rec != nil {
		if err := c.rec.Output(p); err != nil {
			c.log.Error("recording failed", zap.Error(err))
			return recordingEnding(err)
		}
	}
	if c.stream != nil {
		c.stream.Publish(watch.Output, p)
	}
	if err := c.ws.Write(context.Background(), websocket.MessageBinary, p); err != nil {
		return &ending{reason: broker.ReasonClientClosed}
	}
	c.sess.AddDown(int64(len(p)))
	c.activity()
	return nil
}

// openStream lets auditors watch the terminal, when Params.Watch is set:
// its output and sizes go to a stream of the hub, and the page is told of
// each change of watchers by the relay's loop (the hub's callback must not
// block, so it only leaves the names for the loop).
func (c *conn) openStream(cols, rows int) {
	c.watchedC = make(chan struct{}, 1)
	if c.p.Watch == nil {
		return
	}
	c.stream = c.p.Watch.Open(watch.Info{Session: c.sess.ID(), User: c.p.User, Target: c.p.Target, Protocol: "ssh",
		Start: time.Now(), Recorded: c.p.Record}, watch.SSHLimits, func(names []string) {
		c.watchers.Store(&names)
		select {
		case c.watchedC <- struct{}{}:
		default:
		}
		if c.p.Watched != nil {
			c.p.Watched(c.sess, names)
		}
	})
	c.publishSize(cols, rows)
}

// publishSize tells the watchers the terminal's size.
func (c *conn) publishSize(cols, rows int) {
	if c.stream != nil {
		c.stream.Publish(watch.Size, fmt.Appendf(nil, `{"cols":%d,"rows":%d}`, cols, rows))
	}
}
