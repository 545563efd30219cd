package adminclient

import (
	"context"
	"net/http"
	"net/url"

	"github.com/bastiond/bastiond/api/admin"
)

// Users lists the accounts.
func (c *Client) Users(ctx context.Context) ([]admin.UserInfo, error) {
	var v []admin.UserInfo
	return v, c.call(ctx, http.MethodGet, "/v1/users", nil, &v)
}

// UserChange posts a change to an account: action is "" (add), password,
// enable, unlock, grant, revoke, delete, totp/confirm or totp/reset.
func (c *Client) UserChange(ctx context.Context, name, action string, req admin.UserRequest) error {
	path := "/v1/users"
	if action != "" {
		path += "/" + url.PathEscape(name) + "/" + action
	} else {
		req.Name = name
	}
	return c.call(ctx, http.MethodPost, path, req, &struct{}{})
}

// DisableUser disables the account name and returns what that ended.
func (c *Client) DisableUser(ctx context.Context, name string) (admin.Ended, error) {
	var v admin.Ended
	return v, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/disable", admin.UserRequest{}, &v)
}

// BeginTOTP starts a TOTP enrolment for name.
func (c *Client) BeginTOTP(ctx context.Context, name string) (admin.TOTPEnrolment, error) {
	var v admin.TOTPEnrolment
	return v, c.call(ctx, http.MethodPost, "/v1/users/"+url.PathEscape(name)+"/totp", admin.UserRequest{}, &v)
}

// Tokens lists API tokens, of user or of everyone for "".
func (c *Client) Tokens(ctx context.Context, user string) ([]admin.TokenInfo, error) {
	var v []admin.TokenInfo
	return v, c.call(ctx, http.MethodGet, "/v1/tokens?user="+url.QueryEscape(user), nil, &v)
}

// RevokeTokens revokes the token id, or every token of user.
func (c *Client) RevokeTokens(ctx context.Context, id, user string) (int, error) {
	var v map[string]int
	err := c.call(ctx, http.MethodPost, "/v1/tokens/revoke", map[string]string{"id": id, "user": user}, &v)
	return v["revoked"], err
}
