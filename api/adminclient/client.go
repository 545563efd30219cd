package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"syscall"
	"time"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/api/admin"
)

// Client talks to a daemon's admin socket.
type Client struct {
	path string
	http *http.Client
}

// NewClient returns a Client for the socket at path.
func NewClient(path string) *Client {
	return &Client{
		path: path,
		http: &http.Client{
			Timeout: 30 * time.Second,
			Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, "unix", path)
				},
			},
		},
	}
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (admin.Status, error) {
	var st admin.Status
	err := c.do(ctx, http.MethodGet, "/v1/status", &st)
	return st, err
}

func (c *Client) do(ctx context.Context, method, path string, out any) error {
	return c.call(ctx, method, path, nil, out)
}

// call sends in (if not nil) as JSON and decodes the answer into out.
func (c *Client) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		data, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bastiond"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return c.callError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return err
	}
	return json.Unmarshal(answer, out)
}

// callError says why a request did not reach the daemon.
func (c *Client) callError(err error) error {
	switch {
	case errors.Is(err, os.ErrNotExist), errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("bastiond is not running (nothing answers on %s)", c.path)
	case errors.Is(err, os.ErrPermission):
		return fmt.Errorf("cannot open %s: permission denied", c.path)
	}
	return err
}

// answerError is the error an answer other than 200 carries.
func answerError(resp *http.Response) error {
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	var e api.Error
	if json.Unmarshal(answer, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("admin API: %s", resp.Status)
}

// Reload asks the daemon to reload its configuration file. A refused
// configuration is not an error: the answer says why (OK false).
func (c *Client) Reload(ctx context.Context) (admin.ReloadResult, error) {
	var res admin.ReloadResult
	return res, c.call(ctx, http.MethodPost, "/v1/reload", struct{}{}, &res)
}

// Upgrade asks the daemon to replace itself with the binary installed at
// its path.
func (c *Client) Upgrade(ctx context.Context) (admin.UpgradeResult, error) {
	var res admin.UpgradeResult
	return res, c.call(ctx, http.MethodPost, "/v1/upgrade", struct{}{}, &res)
}
