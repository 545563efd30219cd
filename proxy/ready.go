package proxy

import (
	"net/http"
	"net/netip"

	"github.com/bastiond/bastiond/proxy/gate"
)

// Readiness for load balancers. A balancer listed in Config.Balancers
// asks GET portal.ReadyPath on 443 itself, through the server-name gate
// and TLS like any user (HAProxy: check-ssl, check-sni, httpchk), and
// hears 200 "ready" while this process takes new users, or 503 with why
// not: "draining" once the daemon stops (NotReady, then Shutdown),
// "upgrading" while a hand-over pauses it or after it retired. Only the
// balancer's own connections are answered (gate.Via.Own: a LOCAL header,
// as HAProxy's checks send): to anyone else, users who come through the
// balancer included, the path answers the uniform 404 of a path that does
// not exist, so readiness opens no port and tells a stranger nothing.

// balancerKey is the context key of how a connection came through a
// balancer (a gate.Via), set by the HTTP server's ConnContext.
type balancerKey struct{}

// NotReady makes s answer the balancers' readiness checks with 503 and
// why (e.g. "draining"), while it goes on serving; "" makes it ready again.
func (s *Server) NotReady(why string) {
	if why == "" {
		s.notReady.Store(nil)
		return
	}
	s.notReady.Store(&why)
}

// readiness is the portal's Config.Readiness.
func (s *Server) readiness(r *http.Request) (string, bool) {
	via, ok := r.Context().Value(balancerKey{}).(gate.Via)
	if !ok || !via.Own || !listed(s.cfg.Load().Balancers, via.Balancer.Addr()) {
		return "", false // still listed: a reload may have removed it
	}
	return s.readyState(), true
}

// readyState is "ready", or why s takes no new users.
func (s *Server) readyState() string {
	if why := s.notReady.Load(); why != nil {
		return *why
	}
	s.mu.Lock()
	retired, closed := s.retired, s.closed
	s.mu.Unlock()
	switch {
	case retired || s.door.Paused():
		return "upgrading"
	case closed:
		return "draining"
	}
	return "ready"
}

func listed(balancers []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range balancers {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
