package audit

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Summary is what a query looks at in a line: its hash and the fields
// that select it.
type Summary struct {
	Hash     Hash
	Time     time.Time
	Event    string
	Actor    string
	User     string
	Instance string // "" on lines written before instances were named
}

// Summarize decodes the fields of line that a Query selects on.
func Summarize(line []byte) (Summary, error) {
	var l struct {
		Time     time.Time `json:"time"`
		Event    string    `json:"event"`
		Actor    string    `json:"actor"`
		User     string    `json:"user"`
		Instance string    `json:"instance"`
	}
	if err := json.Unmarshal(line, &l); err != nil {
		return Summary{}, fmt.Errorf("audit: not an audit line: %w", err)
	}
	if l.Time.IsZero() || l.Event == "" {
		return Summary{}, errors.New("audit: not an audit line: no time or no event")
	}
	return Summary{Hash: HashLine(line), Time: l.Time, Event: l.Event, Actor: l.Actor, User: l.User, Instance: l.Instance}, nil
}

// Query selects lines of the trail: those from Since (included) to Until
// (excluded) that match every filter set.
type Query struct {
	Since, Until time.Time
	// Instances, when set, keeps the lines of these instances (a line
	// without an instance is its writer's).
	Instances []string
	// Events, when set, keeps these event types.
	Events []string
	// User, when set, keeps the lines whose user or actor it is: what
	// was done to an account and what it did.
	User string
	// Limit is the most lines returned; past it, the answer says there is
	// more.
	Limit int
}

// Limits of a Query.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
	// MaxAnswerBytes bounds the lines of one answer, whatever their count:
	// past it the answer stops early and says there is more.
	MaxAnswerBytes = 8 << 20
)

// Check refuses a query that cannot be answered, and fills Limit's
// default.
func (q *Query) Check() error {
	switch {
	case q.Since.IsZero() || q.Until.IsZero():
		return errors.New("audit: a query needs a time range: since and until")
	case !q.Until.After(q.Since):
		return fmt.Errorf("audit: the time range ends (%s) before it starts (%s)",
			q.Until.UTC().Format(time.RFC3339), q.Since.UTC().Format(time.RFC3339))
	case q.Limit < 0 || q.Limit > MaxLimit:
		return fmt.Errorf("audit: limit %d is not from 1 to %d", q.Limit, MaxLimit)
	}
	if q.Limit == 0 {
		q.Limit = DefaultLimit
	}
	return nil
}

// Matches reports whether a line summarised as s, written by the instance
// writer, is selected.
func (q *Query) Matches(s Summary, writer string) bool {
	inst := s.Instance
	if inst == "" {
		inst = writer
	}
	return !s.Time.Before(q.Since) && s.Time.Before(q.Until) &&
		(len(q.Instances) == 0 || slices.Contains(q.Instances, inst)) &&
		(len(q.Events) == 0 || slices.Contains(q.Events, s.Event)) &&
		(q.User == "" || s.User == q.User || s.Actor == q.User)
}

// Found is the answer to a Query.
type Found struct {
	// Lines are the lines selected, as written, oldest first (in the
	// order of the files for a file's lines).
	Lines [][]byte
	// More says that lines past the limit were left out; Next is the time
	// of the first of them, from which to ask again.
	More bool
	Next time.Time
}

// Add appends line if there is room for it, and otherwise records that
// there is more, from t. It reports whether there was room.
func (f *Found) Add(line []byte, t time.Time, limit int, size *int) bool {
	if len(f.Lines) >= limit || (len(f.Lines) > 0 && *size+len(line) > MaxAnswerBytes) {
		f.More, f.Next = true, t
		return false
	}
	*size += len(line)
	f.Lines = append(f.Lines, line)
	return true
}

// Search reads the files of one instance's trail (writer), oldest first,
// and returns the lines q selects, up to its limit. Lines that do not
// decode are skipped: `bastionctl audit verify` is the check of the trail.
func Search(q Query, writer string, files ...File) (Found, error) {
	var f Found
	if err := q.Check(); err != nil {
		return f, err
	}
	size := 0
	for _, file := range files {
		sc := bufio.NewScanner(file.R)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			s, err := Summarize(sc.Bytes())
			if err != nil || !q.Matches(s, writer) {
				continue
			}
			if !f.Add(slices.Clone(sc.Bytes()), s.Time, q.Limit, &size) {
				return f, nil
			}
		}
		if err := sc.Err(); err != nil {
			return f, fmt.Errorf("audit: read %s: %w", file.Name, err)
		}
	}
	return f, nil
}
