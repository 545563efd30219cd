package recording

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"math/rand"
	"os"
	"strings"
	"testing"
)

// TestStreamAcrossFlushes: a recording flushed many times, with flushes
// of a few bytes, of screens that repeat earlier ones (which the next
// flush compresses against what it flushed before), and of bursts larger
// than a block, is one gzip stream whose checksum and length hold (Go's
// reader checks them at its end), readable after each flush up to that
// flush, and ending with the sync marker until it is closed.
func TestStreamAcrossFlushes(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 120, Height: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	rnd := rand.New(rand.NewSource(1))
	noise := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(0x20 + rnd.Intn(0x5f)) // printable: recorded as it is
		}
		return string(b)
	}
	screen := "\x1b[H" + noise(3000) // nothing in it repeats: only an earlier flush can compress it
	var want strings.Builder
	cases := []string{"x", "\r\n", screen, "y", screen, noise(3*blockSize + 17), screen[:100],
		strings.Repeat("\x00\x1b", blockSize), "é€😀", screen}
	sizes := make([]int64, 0, len(cases))
	for i, c := range cases {
		if err := r.Output([]byte(c)); err != nil {
			t.Fatal(err)
		}
		r.flushLater()
		want.WriteString(c)
		_, evs := parse(t, r.Path())
		if got := output(evs); got != want.String() {
			t.Fatalf("after flush %d: %d bytes of output read back, want %d", i, len(got), want.Len())
		}
		if !unfinished(r.Path()) {
			t.Fatalf("after flush %d: the file does not end with the sync marker", i)
		}
		sizes = append(sizes, r.Size())
	}
	// The second screen, flushed after "y", refers back to the first one.
	if first, second := sizes[2]-sizes[1], sizes[4]-sizes[3]; second*4 > first {
		t.Errorf("a screen flushed after the same screen took %d bytes, the first one %d: no back-references", second, first)
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if unfinished(r.Path()) {
		t.Error("a closed recording ends with the sync marker, not the trailer")
	}
	f, err := os.Open(r.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	zr.Multistream(false)
	plain, err := io.ReadAll(zr) // checks the CRC-32 and the length
	if err != nil {
		t.Fatalf("reading the closed recording: %v", err)
	}
	if rest, _ := io.ReadAll(f); len(rest) != 0 {
		t.Errorf("%d bytes after the gzip stream", len(rest))
	}
	if !bytes.HasSuffix(plain, []byte("\n")) || bytes.Count(plain, []byte("\n")) != len(cases)+1 {
		t.Errorf("%d lines, want a header and %d events", bytes.Count(plain, []byte("\n")), len(cases))
	}
}

// TestEventBufferLetGo: after a burst, a flush lets the large event
// buffer go (back to the pool), so an idle recording keeps a small one,
// and the dictionary's array never outgrows dictSize.
func TestEventBufferLetGo(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for i, n := range []int{10, keepBuf * 2, dictSize - 100, 3000, blockSize * 3, 1} {
		r.Output([]byte(strings.Repeat("a", n)))
		r.flushLater()
		r.mu.Lock()
		buf, big, dict := cap(r.gz.buf), r.gz.big, cap(r.gz.dict)
		r.mu.Unlock()
		if buf > keepBuf || big != nil || dict > dictSize {
			t.Errorf("%s after flush %d: event buffer of %d bytes (pooled: %v), dictionary of %d", fmt.Sprint(n), i, buf, big != nil, dict)
		}
	}
}
