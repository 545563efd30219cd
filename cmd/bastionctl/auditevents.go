package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/api/adminclient"
)

func newAuditEvents(socket *string) *cobra.Command {
	var (
		since, until    string
		instances, evts []string
		user            string
		limit           int
		asJSON, local   bool
	)
	cmd := &cobra.Command{
		Use:   "events [--since WHEN] [--until WHEN] [--instance NAME] [--user NAME] [--event TYPE] [--limit N] [--json]",
		Short: "Print the audit events of a time range: in a cluster, every instance's",
		Long: "Print the audit events from --since (included) to --until (excluded), oldest first. In a cluster\n" +
			"(store.backend: postgres) they are read from the database, where every instance copies its lines as it\n" +
			"writes them (a few seconds behind the files); on a single host, or with --local, from this instance's\n" +
			"audit file and its rotated predecessors (logrotate's .gz included).\n\n" +
			"WHEN is an RFC 3339 time (2026-12-07T05:00:00Z), a date (2026-12-07, midnight UTC), 'now', or a\n" +
			"duration ago: 90m, 1h, 7d. Default: the last hour.\n\n" +
			"--user keeps the events whose user or actor is NAME (what was done to the account and what it did);\n" +
			"--instance and --event take a name or a comma-separated list, or may be repeated. --json prints the\n" +
			"lines exactly as written (JSON lines, docs/audit.md), each verifiable against its file by its SHA-256.\n" +
			"At most --limit events are printed (1000 by default, at most 10000); when there are more, bastionctl\n" +
			"says from when to ask again.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := auditQuery(since, until, instances, evts, user, limit, time.Now())
			if err != nil {
				return err
			}
			q.Local = local
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			ev, err := adminclient.NewClient(*socket).AuditEvents(ctx, q)
			if err != nil {
				return fmt.Errorf("audit events: %s", printable(err.Error()))
			}
			if asJSON {
				err = printAuditJSON(cmd.OutOrStdout(), ev)
			} else {
				err = printAuditTable(cmd.OutOrStdout(), ev)
			}
			if err != nil {
				return err
			}
			printAuditFooter(cmd.ErrOrStderr(), ev)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&since, "since", "1h", "the range's start: RFC 3339, a date, or a duration ago (1h, 7d)")
	f.StringVar(&until, "until", "now", "the range's end (excluded), as --since")
	f.StringSliceVar(&instances, "instance", nil, "only these instances' events")
	f.StringSliceVar(&evts, "event", nil, "only these event types (session_start, signin_failed...)")
	f.StringVar(&user, "user", "", "only the events whose user or actor is this")
	f.IntVar(&limit, "limit", 0, "the most events printed (default 1000, at most 10000)")
	f.BoolVar(&asJSON, "json", false, "print the lines as written (JSON lines)")
	f.BoolVar(&local, "local", false, "read this instance's own files, even in a cluster")
	return cmd
}

