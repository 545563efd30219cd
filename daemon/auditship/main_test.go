package auditship

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"
)

// TestMain fails the package when a test leaves a goroutine behind: a
// destination's Run, a connection's reader.
func TestMain(m *testing.M) {
	before := runtime.NumGoroutine()
	code := m.Run()
	for end := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > before && time.Now().Before(end); {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before && code == 0 {
		buf := make([]byte, 1<<20)
		fmt.Fprintf(os.Stderr, "auditship: %d goroutines left behind (%d before):\n%s", n-before, before, buf[:runtime.Stack(buf, true)])
		code = 1
	}
	os.Exit(code)
}
