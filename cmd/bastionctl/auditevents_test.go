package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "now", want: now},
		{in: "1h", want: now.Add(-time.Hour)},
		{in: " 90m ", want: now.Add(-90 * time.Minute)},
		{in: "7d", want: now.Add(-7 * 24 * time.Hour)},
		{in: "0d", want: now},
		{in: "2026-12-07T05:00:00Z", want: time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)},
		{in: "2026-12-07T07:00:00.5+02:00", want: time.Date(2026, 12, 7, 5, 0, 0, 5e8, time.UTC)},
		{in: "2026-12-01", want: time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{in: "", err: "empty"},
		{in: "yesterday", err: `"yesterday" is not an RFC 3339 time`},
		{in: "-1h", err: "not negative"},
		{in: "1.5d", err: "not a number of days"},
		{in: "2026-13-01", err: "is not an RFC 3339 time"},
		{in: "1h\x1b[2J", err: `1h\x1b[2J`},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := parseWhen(tc.in, now)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("%v, want an error with %q", err, tc.err)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("%v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestAuditQueryFlags(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	q, err := auditQuery("2h", "now", []string{" a ", "", "b"}, []string{"session_start"}, " alice ", 50, now)
	if err != nil {
		t.Fatal(err)
	}
	want := admin.AuditQuery{Since: now.Add(-2 * time.Hour), Until: now, Instances: []string{"a", "b"}, Events: []string{"session_start"},
		User: "alice", Limit: 50}
	if q.Since != want.Since || q.Until != want.Until || strings.Join(q.Instances, ",") != "a,b" ||
		strings.Join(q.Events, ",") != "session_start" || q.User != "alice" || q.Limit != 50 {
		t.Errorf("query %+v, want %+v", q, want)
	}
	for _, tc := range []struct {
		since, until string
		limit        int
		err          string
	}{
		{"1h", "2h", 0, "--until 2026-12-07T04:00:00Z is not after --since 2026-12-07T05:00:00Z: the range is empty"},
		{"now", "now", 0, "the range is empty"},
		{"1h", "soon", 0, `--until: "soon" is not`},
		{"later", "now", 0, `--since: "later" is not`},
		{"1h", "now", 10001, "--limit 10001 is not from 1 to 10000"},
		{"1h", "now", -1, "--limit -1"},
	} {
		if _, err := auditQuery(tc.since, tc.until, nil, nil, "", tc.limit, now); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("since %q until %q limit %d: %v, want %q", tc.since, tc.until, tc.limit, err, tc.err)
		}
	}
}

func TestPrintAuditTable(t *testing.T) {
	ev := admin.AuditEvents{From: admin.AuditFromDatabase, Lines: []string{
		`{"v":2,"time":"2026-12-07T05:00:01.25Z","event":"session_start","actor":"alice","source":"192.0.2.10","instance":"a","session":"s1","user":"alice","target":"vm1","protocol":"ssh","prev":""}`,
		`{"v":2,"time":"2026-12-07T05:00:02Z","event":"signin_failed","actor":"-","source":"2001:db8::7","instance":"b","user":"mal\u001b[2Jlory\u202e","reason":"unknown_user","prev":""}`,
		`{"v":2,"time":"2026-12-07T05:00:03Z","event":"session_end","actor":"alice","source":"192.0.2.10","instance":"a","session":"s1","reason":"abandoned","detail":"` + strings.Repeat("x", 100) + `","prev":""}`,
	}, More: true, Next: time.Date(2026, 12, 7, 5, 0, 4, 0, time.UTC)}
	var out, foot bytes.Buffer
	if err := printAuditTable(&out, ev); err != nil {
		t.Fatal(err)
	}
	printAuditFooter(&foot, ev)
	want := []string{
		"TIME                      INSTANCE  EVENT          ACTOR  SOURCE       USER                  TARGET     SESSION  REASON",
		"2026-12-07T05:00:01.250Z  a         session_start  alice  192.0.2.10   alice                 vm1 (ssh)  s1       -",
		`2026-12-07T05:00:02.000Z  b         signin_failed  -      2001:db8::7  mal\x1b[2Jlory\u202e  -          -        unknown_user`,
		"2026-12-07T05:00:03.000Z  a         session_end    alice  192.0.2.10   -                     -          s1       abandoned: " + strings.Repeat("x", 66) + "...",
	}
	if got := strings.TrimRight(out.String(), "\n"); got != strings.Join(want, "\n") {
		t.Errorf("table:\n%s\nwant\n%s", got, strings.Join(want, "\n"))
	}
	if got, want := foot.String(), "3 events, from the cluster's database\nmore events follow: run again with --since 2026-12-07T05:00:04Z (or narrow the range, or raise --limit)\n"; got != want {
		t.Errorf("footer %q, want %q", got, want)
	}
	out.Reset()
	printAuditTable(&out, admin.AuditEvents{From: admin.AuditFromFiles})
	if out.String() != "no audit events in this range\n" {
		t.Errorf("empty: %q", out.String())
	}
}

func TestPrintAuditJSON(t *testing.T) {
	line := "{\"v\":2,\"user\":\"mal\u202elory\u0085\x7f\"}"
	var out bytes.Buffer
	if err := printAuditJSON(&out, admin.AuditEvents{Lines: []string{line, "{}"}}); err != nil {
		t.Fatal(err)
	}
	if out.String() != line+"\n{}\n" {
		t.Errorf("to a file, the lines as written: %q", out.String())
	}
	if got, want := jsonEscapeControls(line), `{"v":2,"user":"mal\u202elory\u0085\u007f"}`; got != want {
		t.Errorf("to a terminal: %s, want %s", got, want)
	}
}

// FuzzParseWhen: whatever is typed, parseWhen does not panic, and a time
// it accepts, written in RFC 3339, reads back as the same time.
func FuzzParseWhen(f *testing.F) {
	for _, s := range []string{"now", "1h", "90m", "7d", "0d", "2026-12-07", "2026-12-07T05:00:00Z", "2026-12-07T07:00:00.5+02:00",
		"-1h", "1.5d", "99999999d", "", "1h\x1b", "\u202e1h"} {
		f.Add(s)
	}
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseWhen(s, now)
		if err != nil {
			return
		}
		back, err := parseWhen(got.Format(time.RFC3339Nano), now)
		if err != nil || !back.Equal(got) {
			t.Errorf("%q -> %v -> %v, %v", s, got, back, err)
		}
	})
}
