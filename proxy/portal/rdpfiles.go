package portal

import (
	"net/netip"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/proxy/authz"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/webrdp"
)

// fileTransferEvent is the audit event of a file a desktop's clipboard
// carried (file_transfer) or refused (file_transfer_refused).
func fileTransferEvent(user string, client netip.AddrPort, sess webrdp.Session, ev webrdp.FileEvent) audit.Event {
	e := audit.Event{Event: audit.FileTransfer, Actor: user, Source: authz.AddrString(client.Addr()), User: user,
		Client: client.String(), Session: sess.ID(), Protocol: access.RDP, Direction: ev.Direction, Name: ev.Name}
	if bs, ok := sess.(*broker.Session); ok {
		e.Target = bs.Info().Target
	}
	if ev.Refused {
		e.Event, e.Reason = audit.FileTransferRefused, "role"
		return e
	}
	size, complete := ev.Size, ev.Complete
	if size < 0 || !complete {
		size = ev.Bytes // what passed
	}
	e.Size, e.SHA256, e.Complete = &size, ev.SHA256, &complete
	return e
}
