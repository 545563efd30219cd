package adminclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bastiond/bastiond/api/admin"
)

// CreateLink creates a shareable link; its URL is in the answer only.
func (c *Client) CreateLink(ctx context.Context, req admin.LinkRequest) (admin.LinkCreated, error) {
	var v admin.LinkCreated
	return v, c.call(ctx, http.MethodPost, "/v1/links", req, &v)
}

// Links lists the shareable links.
func (c *Client) Links(ctx context.Context) ([]admin.Link, error) {
	var v []admin.Link
	return v, c.do(ctx, http.MethodGet, "/v1/links", &v)
}

// RevokeLink revokes a shareable link by its ID.
func (c *Client) RevokeLink(ctx context.Context, id string) (admin.Link, error) {
	var v admin.Link
	return v, c.call(ctx, http.MethodPost, "/v1/links/"+url.PathEscape(id)+"/revoke", struct{}{}, &v)
}
