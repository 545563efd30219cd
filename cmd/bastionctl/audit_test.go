//go:build linux

package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/broker"
)

// brokerTrail has a real broker write a trail of n events, rotated (as
// logrotate's create and compress do) after the first half: it returns
// the rotated file, compressed, and the current one.
func brokerTrail(t *testing.T, n int) (rotated, current string) {
	t.Helper()
	dir := t.TempDir()
	current = filepath.Join(dir, "audit.jsonl")
	b, err := broker.New(broker.Config{Logger: zaptest.NewLogger(t)},
		broker.Options{LiveDir: filepath.Join(dir, "live"), AuditFile: current})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close(context.Background())
	sources := []string{"192.0.2.7", "2001:db8::7"}
	emit := func(i int) {
		b.Audit(audit.Event{Event: audit.SigninFailed, Actor: "alice", Source: sources[i%2], Reason: "bad_password"})
	}
	for i := range n / 2 {
		emit(i)
	}
	waitLines(t, current, n/2+1) // and the audit_chain_started line
	data, err := os.ReadFile(current)
	if err != nil {
		t.Fatal(err)
	}
	rotated = current + ".1.gz"
	writeGzip(t, rotated, data)
	if err := os.Remove(current); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1100 * time.Millisecond) // the writer looks for a moved file at most once a second
	for i := n / 2; i < n; i++ {
		emit(i)
	}
	if err := b.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	return rotated, current
}

func waitLines(t *testing.T, path string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if data, err := os.ReadFile(path); err == nil && bytes.Count(data, []byte("\n")) >= n {
			return
		}
	}
	t.Fatalf("%s never held %d lines", path, n)
}

func writeGzip(t *testing.T, path string, data []byte) {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
}

func readGzip(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(zr); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func splitLines(data []byte) [][]byte {
	return bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

func joinLines(lines [][]byte) []byte { return append(bytes.Join(lines, []byte("\n")), '\n') }

// TestAuditVerify: a trail a real broker wrote, rotated and compressed in
// the middle, verifies; each kind of tampering is caught at the line it
// breaks, with exit code 1; an unreadable file is exit code 2.
func TestAuditVerify(t *testing.T) {
	rotated, current := brokerTrail(t, 10)
	old, cur := splitLines(readGzip(t, rotated)), splitLines(mustRead(t, current))
	if len(old) != 6 || len(cur) != 6 {
		t.Fatalf("the broker wrote %d and %d lines, want 6 and 6 (5 events after each audit_chain_started)", len(old), len(cur))
	}

	out, code := runCtl(t, "audit", "verify", rotated, current)
	head := audit.HashLine(cur[len(cur)-1]).String()
	for _, want := range []string{"lines read  12", "chained     11", "legacy      0", "head        " + head, "OK"} {
		if !strings.Contains(out, want) || code != 0 {
			t.Fatalf("verify of a good trail exited %d, printed:\n%s\nwant %q", code, out, want)
		}
	}

	dir := t.TempDir()
	edited := bytes.Replace(cur[3], []byte("bad_password"), []byte("bad_code"), 1)
	for _, tc := range []struct {
		name     string
		old, cur [][]byte
		at       string
	}{
		{"edited", old, [][]byte{cur[0], cur[1], cur[2], edited, cur[4], cur[5]}, "audit.jsonl:5: does not follow line 4"},
		{"deleted", old, [][]byte{cur[0], cur[1], cur[2], cur[4], cur[5]}, "audit.jsonl:4: does not follow line 3"},
		{"reordered", [][]byte{old[0], old[2], old[1], old[3], old[4], old[5]}, cur, "audit.jsonl.1.gz:2: does not follow line 1"},
		{"truncated between files", old[:5], cur, "audit.jsonl:1: does not continue the last line of"},
		{"last line of the older file edited", append(old[:5:5], bytes.Replace(old[5], []byte("alice"), []byte("mallory"), 1)), cur,
			"audit.jsonl:1: does not continue the last line of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, c := filepath.Join(dir, tc.name, "audit.jsonl.1.gz"), filepath.Join(dir, tc.name, "audit.jsonl")
			os.MkdirAll(filepath.Dir(r), 0o700)
			writeGzip(t, r, joinLines(tc.old))
			if err := os.WriteFile(c, joinLines(tc.cur), 0o600); err != nil {
				t.Fatal(err)
			}
			out, code := runCtl(t, "audit", "verify", r, c)
			if code != exitBroken || !strings.Contains(out, "BROKEN  ") || !strings.Contains(out, tc.at) || strings.Contains(out, "OK\n") {
				t.Errorf("exit %d, printed:\n%s\nwant exit 1 and %q", code, out, tc.at)
			}
		})
	}

	t.Run("files in the wrong order", func(t *testing.T) {
		// The older file starts a new trail (its first line continues
		// nothing): a restart, which fails the check unless accepted.
		out, code := runCtl(t, "audit", "verify", current, rotated)
		if code != exitBroken || !strings.Contains(out, "RESTART     "+rotated+":1: a new trail starts here") ||
			!strings.Contains(out, "(new file)") || strings.Contains(out, "OK\n") {
			t.Errorf("exit %d, printed:\n%s", code, out)
		}
		out, code = runCtl(t, "audit", "verify", "--allow-restarts", current, rotated)
		if code != 0 || !strings.Contains(out, "RESTART") || !strings.Contains(out, "OK\n") {
			t.Errorf("with --allow-restarts: exit %d, printed:\n%s", code, out)
		}
	})
	t.Run("the rotated file missing", func(t *testing.T) {
		// The current file alone continues a file not given: said, not
		// an error (that file may have been archived).
		out, code := runCtl(t, "audit", "verify", current)
		if code != 0 || !strings.Contains(out, "continues   "+audit.HashLine(old[5]).String()) {
			t.Errorf("exit %d, printed:\n%s", code, out)
		}
	})
	for _, tc := range []struct {
		name string
		path string
		says string
	}{
		{"no such file", filepath.Join(dir, "none.jsonl"), "no such file or directory"},
		{"a directory", dir, "is a directory"},
		{"corrupt gzip", writeFile(t, filepath.Join(dir, "bad.gz"), []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1, 2, 3}), "bad.gz"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runCtl(t, "audit", "verify", rotated, tc.path)
			if code != exitUnreadable || !strings.Contains(out, tc.says) {
				t.Errorf("exit %d, printed:\n%s\nwant exit 2 and %q", code, out, tc.says)
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func writeFile(t *testing.T, path string, data []byte) string {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
