package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

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

// CountersView is the answer to GET /v1/policy/counters: the nftables
// counters of every target, summed over its addresses and ports.
type CountersView struct {
	// Since is when counting started (the daemon's first apply); counts
	// carry over reloads and drift repairs.
	Since   time.Time        `json:"since"`
	Targets []TargetCounters `json:"targets"`
}

// TargetCounters are one target's counters.
type TargetCounters struct {
	Target string `json:"target"`
	// Sent and Received are the bastion's traffic with the target's offered
	// ports; Blocked is what the VNet guard dropped on its way to the
	// target's guarded ports (zero in attached mode).
	Sent     Traffic `json:"sent"`
	Received Traffic `json:"received"`
	Blocked  Traffic `json:"blocked"`
}

// Traffic is what one counter saw.
type Traffic struct {
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

// PolicyView is the answer to GET /v1/policy.
type PolicyView struct {
	Text        string   `json:"text"`
	Differences []string `json:"differences"`
}

// BlockEntry is one blocklisted source: an IPv4 address, as a /32, or an
// IPv6 /64 (the firewall counts a /64 as one source).
type BlockEntry struct {
	Prefix  netip.Prefix  `json:"prefix"`
	Expires time.Duration `json:"expires_ns"`
}

// ParseSource reads an address or a prefix as a blocklist source to clear:
// an address is the /32 or /128 of itself (the daemon clears the /64 it
// lies in).
func ParseSource(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p, nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("parse source %q: not an IP address or prefix", s)
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
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

// Policy fetches the policy in force and its differences from the kernel.
func (c *Client) Policy(ctx context.Context) (PolicyView, error) {
	var v PolicyView
	return v, c.do(ctx, http.MethodGet, "/v1/policy", &v)
}

// Counters fetches the firewall's per-target counters.
func (c *Client) Counters(ctx context.Context) (CountersView, error) {
	var v CountersView
	return v, c.do(ctx, http.MethodGet, "/v1/policy/counters", &v)
}

// Export fetches the nft script for target's own firewall.
func (c *Client) Export(ctx context.Context, target string) (string, error) {
	var v PolicyView
	err := c.do(ctx, http.MethodGet, "/v1/policy/export?target="+url.QueryEscape(target), &v)
	return v.Text, err
}

// Blocklist lists the blocklisted sources.
func (c *Client) Blocklist(ctx context.Context) ([]BlockEntry, error) {
	var list []BlockEntry
	return list, c.do(ctx, http.MethodGet, "/v1/policy/blocklist", &list)
}

// Unblock removes the sources that overlap addrs (addresses or prefixes;
// an IPv6 address clears its /64), or every entry when all is set, and
// returns how many sources it removed.
func (c *Client) Unblock(ctx context.Context, addrs []string, all bool) (int, error) {
	q := url.Values{"addr": addrs}
	if all {
		q.Set("all", "true")
	}
	var res map[string]int
	err := c.do(ctx, http.MethodDelete, "/v1/policy/blocklist?"+q.Encode(), &res)
	return res["removed"], err
}
