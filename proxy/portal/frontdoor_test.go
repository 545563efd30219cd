package portal

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestHostRule: only the server name, in any case, with a trailing dot or
// any port, is served; every other Host gets the uniform 404 with the
// security headers.
func TestHostRule(t *testing.T) {
	s := newTestServer(t, testConfig{})
	h := s.routes()
	notFoundBody := func() string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "https://"+testName+"/nope", nil))
		return rec.Body.String()
	}()
	tests := []struct {
		host   string
		served bool
	}{
		{testName, true},
		{"BASTION.Test.Example", true},
		{testName + ".", true},
		{testName + ":443", true},
		{testName + ":8443", true},
		{"other.example", false},
		{"other.example:443", false},
		{testName + ".evil.example", false},
		{"evil." + testName, false},
		{testName + ":https", false},
		{testName + ":", false},
		{testName + ":99999", false},
		{"[" + testName + "]:443", false},
		{"192.0.2.10", false},
		{"192.0.2.10:443", false},
		{"127.0.0.1:8443", false},
		{"[2001:db8::10]", false},
		{"[2001:db8::10]:443", false},
		{"[::1]:8443", false},
		{"localhost", false},
	}
	for _, tt := range tests {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(method+" "+tt.host, func(t *testing.T) {
				r := httptest.NewRequest(method, "https://"+testName+"/", strings.NewReader("csrf=x"))
				r.Host = tt.host
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, r)
				checkHeaders(t, tt.host, rec.Result().Header)
				if method == http.MethodPost {
					// POST / has no route: the 404 either way.
					if rec.Code != http.StatusNotFound {
						t.Errorf("POST with Host %q: %d", tt.host, rec.Code)
					}
					return
				}
				if tt.served && rec.Code != http.StatusOK {
					t.Errorf("Host %q: %d, want the portal", tt.host, rec.Code)
				}
				if !tt.served && (rec.Code != http.StatusNotFound || rec.Body.String() != notFoundBody) {
					t.Errorf("Host %q: %d %q, want the uniform 404", tt.host, rec.Code, rec.Body.String())
				}
			})
		}
	}
	refused := 0
	for _, tt := range tests {
		if !tt.served {
			refused += 2
		}
	}
	if got := testutil.ToFloat64(s.refusals.WithLabelValues(refusedUnknownHost)); got != float64(refused) {
		t.Errorf("bastiond_http_refusals_total{reason=unknown_host} = %v, want %d", got, refused)
	}
}
