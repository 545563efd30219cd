package admin

import "time"

// AuditQuery is what GET /v1/audit/events selects, as URL parameters:
// since and until (RFC 3339), instance and event (comma-separated lists),
// user, limit, and local=1.
type AuditQuery struct {
	// Since (included) and Until (excluded) bound the lines' time.
	Since, Until time.Time
	// Instances keeps the lines of these instances; Events those of these
	// event types; User those whose user or actor it is. Empty: all.
	Instances []string
	Events    []string
	User      string
	// Limit is the most lines in the answer; zero is the daemon's
	// default (1000), at most 10000.
	Limit int
	// Local reads this instance's own files even in a cluster (when its
	// database is down).
	Local bool
}

// Where AuditEvents' lines come from.
const (
	AuditFromDatabase = "database" // the cluster's copy: every instance's lines
	AuditFromFiles    = "files"    // this instance's audit file and its rotated predecessors
)

// AuditEvents is the answer of GET /v1/audit/events.
type AuditEvents struct {
	// From is AuditFromDatabase or AuditFromFiles; Files are the files
	// read, oldest first.
	From  string   `json:"from"`
	Files []string `json:"files,omitempty"`
	// Lines are the audit lines selected, oldest first, each exactly as
	// written (docs/audit.md): a string, so that its bytes, which its
	// SHA-256 covers, are kept.
	Lines []string `json:"lines"`
	// More says that lines past the limit were left out: ask again from
	// Next.
	More bool      `json:"more,omitempty"`
	Next time.Time `json:"next,omitzero"`
}
