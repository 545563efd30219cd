package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/internal/audit"
)

// AuditEvents reads the audit trail by time range. The daemon implements
// it with the cluster's database, or this instance's files.
type AuditEvents interface {
	// Events answers q (checked): from the database in a cluster, from
	// the files on a single host or when local is set.
	Events(ctx context.Context, q audit.Query, local bool) (admin.AuditEvents, error)
}

// ErrAuditUnavailable is wrapped by an AuditEvents error that says the
// source cannot be read now (the database is down): 503, not 500.
var ErrAuditUnavailable = errors.New("the audit lines cannot be read now")

func (s *Server) auditRoutes(mux *http.ServeMux, ae AuditEvents) {
	mux.HandleFunc("GET /v1/audit/events", func(w http.ResponseWriter, r *http.Request) {
		q, local, err := parseAuditQuery(r.URL.Query())
		if err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
			return
		}
		ev, err := ae.Events(r.Context(), q, local)
		switch {
		case errors.Is(err, ErrAuditUnavailable):
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: err.Error()})
			return
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		if ev.Lines == nil {
			ev.Lines = []string{}
		}
		s.log.Info("audit events read", peerField(r), zap.String("from", ev.From), zap.Int("lines", len(ev.Lines)))
		writeJSON(w, http.StatusOK, ev)
	})
}

// parseAuditQuery reads the parameters of GET /v1/audit/events.
func parseAuditQuery(v url.Values) (audit.Query, bool, error) {
	var q audit.Query
	t := func(name string) (time.Time, error) {
		s := v.Get(name)
		if s == "" {
			return time.Time{}, fmt.Errorf("%s is required (RFC 3339)", name)
		}
		tm, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%s %q is not an RFC 3339 time", name, s)
		}
		return tm, nil
	}
	var err error
	if q.Since, err = t("since"); err != nil {
		return q, false, err
	}
	if q.Until, err = t("until"); err != nil {
		return q, false, err
	}
	list := func(s string) []string {
		var out []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out
	}
	q.Instances, q.Events, q.User = list(v.Get("instance")), list(v.Get("event")), v.Get("user")
	if s := v.Get("limit"); s != "" {
		if q.Limit, err = strconv.Atoi(s); err != nil || q.Limit < 1 {
			return q, false, fmt.Errorf("limit %q is not a number from 1 to %d", s, audit.MaxLimit)
		}
	}
	if err := q.Check(); err != nil {
		return q, false, errors.New(strings.TrimPrefix(err.Error(), "audit: "))
	}
	return q, v.Get("local") == "1", nil
}
