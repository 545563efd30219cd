package watch

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// drain reads w until it has nothing queued, and returns what it read and
// the error it stopped with (nil: still live).
func drain(t *testing.T, w *Watcher) ([]Frame, error) {
	t.Helper()
	var all []Frame
	for range 1000 {
		fs, err := w.Next()
		if err != nil {
			return all, err
		}
		if len(fs) == 0 {
			return all, nil
		}
		all = append(all, fs...)
	}
	t.Fatal("the watcher never ran dry")
	return nil, nil
}

func data(fs []Frame) string {
	var b bytes.Buffer
	for _, f := range fs {
		if f.Kind == Output {
			b.Write(f.Data)
		}
	}
	return b.String()
}

func TestCatchUpHeadAndTail(t *testing.T) {
	h := NewHub()
	s := h.Open(Info{Session: "0123456789ab", Protocol: "rdp"}, Limits{Head: 4, Tail: 6, Queue: 100}, nil)
	defer s.Close()
	s.Publish(Size, []byte(`{"width":800,"height":600}`))
	for _, p := range []string{"ab", "cd", "e", "fgh", "ij", "kl", "mn"} {
		s.Publish(Output, []byte(p))
	}
	w, err := s.Subscribe("carol")
	if err != nil {
		t.Fatal(err)
	}
	got, err := drain(t, w)
	if err != nil {
		t.Fatal(err)
	}
	if got[0].Kind != Size || string(got[0].Data) != `{"width":800,"height":600}` {
		t.Errorf("first frame %q, want the size", got[0].Data)
	}
	// head: ab cd (4 bytes; "e" would make 5); tail: the last 6 bytes of
	// whole frames after: ij kl mn.
	if d := data(got); d != "abcdijklmn" {
		t.Errorf("catch-up %q, want abcdijklmn", d)
	}
	s.Publish(Output, []byte("live"))
	got, _ = drain(t, w)
	if d := data(got); d != "live" {
		t.Errorf("live %q", d)
	}
}

func TestTailOnlyKeepsTheLatest(t *testing.T) {
	h := NewHub()
	s := h.Open(Info{Session: "a"}, Limits{Tail: 3}, nil)
	defer s.Close()
	s.Publish(Output, []byte("12"))
	s.Publish(Output, []byte("3456")) // larger than the tail: clears it
	s.Publish(Output, []byte("7"))
	s.Publish(Output, []byte("89"))
	w, _ := s.Subscribe("x")
	got, _ := drain(t, w)
	if d := data(got); d != "789" {
		t.Errorf("catch-up %q, want 789", d)
	}
}

