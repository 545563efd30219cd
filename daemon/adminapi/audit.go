package adminapi

import (
	"context"
	"net/http"
	"os/user"
	"strconv"

	"github.com/bastiond/bastiond/internal/audit"
)

// Caller names the admin who sent the request whose context is ctx, as the
// audit trail names them: the user name of the peer's uid, or "uid:N" for a
// uid with no name. ok is false outside an admin request (a signal, a test).
func Caller(ctx context.Context) (actor string, ok bool) {
	p, ok := ctx.Value(peerKey{}).(Peer)
	if !ok {
		return "", false
	}
	return uidName(p.UID), true
}

func uidName(uid uint32) string {
	id := strconv.FormatUint(uint64(uid), 10)
	if u, err := user.LookupId(id); err == nil {
		return u.Username
	}
	return "uid:" + id
}

// peerName is the user name of the process that sent r, or "uid:N".
func peerName(r *http.Request) string {
	name, ok := Caller(r.Context())
	if !ok {
		return "uid:?"
	}
	return name
}

// audit records e as done by the admin who sent r, on the admin socket.
func (s *Server) audit(r *http.Request, e audit.Event) {
	e.Actor, e.Source = peerName(r), audit.SourceLocal
	s.trail.Audit(e)
}
