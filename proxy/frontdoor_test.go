package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// guard bounds how long a test waits for something that must happen; it
// is no assertion about speed, only an end to a test that would hang.
const guard = 30 * time.Second

// bodyTimeout is the handshake timeout of these tests' servers: what a
// body that never arrives costs.
const bodyTimeout = time.Second

// endSignal is a connection that tells when it ends: the peer closed it,
// or it was closed here.
type endSignal struct {
	net.Conn
	once  sync.Once
	ended chan struct{}
}

func newEndSignal(c net.Conn) *endSignal { return &endSignal{Conn: c, ended: make(chan struct{})} }

func (c *endSignal) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if err != nil {
		c.once.Do(func() { close(c.ended) })
	}
	return n, err
}

func (c *endSignal) Close() error {
	c.once.Do(func() { close(c.ended) })
	return c.Conn.Close()
}

// bodyPaths are every route that reads a body, and one that does not,
// which a body declared and never sent must not hold either.
var bodyPaths = []struct{ method, path, contentType string }{
	{http.MethodPost, "/login", "application/x-www-form-urlencoded"},
	{http.MethodPost, "/logout", "application/x-www-form-urlencoded"},
	{http.MethodPost, "/connect", "application/x-www-form-urlencoded"},
	{http.MethodPost, "/api/connect", "application/json"},
	{http.MethodPost, "/api/tokens", "application/json"},
	{http.MethodGet, "/", "text/plain"},
}

// TestBodyDeadline: a request whose declared body never arrives is
// answered 408 and its connection closed (which gives its per-source slot
// back), on every route, over HTTP/1.1 and HTTP/2, IPv4 and IPv6.
func TestBodyDeadline(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			s, addr := startFrontDoor(t, network, Config{HandshakeTimeout: bodyTimeout})
			t.Run("stalled", func(t *testing.T) {
				for _, p := range bodyPaths {
					t.Run("http1 "+p.method+" "+p.path, func(t *testing.T) {
						t.Parallel()
						stalledHTTP1(t, addr, p.method, p.path, p.contentType)
					})
					t.Run("http2 "+p.method+" "+p.path, func(t *testing.T) {
						t.Parallel()
						stalledHTTP2(t, addr, p.method, p.path, p.contentType)
					})
				}
			})
			if got, want := counterValue(t, s.RequestMetrics(), "bastiond_http_refusals_total", "body_timeout"), float64(2*len(bodyPaths)); got != want {
				t.Errorf("bastiond_http_refusals_total{reason=body_timeout} = %v, want %v", got, want)
			}
		})
	}
}

// startFrontDoor serves a test server on a loopback listener of network
// (tcp4 or tcp6) and returns it with its address.
func startFrontDoor(t *testing.T, network string, cfg Config) (*Server, string) {
	t.Helper()
	s := newTestServer(t, cfg)
	host := "127.0.0.1"
	if network == "tcp6" {
		host = "::1"
	}
	ln, err := net.Listen(network, net.JoinHostPort(host, "0"))
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	serve(t, s, []net.Listener{ln}, nil)
	return s, ln.Addr().String()
}

func stalledHTTP1(t *testing.T, addr, method, path, contentType string) {
	raw, err := net.DialTimeout("tcp", addr, guard)
	if err != nil {
		t.Fatal(err)
	}
	conn := newEndSignal(raw)
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(guard))
	tc := tls.Client(conn, &tls.Config{ServerName: testName, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if _, err := io.WriteString(tc, method+" "+path+" HTTP/1.1\r\nHost: "+testName+"\r\nOrigin: https://"+testName+
		"\r\nContent-Type: "+contentType+"\r\nContent-Length: 100\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(tc)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestTimeout || !resp.Close {
		t.Errorf("stalled body: %s, Connection: %q; want 408 and close", resp.Status, resp.Header.Get("Connection"))
	}
	checkHeaders(t, "408", resp.Header)
	// The server closes the connection: the next read ends.
	_, err = br.ReadByte()
	var ne net.Error
	switch {
	case err == nil:
		t.Error("the connection carried more after the 408")
	case errors.As(err, &ne) && ne.Timeout():
		t.Error("the server kept the connection open after the 408")
	}
}

func stalledHTTP2(t *testing.T, addr, method, path, contentType string) {
	var conn *endSignal
	tr := &http.Transport{ForceAttemptHTTP2: true, TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true},
		DialTLSContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, network, a)
			if err != nil {
				return nil, err
			}
			conn = newEndSignal(raw)
			tc := tls.Client(conn, &tls.Config{ServerName: testName, InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			return tc, tc.HandshakeContext(ctx)
		}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	pr, pw := io.Pipe() // never written: the body never arrives
	defer pw.Close()
	req, _ := http.NewRequestWithContext(ctx, method, "https://"+addr+path, pr)
	req.Host, req.ContentLength = testName, 100
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Origin", "https://"+testName)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout {
		t.Errorf("stalled body: %s %s, want HTTP/2 408", resp.Proto, resp.Status)
	}
	checkHeaders(t, "408", resp.Header)
	select {
	case <-conn.ended:
	case <-ctx.Done():
		t.Fatal("the HTTP/2 connection stayed open after the 408")
	}
}

