package admin

import (
	"net/netip"
	"time"
)

// KillRequest is the body of POST /v1/sessions/{id}/kill.
type KillRequest struct {
	// Reason is recorded in the session's end record, after who asked.
	Reason string `json:"reason"`
}

// Session is one live session, as GET /v1/sessions lists it.
type Session struct {
	ID string `json:"id"`
	// Instance is the cluster instance that carries the session
	// (cluster.instance).
	Instance string         `json:"instance,omitempty"`
	User     string         `json:"user"`
	Client   netip.AddrPort `json:"client"`
	Target   string         `json:"target"`
	Address  netip.AddrPort `json:"address"` // the inventory address dialled
	// Network is the inventory network of a target reached by address
	// (Target is then that address).
	Network    string    `json:"network,omitempty"`
	Protocol   string    `json:"protocol"`
	Port       uint16    `json:"port"`
	Login      string    `json:"login,omitempty"`
	Via        string    `json:"via,omitempty"`
	Token      string    `json:"token,omitempty"`
	Roles      []string  `json:"roles,omitempty"`
	Start      time.Time `json:"start"`
	LastActive time.Time `json:"last_active"`
	BytesUp    int64     `json:"bytes_up"`   // from the user to the machine, so far
	BytesDown  int64     `json:"bytes_down"` // from the machine to the user, so far
	// Recording is the path of the session's recording, if it is recorded.
	Recording string `json:"recording,omitempty"`
	// RecordingSHA256 is the hex SHA-256 of the recording's file, once it
	// is closed.
	RecordingSHA256 string `json:"recording_sha256,omitempty"`
}
