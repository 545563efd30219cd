package admin

import (
	"net/netip"
	"time"
)

// Status is what `bastionctl status` shows.
type Status struct {
	Version      string        `json:"version"`
	PID          int           `json:"pid"`
	Started      time.Time     `json:"started"`
	Now          time.Time     `json:"now"`
	ConfigFile   string        `json:"config_file"`
	ConfigDigest string        `json:"config_digest"`
	ConfigLoaded time.Time     `json:"config_loaded"`
	LastReload   *ReloadResult `json:"last_reload,omitempty"`
	Listeners    []Listener    `json:"listeners"`
	Sessions     int           `json:"sessions"`
	Draining     bool          `json:"draining"`
	// ServerName is the DNS name users connect to (listen.server_name).
	ServerName string `json:"server_name,omitempty"`
	// Instance is this bastiond's name in its cluster (cluster.instance).
	Instance string `json:"instance,omitempty"`
	// Cluster is every instance of the cluster as its last heartbeat in
	// the registry says, by name; empty on a single host.
	Cluster []Instance `json:"cluster,omitempty"`
	// Previous is the process this one replaced in a binary upgrade,
	// while it still serves sessions.
	Previous *PreviousProcess `json:"previous,omitempty"`
}

// PreviousProcess is a process an upgrade replaced, still serving its
// live sessions (and those of any process before it).
type PreviousProcess struct {
	PID      int    `json:"pid"`
	Version  string `json:"version"`
	Sessions int    `json:"sessions"`
}

// ReloadResult is the outcome of the last SIGHUP.
type ReloadResult struct {
	Time  time.Time `json:"time"`
	OK    bool      `json:"ok"`
	Error string    `json:"error,omitempty"`
}

// Listener is one socket the daemon serves on.
type Listener struct {
	Network string `json:"network"` // tcp, udp, unix
	Address string `json:"address"`
	// Activated is true when the socket came from systemd.
	Activated bool `json:"activated"`
}

// UpgradeResult is the answer to POST /v1/upgrade.
type UpgradeResult struct {
	OldPID int    `json:"old_pid"`
	NewPID int    `json:"new_pid"`
	Binary string `json:"binary"`
	// Sessions is how many live sessions the old process keeps serving
	// (for up to limits.upgrade_grace).
	Sessions int `json:"sessions"`
}

// Load is how much of an instance's capacity its sessions use.
type Load struct {
	// Capacity is the instance's size in weighted units (limits.capacity).
	Capacity int `json:"capacity"`
	// Used is the units held by its open and opening sessions (each
	// protocol's limits.weights).
	Used int `json:"used"`
	// Sessions is how many sessions are open.
	Sessions int `json:"sessions"`
	// Draining is true while the instance refuses new sessions (stopping).
	Draining bool `json:"draining,omitempty"`
}

// Instance is one instance of a cluster, as its heartbeat in the registry
// says.
type Instance struct {
	Name      string       `json:"name"`
	Version   string       `json:"version,omitempty"`
	PID       int          `json:"pid,omitempty"`
	Addresses []netip.Addr `json:"addresses,omitempty"`
	// Seen is when it last wrote its heartbeat, by its own clock.
	Seen time.Time `json:"seen"`
	Load
}
