package recording

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type event struct {
	t    float64
	code string
	data string
}

// parse reads a recording back as asciinema would: a header object, then
// one [time, code, data] array per line.
func parse(t *testing.T, path string) (map[string]any, []event) {
	t.Helper()
	b := readPlain(t, path)
	if !bytes.HasSuffix(b, []byte("\n")) {
		t.Fatalf("recording does not end with a newline: %q", b)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	var h map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &h); err != nil {
		t.Fatalf("header %q: %v", lines[0], err)
	}
	var evs []event
	for _, l := range lines[1:] {
		var raw []any
		if err := json.Unmarshal([]byte(l), &raw); err != nil {
			t.Fatalf("event %q: %v", l, err)
		}
		if len(raw) != 3 {
			t.Fatalf("event %q: %d elements", l, len(raw))
		}
		tm, ok1 := raw[0].(float64)
		code, ok2 := raw[1].(string)
		data, ok3 := raw[2].(string)
		if !ok1 || !ok2 || !ok3 {
			t.Fatalf("event %q: wrong types", l)
		}
		evs = append(evs, event{tm, code, data})
	}
	return h, evs
}

// readPlain reads a recording's bytes, decompressed; a gzip stream not
// closed yet reads up to its last flush.
func readPlain(t testing.TB, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !strings.HasSuffix(path, ".gz") {
		b, err := io.ReadAll(f)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, err := io.ReadAll(zr)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func output(evs []event) string {
	var b strings.Builder
	for _, e := range evs {
		if e.code == "o" {
			b.WriteString(e.data)
		}
	}
	return b.String()
}

func TestRoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "recordings")
	r, err := Create(dir, "5f2c0a9e13b7", Header{Width: 120, Height: 40, Title: "lab@vm1 by alice"})
	if err != nil {
		t.Fatal(err)
	}
	chunks := []string{"$ ls\r\n", "a \"quoted\" \\ back\tslash\x1b[0m\x00\x07", "é€😀 ok\r\n", "\u2028 line sep"}
	for _, c := range chunks {
		if err := r.Output([]byte(c)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := r.Output([]byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("Output after Close: %v, want ErrClosed", err)
	}
	if want := filepath.Join(dir, "5f2c0a9e13b7.cast.gz"); r.Path() != want {
		t.Errorf("path %q, want %q", r.Path(), want)
	}
	h, evs := parse(t, r.Path())
	if h["version"] != 2.0 || h["width"] != 120.0 || h["height"] != 40.0 || h["title"] != "lab@vm1 by alice" {
		t.Errorf("header %v", h)
	}
	if ts, _ := h["timestamp"].(float64); time.Since(time.Unix(int64(ts), 0)) > time.Minute {
		t.Errorf("header timestamp %v", h["timestamp"])
	}
	if env, _ := h["env"].(map[string]any); env["TERM"] != "xterm-256color" {
		t.Errorf("header env %v", h["env"])
	}
	if len(evs) != len(chunks) {
		t.Errorf("%d events, want %d", len(evs), len(chunks))
	}
	if got, want := output(evs), strings.Join(chunks, ""); got != want {
		t.Errorf("output %q, want %q", got, want)
	}
}

func TestUTF8Split(t *testing.T) {
	tests := []struct {
		name   string
		chunks []string
		want   string
	}{
		{"two-byte", []string{"caf\xc3", "\xa9!"}, "café!"},
		{"three-byte over three reads", []string{"\xe2", "\x82", "\xac"}, "€"},
		{"four-byte", []string{"a\xf0\x9f", "\x98\x80b"}, "a😀b"},
		{"four-byte one at a time", []string{"\xf0", "\x9f", "\x98", "\x80"}, "😀"},
		{"invalid byte", []string{"a\xffb"}, "a\ufffdb"},
		{"stray continuation", []string{"\x80x"}, "\ufffdx"},
		{"broken sequence", []string{"\xe2\x82", "x"}, "\ufffd\ufffdx"},
		{"incomplete at close", []string{"ok\xe2\x82"}, "ok\ufffd\ufffd"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range tt.chunks {
				if err := r.Output([]byte(c)); err != nil {
					t.Fatal(err)
				}
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			_, evs := parse(t, r.Path()) // each line is valid JSON
			if got := output(evs); got != tt.want {
				t.Errorf("output %q, want %q", got, tt.want)
			}
		})
	}
}

// TestResize: resizes, and markers, are events of their own between outputs.
func TestResize(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("before"))
	if err := r.Resize(132, 43); err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("after"))
	if err := r.Marker("file upload: /home/lab/a \"b\" é.txt"); err != nil {
		t.Fatal(err)
	}
	r.Close()
	_, evs := parse(t, r.Path())
	want := []event{{code: "o", data: "before"}, {code: "r", data: "132x43"}, {code: "o", data: "after"},
		{code: "m", data: "file upload: /home/lab/a \"b\" é.txt"}}
	if len(evs) != len(want) {
		t.Fatalf("events %v", evs)
	}
	for i := range want {
		if evs[i].code != want[i].code || evs[i].data != want[i].data {
			t.Errorf("event %d: %v, want %v", i, evs[i], want[i])
		}
	}
}

