package adminapi

import (
	"context"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/api/adminclient"
)

func TestAllowed(t *testing.T) {
	s := &Server{}
	s.adminGID.Store(4000)
	me := uint32(os.Geteuid())
	tests := []struct {
		name string
		peer Peer
		want bool
	}{
		{"root", Peer{UID: 0, GID: 0}, true},
		{"daemon's own user", Peer{UID: me, GID: 12345}, true},
		{"admin group primary", Peer{UID: 1000, GID: 4000}, true},
		{"admin group supplementary", Peer{UID: 1000, GID: 1000, Groups: []uint32{27, 4000}}, true},
		{"other user", Peer{UID: 1000, GID: 1000, Groups: []uint32{27, 100}}, false},
	}
	for _, tt := range tests {
		if me == tt.peer.UID && tt.name == "other user" {
			t.Skip("test runs as uid 1000")
		}
		t.Run(tt.name, func(t *testing.T) {
			if got := s.allowed(tt.peer); got != tt.want {
				t.Errorf("allowed(%+v) = %v, want %v", tt.peer, got, tt.want)
			}
		})
	}
	s.adminGID.Store(-1)
	if s.allowed(Peer{UID: 1000, GID: 4000}) && me != 1000 {
		t.Error("with no admin group, a non-root peer was allowed")
	}
}

// startServer serves the admin API on a socket in a temporary directory
// and returns its path; with adds endpoints to its Config.
func startServer(t *testing.T, group string, with ...func(*Config)) string {
	t.Helper()
	dir := t.TempDir()
	// Let other users reach the socket: authorization is by peer credentials.
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o755)
	path := filepath.Join(dir, "admin.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{
		Logger: zaptest.NewLogger(t),
		Group:  group,
		Status: func() Status { return Status{Version: "test", Sessions: 3} },
	}
	for _, w := range with {
		w(&cfg)
	}
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Shutdown(context.Background())
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return path
}

func TestStatusOverSocket(t *testing.T) {
	path := startServer(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := adminclient.NewClient(path).Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "test" || st.Sessions != 3 {
		t.Errorf("status = %+v", st)
	}
	// A second daemon must not steal a live socket.
	if _, err := Listen(path); err == nil || !strings.Contains(err.Error(), "another bastiond is running") {
		t.Errorf("Listen on a live socket: %v", err)
	}
}

func TestClientNoDaemon(t *testing.T) {
	_, err := adminclient.NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "bastiond is not running") {
		t.Fatalf("got %v", err)
	}
}

// TestPeerCredentials connects as another user, for real, and checks that
// the kernel's credentials decide: refused without the admin group, allowed
// with it as a supplementary group (SO_PEERGROUPS).
func TestPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another user")
	}
	for _, tool := range []string{"setpriv", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	g, err := user.LookupGroup("users")
	if err != nil {
		t.Skip("no group 'users' on this host")
	}
	path := startServer(t, "users")
	get := func(groups string) string {
		args := []string{"--reuid=65534", "--regid=65534"}
		if groups == "" {
			args = append(args, "--clear-groups")
		} else {
			args = append(args, "--groups="+groups)
		}
		args = append(args, "curl", "-sS", "--unix-socket", path, "http://bastiond/v1/status")
		out, err := exec.Command("setpriv", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("setpriv curl: %v: %s", err, out)
		}
		return string(out)
	}
	if out := get(""); !strings.Contains(out, "permission denied: uid 65534 is not root and not in the bastion admin group") {
		t.Errorf("unprivileged peer got: %s", out)
	}
	if out := get(g.Gid); !strings.Contains(out, `"version": "test"`) {
		t.Errorf("admin-group peer got: %s", out)
	}
}