func TestSlowWatcherIsDroppedNotTheSession(t *testing.T) {
	h := NewHub()
	var mu sync.Mutex
	var changes [][]string
	s := h.Open(Info{Session: "a"}, Limits{Tail: 10, Queue: 10}, func(names []string) {
		mu.Lock()
		changes = append(changes, names)
		mu.Unlock()
	})
	defer s.Close()
	slow, _ := s.Subscribe("slow")
	fast, _ := s.Subscribe("fast")
	for i := range 100 {
		s.Publish(Output, []byte{'0' + byte(i%10), '.'})
		if i%2 == 0 {
			if _, err := drain(t, fast); err != nil {
				t.Fatalf("the reading watcher was dropped: %v", err)
			}
		}
	}
	if _, err := slow.Next(); !errors.Is(err, ErrBehind) {
		t.Fatalf("slow watcher: %v, want ErrBehind", err)
	}
	if got := s.Watchers(); !reflect.DeepEqual(got, []string{"fast"}) {
		t.Errorf("watchers %q, want fast only", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{"slow"}, {"fast", "slow"}, {"fast"}}
	if !reflect.DeepEqual(changes, want) {
		t.Errorf("changes %q, want %q", changes, want)
	}
}

func TestEndAndLeave(t *testing.T) {
	h := NewHub()
	s := h.Open(Info{Session: "a"}, SSHLimits, nil)
	w, _ := s.Subscribe("x")
	l, _ := s.Subscribe("y")
	l.Leave()
	if _, err := l.Next(); !errors.Is(err, ErrLeft) {
		t.Errorf("left watcher: %v", err)
	}
	s.Publish(Output, []byte("last"))
	s.Close()
	if _, ok := h.Get("a"); ok {
		t.Error("a closed stream is still in the hub")
	}
	got, err := drain(t, w)
	if d := data(got); d != "last" || !errors.Is(err, ErrEnded) {
		t.Errorf("after the end: %q, %v; want the last output, then ErrEnded", d, err)
	}
	if _, err := s.Subscribe("z"); !errors.Is(err, ErrEnded) {
		t.Errorf("subscribe to an ended stream: %v", err)
	}
	s.Publish(Output, []byte("nothing")) // no panic, nothing kept
}

func TestTooManyWatchers(t *testing.T) {
	s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
	defer s.Close()
	for range MaxWatchers {
		if _, err := s.Subscribe("x"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Subscribe("x"); !errors.Is(err, ErrTooMany) {
		t.Errorf("one too many: %v", err)
	}
}

func TestWaitWakes(t *testing.T) {
	s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
	w, _ := s.Subscribe("x")
	go s.Publish(Output, []byte("x"))
	select {
	case <-w.Wait():
	case <-time.After(10 * time.Second):
		t.Fatal("no wake-up")
	}
	s.Close()
}

func TestHubList(t *testing.T) {
	h := NewHub()
	t0 := time.Now()
	b := h.Open(Info{Session: "b", Start: t0.Add(time.Second)}, SSHLimits, nil)
	a := h.Open(Info{Session: "a", Start: t0}, SSHLimits, nil)
	if l := h.List(); len(l) != 2 || l[0].Session != "a" {
		t.Errorf("list %+v", l)
	}
	a.Close()
	b.Close()
	if l := h.List(); len(l) != 0 {
		t.Errorf("list after close %+v", l)
	}
}

// letters is a Boundary for frames named by their first byte: S a whole
// one, F the first of a sequence, N a middle one, L the last.
func letters(p []byte) (cleanStart, openEnd bool) {
	switch p[0] {
	case 'F':
		return true, true
	case 'N':
		return false, true
	case 'L':
		return false, false
	}
	return true, false
}

// TestBoundaries: a catch-up never cuts a sequence: the head ends where
// none is open, the tail starts at a clean start, and a watcher who joins
// in the middle of one without its start gets the live frames from the
// next clean start.
func TestBoundaries(t *testing.T) {
	for _, tc := range []struct {
		name      string
		published string // one frame per letter
		live      string // published after the watcher joined
		want      string // what the watcher gets
	}{
		{"whole frames", "SSSSSS", "S", "SSS" + "SSS" + "S"},             // head SSS, tail SSS
		{"head ends open", "SSFNLSSS", "S", "SS" + "SSS" + "S"},          // head SSF without its F, tail SSS
		{"tail starts mid-sequence", "SSSFNNLS", "S", "SSS" + "S" + "S"}, // tail NLS: starts at S
		{"joined mid-sequence", "SSSFNNN", "NLFLS", "SSS" + "FLS"},       // tail NNN unusable: live from F
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := NewHub().Open(Info{Session: "a"}, Limits{Head: 3, Tail: 3, Queue: 100, Boundary: func() func([]byte) (bool, bool) { return letters }}, nil)
			defer s.Close()
			for _, c := range tc.published {
				s.Publish(Output, []byte{byte(c)})
			}
			w, _ := s.Subscribe("x")
			for _, c := range tc.live {
				s.Publish(Output, []byte{byte(c)})
			}
			got, _ := drain(t, w)
			if d := data(got); d != tc.want {
				t.Errorf("got %q, want %q", d, tc.want)
			}
		})
	}
}

// TestTinyFramesCoalesce: a terminal's tail of keystroke echoes is kept in
// a few chunks, not a frame per byte, and is still the stream's latest
// bytes, a suffix of what was shown.
func TestTinyFramesCoalesce(t *testing.T) {
	s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
	defer s.Close()
	var all bytes.Buffer
	for i := range 200_000 {
		b := []byte{'a' + byte(i%26)}
		all.Write(b)
		s.Publish(Output, b)
	}
	w, _ := s.Subscribe("x")
	got, _ := drain(t, w)
	d := data(got)
	chunk := min(coalesce, SSHLimits.Tail/16)
	if len(d) > SSHLimits.Tail || len(d) < SSHLimits.Tail-chunk || !strings.HasSuffix(all.String(), d) {
		t.Errorf("catch-up of %d bytes, a suffix: %v", len(d), strings.HasSuffix(all.String(), d))
	}
	if len(got) > SSHLimits.Tail/chunk+1 {
		t.Errorf("the catch-up is %d frames", len(got))
	}
	s.mu.Lock()
	kept := len(s.tail) - s.tailOff
	s.mu.Unlock()
	if kept > SSHLimits.Tail/chunk+1 {
		t.Errorf("the tail holds %d frames", kept)
	}
}

// TestPublishKeepsNoCallerBytes: Publish copies what it keeps, with and
// without watchers, so a relay may reuse its read buffer; a watcher's
// queued frames never change as later output joins (and grows) the chunk
// they came from; and a quiet terminal's catch-up holds chunks sized to
// its output, not full ones.
func TestPublishKeepsNoCallerBytes(t *testing.T) {
	s := NewHub().Open(Info{Session: "a"}, SSHLimits, nil)
	defer s.Close()
	buf := make([]byte, 1)
	var all bytes.Buffer
	publish := func(c byte) {
		buf[0] = c
		all.WriteByte(c)
		s.Publish(Output, buf)
		buf[0] = '!' // the relay's next read
	}
	s.Publish(Size, []byte(`{"cols":80,"rows":24}`))
	for _, c := range []byte("login: ") {
		publish(c)
	}
	s.mu.Lock()
	if c := cap(s.tail[len(s.tail)-1].Data); c > minChunk {
		t.Errorf("7 bytes of output are kept in a chunk of %d", c)
	}
	s.mu.Unlock()
	early, _ := s.Subscribe("early")
	for i := range 3000 { // the chunk grows, several times, while early's queue holds parts of it
		publish('a' + byte(i%26))
	}
	late, _ := s.Subscribe("late")
	for _, w := range []*Watcher{early, late} {
		got, err := drain(t, w)
		if err != nil {
			t.Fatal(err)
		}
		if d := data(got); !strings.HasSuffix(all.String(), d) || strings.Contains(d, "!") {
			t.Errorf("%s read %d bytes that are not the end of the output", w.Name(), len(d))
		} else if w == early && d != all.String() {
			t.Errorf("early read %d bytes, want all %d", len(d), all.Len())
		}
		if string(s.Size()) != `{"cols":80,"rows":24}` {
			t.Errorf("size %s", s.Size())
		}
	}
}
