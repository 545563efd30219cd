// Package adminapi is the daemon's admin plane: a JSON API over a unix
// socket, never over the network. Every request is authorized by the peer
// credentials the kernel attaches to the connection (root, the daemon's own
// user, or a member of the admin group); anyone else gets a clear refusal.
// The client is package api/adminclient; the JSON both use is package
// api/admin.
package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// Config configures the Server.
type Config struct {
	// Logger is required.
	Logger *zap.Logger
	// Group names the admin group; its members may use the API. Empty or a
	// group that does not exist: root and the daemon's own user only.
	Group string
	// Status reports the daemon's state. Required.
	Status func() Status
	// Policy serves the firewall endpoints; nil leaves them out.
	Policy Policy
	// Targets serves the inventory endpoints; nil leaves them out.
	Targets Targets
	// Users serves account and token administration; nil leaves it out.
	Users Users
	// Sessions serves the session registry; nil leaves it out.
	Sessions Sessions
	// HostKeys serves host key pinning; nil leaves it out.
	HostKeys HostKeys
	// ScanDial connects host key scans to targets; nil answers scans with
	// 503 (keys can still be pinned from files).
	ScanDial ScanDial
	// SSHCA serves the SSH CA's public key; nil leaves it out.
	SSHCA SSHCA
	// Upgrade serves POST /v1/upgrade; nil leaves it out.
	Upgrade Upgrade
	// Reload serves POST /v1/reload; nil leaves it out.
	Reload Reload
	// Audit receives an event for every change made through the API, named
	// for the admin who made it (Caller). Default audit.Discard.
	Audit audit.Sink
	// Recordings serves the session recordings; nil leaves them out.
	Recordings Recordings
	// AuditEvents serves the audit trail by time range; nil leaves it
	// out.
	AuditEvents AuditEvents
	// Links serves the shareable links, as the configuration in force
	// has them; nil leaves them out.
	Links func() LinkSettings
	// Instance is this instance's name when it is one of a cluster (a
	// shared state store): a kill's reason then says where the admin was,
	// "by root on instance bastion-b: ...". Empty on a single host.
	Instance string
}

// Server answers admin requests.
type Server struct {
	log      *zap.Logger
	status   func() Status
	trail    audit.Sink
	instance string       // Config.Instance
	adminGID atomic.Int64 // -1 when there is no admin group
	http     *http.Server
}

type peerKey struct{}

// NewServer returns a Server; call Serve with a listener from Listen.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Logger == nil || cfg.Status == nil {
		return nil, errors.New("adminapi: Logger and Status are required")
	}
	s := &Server{log: cfg.Logger, status: cfg.Status, trail: cfg.Audit, instance: cfg.Instance}
	if s.trail == nil {
		s.trail = audit.Discard
	}
	s.SetGroup(cfg.Group)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, s.status())
	})
	if cfg.Policy != nil {
		s.policyRoutes(mux, cfg.Policy)
	}
	if cfg.Targets != nil {
		s.targetRoutes(mux, cfg.Targets)
	}
	if cfg.Users != nil {
		s.userRoutes(mux, cfg.Users)
	}
	if cfg.Sessions != nil {
		s.sessionRoutes(mux, cfg.Sessions)
	}
	if cfg.HostKeys != nil {
		s.hostKeyRoutes(mux, cfg.HostKeys, cfg.ScanDial)
	}
	if cfg.SSHCA != nil {
		s.caRoutes(mux, cfg.SSHCA)
	}
	if cfg.Upgrade != nil {
		s.upgradeRoutes(mux, cfg.Upgrade)
	}
	if cfg.Reload != nil {
		s.reloadRoutes(mux, cfg.Reload)
	}
	if cfg.Recordings != nil {
		s.recordingRoutes(mux, cfg.Recordings)
	}
	if cfg.AuditEvents != nil {
		s.auditRoutes(mux, cfg.AuditEvents)
	}
	if cfg.Links != nil {
		s.linkRoutes(mux, cfg.Links)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, apiError{Error: "no such admin endpoint: " + r.Method + " " + r.URL.Path})
	})
	s.http = &http.Server{
		Handler:           s.authorize(mux),
		ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			uc, ok := c.(*net.UnixConn)
			if !ok {
				return ctx
			}
			p, err := peerOf(uc)
			if err != nil {
				s.log.Warn("admin socket: cannot read peer credentials", zap.Error(err))
				return ctx
			}
			return context.WithValue(ctx, peerKey{}, p)
		},
		ErrorLog: zap.NewStdLog(cfg.Logger.Named("admin")),
	}
	return s, nil
}

// SetGroup changes the admin group (on reload).
func (s *Server) SetGroup(name string) {
	gid := int64(-1)
	if name != "" {
		if g, err := user.LookupGroup(name); err == nil {
			if n, err := strconv.ParseUint(g.Gid, 10, 32); err == nil {
				gid = int64(n)
			}
		} else {
			s.log.Info("admin group does not exist; only root and the daemon's user may use the admin socket", zap.String("group", name))
		}
	}
	s.adminGID.Store(gid)
}

func (s *Server) allowed(p Peer) bool {
	if p.UID == 0 || int(p.UID) == os.Geteuid() {
		return true
	}
	gid := s.adminGID.Load()
	return gid >= 0 && p.InGroup(uint32(gid))
}

func (s *Server) authorize(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, ok := r.Context().Value(peerKey{}).(Peer)
		if !ok || !s.allowed(p) {
			s.log.Warn("admin request refused", zap.Uint32("uid", p.UID), zap.Int32("pid", p.PID),
				zap.String("method", r.Method), zap.String("path", r.URL.Path))
			e := audit.Event{Event: audit.AdminRefused, Actor: audit.ActorAnonymous, Source: audit.SourceLocal, Reason: "not_admin",
				Detail: fmt.Sprintf("%s %s: no peer credentials", r.Method, r.URL.Path)}
			if ok {
				e.Actor = uidName(p.UID)
				e.Detail = fmt.Sprintf("%s %s: uid %d (pid %d) is not root and not in the admin group", r.Method, r.URL.Path, p.UID, p.PID)
			}
			s.trail.Audit(e)
			writeJSON(w, http.StatusForbidden, apiError{Error: fmt.Sprintf(
				"permission denied: uid %d is not root and not in the bastion admin group", p.UID)})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Serve answers on ln until Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	if err := s.http.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("adminapi: %w", err)
	}
	return nil
}

// Shutdown stops the server, waiting for requests in flight until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error { return s.http.Shutdown(ctx) }

// Listen creates the admin socket at path. A socket file left by a dead
// daemon is replaced; one that still answers means another daemon runs, and
// is an error. The socket is world-connectable on purpose: authorization is
// by peer credentials, so that a refused user is told why instead of seeing
// a bare "permission denied" from the file system.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("adminapi: %w", err)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("adminapi: %s answers: another bastiond is running", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("adminapi: remove stale socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("adminapi: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("adminapi: %w", err)
	}
	return ln, nil
}

func peerField(r *http.Request) zap.Field {
	p, _ := r.Context().Value(peerKey{}).(Peer)
	return zap.Uint32("uid", p.UID)
}

func zapPrefixes(ps []netip.Prefix) zap.Field {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return zap.Strings("sources", s)
}

func zapInt(key string, n int) zap.Field { return zap.Int(key, n) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
