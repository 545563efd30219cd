package adminapi

import (
	"context"
	"net/http"
	"net/netip"
)

// Targets is the inventory as the admin API shows it. The daemon implements it.
type Targets interface {
	// Discover lists the hosts seen on the VNet that the inventory does
	// not account for.
	Discover() (Discovery, error)
}

// Discovery is the answer to GET /v1/targets/discover.
type Discovery struct {
	// Interface is the VNet interface whose tables were read.
	Interface string `json:"interface"`
	// Seen is how many neighbour and bridge entries were read.
	Seen    int           `json:"seen"`
	Unknown []UnknownHost `json:"unknown"`
}

// UnknownHost is one MAC on the VNet the inventory does not account for.
type UnknownHost struct {
	MAC string `json:"mac"`
	// Addrs are its addresses outside the inventory.
	Addrs []netip.Addr `json:"addrs"`
	// Targets are inventory targets whose addresses this MAC also holds.
	Targets []string `json:"targets,omitempty"`
	State   string   `json:"state"`
	// BridgeOnly: no address known, only its frames on the VNet bridge.
	BridgeOnly bool `json:"bridge_only,omitempty"`
}

func (s *Server) targetRoutes(mux *http.ServeMux, t Targets) {
	mux.HandleFunc("GET /v1/targets/discover", func(w http.ResponseWriter, r *http.Request) {
		v, err := t.Discover()
		if err != nil {
			writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, v)
	})
}

// Discover lists the hosts on the VNet that are not in the inventory.
func (c *Client) Discover(ctx context.Context) (Discovery, error) {
	var v Discovery
	return v, c.do(ctx, http.MethodGet, "/v1/targets/discover", &v)
}