func TestTimingMonotonic(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		if i%50 == 0 {
			time.Sleep(20 * time.Millisecond)
		}
		r.Output([]byte("x"))
	}
	r.Close()
	_, evs := parse(t, r.Path())
	if len(evs) != 200 {
		t.Fatalf("%d events", len(evs))
	}
	for i := 1; i < len(evs); i++ {
		if evs[i].t < evs[i-1].t {
			t.Fatalf("event %d at %v, before event %d at %v", i, evs[i].t, i-1, evs[i-1].t)
		}
	}
	if last := evs[len(evs)-1].t; last < 0.06 || last > 10 {
		t.Errorf("last event at %vs, want the time slept (about 0.06s)", last)
	}
}

func TestFileModes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "recordings")
	r, err := Create(dir, "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for path, want := range map[string]os.FileMode{dir: 0o700 | os.ModeDir, r.Path(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", path, fi.Mode(), want)
		}
	}
	if _, err := Create(dir, "s1", Header{}); !errors.Is(err, os.ErrExist) {
		t.Errorf("second Create of the same session: %v, want ErrExist", err)
	}
	for _, id := range []string{"", "../etc", "a/b", "x.cast"} {
		if _, err := Create(dir, id, Header{}); err == nil {
			t.Errorf("Create with session ID %q succeeded", id)
		}
	}
}

func TestFlushedWithinInterval(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	r.Output([]byte("visible"))
	deadline := time.Now().Add(FlushInterval + 2*time.Second)
	for {
		if bytes.Contains(readPlain(t, r.Path()), []byte("visible")) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("output not in the file after %v", FlushInterval+2*time.Second)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestWriteFailureEndsRecording(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	r.f.Close()                                   // the disk goes away
	big := make([]byte, 3*bufio.MaxScanTokenSize) // random: the compressor must pass it on
	rand.Read(big)
	for i := range big {
		big[i] = 'a' + big[i]%26
	}
	err = r.Output(big)
	if err == nil {
		t.Fatal("Output to a closed file succeeded")
	}
	if !strings.Contains(err.Error(), r.Path()) {
		t.Errorf("error %q does not name the file", err)
	}
	if err2 := r.Resize(1, 1); err2 != err {
		t.Errorf("Resize after failure: %v, want %v", err2, err)
	}
	if err2 := r.Close(); err2 != err {
		t.Errorf("Close after failure: %v, want %v", err2, err)
	}
}

// FuzzOutput checks that output split anywhere is recorded as valid JSON
// lines that together read as the whole output decoded at once (a U+FFFD
// for each byte that is not UTF-8).
func FuzzOutput(f *testing.F) {
	f.Add([]byte("plain \"text\"\r\n\x1b[0m"), []byte{3})
	f.Add([]byte("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"), []byte{4, 1, 1, 2})
	f.Add([]byte("\xff\xe2\x82x\xf0\x9f"), []byte{1, 2})
	f.Fuzz(func(t *testing.T, data, splits []byte) {
		r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
		if err != nil {
			t.Fatal(err)
		}
		rest := data
		for i := 0; len(rest) > 0; i++ {
			n := len(rest)
			if i < len(splits) {
				n = min(n, int(splits[i])+1)
			}
			if err := r.Output(rest[:n]); err != nil {
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		var want strings.Builder
		for _, c := range string(data) {
			want.WriteRune(c)
		}
		_, evs := parse(t, r.Path())
		if got := output(evs); got != want.String() {
			t.Errorf("recorded %q, want %q", got, want.String())
		}
	})
}

func BenchmarkOutput(b *testing.B) {
	r, err := Create(b.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	p := []byte("drwxr-xr-x  2 lab lab 4096 Jan  1 00:00 \x1b[01;34mdir\x1b[0m\r\n")
	b.ReportAllocs()
	b.SetBytes(int64(len(p)))
	for b.Loop() {
		r.Output(p)
	}
}
