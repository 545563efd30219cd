package auditship

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// TestMain fails the package when a test leaves one of this package's
// goroutines behind: a destination's Run, a connection's reader. Goroutines
// of the testing framework itself (the fuzz coordinator's signal handler,
// for one) are not ours and are not counted.
func TestMain(m *testing.M) {
	code := m.Run()
	var left []string
	for end := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if left = leftBehind(); len(left) == 0 || time.Now().After(end) {
			break
		}
	}
	if len(left) > 0 && code == 0 {
		fmt.Fprintf(os.Stderr, "auditship: %d goroutines left behind:\n%s\n", len(left), strings.Join(left, "\n\n"))
		code = 1
	}
	os.Exit(code)
}

// leftBehind returns the stacks of the goroutines running this package's
// code, other than the one running TestMain.
func leftBehind() []string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var left []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "/daemon/auditship.") && !strings.Contains(g, "auditship.TestMain(") {
			left = append(left, g)
		}
	}
	return left
}
