//go:build linux

package main

import (
	"context"
	"encoding/json"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/admin"
	"github.com/bastiond/bastiond/daemon/adminapi"
)

// statusServer serves the admin API on a new socket whose status names
// version, and returns the socket's path.
func statusServer(t *testing.T, version string) string {
	t.Helper()
	return statusServerOf(t, admin.Status{Version: version})
}

// statusServerOf serves the admin API on a new socket whose status is st.
func statusServerOf(t *testing.T, st admin.Status) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := adminapi.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := adminapi.NewServer(adminapi.Config{Logger: zaptest.NewLogger(t),
		Status: func() admin.Status { return st }})
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

// TestStatusCluster: in a cluster, status shows each instance's load as
// its heartbeat says (units used of its capacity, sessions, draining or
// full), marks this one, and --json carries the same figures.
func TestStatusCluster(t *testing.T) {
	now := time.Date(2026, 12, 7, 6, 0, 0, 0, time.UTC)
	st := admin.Status{Version: "v1", Now: now, Started: now, Instance: "bastion-b", Cluster: []admin.Instance{
		{Name: "bastion-a", Version: "v1", PID: 811, Addresses: []netip.Addr{netip.MustParseAddr("10.20.0.11"), netip.MustParseAddr("2001:db8:20::11")},
			Seen: now.Add(-2 * time.Second), Load: admin.Load{Capacity: 100, Used: 12, Sessions: 9}},
		{Name: "bastion-b", Version: "v1", PID: 812, Seen: now.Add(-time.Second), Load: admin.Load{Capacity: 20, Used: 20, Sessions: 10}},
		{Name: "bastion-c", Version: "v0", PID: 813, Seen: now.Add(-4 * time.Second), Load: admin.Load{Capacity: 100, Used: 2, Sessions: 1, Draining: true}},
	}}
	t.Setenv(socketEnv, statusServerOf(t, st))
	out, code := runCtl(t, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	var got []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "instance ") {
			got = append(got, strings.TrimSpace(strings.TrimPrefix(l, "instance")))
		}
	}
	want := []string{
		"bastion-a: 12 of 100 units used (12%), 9 sessions; v1 pid 811, heard 2s ago",
		"bastion-b: 20 of 20 units used (100%), 10 sessions, full; v1 pid 812, heard 1s ago (this instance)",
		"bastion-c: 2 of 100 units used (2%), 1 sessions, draining; v0 pid 813, heard 4s ago",
	}
	if !slices.Equal(got, want) {
		t.Errorf("status:\n%s\ninstance lines %q, want %q", out, got, want)
	}

	out, code = runCtl(t, "status", "--json")
	var back admin.Status
	if err := json.Unmarshal([]byte(out), &back); code != 0 || err != nil {
		t.Fatalf("status --json: exit %d, %v: %s", code, err, out)
	}
	if back.Instance != "bastion-b" || len(back.Cluster) != 3 || back.Cluster[1].Load != st.Cluster[1].Load ||
		!slices.Equal(back.Cluster[0].Addresses, st.Cluster[0].Addresses) {
		t.Errorf("status --json: %+v", back)
	}
}
