package adminclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/bastiond/bastiond/api/admin"
)

// Recordings lists the recordings, oldest first.
func (c *Client) Recordings(ctx context.Context) ([]admin.RecordingInfo, error) {
	var v []admin.RecordingInfo
	return v, c.do(ctx, http.MethodGet, "/v1/recordings", &v)
}

// VerifyRecordings checks recordings against the audit trail; no ids: all.
func (c *Client) VerifyRecordings(ctx context.Context, ids []string) ([]admin.RecordingCheck, error) {
	var v []admin.RecordingCheck
	path := "/v1/recordings-verify"
	if len(ids) > 0 {
		path += "?ids=" + url.QueryEscape(strings.Join(ids, ","))
	}
	return v, c.do(ctx, http.MethodGet, path, &v)
}

// ExportRecording copies the recording id to w: decompressed, or as
// stored when raw. It is not bounded by the client's timeout (a large
// recording takes as long as it takes); ctx bounds it.
func (c *Client) ExportRecording(ctx context.Context, id string, raw bool, w io.Writer) (int64, error) {
	path := "/v1/recordings/" + url.PathEscape(id)
	if raw {
		path += "?raw=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://bastiond"+path, nil)
	if err != nil {
		return 0, err
	}
	hc := &http.Client{Transport: c.http.Transport}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, c.callError(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, answerError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("export of %s cut short after %d bytes: %w", id, n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return n, fmt.Errorf("export of %s cut short after %d of %d bytes", id, n, resp.ContentLength)
	}
	return n, nil
}
