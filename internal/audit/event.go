// Package audit is the format of bastiond's audit trail: the Event every
// security-relevant action becomes, the JSON line it is written as, and the
// SHA-256 chain that links each line to the one before it so that an edited,
// deleted or reordered line is caught (Verify).
//
// The trail is one append-only JSONL file. Each line is one Event, marshalled
// with its fields in a fixed order, and ends with "prev": the hex SHA-256 of
// the exact bytes of the line before it (without its newline). The first line
// of a file is an audit_chain_started event whose prev is the head of the
// file it continues (rotation), or empty for a new trail. The writer lives in
// the session broker (proxy/broker), which already made the file durable;
// this package only defines what is written and how it is checked, so that
// bastionctl can verify a trail without linking the daemon.
//
// docs/audit.md documents every event type and field; Version is bumped when
// a field changes meaning or goes away (adding one does not).
package audit

import (
	"encoding/json"
	"time"
)

// Version is the schema version every line carries in "v". Version 1 was the
// session records of earlier releases, which had no "v", "actor", "source"
// or "prev".
const Version = 2

// Event types. docs/audit.md describes each one's fields.
const (
	// The trail itself.
	ChainStarted     = "audit_chain_started"
	EventsSuppressed = "audit_events_suppressed"
	EventsLost       = "audit_events_lost"
	ShippingFailed   = "audit_shipping_failed"
	ShippingResumed  = "audit_shipping_resumed"

	// Signing in and out.
	SigninSucceeded = "signin_succeeded"
	SigninFailed    = "signin_failed"
	SigninThrottled = "signin_throttled"
	SigninRefused   = "signin_refused" // malformed input, refused before any check
	// SigninNoRole: a user signed in (through a single sign-on provider)
	// whom no role applies to: they see no machines.
	SigninNoRole    = "signin_no_role"
	AccountLocked   = "account_locked"
	Signout         = "signout"
	WebSessionEnded = "websession_expired"
	TokenIssued     = "token_issued"
	TokenRevoked    = "token_revoked"
	TokenRefused    = "token_refused"

	// Connecting.
	TicketIssued   = "ticket_issued"
	ConnectRefused = "connect_refused"
	SessionStart   = "session_start"
	SessionEnd     = "session_end"
	SessionKilled  = "session_killed"
	CertSigned     = "ca_cert_signed"

	// Shareable links: created and revoked on the admin socket, used and
	// refused on the portal (proxy/link).
	LinkCreated = "link_created"
	LinkRevoked = "link_revoked"
	LinkUsed    = "link_used"
	LinkRefused = "link_refused"

	// Accounts and grants.
	UserCreated  = "user_created"
	UserChanged  = "user_changed"
	UserDisabled = "user_disabled"
	UserEnabled  = "user_enabled"
	UserDeleted  = "user_deleted"
	UserUnlocked = "user_unlocked"
	PasswordSet  = "password_set"
	TOTPEnrolled = "totp_enrolled"
	TOTPRemoved  = "totp_removed"
	// PasskeyAdded and PasskeyRemoved: a passkey (WebAuthn credential)
	// registered to, or removed from, a local account.
	PasskeyAdded   = "passkey_added"
	PasskeyRemoved = "passkey_removed"
	GrantAdded     = "grant_added"
	GrantRemoved   = "grant_removed"
	HostKeyPinned  = "hostkey_pinned"
	HostKeyForgot  = "hostkey_forgotten"

	// Recordings.
	RecordingPlayed   = "recording_played"
	RecordingExported = "recording_exported"
	RecordingRemoved  = "recording_removed"
	RecordingFailed   = "recording_failed"
	// RecordingClosed carries a recording's hash when the session's end
	// record was written before the recording was complete (a kill, a
	// timeout).
	RecordingClosed = "recording_closed"

	// File transfers: FileTransfer is one file that went through a
	// session (written when its last byte passed, or when it was cut
	// off: complete false); FileTransferRefused, one a rule stopped.
	FileTransfer        = "file_transfer"
	FileTransferRefused = "file_transfer_refused"
	// A live session's watchers (an auditor's live view).
	WatchStart   = "watch_start"
	WatchEnd     = "watch_end"
	WatchRefused = "watch_refused"

	// The daemon.
	ConfigReloaded  = "config_reloaded"
	ConfigRefused   = "config_refused"
	UpgradeStarted  = "upgrade_started"
	UpgradeFinished = "upgrade_finished"
	UpgradeFailed   = "upgrade_failed"
	DriftRepaired   = "firewall_drift_repaired"
	BlocklistAdded  = "blocklist_added"
	BlocklistClear  = "blocklist_cleared"
	// BalancerHeaderRefused: a configured balancer's connection without a
	// valid PROXY header, dropped (at most one event every 10 s, with the
	// count of the others).
	BalancerHeaderRefused = "balancer_header_refused"
	// InstanceConflict: another bastiond writes this instance's heartbeat
	// in the cluster's registry, two bastions configured with one
	// cluster.instance (at most one a minute).
	InstanceConflict = "cluster_instance_conflict"
	DaemonStarted    = "daemon_started"
	DaemonStopped    = "daemon_stopped"
	AdminRefused     = "admin_refused" // a request on the admin socket from a user who is not an admin
)

// Actors that are not users.
const (
	// ActorDaemon is the daemon acting on its own: expiring a web session,
	// removing an old recording, repairing the firewall.
	ActorDaemon = "bastiond"
	// ActorAnonymous is a caller not signed in, whose typed name is not an
	// account (or could not be read).
	ActorAnonymous = "-"
)

