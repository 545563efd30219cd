package adminapi

import (
	"net/http"
)

// Targets is the inventory as the admin API shows it. The daemon implements it.
type Targets interface {
	// Discover lists the hosts seen on the VNet that the inventory does
	// not account for.
	Discover() (Discovery, error)
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
