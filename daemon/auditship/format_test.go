package auditship

import (
	"bytes"
	"regexp"
	"strconv"
	"testing"

	"github.com/bastiond/bastiond/internal/audit"
)

var header5424 = regexp.MustCompile(`^<([0-9]{1,3})>1 (-|[0-9T:.Z-]+) [!-~]{1,255} [!-~]{1,48} [!-~]{1,128} [!-~]{1,32} \[bastiond@32473 hash="[0-9a-f]{64}"( prev="([^"\\\]]|\\["\\\]])*")?( v="([^"\\\]]|\\["\\\]])*")?\] `)

// Whatever a line holds, its message is one well-formed RFC 5424 header
// followed by the line unchanged, and its frame's length is exact.
func FuzzMessage(f *testing.F) {
	lines, _ := trailLines(3, audit.Zero)
	for _, l := range lines {
		f.Add(l)
	}
	f.Add([]byte(`{"event":"a b\u0000c ]\"","prev":"x\"]\\","v":"\"]","time":"not a time"}`))
	f.Add([]byte(`not json`))
	f.Add([]byte{})
	h := header{facility: 23, hostname: "h", appName: "a", procID: "1"}
	f.Fuzz(func(t *testing.T, line []byte) {
		m := h.message(line)
		loc := header5424.FindIndex(m)
		if loc == nil {
			t.Fatalf("not an RFC 5424 header: %q", m)
		}
		if !bytes.Equal(m[loc[1]:], line) {
			t.Fatalf("MSG %q is not the line %q", m[loc[1]:], line)
		}
		fr := frame(nil, m)
		n, rest, _ := bytes.Cut(fr, []byte(" "))
		if l, err := strconv.Atoi(string(n)); err != nil || l != len(rest) || !bytes.Equal(rest, m) {
			t.Fatalf("frame %q", fr)
		}
	})
}
