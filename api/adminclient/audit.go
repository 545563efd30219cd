package adminclient

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/bastiond/bastiond/api/admin"
)

// AuditEvents reads the audit lines q selects: every instance's in a
// cluster, this one's on a single host.
func (c *Client) AuditEvents(ctx context.Context, q admin.AuditQuery) (admin.AuditEvents, error) {
	v := url.Values{}
	v.Set("since", q.Since.UTC().Format(time.RFC3339Nano))
	v.Set("until", q.Until.UTC().Format(time.RFC3339Nano))
	if len(q.Instances) > 0 {
		v.Set("instance", strings.Join(q.Instances, ","))
	}
	if len(q.Events) > 0 {
		v.Set("event", strings.Join(q.Events, ","))
	}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.Limit != 0 {
		v.Set("limit", strconv.Itoa(q.Limit))
	}
	if q.Local {
		v.Set("local", "1")
	}
	var ev admin.AuditEvents
	return ev, c.do(ctx, http.MethodGet, "/v1/audit/events?"+v.Encode(), &ev)
}
