package e2e

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestBrowserRDPFiles drives Chromium to vm2's GNOME Remote Desktop through
// the portal and moves files through the desktop's clipboard: a file
// dropped onto the desktop appears in vm2's clipboard, through GRD's FUSE
// directory, with the same SHA-256; a file copied in vm2 is listed in the
// page and downloaded; each is a file_transfer audit event with its name,
// size and hash. With a role's disable_file_transfer the page shows no file
// panel, and the gateway takes the files out of what either side offers
// (a page that still offers them, loaded before the role changed, included):
// file_transfer_refused events, and nothing arrives. One daemon, one
// browser. Skips without the lab's GNOME Remote Desktop (VM2_DESK_PORT).
func TestBrowserRDPFiles(t *testing.T) {
	NeedFilesDesk(t)
	b := StartBrowser(t, "browser-rdp-files")
	DeskViewport(t, b)
	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return RDPFilesConfig(dir, false) })
	AddLabUsers(t, d, "carol", "dave")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	if out, err := d.Ctl(nil, "hostkeys", "scan", FilesDeskTarget, "--pin"); err != nil {
		t.Fatalf("hostkeys scan %s --pin: %v\n%s", FilesDeskTarget, err, out)
	}
	base := "https://" + ServerName + "/"
	run := func(name string, f func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if t.Failed() {
					b.Screenshot(t, "failed-"+strings.ReplaceAll(name, " ", "-"))
				}
			}()
			f(t)
		})
	}
	connect := func(t *testing.T) {
		t.Helper()
		before := DeskClipboardChannels(t)
		b.OpenDesktop(t, FilesDeskTarget)
		DesktopSignIn(t, b, lab["LAB_PASSWORD"])
		WaitClientState(t, b, "connected")
		NeedDeskClipboard(t, d, before)
		WaitClipboardLive(t, b)
	}
	disconnect := func(t *testing.T) {
		t.Helper()
		time.Sleep(500 * time.Millisecond) // the component rescales 150 ms after it is shown
		b.Click(t, `#client button.disconnect`)
		WaitClientState(t, b, "ended")
	}

	run("upload and download", func(t *testing.T) {
		b.PortalLogin(t, base, "carol", TunnelPassword)
		connect(t)
		if !b.Visible(t, `#client .files button:text("Upload files")`) {
			t.Fatal("carol's desktop has no Upload files button")
		}
		const size = 300_000
		DropFiles(t, b, "upload.bin", size)
		path := WaitDeskFile(t, "upload.bin")
		want := SHA256Hex(FilesPattern(size))
		if got := DeskFileSHA256(t, path); got != want {
			t.Errorf("vm2 read %s with SHA-256 %s, want %s", path, got, want)
		}
		ev := WaitAuditEvent(t, d, "file_transfer", map[string]string{"user": "carol", "direction": "upload", "name": "upload.bin"}, 10*time.Second)
		if ev["protocol"] != "rdp" || ev["target"] != FilesDeskTarget || ev["sha256"] != want || ev["size"] != float64(size) || ev["complete"] != true {
			t.Errorf("upload event %v", ev)
		}
		b.Screenshot(t, "uploaded")

		data := FilesPattern(123_457)
		CopyDeskFile(t, "download.bin", data)
		b.WaitVisible(t, `#client .files .downloads li:has-text("download.bin") button`)
		b.Click(t, `#client .files .downloads li:has-text("download.bin") button`)
		ev = WaitAuditEvent(t, d, "file_transfer", map[string]string{"user": "carol", "direction": "download", "name": "download.bin"}, 20*time.Second)
		if ev["sha256"] != SHA256Hex(data) || ev["size"] != float64(len(data)) || ev["complete"] != true {
			t.Errorf("download event %v", ev)
		}
		b.WaitText(t, `#client .files .progress`, "download.bin: received")
		b.Screenshot(t, "downloaded")
		if n := len(d.AuditEvents("file_transfer_refused")); n != 0 {
			t.Errorf("%d refusals for carol", n)
		}
		disconnect(t)
	})

	run("refused both ways by the role", func(t *testing.T) {
		b.Goto(t, base)
		b.Click(t, `header form[action="/logout"] button`)
		b.WaitVisible(t, "form.login")
		// dave's page is loaded while his role allows files; the role
		// changes before he connects: the page offers files, the gateway
		// refuses them.
		d.WriteConfig(RDPFilesConfig(d.Dir, true))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
		b.PortalLogin(t, base, "dave", TunnelPassword)
		b.OpenDesktop(t, FilesDeskTarget)
		b.WaitVisible(t, `#client .files button:text("Upload files")`)
		d.WriteConfig(RDPFilesConfig(d.Dir, false))
		d.Signal(syscall.SIGHUP)
		d.WaitNotify("READY=1", 10*time.Second)
		before := DeskClipboardChannels(t)
		DesktopSignIn(t, b, lab["LAB_PASSWORD"])
		WaitClientState(t, b, "connected")
		NeedDeskClipboard(t, d, before)
		WaitClipboardLive(t, b)

		DropRefusedFile(t, b, d, "dave", "refused-up.bin")
		CopyDeskFile(t, "refused-down.bin", FilesPattern(5000))
		WaitAuditEvent(t, d, "file_transfer_refused", map[string]string{"user": "dave", "direction": "download", "reason": "role", "protocol": "rdp"}, 10*time.Second)
		if n := b.Count(t, `#client .files .downloads li`); n != 0 {
			t.Errorf("the page lists %d files the role refused", n)
		}
		for _, ev := range d.AuditEvents("file_transfer") {
			if ev["user"] == "dave" {
				t.Errorf("a file passed for dave: %v", ev)
			}
		}
		b.Screenshot(t, "refused")
		disconnect(t)

		// A fresh page for dave has no file panel at all.
		b.Goto(t, base)
		b.OpenDesktop(t, FilesDeskTarget)
		b.WaitVisible(t, `#client input[name="user"]`)
		if n := b.Count(t, `#client .files`); n != 0 {
			t.Errorf("dave's desktop page has a file panel (%d)", n)
		}
	})
}
