//go:build linux

package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
)

// statusServer serves the admin API on a new socket whose status names
// version, and returns the socket's path.
func statusServer(t *testing.T, version string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t),
		Status: func() admin.Status { return admin.Status{Version: version} }})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return path
}

// TestSocketFromEnvironment: bastionctl finds the admin socket in
// $BASTION_SOCKET; --socket wins over it; without either it is the
// installed daemon's.
func TestSocketFromEnvironment(t *testing.T) {
	fromEnv, fromFlag := statusServer(t, "v-env"), statusServer(t, "v-flag")

	t.Setenv(socketEnv, fromEnv)
	if out, code := runCtl(t, "status"); code != 0 || !strings.Contains(out, "v-env") {
		t.Errorf("with $%s: exit %d, %q", socketEnv, code, out)
	}
	if out, code := runCtl(t, "--socket", fromFlag, "status"); code != 0 || !strings.Contains(out, "v-flag") {
		t.Errorf("with $%s and --socket: exit %d, %q", socketEnv, code, out)
	}
	t.Setenv(socketEnv, filepath.Join(t.TempDir(), "none.sock"))
	if out, code := runCtl(t, "status"); code == 0 || !strings.Contains(out, "none.sock") {
		t.Errorf("$%s naming no socket: exit %d, %q", socketEnv, code, out)
	}

	t.Setenv(socketEnv, "")
	if got := newRoot().PersistentFlags().Lookup("socket").DefValue; got != "/run/bastiond/admin.sock" {
		t.Errorf("without $%s the socket is %q", socketEnv, got)
	}
}
