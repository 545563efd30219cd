package auditship

import (
	"context"
	"errors"
	"os"
	"time"

	"github.com/coreos/go-systemd/v22/journal"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// JournalConfig describes the journald destination.
type JournalConfig struct {
	// Identifier is SYSLOG_IDENTIFIER. Default bastiond.
	Identifier string
	// Queue bounds the lines waiting. Default 100000.
	Queue int
	// Logger defaults to zap.NewNop(); Audit, where failures are told,
	// to audit.Discard.
	Logger *zap.Logger
	Audit  audit.Sink
	// Send sends one entry; default journal.Send. Tests replace it.
	Send func(message string, priority journal.Priority, vars map[string]string) error
}

// Journal ships lines to journald, one entry per line with structured
// fields (see journalFields), through journald's native socket.
type Journal struct {
	cfg JournalConfig
	q   *queue
	c   counters
	out *outage
}

// JournalName is the journald destination's name in metrics and events.
const JournalName = "journald"

// UnderJournald reports whether journald is there to take entries: the
// process's output goes to the journal ($JOURNAL_STREAM), or journald's
// socket exists.
func UnderJournald() bool {
	if os.Getenv("JOURNAL_STREAM") != "" {
		return true
	}
	_, err := os.Stat("/run/systemd/journal/socket")
	return err == nil
}

// NewJournal returns a Journal that ships once Run runs.
func NewJournal(cfg JournalConfig) *Journal {
	c := cfg
	c.Identifier = cmp(c.Identifier, "bastiond")
	c.Queue = cmp(c.Queue, 100000)
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Audit == nil {
		c.Audit = audit.Discard
	}
	if c.Send == nil {
		c.Send = journal.Send
	}
	j := &Journal{cfg: c, q: newQueue(c.Queue)}
	j.out = &outage{name: JournalName, log: c.Logger, audit: c.Audit, c: &j.c}
	return j
}

// Name is JournalName.
func (j *Journal) Name() string { return JournalName }

// Ship queues lines; it never blocks.
func (j *Journal) Ship(lines [][]byte) { j.q.push(lines) }

func (j *Journal) counters() *counters { return &j.c }
func (j *Journal) queue() *queue       { return j.q }

// entry is what is sent to journald for line.
func (j *Journal) entry(line []byte) (string, journal.Priority, map[string]string, error) {
	m := fieldsOf(line)
	if m == nil {
		return "", 0, nil, errors.New("not a JSON object")
	}
	return summary(m), journal.Priority(severity(str(m, "event"))), journalFields(line, m, j.cfg.Identifier), nil
}

// Run sends until ctx ends; a line journald refuses is tried again, with
// backoff up to 30s. It returns nil when ctx ends.
func (j *Journal) Run(ctx context.Context) error {
	wait := 250 * time.Millisecond
	for {
		last, lines := j.q.take(64, batchBytes)
		if len(lines) == 0 {
			j.out.caughtUp()
			select {
			case <-j.q.wake:
				continue
			case <-ctx.Done():
				return nil
			}
		}
		var err error
		sent := 0
		for _, l := range lines {
			msg, prio, vars, perr := j.entry(l)
			if perr != nil {
				j.cfg.Logger.Error("audit line not shipped to journald", zap.Error(perr))
			} else if err = j.cfg.Send(msg, prio, vars); err != nil {
				break
			}
			sent++
		}
		if sent > 0 {
			j.q.wrote(last-uint64(len(lines)-sent), 0, time.Now())
			j.q.release(func(int64, time.Time) bool { return true })
			j.out.sent(sent)
		}
		if err == nil {
			wait = 250 * time.Millisecond
			continue
		}
		j.out.failed(err)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return nil
		}
		wait = min(2*wait, 30*time.Second)
	}
}
