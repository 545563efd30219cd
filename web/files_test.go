package web

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
)

// fakeFiles is the file panel's routes of the fake bastiond: a home with
// one directory and one file, uploads taken whole (one name already
// exists), as proxy/webssh/files.go answers.
type fakeFiles struct {
	mu      sync.Mutex // guards uploads
	uploads []fakeUpload
}

type fakeUpload struct {
	Session, Dir, Name, CSRF, SHA256 string
	Size                             int
}

func (f *fakeFiles) serve(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	q := r.URL.Query()
	switch op := r.PathValue("op"); {
	case op == "list" && r.Method == http.MethodGet:
		switch q.Get("path") {
		case "", "/home/lab":
			json.NewEncoder(w).Encode(map[string]any{"path": "/home/lab", "entries": []map[string]any{
				{"name": "docs", "type": "dir", "size": 4096, "mtime": 1700000000, "mode": "drwxr-xr-x"},
				{"name": "report é.txt", "type": "file", "size": 123456, "mtime": 1700000000, "mode": "-rw-r--r--"},
			}})
		case "/home/lab/docs":
			json.NewEncoder(w).Encode(map[string]any{"path": "/home/lab/docs", "entries": []map[string]any{}})
		default:
			w.WriteHeader(http.StatusForbidden)
			json.NewEncoder(w).Encode(map[string]string{"error": "vm1 refused: permission denied on " + q.Get("path") + ".", "code": "denied"})
		}
	case op == "upload" && r.Method == http.MethodPut:
		if q.Get("name") == "exists.txt" {
			w.WriteHeader(http.StatusConflict)
			json.NewEncoder(w).Encode(map[string]string{"error": `"exists.txt" already exists in /home/lab: nothing was overwritten.`, "code": "exists"})
			return
		}
		b, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(b)
		f.mu.Lock()
		f.uploads = append(f.uploads, fakeUpload{Session: r.PathValue("session"), Dir: q.Get("dir"), Name: q.Get("name"),
			CSRF: r.Header.Get("X-CSRF-Token"), SHA256: hex.EncodeToString(sum[:]), Size: len(b)})
		f.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(map[string]any{"path": q.Get("dir") + "/" + q.Get("name"), "size": len(b), "sha256": hex.EncodeToString(sum[:])})
	default:
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(map[string]string{"error": "No such file operation.", "code": "bad_request"})
	}
}

func (f *fakeFiles) take() []fakeUpload {
	f.mu.Lock()
	defer f.mu.Unlock()
	u := f.uploads
	f.uploads = nil
	return u
}

// dropFiles drops files (name to content) onto the file panel, as a user
// dragging them from the desktop does.
func dropFiles(t *testing.T, b interface {
	Eval(testing.TB, string, any)
}, files map[string]string) {
	t.Helper()
	js, _ := json.Marshal(files)
	b.Eval(t, `(() => {
		const dt = new DataTransfer();
		for (const [name, content] of Object.entries(`+string(js)+`)) dt.items.add(new File([content], name));
		const panel = document.querySelector("#client .files");
		panel.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
		panel.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
		return true;
	})()`, new(bool))
}

// TestFilePanel: the panel is absent when hello says files are off; when
// on, it lists the home, goes into a directory and back by the
// breadcrumbs, offers download links, uploads dropped files with the CSRF
// token, says in words why one was refused, and gives the keyboard back to
// the terminal when it closes.
func TestFilePanel(t *testing.T) {
	s, b := startBrowser(t)

	t.Run("off", func(t *testing.T) {
		p := open(t, s, b, "files-off")
		p.send(t, hello(map[string]any{"files": false}))
		b.SignIn(t, "lab", "pw")
		p.expect(t, "auth")
		ready(t, p, b, "lab@vm1:~$ ")
		if b.Visible(t, "#client .files-toggle") || b.Visible(t, "#client .files") {
			t.Error("the file panel shows with files off")
		}
		noProblems(t, b)
	})

	t.Run("on", func(t *testing.T) {
		p := open(t, s, b, "files-on")
		p.send(t, hello(map[string]any{"files": true}))
		b.SignIn(t, "lab", "pw")
		p.expect(t, "auth")
		if b.Visible(t, "#client .files-toggle") {
			t.Error("the Files button shows before the shell is open")
		}
		ready(t, p, b, "lab@vm1:~$ ")
		b.Click(t, "#client .files-toggle")
		b.WaitText(t, "#client .files .entries", "report é.txt")
		b.WaitText(t, "#client .files .crumbs", "lab")
		var link struct{ Href, Download string }
		b.Eval(t, `(() => { const a = document.querySelector("#client .files a.file");
			return { href: a.getAttribute("href"), download: a.download }; })()`, &link)
		if link.Href != "/api/files/5f2c0a9e13b7/download?path=%2Fhome%2Flab%2Freport+%C3%A9.txt" || link.Download != "report é.txt" {
			t.Errorf("download link %+v", link)
		}
		if got := b.Text(t, "#client .files .entries li:has(a.file) .size"); got != "121 KiB" {
			t.Errorf("size shown as %q", got)
		}
		b.Screenshot(t, "file-panel")

		b.Click(t, `#client .files .entries button.dir:text("docs/")`)
		b.WaitText(t, "#client .files .entries", "This directory is empty.")
		b.Click(t, `#client .files .crumbs button:text("lab")`)
		b.WaitText(t, "#client .files .entries", "report é.txt")

		dropFiles(t, b, map[string]string{"notes ü.txt": "dropped content\n", "exists.txt": "x"})
		b.WaitText(t, "#client .files .transfers .done", "uploaded")
		b.WaitText(t, "#client .files .transfers .failed", "nothing was overwritten")
		up := s.files.take()
		sum := sha256.Sum256([]byte("dropped content\n"))
		if len(up) != 1 || up[0] != (fakeUpload{Session: "5f2c0a9e13b7", Dir: "/home/lab", Name: "notes ü.txt", CSRF: testCSRF,
			SHA256: hex.EncodeToString(sum[:]), Size: len("dropped content\n")}) {
			t.Errorf("uploads %+v", up)
		}
		b.Screenshot(t, "file-panel-uploads")

		b.Click(t, "#client .files .close")
		b.WaitHidden(t, "#client .files")
		var focused bool
		b.Eval(t, `document.activeElement?.classList.contains("xterm-helper-textarea") ?? false`, &focused)
		if !focused {
			t.Error("the terminal does not have the keyboard after the panel closed")
		}
		p.send(t, map[string]any{"type": "end", "reason": "exit", "message": "The remote shell exited (status 0).", "reconnect": false})
		b.WaitText(t, "#client .overlay", "The remote shell exited")
		if b.Visible(t, "#client .files-toggle") {
			t.Error("the Files button shows after the session ended")
		}
		noProblems(t, b)
	})
}
