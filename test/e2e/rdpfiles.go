package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/web/browsertest"
)

// Files through the desktop's clipboard, on vm2's GNOME Remote Desktop
// (test/lab/lab.sh start_vm2_desk, VM2_DESK_PORT): GRD 43 offers the files
// a local application copies (text/uri-list, x-special/gnome-copied-files)
// as FileGroupDescriptorW, and shows the files the client offers as
// text/uri-list pointing into a FUSE directory of its runtime directory,
// whose reads become File Contents Requests to the client. GRD runs as
// root in the lab, so the tests read that directory directly.

// FilesDeskTarget is vm2's GNOME Remote Desktop in the inventory.
const FilesDeskTarget = "vm2-desk"

// NeedFilesDesk skips t when the lab has no GNOME Remote Desktop on vm2.
func NeedFilesDesk(t testing.TB) {
	t.Helper()
	NeedLab(t)
	if lab["VM2_DESK_PORT"] == "" {
		t.Skip("the lab has no GNOME Remote Desktop on vm2 (lab.env has no VM2_DESK_PORT): files through the RDP clipboard are not tested")
	}
}

// RDPFilesConfig is the web RDP configuration with vm2-desk in the
// inventory (if it is not yet) and two roles on it: files for carol, and
// no files (disable_file_transfer) for dave unless davesFiles.
func RDPFilesConfig(dir string, davesFiles bool) string {
	cfg := WebRDPConfig(dir, false, "")
	if !strings.Contains(cfg, "- name: "+FilesDeskTarget+"\n") {
		entry := "    - name: " + FilesDeskTarget + "\n      addresses: [" + lab["VM2_DESK_4"] + `, "` + lab["VM2_DESK_6"] + `"]` +
			"\n      ports: {rdp: " + lab["VM2_DESK_PORT"] + "}\n"
		cfg = strings.Replace(cfg, "inventory:\n  targets:\n", "inventory:\n  targets:\n"+entry, 1)
	}
	noFiles := "\n      disable_file_transfer: true"
	if davesFiles {
		noFiles = ""
	}
	roles := "  roles:\n" +
		"    - name: desk-files\n      subjects: [user:carol]\n      targets: [" + FilesDeskTarget + "]\n      protocols: [rdp]\n" +
		"    - name: desk-no-files\n      subjects: [user:dave]\n      targets: [" + FilesDeskTarget + "]\n      protocols: [rdp]" + noFiles + "\n"
	return strings.Replace(cfg, "  roles:\n", roles, 1)
}

// FilesPattern is n bytes of a test file: no run repeats within 251 bytes.
func FilesPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31%251) ^ byte(i>>16)
	}
	return b
}

// SHA256Hex is the hex SHA-256 of b.
func SHA256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// DropFiles drops a file named name of FilesPattern(size) onto the
// desktop of the current tab, as a user dragging it from their files.
func DropFiles(t testing.TB, b *browsertest.Browser, name string, size int) {
	t.Helper()
	var ok bool
	b.Eval(t, fmt.Sprintf(`(() => {
		const n = %d, data = new Uint8Array(n);
		for (let i = 0; i < n; i++) data[i] = ((i * 31) %% 251) ^ ((i >> 16) & 0xff);
		const dt = new DataTransfer();
		dt.items.add(new File([data], %q, { type: "application/octet-stream" }));
		const screen = document.querySelector("#client .desktop");
		if (!screen) return false;
		screen.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
		screen.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
		return true;
	})()`, size, name), &ok)
	if !ok {
		t.Fatal("the page has no desktop to drop files onto")
	}
}

// WaitDeskFile waits until the desktop's clipboard offers a file named
// name (text/uri-list), and returns its path in vm2.
func WaitDeskFile(t testing.TB, name string) string {
	t.Helper()
	var last string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		out, _ := DeskSelection(t, "text/uri-list")
		last = out
		for _, line := range strings.Split(out, "\n") {
			u, err := url.Parse(strings.TrimSpace(line))
			if err == nil && u.Scheme == "file" && filepath.Base(u.Path) == name {
				return u.Path
			}
		}
	}
	t.Fatalf("the desktop's clipboard offers no file %s: %q", name, last)
	return ""
}

// DeskFileOffered says whether the desktop's clipboard offers a file named
// name now.
func DeskFileOffered(t testing.TB, name string) bool {
	t.Helper()
	out, _ := DeskSelection(t, "text/uri-list")
	return strings.Contains(out, "/"+url.PathEscape(name))
}