// TestBodyArrives: a body sent in full reaches its route as before, even
// when the route then takes longer than the body's deadline (the deadline
// is cleared once the body is in).
func TestBodyArrives(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := startServerWith(t, network, Config{HandshakeTimeout: bodyTimeout})
			client := &http.Client{Timeout: guard, Transport: &http.Transport{ForceAttemptHTTP2: true,
				TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true}}}
			defer client.CloseIdleConnections()
			for _, tc := range []struct {
				name, body string
				want       int
			}{
				{"wrong password", `{"user":"carol","password":"not it"}`, http.StatusUnauthorized},
				{"evil comment", `{"user":"carol","password":"` + testPassword + `","comment":"a\u001b]52;c;ZXZpbA==\u0007"}`, http.StatusBadRequest},
				{"too large", `{"user":"` + strings.Repeat("a", 16<<10) + `"}`, http.StatusRequestEntityTooLarge},
				{"good", `{"user":"carol","password":"` + testPassword + `","comment":"laptop"}`, http.StatusOK},
			} {
				t.Run(tc.name, func(t *testing.T) {
					req, _ := http.NewRequest(http.MethodPost, "https://"+addr+"/api/tokens", strings.NewReader(tc.body))
					req.Host = testName
					req.Header.Set("Content-Type", "application/json")
					resp, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != tc.want {
						t.Errorf("%s: %s", resp.Status, body)
					}
				})
			}
		})
	}
}

// TestFrontDoorOverTLS: over real connections, HTTP/1.1 and HTTP/2, IPv4
// and IPv6: another Host and OPTIONS * get the uniform 404 with the
// security headers.
func TestFrontDoorOverTLS(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := startServerWith(t, network, Config{})
			for _, proto := range []string{"http/1.1", "h2"} {
				client := &http.Client{Timeout: guard, Transport: &http.Transport{ForceAttemptHTTP2: proto == "h2",
					TLSClientConfig: &tls.Config{ServerName: testName, InsecureSkipVerify: true, NextProtos: []string{proto}}}}
				defer client.CloseIdleConnections()
				get := func(method, host string, u *url.URL) (*http.Response, string) {
					t.Helper()
					req := &http.Request{Method: method, URL: u, Host: host, Header: http.Header{}}
					resp, err := client.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					body, _ := io.ReadAll(resp.Body)
					if want := map[string]int{"h2": 2, "http/1.1": 1}[proto]; resp.ProtoMajor != want {
						t.Fatalf("%s: spoke %s", proto, resp.Proto)
					}
					return resp, string(body)
				}
				root := &url.URL{Scheme: "https", Host: addr, Path: "/"}
				_, uniform := get(http.MethodGet, testName, &url.URL{Scheme: "https", Host: addr, Path: "/nope"})
				cases := []struct {
					name, method, host string
					u                  *url.URL
				}{
					{"another host", http.MethodGet, "other.example", root},
					{"an IPv4 literal", http.MethodGet, "192.0.2.10:443", root},
					{"an IPv6 literal", http.MethodGet, "[2001:db8::10]:443", root},
					{"OPTIONS *", http.MethodOptions, testName, &url.URL{Scheme: "https", Host: addr, Opaque: "*"}},
				}
				for _, tc := range cases {
					t.Run(proto+" "+tc.name, func(t *testing.T) {
						resp, body := get(tc.method, tc.host, tc.u)
						if resp.StatusCode != http.StatusNotFound || body != uniform {
							t.Errorf("%s: %d %q, want the uniform 404", tc.name, resp.StatusCode, body)
						}
						checkHeaders(t, tc.name, resp.Header)
					})
				}
				t.Run(proto+" the server name", func(t *testing.T) {
					if resp, _ := get(http.MethodGet, strings.ToUpper(testName)+":443", root); resp.StatusCode != http.StatusOK {
						t.Errorf("the server name: %d", resp.StatusCode)
					}
				})
			}
		})
	}
}

// checkHeaders checks the security headers every answer carries (the
// portal's tests check them route by route).
func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	for name, want := range map[string]string{
		"Strict-Transport-Security": "max-age=63072000; includeSubDomains",
		"X-Content-Type-Options":    "nosniff",
		"Referrer-Policy":           "same-origin",
	} {
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