// SourceLocal is the source of an action taken on the admin socket; the
// admin's uid is in the actor ("uid:0", or the user name of that uid).
const SourceLocal = "local"

// Event is one line of the audit trail. Time, Event, Actor and Source are
// set on every event; the others only where they mean something for the
// event type (docs/audit.md). Fields are flat, so that any log pipeline can
// index them without knowing the schema.
//
// The first block is the session record of earlier versions, field for field
// (session_start and session_end keep their shape).
type Event struct {
	V      int       `json:"v"`
	Time   time.Time `json:"time"`
	Event  string    `json:"event"`
	Actor  string    `json:"actor"`
	Source string    `json:"source"`
	// Instance is the cluster instance that wrote the line
	// (cluster.instance); a session's records name the instance that
	// carried it, even when another one wrote its abandoned end.
	Instance string `json:"instance,omitempty"`

	Session string `json:"session,omitempty"`
	User    string `json:"user,omitempty"`
	Client  string `json:"client,omitempty"`
	Target  string `json:"target,omitempty"`
	Address string `json:"address,omitempty"`
	// Network is the inventory network of a target reached by address.
	Network    string     `json:"network,omitempty"`
	Protocol   string     `json:"protocol,omitempty"`
	Port       uint16     `json:"port,omitempty"`
	Login      string     `json:"login,omitempty"`
	Via        string     `json:"via,omitempty"`
	Token      string     `json:"token,omitempty"`
	Roles      []string   `json:"roles,omitempty"`
	Start      *time.Time `json:"start,omitempty"`
	End        *time.Time `json:"end,omitempty"`
	DurationMS *int64     `json:"duration_ms,omitempty"`
	BytesUp    *int64     `json:"bytes_up,omitempty"`
	BytesDown  *int64     `json:"bytes_down,omitempty"`
	Reason     string     `json:"reason,omitempty"`
	BytesExact *bool      `json:"bytes_exact,omitempty"`
	// RecordedBy is the instance that wrote a session_end for a session
	// another instance carried: that one died, and this one noticed.
	RecordedBy string `json:"recorded_by,omitempty"`
	Recording  string `json:"recording,omitempty"`

	// Detail is a human sentence adding to Reason (an error's text, what
	// changed). Never a secret.
	Detail string `json:"detail,omitempty"`
	// Role and Grant name what a grant change gave or took.
	Role string `json:"role,omitempty"`
	// Until is when a lockout or grant ends.
	Until *time.Time `json:"until,omitempty"`
	// Fingerprint is a host key's SHA256 fingerprint, or a certificate's.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Serial and Principal describe a certificate the CA signed.
	Serial    uint64 `json:"serial,omitempty"`
	Principal string `json:"principal,omitempty"`
	// Digest is a configuration's SHA-256.
	Digest string `json:"digest,omitempty"`
	// Version is a binary's version (upgrade).
	Version string `json:"version,omitempty"`
	// Prefix is a blocklisted address or prefix.
	Prefix string `json:"prefix,omitempty"`
	// Count is how many events a summary stands for.
	Count int64 `json:"count,omitempty"`
	// Collector names a shipping destination.
	Collector string `json:"collector,omitempty"`
	// Bytes is a recording's size.
	Bytes int64 `json:"bytes,omitempty"`
	// RecordingSHA256 is the hex SHA-256 of the recording's file as it was
	// closed (session_end), which `bastionctl recordings verify` checks.
	RecordingSHA256 string `json:"recording_sha256,omitempty"`

	// Link is a shareable link's ID (never its secret); Expires its end of
	// validity and Uses the sessions it may open.
	Link    string     `json:"link,omitempty"`
	Expires *time.Time `json:"expires,omitempty"`
	Uses    int        `json:"uses,omitempty"`
	// Direction, Name, Path, Size, SHA256 and Complete describe a file
	// transfer: upload (to the machine) or download, the file's name, its
	// path on the machine (SSH), the bytes that passed and their SHA-256,
	// and whether the whole file did.
	Direction string `json:"direction,omitempty"`
	Name      string `json:"name,omitempty"`
	Path      string `json:"path,omitempty"`
	Size      *int64 `json:"size,omitempty"`
	SHA256    string `json:"sha256,omitempty"`
	Complete  *bool  `json:"complete,omitempty"`
	// Watcher is the auditor who watches a live session (watch_start,
	// watch_end), WatchedUser the user of the session watched; Watchers,
	// in a session_end record, every auditor who watched the session.
	Watcher     string   `json:"watcher,omitempty"`
	WatchedUser string   `json:"watched_user,omitempty"`
	Watchers    []string `json:"watchers,omitempty"`
}

// Sink receives audit events. Audit never blocks on I/O: the event is queued
// for the writer, which makes it durable with the next group commit. Events
// are written in the order Audit is called.
type Sink interface {
	Audit(Event)
}

// Discard is a Sink that drops everything, for tests and tools that have no
// trail.
var Discard Sink = discard{}

type discard struct{}

func (discard) Audit(Event) {}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Event)

func (f SinkFunc) Audit(e Event) { f(e) }

// Marshal is e as one line, without "prev" and without a newline: Stamp
// completes it. Time defaults to now (UTC), V to Version, Actor and Source
// to "-".
func Marshal(e Event) []byte {
	if e.V == 0 {
		e.V = Version
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	if e.Actor == "" {
		e.Actor = ActorAnonymous
	}
	if e.Source == "" {
		e.Source = ActorAnonymous
	}
	b, _ := json.Marshal(e) // an Event always marshals
	return b
}
