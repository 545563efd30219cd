package recording

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
)

// file writes a recording file of size bytes, last written at mod.
func file(t *testing.T, dir, name string, size int, mod time.Time) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, bytes.Repeat([]byte{'x'}, size), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestListAndFind(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	file(t, dir, "aaaaaaaaaaa1.cast", 10, now.Add(-3*time.Hour))
	file(t, dir, "aaaaaaaaaaa2.cast.gz", 20, now.Add(-2*time.Hour))
	file(t, dir, "aaaaaaaaaaa3.rdp.gz", 30, now.Add(-time.Hour))
	file(t, dir, "notes.txt", 1, now)
	file(t, dir, "a.b.cast", 1, now)
	os.Mkdir(filepath.Join(dir, "sub.cast"), 0o700)
	list, err := List(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, i := range list {
		got = append(got, i.ID+" "+i.Protocol+" "+map[bool]string{true: "gz", false: "plain"}[i.Compressed])
	}
	want := []string{"aaaaaaaaaaa1 ssh plain", "aaaaaaaaaaa2 ssh gz", "aaaaaaaaaaa3 rdp gz"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("List: %q, want %q", got, want)
	}
	for _, id := range []string{"aaaaaaaaaaa1", "aaaaaaaaaaa2", "aaaaaaaaaaa3"} {
		if i, err := Find(dir, id); err != nil || i.ID != id {
			t.Errorf("Find(%s): %v %v", id, i, err)
		}
	}
	for _, id := range []string{"nope", "../x", "", "notes"} {
		if _, err := Find(dir, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Find(%q): %v, want ErrNotFound", id, err)
		}
	}
	if list, err := List(filepath.Join(dir, "missing")); err != nil || list != nil {
		t.Errorf("List of a missing dir: %v %v", list, err)
	}
}

func TestReadBoth(t *testing.T) {
	dir := t.TempDir()
	r, err := Create(dir, "s1", Header{Width: 80, Height: 24, Title: "lab@vm1 by alice"})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("hello"))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(dir, "s2.cast")
	os.WriteFile(old, []byte(`{"version":2,"width":80,"height":24,"timestamp":1700000000,"title":"old"}`+"\n"+`[0.1, "o", "hi"]`+"\n"), 0o600)
	for id, title := range map[string]string{"s1": "lab@vm1 by alice", "s2": "old"} {
		i, err := Find(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ReadCast(i)
		if err != nil || c.Title != title {
			t.Errorf("ReadCast(%s): %+v %v", id, c, err)
		}
		f, _ := os.Open(i.Path)
		rd, err := Decompressed(f, i)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rd)
		f.Close()
		if err != nil || !bytes.HasPrefix(b, []byte(`{"version":2`)) {
			t.Errorf("Decompressed(%s): %q %v", id, b, err)
		}
	}
	sum, err := FileSHA256(r.Path())
	if err != nil || sum != r.SHA256() || len(sum) != 64 {
		t.Errorf("SHA256 %q, file's %q (%v)", r.SHA256(), sum, err)
	}
	if fi, _ := os.Stat(r.Path()); fi.Size() != r.Size() {
		t.Errorf("Size %d, file's %d", r.Size(), fi.Size())
	}
}

func TestPrune(t *testing.T) {
	now := time.Now()
	day := 24 * time.Hour
	tests := []struct {
		name   string
		limits Limits
		want   []string // removed, in order, "ID reason"
	}{
		{"no limits", Limits{}, nil},
		{"age", Limits{Keep: 10 * day}, []string{"aaaaaaaaaaa1 age", "aaaaaaaaaaa2 age"}},
		{"size", Limits{MaxBytes: 350}, []string{"aaaaaaaaaaa1 size", "aaaaaaaaaaa2 size"}},
		{"age then size", Limits{Keep: 25 * day, MaxBytes: 150}, []string{"aaaaaaaaaaa1 age", "aaaaaaaaaaa2 size", "aaaaaaaaaaa3 size"}},
		{"the one being written stays", Limits{MaxBytes: 1}, []string{"aaaaaaaaaaa1 size", "aaaaaaaaaaa2 size", "aaaaaaaaaaa3 size"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			file(t, dir, "aaaaaaaaaaa1.cast", 100, now.Add(-30*day))
			file(t, dir, "aaaaaaaaaaa2.rdp.gz", 100, now.Add(-20*day))
			file(t, dir, "aaaaaaaaaaa3.cast.gz", 100, now.Add(-5*day))
			live := file(t, dir, "aaaaaaaaaaa4.cast.gz", 100, now.Add(-40*day))
			release := Hold(live)
			defer release()
			// Another process's live recording: a gzip stream that ends
			// with a flush, written 1 minute ago.
			otherPath := file(t, dir, "aaaaaaaaaaa5.cast.gz", 100, now.Add(-time.Minute))
			f, _ := os.OpenFile(otherPath, os.O_WRONLY, 0)
			f.WriteAt([]byte{0, 0, 0xff, 0xff}, 96)
			f.Close()
			os.Chtimes(otherPath, now.Add(-time.Minute), now.Add(-time.Minute))
			removed, err := Prune(dir, tt.limits, now)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range removed {
				got = append(got, r.ID+" "+r.Reason)
				if _, err := os.Stat(r.Path); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s still there", r.Path)
				}
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("removed %q, want %q", got, tt.want)
			}
			if _, err := os.Stat(live); err != nil {
				t.Errorf("the recording being written was removed: %v", err)
			}
			if _, err := os.Stat(otherPath); err != nil {
				t.Errorf("another process's live recording was removed: %v", err)
			}
		})
	}
}

