//go:build linux

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
)

// TestReload: `bastionctl reload` says "reloaded", or exits 1 with the
// file's problems when the daemon refused the file.
func TestReload(t *testing.T) {
	answer := admin.ReloadResult{OK: true}
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t), Status: func() admin.Status { return admin.Status{} },
		Reload: func(context.Context) (admin.ReloadResult, error) { answer.Time = time.Now(); return answer, nil }})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	if out, code := runCtl(t, "--socket", path, "reload"); code != 0 || out != "reloaded\n" {
		t.Errorf("a reload that took: exit %d, %q", code, out)
	}
	answer = admin.ReloadResult{Error: "/etc/bastiond/bastiond.yaml:25: access.roles[1].protocols[1]: \"telnet\" is not a protocol\n" +
		"/etc/bastiond/bastiond.yaml:30: state_dir: \x1b[31mred"}
	out, code := runCtl(t, "--socket", path, "reload")
	if code != 1 || !strings.Contains(out, "configuration refused, the running one stays in force:\n/etc/bastiond/bastiond.yaml:25: ") ||
		!strings.Contains(out, `\x1b[31mred`) {
		t.Errorf("a refused reload: exit %d, printed:\n%s", code, out)
	}
}
