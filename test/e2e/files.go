package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// FileAnswer is the answer to a request of the terminal's file panel.
type FileAnswer struct {
	Status int
	Header http.Header
	Body   string
	// SHA256 is the hex SHA-256 of the body (a download's bytes).
	SHA256 string
}

// Files makes one request of the file panel of the terminal whose broker
// session is session (/api/files/{session}/{op}), as the page does: the
// session's cookie, and for writes its Origin and CSRF token.
func (u *WebUser) Files(method, session, op string, q url.Values, body io.Reader) FileAnswer {
	u.t.Helper()
	req, _ := http.NewRequest(method, u.base+"/api/files/"+session+"/"+op+"?"+q.Encode(), body)
	if method != http.MethodGet {
		req.Header.Set("Origin", u.base)
		req.Header.Set("X-CSRF-Token", u.CSRF())
	}
	c := *u.c
	c.Timeout = 2 * time.Minute
	resp, err := c.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, op, err)
	}
	defer resp.Body.Close()
	h := sha256.New()
	var text strings.Builder
	io.Copy(io.MultiWriter(h, &limitedBuilder{&text, 4096}), resp.Body)
	return FileAnswer{Status: resp.StatusCode, Header: resp.Header, Body: text.String(), SHA256: hex.EncodeToString(h.Sum(nil))}
}

// CSRF is the web session's CSRF token, read from the portal page.
func (u *WebUser) CSRF() string {
	u.t.Helper()
	_, page := u.do(http.MethodGet, "/", nil)
	return csrfIn(u.t, page)
}

// limitedBuilder keeps the first n bytes written to it.
type limitedBuilder struct {
	b *strings.Builder
	n int
}

func (l *limitedBuilder) Write(p []byte) (int, error) {
	if left := l.n - l.b.Len(); left > 0 {
		l.b.Write(p[:min(left, len(p))])
	}
	return len(p), nil
}

// FilesConfig is the lab configuration of the file panel's tests: alice
// (ops) may move files on vm1, bob's role disables file transfer.
func FilesConfig(dir string) string {
	return LabConfig(dir, `access:
  groups:
    ops: [alice]
  roles:
    - name: ops-ssh
      subjects: [group:ops]
      targets: [vm1]
      protocols: [ssh]
    - name: no-files
      subjects: [user:bob]
      targets: [vm1]
      protocols: [ssh]
      disable_file_transfer: true
`)
}
