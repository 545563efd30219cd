package proxy

import (
	"net/http"

	"github.com/bastiond/bastiond/proxy/ticket"
)

// serveSSH carries the browser SSH terminal of ticket t.
func (s *Server) serveSSH(w http.ResponseWriter, _ *http.Request, _ caller, _ ticket.Ticket) {
	http.Error(w, "the terminal in the browser is not available on this bastion yet", http.StatusServiceUnavailable)
}
