package adminapi

import (
	"net/netip"

	"github.com/bastiond/bastiond/api"
	"github.com/bastiond/bastiond/api/admin"
)

// The admin socket's JSON is defined in package api/admin, which the
// client (api/adminclient) shares; these are its names here.
type (
	Status          = admin.Status
	PreviousProcess = admin.PreviousProcess
	ReloadResult    = admin.ReloadResult
	Listener        = admin.Listener
	Instance        = admin.Instance
	Load            = admin.Load
	UpgradeResult   = admin.UpgradeResult
	PolicyView      = admin.PolicyView
	CountersView    = admin.CountersView
	TargetCounters  = admin.TargetCounters
	Traffic         = admin.Traffic
	BlockEntry      = admin.BlockEntry
	Discovery       = admin.Discovery
	UnknownHost     = admin.UnknownHost
	ScanRequest     = admin.ScanRequest
	PinRequest      = admin.PinRequest
	ForgetRequest   = admin.ForgetRequest
	CAInfo          = admin.CAInfo
	KillRequest     = admin.KillRequest
	RecordingInfo   = admin.RecordingInfo
	RecordingCheck  = admin.RecordingCheck
	UserInfo        = admin.UserInfo
	Ended           = admin.Ended
	TOTPEnrolment   = admin.TOTPEnrolment
	TokenInfo       = admin.TokenInfo
	UserRequest     = admin.UserRequest

	apiError = api.Error
)

// Outcomes of a recording's check (RecordingCheck.Outcome).
const (
	CheckOK       = admin.CheckOK
	CheckMismatch = admin.CheckMismatch
	CheckMissing  = admin.CheckMissing
	CheckNoRecord = admin.CheckNoRecord
	CheckRemoved  = admin.CheckRemoved
)

// ParseSource reads an address or a prefix as a blocklist source to clear
// (see admin.ParseSource).
func ParseSource(s string) (netip.Prefix, error) { return admin.ParseSource(s) }