// WaitClipboardLive waits until the desktop's clipboard channel carries
// text both ways: a line copied on vm2 reaches the browser's clipboard, then
// one copied in the browser reaches vm2's. The channel is then set up at
// both ends (a file dropped while the client still sets it up is lost), and
// the clipboards' first exchange is behind: at connect the desktop offers
// what its clipboard holds (mutter keeps it after its owner is gone), and a
// copy in the browser at that moment could be overwritten by it.
func WaitClipboardLive(t testing.TB, b *browsertest.Browser) {
	t.Helper()
	nonce := make([]byte, 4)
	rand.Read(nonce)
	fromDesk := "desk clipboard check " + hex.EncodeToString(nonce)
	SetDeskClipboard(t, fromDesk)
	for deadline := time.Now().Add(20 * time.Second); BrowserClipboard(t, b) != fromDesk; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("vm2's copy did not reach the browser's clipboard: %q", BrowserClipboard(t, b))
		}
	}
	fromBrowser := "browser clipboard check " + hex.EncodeToString(nonce)
	SetBrowserClipboard(t, b, fromBrowser)
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if got, _ := DeskClipboard(t); got == fromBrowser {
			return
		}
		if time.Now().After(deadline) {
			got, ok := DeskClipboard(t)
			t.Fatalf("the browser's copy did not reach vm2's clipboard: %q (%v)", got, ok)
		}
	}
}

// DropRefusedFile drops a file named name onto the desktop of user, whose
// role refuses files, and fails the test if vm2's clipboard ever offers it.
// Either outcome of the refusal is right: the client, shown a machine
// without file streaming (the gateway cleared the flag), offers no file,
// or it offers one and the gateway takes the file formats out and audits
// it. So it watches vm2's clipboard until the refusal is audited, or for a
// few seconds, and says which it was.
func DropRefusedFile(t testing.TB, b *browsertest.Browser, d *Daemon, user, name string) {
	t.Helper()
	refused := func() bool {
		for _, ev := range d.AuditEvents("file_transfer_refused") {
			if ev["user"] == user && ev["direction"] == "upload" {
				return true
			}
		}
		return false
	}
	DropFiles(t, b, name, 5000)
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if DeskFileOffered(t, name) {
			t.Fatalf("vm2's clipboard offers %s, which %s's role refuses", name, user)
		}
		if refused() {
			t.Logf("the client offered %s; the gateway refused it", name)
			return
		}
		if time.Now().After(deadline) {
			t.Logf("the client offered no file for %s (the machine has no file streaming, as the gateway shows it)", name)
			return
		}
	}
}

// CopyDeskFile writes data to a file named name in vm2 and copies it on
// the desktop (text/uri-list, held by an xclip the cleanup stops).
func CopyDeskFile(t testing.TB, name string, data []byte) string {
	t.Helper()
	dir := filepath.Join(LabValue(t, "LAB_DIR"), "vm2", "files-"+fmt.Sprint(time.Now().UnixNano()))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	HoldDeskSelection(t, "text/uri-list", "file://"+(&url.URL{Path: path}).EscapedPath()+"\r\n")
	return path
}

// DeskFileSHA256 is the SHA-256 of a file the desktop's clipboard offers
// (WaitDeskFile's path), read as an application on the desktop reads it:
// in GNOME Remote Desktop's mount namespace, where its FUSE directory of
// clipboard files is mounted (each `ip netns exec` has a namespace of its
// own, which does not see it). Reading it makes GNOME Remote Desktop ask the
// client for the file's contents, through the bastion.
func DeskFileSHA256(t testing.TB, path string) string {
	t.Helper()
	pid := fmt.Sprint(labPID(t, "desk-grd"))
	out, err := exec.Command("nsenter", "--target", pid, "--mount", "--net", "--uts",
		"timeout", "-s", "KILL", "60", "sha256sum", path).Output()
	if err != nil {
		t.Fatalf("sha256sum %s in vm2's desktop: %v", path, err)
	}
	f := strings.Fields(string(out))
	if len(f) == 0 {
		t.Fatalf("sha256sum %s in vm2's desktop said nothing", path)
	}
	return f[0]
}

// WaitAuditEvent waits up to within for an audit event of d of type kind
// with the fields of want, and returns it.
func WaitAuditEvent(t testing.TB, d *Daemon, kind string, want map[string]string, within time.Duration) map[string]any {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(200 * time.Millisecond) {
		for _, r := range d.AuditEvents(kind) {
			ok := true
			for k, v := range want {
				if fmt.Sprint(r[k]) != v {
					ok = false
				}
			}
			if ok {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event with %v in the audit trail; the %s events: %v", kind, want, kind, d.AuditEvents(kind))
		}
	}
}
