package adminapi

import (
	"errors"
	"net/http"
	"net/netip"
	"strings"

	"github.com/bastiond/bastiond/internal/audit"
)

// Policy is the firewall as the admin API shows it. The daemon implements it.
type Policy interface {
	// Show returns the policy in force in nft syntax, and how the kernel
	// differs from it (nothing when it is in force as compiled).
	Show() (PolicyView, error)
	// Export returns the nft script for target's own firewall.
	Export(target string) (string, error)
	// Blocklist lists the blocklisted sources.
	Blocklist() ([]BlockEntry, error)
	// Unblock removes from the blocklist every source that overlaps one of
	// sources (an IPv6 address clears its whole /64), or all entries when
	// sources is empty, and returns the sources it removed.
	Unblock(sources []netip.Prefix) ([]netip.Prefix, error)
	// Counters returns the firewall's per-target counters.
	Counters() (CountersView, error)
}

// ErrUnknownTarget is returned by Policy.Export for a name not in the inventory.
var ErrUnknownTarget = errors.New("not in the inventory")

func (s *Server) policyRoutes(mux *http.ServeMux, p Policy) {
	mux.HandleFunc("GET /v1/policy", func(w http.ResponseWriter, r *http.Request) {
		v, err := p.Show()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /v1/policy/counters", func(w http.ResponseWriter, r *http.Request) {
		v, err := p.Counters()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("GET /v1/policy/export", func(w http.ResponseWriter, r *http.Request) {
		text, err := p.Export(r.URL.Query().Get("target"))
		switch {
		case errors.Is(err, ErrUnknownTarget):
			writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
		case err != nil:
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
		default:
			writeJSON(w, http.StatusOK, PolicyView{Text: text})
		}
	})
	mux.HandleFunc("GET /v1/policy/blocklist", func(w http.ResponseWriter, r *http.Request) {
		list, err := p.Blocklist()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, list)
	})
	mux.HandleFunc("DELETE /v1/policy/blocklist", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var sources []netip.Prefix
		for _, a := range q["addr"] { // an address or a prefix
			p, err := ParseSource(a)
			if err != nil {
				writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
				return
			}
			sources = append(sources, p)
		}
		if len(sources) == 0 && q.Get("all") != "true" {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "name the addresses or prefixes to unblock, or all"})
			return
		}
		removed, err := p.Unblock(sources)
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		s.log.Info("blocklist cleared by admin", peerField(r), zapPrefixes(sources), zapInt("removed", len(removed)))
		detail := "the whole blocklist cleared"
		if len(sources) > 0 {
			detail = "cleared the sources overlapping " + joinPrefixes(sources)
		}
		for _, p := range removed {
			s.audit(r, audit.Event{Event: audit.BlocklistClear, Prefix: p.String(), Detail: detail})
		}
		writeJSON(w, http.StatusOK, map[string]int{"removed": len(removed)})
	})
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
