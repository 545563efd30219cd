package adminclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bastiond/bastiond/api/admin"
)

// HostKeys lists the keys of target, or of every target for "".
func (c *Client) HostKeys(ctx context.Context, target string) ([]admin.HostKey, error) {
	var v []admin.HostKey
	return v, c.call(ctx, http.MethodGet, "/v1/hostkeys?target="+url.QueryEscape(target), nil, &v)
}

// ScanHostKeys has the daemon collect target's host keys, and pin them
// with pin (see ScanRequest).
func (c *Client) ScanHostKeys(ctx context.Context, target string, req admin.ScanRequest) ([]admin.HostKey, error) {
	var v []admin.HostKey
	return v, c.call(ctx, http.MethodPost, "/v1/hostkeys/"+url.PathEscape(target)+"/scan", req, &v)
}

// PinHostKeys pins keys of target (see PinRequest) and returns them.
func (c *Client) PinHostKeys(ctx context.Context, target string, req admin.PinRequest) ([]admin.HostKey, error) {
	var v []admin.HostKey
	return v, c.call(ctx, http.MethodPost, "/v1/hostkeys/"+url.PathEscape(target)+"/pin", req, &v)
}

// ForgetHostKeys removes the key of target with fingerprint, or all its
// keys for "", and returns what it removed.
func (c *Client) ForgetHostKeys(ctx context.Context, target, fingerprint string) ([]admin.HostKey, error) {
	var v []admin.HostKey
	return v, c.call(ctx, http.MethodPost, "/v1/hostkeys/"+url.PathEscape(target)+"/forget", admin.ForgetRequest{Fingerprint: fingerprint}, &v)
}

// CA fetches the bastion's SSH CA public key.
func (c *Client) CA(ctx context.Context) (admin.CAInfo, error) {
	var v admin.CAInfo
	return v, c.do(ctx, http.MethodGet, "/v1/ca", &v)
}
