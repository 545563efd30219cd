package adminclient

import (
	"context"
	"net"
	"path/filepath"
	"runtime"
	"testing"
)

// TestNotRunning: a socket path with nothing behind it, whether the file
// is missing or left by a daemon that is gone, is told as "bastiond is not
// running", naming the path.
func TestNotRunning(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("the admin socket is on the bastion host (Linux)")
	}
	dir := t.TempDir()
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.Listen("unix", stale)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	for name, path := range map[string]string{"missing": filepath.Join(dir, "none.sock"), "stale": stale} {
		t.Run(name, func(t *testing.T) {
			_, err := NewClient(path).Status(context.Background())
			if err == nil || err.Error() != "bastiond is not running (nothing answers on "+path+")" {
				t.Errorf("Status: %v", err)
			}
		})
	}
}
