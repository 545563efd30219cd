package security

import (
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// invariant18RDPFiles is invariant 18 for files through a desktop's
// clipboard: with the role's disable_file_transfer, no file passes either
// way, even from a page that offers them (loaded while the role allowed
// files, so that it has its file panel): the gateway takes the files out of
// both sides' format lists and answers requests for their contents itself.
// Proved against vm2's GNOME Remote Desktop, which shows files offered to
// it in its clipboard and offers the files copied in vm2: the file dropped
// in the page never appears in vm2, the file copied in vm2 is never listed
// in the page, no file_transfer event is written, and each offer is one
// file_transfer_refused event. Skips without the lab's GNOME Remote Desktop
// (VM2_DESK_PORT).
func invariant18RDPFiles(t *testing.T) {
	e2e.NeedFilesDesk(t)
	b := e2e.StartBrowser(t, "invariant18-rdp-files")
	e2e.DeskViewport(t, b)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string { return e2e.RDPFilesConfig(dir, true) })
	e2e.AddLabUsers(t, d, "dave")
	if out, err := d.Ctl(nil, "hostkeys", "scan", e2e.FilesDeskTarget, "--pin"); err != nil {
		t.Fatalf("hostkeys scan: %v\n%s", err, out)
	}
	base := "https://" + e2e.ServerName + "/"
	b.PortalLogin(t, base, "dave", e2e.TunnelPassword)
	b.OpenDesktop(t, e2e.FilesDeskTarget)
	b.WaitVisible(t, `#client .files button:text("Upload files")`)
	reload(t, d, e2e.RDPFilesConfig(d.Dir, false)) // dave's role now refuses files
	before := e2e.DeskClipboardChannels(t)
	e2e.DesktopSignIn(t, b, e2e.LabValue(t, "LAB_PASSWORD"))
	e2e.WaitClientState(t, b, "connected")
	e2e.NeedDeskClipboard(t, d, before)
	e2e.WaitClipboardLive(t, b)

	e2e.DropRefusedFile(t, b, d, "dave", "never-up.bin")
	e2e.CopyDeskFile(t, "never-down.bin", e2e.FilesPattern(70_000))
	e2e.WaitAuditEvent(t, d, "file_transfer_refused", map[string]string{"user": "dave", "direction": "download", "reason": "role"}, 10*time.Second)
	if n := b.Count(t, `#client .files .downloads li`); n != 0 {
		t.Errorf("the page lists %d of vm2's files", n)
	}
	if evs := d.AuditEvents("file_transfer"); len(evs) != 0 {
		t.Errorf("files passed: %v", evs)
	}
	if evs := d.AuditEvents("file_transfer_refused"); len(evs) > 2 {
		t.Errorf("refusals: %v, want one per offer", evs)
	}
	b.Screenshot(t, "refused")
	b.Click(t, `#client button.disconnect`)
	e2e.WaitClientState(t, b, "ended")
}
