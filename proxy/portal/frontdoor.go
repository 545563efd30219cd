package portal

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/internal/servername"
)

// Reasons the front door refuses a request before any route sees it.
const (
	refusedBodyTimeout    = "body_timeout"
	refusedBodyTooLarge   = "body_too_large"
	refusedBodyUnreadable = "body_unreadable"
	refusedUnknownHost    = "unknown_host"
)

func newRefusals() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "bastiond_http_refusals_total",
		Help: "HTTP requests on 443 refused before any route: body_timeout (the body did not arrive within " +
			"limits.handshake_timeout), body_too_large (over 16 KiB), body_unreadable, unknown_host (a Host " +
			"other than listen.server_name)."}, []string{"reason"})
	for _, r := range []string{refusedBodyTimeout, refusedBodyTooLarge, refusedBodyUnreadable, refusedUnknownHost} {
		v.WithLabelValues(r)
	}
	return v
}

// RequestMetrics are the front door's Prometheus series
// (bastiond_http_refusals_total).
func (s *Portal) RequestMetrics() prometheus.Collector { return s.refusals }

// frontDoor is in front of every route (inside securityHeaders, so that
// its answers carry them too). It reads the request's body whole under a
// deadline (all but a file panel's upload, whose body apiFiles reads
// itself once the caller is checked), then sends every request that is not for this bastion (another
// Host, OPTIONS *) the uniform 404.
func (s *Portal) frontDoor(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isFileUpload(r) && !s.readBody(w, r) {
			return
		}
		if !namesServer(r.Host, s.cfg.Load().ServerName) {
			s.refusals.WithLabelValues(refusedUnknownHost).Inc()
			s.log.Debug("request for another host", zap.String("host", truncate(r.Host, 64)), zap.Stringer("source", clientAddr(r)))
			notFound(w, r)
			return
		}
		if r.RequestURI == "*" { // OPTIONS *: nothing here answers for the whole server
			notFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads r's body, at most maxFormBytes, within the handshake
// timeout, and gives it back to the handlers from memory. Every body on
// 443 is a small form or JSON document, and reading it here means that no
// handler can wait on a client that never sends it, nor can net/http when
// it drains an unread body after the handler: a stranger holding a
// connection and a per-source slot open costs at most the timeout.
//
// A body that does not arrive in time gets 408, one too large 413, and the
// connection is closed (HTTP/2: a GOAWAY). Once the body is in, its
// deadline is cleared, so that it reaches neither a slow route (a sign-in
// that waits out the throttle) nor a WebSocket. (net/http clears an
// HTTP/1.1 connection's read deadline itself when a body ends and when a
// handler hijacks the connection; clearing it here does not depend on
// that.) A WebSocket handshake, which has no body, never has one set.
func (s *Portal) readBody(w http.ResponseWriter, r *http.Request) bool {
	if r.ContentLength == 0 || r.Body == nil || r.Body == http.NoBody {
		return true // HTTP/2 without a body (END_STREAM) or a declared empty one
	}
	rc := http.NewResponseController(w)
	// An error means a ResponseWriter without deadlines (tests'
	// recorders, whose bodies are in memory): read without one.
	bounded := rc.SetReadDeadline(time.Now().Add(s.cfg.Load().HandshakeTimeout)) == nil
	body, err := io.ReadAll(io.LimitReader(r.Body, maxFormBytes+1))
	reason, code := "", 0
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		reason, code = refusedBodyTimeout, http.StatusRequestTimeout
	case err != nil:
		reason, code = refusedBodyUnreadable, http.StatusBadRequest
	case len(body) > maxFormBytes:
		reason, code = refusedBodyTooLarge, http.StatusRequestEntityTooLarge
	}
	if code != 0 {
		// The deadline stays: what net/http may still read of this body
		// before closing is bounded by it too.
		s.refusals.WithLabelValues(reason).Inc()
		s.log.Debug("request body refused", zap.String("reason", reason), zap.String("path", truncate(withoutSecret(r.URL.Path), 64)),
			zap.Stringer("source", clientAddr(r)), zap.Error(err))
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(code)
		io.WriteString(w, strings.ToLower(http.StatusText(code))+"\n")
		return false
	}
	if bounded {
		rc.SetReadDeadline(time.Time{})
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	return true
}

// namesServer reports whether host, a request's Host or :authority, names
// the bastion: its server name in any case, with or without a trailing dot,
// with or without a port (any port: a forward or a balancer may publish the
// bastion on another). The server name is a DNS name, so an IP literal
// never matches.
func namesServer(host, serverName string) bool {
	if strings.HasPrefix(host, "[") {
		return false
	}
	name := host
	if h, port, err := net.SplitHostPort(host); err == nil {
		if _, err := strconv.ParseUint(port, 10, 16); err != nil {
			return false
		}
		name = h
	}
	return servername.Same(name, serverName)
}

// truncate is s cut to at most n bytes, for a log line.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
