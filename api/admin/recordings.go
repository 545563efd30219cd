package admin

import (
	"time"
)

// RecordingInfo is one recording as `bastionctl recordings list` shows it:
// the file, and its session as the audit trail recorded it.
type RecordingInfo struct {
	RecordingFile
	User   string    `json:"user,omitempty"`
	Target string    `json:"target,omitempty"`
	Login  string    `json:"login,omitempty"`
	Start  time.Time `json:"start,omitzero"`
	// Duration is the session's, from its end record; for a session still
	// open (or a recording the trail does not know), up to the file's last
	// write.
	Duration time.Duration `json:"duration"`
	// SHA256 is the file's hash at close, from the session's end record.
	SHA256 string `json:"sha256,omitempty"`
	// Instance is the cluster instance that recorded it (from the
	// cluster's catalog); empty on a single host.
	Instance string `json:"instance,omitempty"`
}

// Outcomes of a recording's check.
const (
	CheckOK       = "ok"        // the file's hash is the one the end record holds
	CheckMismatch = "mismatch"  // the file changed since its session ended
	CheckMissing  = "missing"   // the end record names a file that is gone, and retention did not remove it
	CheckNoRecord = "no_record" // no end record holds a hash for it: an older release's, or a session still open
	CheckRemoved  = "removed"   // retention removed it (recording_removed in the trail)
)

// RecordingCheck is the outcome of one recording's check.
type RecordingCheck struct {
	ID      string `json:"id"`
	Path    string `json:"path,omitempty"`
	Outcome string `json:"outcome"`
	// Want is the hash in the end record, Got the file's.
	Want string `json:"want,omitempty"`
	Got  string `json:"got,omitempty"`
}

// RecordingFile is one recording file.
type RecordingFile struct {
	ID       string `json:"id"`       // the session's ID
	Protocol string `json:"protocol"` // ssh or rdp
	Path     string `json:"path"`
	// Compressed is true for gzip files (.cast.gz, .rdp.gz).
	Compressed bool      `json:"compressed"`
	Size       int64     `json:"size"`     // bytes on disk
	Modified   time.Time `json:"modified"` // the last write: the recording's end, within a second
}
