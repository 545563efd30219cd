package portal

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/bastiond/bastiond/proxy/webssh"
)

// TestFileRoutes: the file panel's routes take requests of a signed-in
// web session only, writes with its Origin and CSRF token too; an upload
// passes the front door's 16 KiB limit only once those are checked, and
// reaches the terminal registry (here: no such terminal).
func TestFileRoutes(t *testing.T) {
	s := newTestServer(t, testConfig{})
	h := s.routes()
	big := bytes.Repeat([]byte("x"), 64<<10)
	upload := "/api/files/0123456789ab/" + webssh.FileUpload + "?dir=/home/lab&name=a.bin"

	anon := newBrowser(t, h)
	b := newBrowser(t, h)
	tok := b.signIn("alice")
	type answer struct {
		code int
		kind string
	}
	for _, tc := range []struct {
		name   string
		b      *browser
		method string
		path   string
		body   []byte
		header map[string]string
		origin string
		want   answer
	}{
		{"upload", b, http.MethodPut, upload, big, map[string]string{"X-CSRF-Token": tok}, "", answer{http.StatusNotFound, "not_found"}},
		{"upload without a CSRF token", b, http.MethodPut, upload, big, nil, "", answer{http.StatusForbidden, "signed_out"}},
		{"upload with a wrong CSRF token", b, http.MethodPut, upload, big, map[string]string{"X-CSRF-Token": tok + "x"}, "", answer{http.StatusForbidden, "signed_out"}},
		{"upload from another origin", b, http.MethodPut, upload, big, map[string]string{"X-CSRF-Token": tok}, "https://evil.example", answer{http.StatusForbidden, "signed_out"}},
		{"upload signed out", anon, http.MethodPut, upload, big, nil, "", answer{http.StatusForbidden, "signed_out"}},
		{"mkdir", b, http.MethodPost, "/api/files/0123456789ab/mkdir?dir=/tmp&name=d", nil, map[string]string{"X-CSRF-Token": tok}, "", answer{http.StatusNotFound, "not_found"}},
		{"mkdir without a CSRF token", b, http.MethodPost, "/api/files/0123456789ab/mkdir?dir=/tmp&name=d", nil, nil, "", answer{http.StatusForbidden, "signed_out"}},
		{"mkdir with a large body", b, http.MethodPost, "/api/files/0123456789ab/mkdir?dir=/tmp&name=d", big, map[string]string{"X-CSRF-Token": tok}, "", answer{http.StatusRequestEntityTooLarge, ""}},
		{"list", b, http.MethodGet, "/api/files/0123456789ab/list", nil, nil, "", answer{http.StatusNotFound, "not_found"}},
		{"list signed out", anon, http.MethodGet, "/api/files/0123456789ab/list", nil, nil, "", answer{http.StatusForbidden, "signed_out"}},
		{"download signed out", anon, http.MethodGet, "/api/files/0123456789ab/download?path=/etc/passwd", nil, nil, "", answer{http.StatusForbidden, "signed_out"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.origin != "" {
				old := tc.b.origin
				tc.b.origin = tc.origin
				defer func() { tc.b.origin = old }()
			}
			r := tc.b.do(tc.method, tc.path, bytes.NewReader(tc.body), tc.header)
			var fe webssh.FileError
			if tc.want.kind != "" {
				if err := json.NewDecoder(strings.NewReader(r.body)).Decode(&fe); err != nil {
					t.Fatalf("%d %q: %v", r.code, r.body, err)
				}
			}
			if r.code != tc.want.code || fe.Code != tc.want.kind {
				t.Errorf("%d %q, want %d %s", r.code, r.body, tc.want.code, tc.want.kind)
			}
		})
	}
	for path, want := range map[string]bool{
		"/api/files/s/upload": true, "/api/files/s/upload/x": false, "/api/files/s/list": false, "/api/other/s/upload": false,
	} {
		r := &http.Request{Method: http.MethodPut, URL: mustURL(path)}
		if isFileUpload(r) != want {
			t.Errorf("isFileUpload(%s) = %v", path, !want)
		}
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}
