package portal

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestResponsesRevealNothing: every response carries the security headers,
// names no server or version, and every unknown path gets the same 404.
func TestResponsesRevealNothing(t *testing.T) {
	h := newTestServer(t, testConfig{}).routes()
	var first string
	for _, path := range []string{"/nope", "/admin", "/.git/config", "/wp-login.php", "/index.html", "/%2e%2e/etc/passwd", "/api/"} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead} {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(method, "https://"+testName+path, nil))
			res := rec.Result()
			body, _ := io.ReadAll(res.Body)
			if res.StatusCode != http.StatusNotFound {
				t.Errorf("%s %s: %d", method, path, res.StatusCode)
			}
			got := res.Header.Get("Content-Type") + "|" + string(body)
			if method == http.MethodGet {
				if first == "" {
					first = got
				} else if got != first {
					t.Errorf("%s %s: 404 differs: %q vs %q", method, path, got, first)
				}
			}
			checkHeaders(t, method+" "+path, res.Header)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://"+testName+"/", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /: %d", rec.Code)
	}
	checkHeaders(t, "GET /", rec.Result().Header)
}

func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for name, want := range map[string]string{
		"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "same-origin",
	} {
		if name == "Referrer-Policy" && strings.HasPrefix(what, "GET /sso/callback?") {
			// The provider's answer's code goes nowhere, not even here.
			want = "no-referrer"
		}
		if got := h.Get(name); got != want {
			t.Errorf("%s: %s = %q, want %q", what, name, got, want)
		}
	}
	if csp := h.Get("Content-Security-Policy"); csp == "" || !strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("%s: CSP %q", what, csp)
	}
	for _, name := range []string{"Server", "X-Powered-By"} {
		if v := h.Get(name); v != "" {
			t.Errorf("%s: %s: %q reveals the server", what, name, v)
		}
	}
}
