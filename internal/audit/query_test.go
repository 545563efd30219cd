package audit

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestQueryMatches(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	q := Query{Since: t0, Until: t0.Add(time.Hour)}
	s := Summary{Time: t0, Event: SessionStart, Actor: "alice", User: "bob"}
	for _, tc := range []struct {
		name string
		edit func(q *Query, s *Summary)
		want bool
	}{
		{"since is included", func(*Query, *Summary) {}, true},
		{"until is excluded", func(_ *Query, s *Summary) { s.Time = t0.Add(time.Hour) }, false},
		{"before", func(_ *Query, s *Summary) { s.Time = t0.Add(-time.Nanosecond) }, false},
		{"event", func(q *Query, _ *Summary) { q.Events = []string{SessionEnd, SessionStart} }, true},
		{"other event", func(q *Query, _ *Summary) { q.Events = []string{SessionEnd} }, false},
		{"user", func(q *Query, _ *Summary) { q.User = "bob" }, true},
		{"actor", func(q *Query, _ *Summary) { q.User = "alice" }, true},
		{"neither", func(q *Query, _ *Summary) { q.User = "carol" }, false},
		{"no instance: the writer's", func(q *Query, _ *Summary) { q.Instances = []string{"w"} }, true},
		{"its instance", func(q *Query, s *Summary) { q.Instances = []string{"a"}; s.Instance = "a" }, true},
		{"not the writer's when named", func(q *Query, s *Summary) { q.Instances = []string{"w"}; s.Instance = "a" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, s := q, s
			tc.edit(&q, &s)
			if got := q.Matches(s, "w"); got != tc.want {
				t.Errorf("Matches = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQueryCheck(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	q := Query{Since: t0, Until: t0.Add(time.Second)}
	if err := q.Check(); err != nil || q.Limit != DefaultLimit {
		t.Errorf("%v, limit %d", err, q.Limit)
	}
	for _, bad := range []Query{{Until: t0}, {Since: t0}, {Since: t0, Until: t0}, {Since: t0, Until: t0.Add(time.Second), Limit: MaxLimit + 1}} {
		if err := bad.Check(); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// TestSearchBounds: the limit and the answer's size stop a search, which
// then says from when there is more; lines that are not audit lines are
// skipped.
func TestSearchBounds(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	var b bytes.Buffer
	var prev Hash
	big := strings.Repeat("x", 200<<10)
	for i := range 60 {
		l := Stamp(Marshal(Event{Time: t0.Add(time.Duration(i) * time.Second), Event: SigninFailed, Detail: big}), prev)
		prev = HashLine(l)
		b.Write(l)
		b.WriteString("\n{not a line}\n")
	}
	q := Query{Since: t0, Until: t0.Add(time.Hour), Limit: 50}
	f, err := Search(q, "w", File{Name: "a", R: bytes.NewReader(b.Bytes())})
	if err != nil {
		t.Fatal(err)
	}
	// 8 MiB holds 40 lines of 200 KiB and a bit.
	if len(f.Lines) != 40 || !f.More || !f.Next.Equal(t0.Add(40*time.Second)) {
		t.Errorf("%d lines, more %v from %v; want 40, more from 40s", len(f.Lines), f.More, f.Next)
	}
	q.Limit = 3
	f, _ = Search(q, "w", File{Name: "a", R: bytes.NewReader(b.Bytes())})
	if len(f.Lines) != 3 || !f.More || !f.Next.Equal(t0.Add(3*time.Second)) {
		t.Errorf("limit 3: %d lines, more %v from %v", len(f.Lines), f.More, f.Next)
	}
}
