package e2e

import (
	"fmt"
	"net/url"
	"strings"
	"testing"
)

// uploadJS makes a file of 8 MiB in the page (a fixed pseudo-random
// sequence), drops it on the file panel as name, and returns its SHA-256.
const uploadJS = `(async () => {
  const n = 8 << 20, buf = new Uint8Array(n);
  let x = 2463534242;
  for (let i = 0; i < n; i++) { x ^= x << 13; x ^= x >>> 17; x ^= x << 5; buf[i] = x & 0xff; }
  const hex = (d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
  const sum = hex(await crypto.subtle.digest("SHA-256", buf));
  const dt = new DataTransfer();
  dt.items.add(new File([buf], %q));
  const panel = document.querySelector("#client .files");
  panel.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
  panel.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
  return sum;
})()`

// downloadJS fetches the panel's download link of name, as the browser
// does when it is clicked, and returns what came.
const downloadJS = `(async () => {
  const a = Array.from(document.querySelectorAll("#client .files a.file")).find((a) => a.download === %q);
  if (!a) return { status: 0 };
  const r = await fetch(a.href);
  const b = await r.arrayBuffer();
  const hex = (d) => Array.from(new Uint8Array(d), (b) => b.toString(16).padStart(2, "0")).join("");
  return { status: r.status, disposition: r.headers.get("content-disposition") || "", sum: hex(await crypto.subtle.digest("SHA-256", b)), size: b.byteLength };
})()`

// TestBrowserSSHFiles drives Chromium's terminal page to vm1 over IPv4 and
// IPv6: the file panel lists the login's home, a file dropped on it
// reaches vm1 with the SHA-256 the page computed (read back on vm1 with
// sha256sum in the terminal), its download link brings the same bytes
// back, and both are file_transfer events; for a role without file
// transfer the panel is absent and the bastion refuses the routes.
// Screenshots of the panel are in the artifacts.
func TestBrowserSSHFiles(t *testing.T) {
	d := StartDaemonWith(t, ViaFDs, FilesConfig)
	AddLabUsers(t, d, "alice", "bob")
	PinVM1(t, d)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the daemon's log ends:\n%s", tail(d.Log.String(), 6000))
		}
	})
	base := "https://" + ServerName + "/"
	for _, fam := range []struct{ name, addr string }{
		{"ipv4", LabValue(t, "BASTION_PUB4")}, {"ipv6", "[" + LabValue(t, "BASTION_PUB6") + "]"},
	} {
		b := StartBrowser(t, "browser-ssh-files-"+fam.name, fmt.Sprintf("--host-resolver-rules=MAP %s %s", ServerName, fam.addr))
		// Each step signs out at its end, passed or failed.
		run := func(name string, f func(t *testing.T)) {
			t.Run(fam.name+"/"+name, func(t *testing.T) {
				defer func() {
					if t.Failed() {
						b.Screenshot(t, "failed-"+strings.ReplaceAll(name, " ", "-"))
					}
					b.Goto(t, base)
					if b.Count(t, `header form[action="/logout"] button`) > 0 {
						b.Click(t, `header form[action="/logout"] button`)
						b.WaitVisible(t, "form.login")
					}
				}()
				f(t)
			})
		}
		run("upload and download", func(t *testing.T) {
			b.PortalLogin(t, base, "alice", TunnelPassword)
			b.OpenTerminal(t, "vm1")
			b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
			b.WaitTerminalText(t, "$ ")
			b.Click(t, "#client .files-toggle")
			b.WaitText(t, "#client .files .crumbs", lab["LAB_USER"])

			name := "e2e upload é " + fam.name + ".bin"
			var sum string
			b.Eval(t, fmt.Sprintf(uploadJS, name), &sum)
			b.WaitText(t, "#client .files .transfers .done", "uploaded")
			b.WaitText(t, "#client .files .entries", name)
			b.Screenshot(t, "file-panel")

			// The name's é is the panel's to carry; the command line names
			// the file by a glob, in ASCII.
			b.Type(t, "sha256sum e2e*"+fam.name+".bin\n")
			b.WaitTerminalText(t, sum) // read on vm1

			var got struct {
				Status      int
				Disposition string
				Sum         string
				Size        int
			}
			b.Eval(t, fmt.Sprintf(downloadJS, name), &got)
			if got.Status != 200 || got.Sum != sum || got.Size != 8<<20 || !strings.HasPrefix(got.Disposition, "attachment;") {
				t.Errorf("download: %+v, want SHA-256 %s", got, sum)
			}
			for _, dir := range []string{"upload", "download"} {
				found := false
				for _, e := range d.AuditEvents("file_transfer") {
					if e["direction"] == dir && e["name"] == name && e["sha256"] == sum && e["size"] == float64(8<<20) &&
						e["complete"] == true && e["user"] == "alice" && e["protocol"] == "ssh" && e["login"] == lab["LAB_USER"] &&
						strings.HasSuffix(fmt.Sprint(e["path"]), "/"+name) {
						found = true
					}
				}
				if !found {
					t.Errorf("no file_transfer event of the %s of %q with SHA-256 %s: %v", dir, name, sum, d.AuditEvents("file_transfer"))
				}
			}
			b.Click(t, "#client .files .close")
			b.Type(t, "rm -f e2e*"+fam.name+".bin; exit\n")
			b.WaitText(t, "#client .overlay", "exited")
		})

		run("a role without file transfer", func(t *testing.T) {
			b.PortalLogin(t, base, "bob", TunnelPassword)
			b.OpenTerminal(t, "vm1")
			b.SignIn(t, lab["LAB_USER"], lab["LAB_PASSWORD"])
			b.WaitTerminalText(t, "$ ")
			if b.Visible(t, "#client .files-toggle") {
				t.Error("the Files button shows for a role without file transfer")
			}
			var session string
			for _, e := range d.AuditEvents("session_start") {
				if e["user"] == "bob" {
					session, _ = e["session"].(string)
				}
			}
			var status int
			b.Eval(t, fmt.Sprintf(`fetch("/api/files/%s/list?"+new URLSearchParams({path: "/"})).then((r) => r.status)`, url.PathEscape(session)), &status)
			if status != 403 {
				t.Errorf("listing with file transfer disabled: %d, want 403", status)
			}
			refused := false
			for _, e := range d.AuditEvents("file_transfer_refused") {
				if e["session"] == session && e["reason"] == "role" && e["user"] == "bob" {
					refused = true
				}
			}
			if !refused {
				t.Errorf("no file_transfer_refused event for session %s", session)
			}
			b.Type(t, "exit\n")
			b.WaitText(t, "#client .overlay", "exited")
		})
	}
}