// auditQuery checks the flags of `audit events` and makes its query.
func auditQuery(since, until string, instances, events []string, user string, limit int, now time.Time) (admin.AuditQuery, error) {
	var q admin.AuditQuery
	var err error
	if q.Since, err = parseWhen(since, now); err != nil {
		return q, fmt.Errorf("--since: %w", err)
	}
	if q.Until, err = parseWhen(until, now); err != nil {
		return q, fmt.Errorf("--until: %w", err)
	}
	if !q.Until.After(q.Since) {
		return q, fmt.Errorf("--until %s is not after --since %s: the range is empty",
			q.Until.UTC().Format(time.RFC3339), q.Since.UTC().Format(time.RFC3339))
	}
	if limit < 0 || limit > 10000 {
		return q, fmt.Errorf("--limit %d is not from 1 to 10000", limit)
	}
	trim := func(list []string) []string {
		var out []string
		for _, v := range list {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		return out
	}
	instances, events = trim(instances), trim(events)
	q.Instances, q.Events, q.User, q.Limit = instances, events, strings.TrimSpace(user), limit
	return q, nil
}

// parseWhen reads a WHEN of `audit events`: an RFC 3339 time, a date
// (midnight UTC), "now", or a duration before now (a Go duration, or a
// whole number of days: 7d).
func parseWhen(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, fmt.Errorf("empty: give an RFC 3339 time, a date or a duration ago (1h, 7d)")
	case s == "now":
		return now, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 || days > 100*366 {
			return time.Time{}, fmt.Errorf("%q is not a number of days", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time (2026-12-07T05:00:00Z), a date (2026-12-07) or a duration ago (90m, 1h, 7d)", s)
		}
	}
	if d < 0 {
		return time.Time{}, fmt.Errorf("%q: a duration ago is not negative", s)
	}
	return now.Add(-d), nil
}

// auditLine is what the table shows of a line.
type auditLine struct {
	Time     time.Time `json:"time"`
	Instance string    `json:"instance"`
	Event    string    `json:"event"`
	Actor    string    `json:"actor"`
	Source   string    `json:"source"`
	User     string    `json:"user"`
	Target   string    `json:"target"`
	Protocol string    `json:"protocol"`
	Session  string    `json:"session"`
	Reason   string    `json:"reason"`
	Detail   string    `json:"detail"`
}

// cell is s for a column of the table: escaped, "-" when empty.
func cell(s string) string { return orDash(printable(s)) }

func printAuditTable(out io.Writer, ev admin.AuditEvents) error {
	if len(ev.Lines) == 0 {
		_, err := fmt.Fprintln(out, "no audit events in this range")
		return err
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TIME\tINSTANCE\tEVENT\tACTOR\tSOURCE\tUSER\tTARGET\tSESSION\tREASON")
	for _, raw := range ev.Lines {
		var l auditLine
		if err := json.Unmarshal([]byte(raw), &l); err != nil {
			fmt.Fprintf(w, "?\t-\t(a line that does not decode: %s)\t\t\t\t\t\t\n", printable(err.Error()))
			continue
		}
		target := l.Target
		if target != "" && l.Protocol != "" {
			target += " (" + l.Protocol + ")"
		}
		reason := l.Reason
		if l.Detail != "" {
			if reason != "" {
				reason += ": "
			}
			reason += l.Detail
		}
		if r := []rune(reason); len(r) > 80 {
			reason = string(r[:77]) + "..."
		}
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Time.UTC().Format("2006-01-02T15:04:05.000Z"), cell(l.Instance),
			cell(l.Event), cell(l.Actor), cell(l.Source), cell(l.User), cell(target), cell(l.Session), cell(reason))
	}
	return w.Flush()
}

// printAuditJSON prints the lines as written, one a line. To a terminal,
// the characters it would act on (DEL, C1 controls, bidi controls, which
// JSON does not escape) are written as JSON escapes: the same JSON, but
// not the bytes the line's SHA-256 covers; to a file or a pipe, the lines
// are exact.
func printAuditJSON(out io.Writer, ev admin.AuditEvents) error {
	f, ok := out.(*os.File)
	tty := ok && term.IsTerminal(int(f.Fd()))
	for _, l := range ev.Lines {
		if tty {
			l = jsonEscapeControls(l)
		}
		if _, err := io.WriteString(out, l+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// jsonEscapeControls writes every character of a JSON text that a
// terminal would act on as a \u escape (they can only be inside strings).
func jsonEscapeControls(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return needsEscape(r, false) }) < 0 {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if needsEscape(r, false) {
			fmt.Fprintf(&b, `\u%04x`, r)
		} else {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// printAuditFooter tells where the lines came from, and when there are
// more, how to get them.
func printAuditFooter(out io.Writer, ev admin.AuditEvents) {
	from := "the cluster's database"
	if ev.From == admin.AuditFromFiles {
		from = "this instance's audit files"
	}
	fmt.Fprintf(out, "%d events, from %s\n", len(ev.Lines), from)
	if ev.More {
		fmt.Fprintf(out, "more events follow: run again with --since %s (or narrow the range, or raise --limit)\n",
			ev.Next.UTC().Format(time.RFC3339Nano))
	}
}
