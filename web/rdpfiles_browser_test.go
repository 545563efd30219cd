package web

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/bastiond/bastiond/web/browsertest"
)

// filePanelCSP is the header bastiond sends with the desktop page
// (proxy/portal/routes.go).
const filePanelCSP = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; " +
	"connect-src 'self' data:; font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// TestDesktopFilePanel loads the desktop page in Chromium under its CSP:
// where the role allows files (data-file-transfer="true") it has the file
// panel's Upload files button, disabled until a desktop is connected;
// where it does not, or the clipboard is off, no file panel at all. No
// desktop connects: the page is only asked for its sign-in form.
func TestDesktopFilePanel(t *testing.T) {
	if !Built() {
		t.Skip("web/dist is not built: run make web")
	}
	cfg := browsertest.Config{WebDir: ".", Artifacts: os.Getenv("BASTIOND_ARTIFACTS")}
	if cfg.Artifacts == "" {
		cfg.Artifacts = t.TempDir()
	}
	if why := browsertest.Missing(cfg); why != "" {
		t.Skip("browser tests: " + why)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /static/app/", http.StripPrefix("/static/app/", http.FileServerFS(Assets())))
	mux.HandleFunc("GET /desktop/{ticket}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Security-Policy", filePanelCSP)
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>vm2</title>
<link rel="stylesheet" href="/static/app/desktop.css"></head>
<body>
<div id="client" data-ticket="%s" data-protocol="rdp" data-target="vm2" data-csrf="%s" data-clipboard="%s" data-file-transfer="%s"></div>
<script src="/static/app/desktop.js" type="module"></script>
</body></html>`, r.PathValue("ticket"), testCSRF, r.URL.Query().Get("clipboard"), r.URL.Query().Get("files"))
	})
	s := httptest.NewTLSServer(mux)
	t.Cleanup(s.Close)
	b := browsertest.Start(t, cfg)
	for _, c := range []struct {
		name            string
		clipboard, file string
		panel           bool
	}{
		{"files allowed", "true", "true", true},
		{"files disabled", "true", "false", false},
		{"clipboard disabled", "false", "true", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			b.TakeProblems(t)
			b.Viewport(t, 1000, 700)
			b.Goto(t, s.URL+"/desktop/T1?clipboard="+c.clipboard+"&files="+c.file)
			b.WaitVisible(t, `#client input[name="user"]`)
			upload := `#client .files button:text("Upload files")`
			if got := b.Count(t, upload); got != map[bool]int{true: 1, false: 0}[c.panel] {
				t.Fatalf("%d Upload files buttons", got)
			}
			if n := b.Count(t, "#client .files"); !c.panel && n != 0 {
				t.Errorf("a file panel (%d) where files are not allowed", n)
			}
			if c.panel {
				var disabled bool
				b.Eval(t, `document.querySelector("#client .files button").disabled`, &disabled)
				if !disabled {
					t.Error("Upload files is enabled before any desktop is connected")
				}
			}
			b.Screenshot(t, "file-panel-"+c.file+"-"+c.clipboard)
			noProblems(t, b)
		})
	}
}
