package security

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 18 (SSH files): a role with disable_file_transfer carries no
// file either way through the terminal's file panel: the page is told
// there is no panel, and every route (list, download, upload over an
// existing name and a new one, mkdir) is refused by the bastion, from
// IPv4 and IPv6 clients; the file on vm1 is untouched, nothing new
// appears there, and each refusal is a file_transfer_refused event.
func invariant18SSHFiles(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, e2e.FilesConfig)
	e2e.AddLabUsers(t, d, "bob")
	e2e.PinVM1(t, d)
	for _, fam := range []struct{ name, addr string }{
		{"ipv4", e2e.LabValue(t, "BASTION_PUB4")}, {"ipv6", e2e.LabValue(t, "BASTION_PUB6")},
	} {
		t.Run(fam.name, func(t *testing.T) {
			u := e2e.SignedIn(t, fam.addr, "bob")
			tc := u.OpenTerminal("vm1")
			if tc.Hello.Files {
				t.Error("hello offers the file panel to a role without file transfer")
			}
			ready := tc.Shell(e2e.LabValue(t, "LAB_PASSWORD"))
			keep := "/tmp/bl-inv18-" + fam.name + ".txt"
			fresh := "bl-inv18-" + fam.name + "-new.txt"
			// The file holds "42-untouched", which the command typed does not show.
			tc.TypeText("echo $((6*7))-untouched > " + keep + "; rm -f /tmp/" + fresh + "; echo made-$((1+1))\n")
			tc.ScreenHas("made-2", 20*time.Second)
			seen := len(d.AuditEvents("file_transfer_refused"))

			for _, rq := range []struct {
				name, method, op string
				q                url.Values
				body             string
			}{
				{"list", http.MethodGet, "list", url.Values{"path": {"/tmp"}}, ""},
				{"list home", http.MethodGet, "list", nil, ""},
				{"download", http.MethodGet, "download", url.Values{"path": {keep}}, ""},
				{"upload over the file", http.MethodPut, "upload", url.Values{"dir": {"/tmp"}, "name": {keep[len("/tmp/"):]}}, "overwritten"},
				{"upload a new file", http.MethodPut, "upload", url.Values{"dir": {"/tmp"}, "name": {fresh}}, "smuggled"},
				{"mkdir", http.MethodPost, "mkdir", url.Values{"dir": {"/tmp"}, "name": {fresh + ".d"}}, ""},
			} {
				a := u.Files(rq.method, ready.Session, rq.op, rq.q, strings.NewReader(rq.body))
				if a.Status != http.StatusForbidden || strings.Contains(a.Body, "untouched") || strings.Contains(a.Body, "tmp") {
					t.Errorf("%s: %d %q, want a 403 that carries nothing", rq.name, a.Status, a.Body)
				}
			}
			tc.TypeText("cat " + keep + "; ls /tmp/" + fresh + " /tmp/" + fresh + ".d 2>&1 | wc -l | sed 's/^/missing-/'\n")
			tc.ScreenHas("42-untouched", 20*time.Second)
			tc.ScreenHas("missing-2", 20*time.Second)

			refused := d.AuditEvents("file_transfer_refused")[seen:]
			if len(refused) != 6 {
				t.Errorf("%d file_transfer_refused events, want 6: %v", len(refused), refused)
			}
			for _, e := range refused {
				if e["reason"] != "role" || e["user"] != "bob" || e["session"] != ready.Session || e["protocol"] != "ssh" || e["target"] != "vm1" {
					t.Errorf("event %v", e)
				}
			}
			for _, e := range d.AuditEvents("file_transfer") {
				if e["user"] == "bob" {
					t.Errorf("a file went through: %v", e)
				}
			}
			tc.TypeText("rm -f " + keep + "; exit\n")
			tc.Ended()
		})
	}
}