func TestRetentionEvents(t *testing.T) {
	dir := t.TempDir()
	file(t, dir, "aaaaaaaaaaa1.cast.gz", 100, time.Now().Add(-100*24*time.Hour))
	var events []audit.Event
	r := NewRetention(dir, Limits{Keep: 90 * 24 * time.Hour}, audit.SinkFunc(func(e audit.Event) { events = append(events, e) }), zap.NewNop())
	before := counterValue(t, RemovedAge)
	r.Pass(time.Now())
	if len(events) != 1 {
		t.Fatalf("events %+v", events)
	}
	e := events[0]
	if e.Event != audit.RecordingRemoved || e.Reason != "age" || e.Bytes != 100 || e.Session != "aaaaaaaaaaa1" ||
		e.Actor != audit.ActorDaemon || !strings.HasSuffix(e.Recording, "aaaaaaaaaaa1.cast.gz") {
		t.Errorf("event %+v", e)
	}
	if after := counterValue(t, RemovedAge); after != before+1 {
		t.Errorf("bastiond_recordings_removed_total{reason=age}: %v, want %v", after, before+1)
	}
	t.Logf("example line: %s", audit.Marshal(e))
}

func counterValue(t *testing.T, reason string) float64 {
	return testutil.ToFloat64(removedTotal.WithLabelValues(reason))
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory of the
// test's temporary directory, unmounted at cleanup; the test is skipped
// without root.
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs (a full disk)")
	}
	dir := filepath.Join(t.TempDir(), "full")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// fill fills the file system of dir.
func fill(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", dir, err)
			}
			return
		}
	}
}

func TestFullDisk(t *testing.T) {
	t.Run("refused at start", func(t *testing.T) {
		dir := mountTmpfs(t, "64k")
		fill(t, dir)
		_, err := Create(dir, "s1", Header{Width: 80, Height: 24})
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("Create on a full disk: %v, want ENOSPC", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "s1.cast.gz")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the failed recording's file is left: %v", err)
		}
	})
	t.Run("ended while writing", func(t *testing.T) {
		dir := mountTmpfs(t, "64k")
		r, err := Create(dir, "s1", Header{Width: 80, Height: 24})
		if err != nil {
			t.Fatal(err)
		}
		fill(t, dir)
		noise := make([]byte, 32<<10) // does not compress
		rnd := uint32(1)
		var werr error
		for i := 0; i < 64 && werr == nil; i++ {
			for j := range noise {
				rnd = rnd*1664525 + 1013904223
				noise[j] = 'A' + byte(rnd>>24)%64
			}
			werr = r.Output(noise)
		}
		if werr == nil {
			time.Sleep(FlushInterval + 500*time.Millisecond) // the timer's flush fails
			werr = r.Output([]byte("x"))
		}
		if !errors.Is(werr, syscall.ENOSPC) || !strings.Contains(werr.Error(), "s1.cast.gz") {
			t.Fatalf("writing on a full disk: %v, want ENOSPC naming the file", werr)
		}
		if err := r.Close(); !errors.Is(err, syscall.ENOSPC) {
			t.Errorf("Close: %v", err)
		}
		if r.SHA256() != "" {
			t.Errorf("a failed recording has a hash")
		}
	})
}

// TestUnfinished: a live recording's file ends with a flush marker, a
// closed one with the gzip trailer.
func TestUnfinished(t *testing.T) {
	r, err := Create(t.TempDir(), "s1", Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	r.Output([]byte("some output"))
	if !unfinished(r.Path()) {
		t.Error("a live recording (header flushed) reads as finished")
	}
	time.Sleep(FlushInterval + 300*time.Millisecond)
	if !unfinished(r.Path()) {
		t.Error("a live recording (output flushed) reads as finished")
	}
	r.Close()
	if unfinished(r.Path()) {
		t.Error("a closed recording reads as unfinished")
	}
}
