package adminapi

import (
	"net/url"
	"strings"
	"testing"
)

func TestParseAuditQuery(t *testing.T) {
	q, local, err := parseAuditQuery(url.Values{"since": {"2026-12-07T04:00:00Z"}, "until": {"2026-12-07T05:00:00.5+01:00"},
		"instance": {"a, b,"}, "event": {"session_start"}, "user": {"alice"}, "limit": {"7"}, "local": {"1"}})
	if err != nil || !local || strings.Join(q.Instances, "|") != "a|b" || strings.Join(q.Events, "|") != "session_start" ||
		q.User != "alice" || q.Limit != 7 || q.Until.Sub(q.Since) != 500_000_000 {
		t.Errorf("%+v, local %v, %v", q, local, err)
	}
	for _, tc := range []struct {
		v    url.Values
		want string
	}{
		{url.Values{"until": {"2026-12-07T05:00:00Z"}}, "since is required"},
		{url.Values{"since": {"2026-12-07T05:00:00Z"}}, "until is required"},
		{url.Values{"since": {"yesterday"}, "until": {"2026-12-07T05:00:00Z"}}, `since "yesterday" is not an RFC 3339 time`},
		{url.Values{"since": {"2026-12-07T05:00:00Z"}, "until": {"2026-12-07T04:00:00Z"}}, "the time range ends (2026-12-07T04:00:00Z) before it starts"},
		{url.Values{"since": {"2026-12-07T04:00:00Z"}, "until": {"2026-12-07T05:00:00Z"}, "limit": {"0"}}, `limit "0" is not a number from 1 to 10000`},
		{url.Values{"since": {"2026-12-07T04:00:00Z"}, "until": {"2026-12-07T05:00:00Z"}, "limit": {"20000"}}, "limit 20000 is not from 1 to 10000"},
	} {
		if _, _, err := parseAuditQuery(tc.v); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.v, err, tc.want)
		}
	}
}
