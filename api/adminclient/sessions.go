package adminclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bastiond/bastiond/api/admin"
)

// Sessions lists the live sessions.
func (c *Client) Sessions(ctx context.Context) ([]admin.Session, error) {
	var v []admin.Session
	return v, c.do(ctx, http.MethodGet, "/v1/sessions", &v)
}

// Kill ends a live session; reason is recorded.
func (c *Client) Kill(ctx context.Context, id, reason string) error {
	return c.call(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/kill", admin.KillRequest{Reason: reason}, &struct{}{})
}
