package audit

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// trail is n chained lines, the first an audit_chain_started continuing prev.
func trail(n int, prev Hash) [][]byte {
	var lines [][]byte
	for i := range n {
		e := Event{Event: SigninFailed, Actor: "alice", Source: "2001:db8::1", Reason: "bad_password",
			Time: time.Date(2026, 12, 6, 0, 0, i, 0, time.UTC)}
		if i == 0 {
			e = Event{Event: ChainStarted, Actor: ActorDaemon, Source: SourceLocal, Reason: "new file"}
		}
		line := Stamp(Marshal(e), prev)
		prev = HashLine(line)
		lines = append(lines, line)
	}
	return lines
}

func file(name string, lines [][]byte) File {
	return File{Name: name, R: bytes.NewReader(append(bytes.Join(lines, []byte("\n")), '\n'))}
}

func TestVerify(t *testing.T) {
	good := trail(6, Zero)
	rep, err := Verify(file("a", good))
	if err != nil || rep.Broken != nil || rep.Lines != 6 || rep.Chained != 5 || rep.Head != HashLine(good[5]) || rep.Continues != "" {
		t.Fatalf("a good trail: %+v %v", rep, err)
	}

	edited := bytes.Replace(good[3], []byte("bad_password"), []byte("bad_code"), 1)
	reordered := [][]byte{good[0], good[1], good[3], good[2], good[4], good[5]}
	for _, tc := range []struct {
		name  string
		lines [][]byte
		line  int
		says  string
	}{
		{"edited", [][]byte{good[0], good[1], good[2], edited, good[4], good[5]}, 5, "does not follow line 4"},
		{"deleted", [][]byte{good[0], good[1], good[2], good[4], good[5]}, 4, "does not follow line 3"},
		{"reordered", reordered, 3, "does not follow line 2"},
		{"first line deleted", good[1:], 1, "lines before it are missing"},
		{"a line inserted", [][]byte{good[0], good[1], good[1], good[2]}, 3, "does not follow line 2"},
		{"torn", [][]byte{good[0], good[1][:40]}, 2, "not a JSON object"},
		{"unchained line added", [][]byte{good[0], good[1], Marshal(Event{Event: SigninSucceeded})}, 3, "no prev field"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rep, err := Verify(file("a", tc.lines))
			if err != nil {
				t.Fatal(err)
			}
			if rep.Broken == nil || rep.Broken.Line != tc.line || !strings.Contains(rep.Broken.Reason, tc.says) {
				t.Fatalf("got %+v, want line %d: %s", rep.Broken, tc.line, tc.says)
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		second := trail(3, HashLine(good[5]))
		rep, err := Verify(file("a", good), file("b", second))
		if err != nil || rep.Broken != nil || rep.Chained != 8 {
			t.Fatalf("two files: %+v %v", rep, err)
		}
		rep, _ = Verify(file("b", second))
		if rep.Broken != nil || rep.Continues != HashLine(good[5]).String() {
			t.Fatalf("the second alone: %+v", rep)
		}
		rep, _ = Verify(file("a", good[:5]), file("b", second))
		if rep.Broken == nil || rep.Broken.File != "b" || rep.Broken.Line != 1 {
			t.Fatalf("the first cut: %+v", rep.Broken)
		}
		if len(rep.Restarts) != 0 {
			t.Errorf("restarts in a continued trail: %+v", rep.Restarts)
		}
	})

	t.Run("a new trail after the first file", func(t *testing.T) {
		// What files out of order look like, and a daemon that lost the
		// head: verified, and said.
		fresh := trail(3, Zero)
		rep, err := Verify(file("a", good[:4]), file("b", fresh))
		if err != nil || rep.Broken != nil || len(rep.Restarts) != 1 {
			t.Fatalf("%+v %v", rep, err)
		}
		if r := rep.Restarts[0]; r.File != "b" || r.Line != 1 || !strings.Contains(r.Reason, "new trail starts here") ||
			!strings.Contains(r.Reason, "(new file)") {
			t.Errorf("restart: %+v", r)
		}
	})

	t.Run("legacy lines first", func(t *testing.T) {
		legacy := []byte(`{"time":"2026-01-01T00:00:00Z","event":"session_start","session":"0123456789ab"}`)
		lines := append([][]byte{legacy}, trail(3, HashLine(legacy))...)
		rep, _ := Verify(file("a", lines))
		if rep.Broken != nil || rep.Legacy != 1 || rep.Chained != 3 {
			t.Fatalf("%+v", rep)
		}
	})
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		data  string
		line  string
		whole bool
	}{
		{"a\nbc\n", "bc", true},
		{"a\nbc", "bc", false},
		{"abc\n", "abc", true},
	} {
		line, whole, err := Tail(strings.NewReader(tc.data), int64(len(tc.data)))
		if err != nil || string(line) != tc.line || whole != tc.whole {
			t.Errorf("%q: %q %v %v", tc.data, line, whole, err)
		}
	}
	if _, _, err := Tail(strings.NewReader(""), 0); err != ErrNoLine {
		t.Errorf("empty: %v", err)
	}
}

// TestVerifyInstance: a trail whose lines start to carry "instance" (an
// upgrade to a version that writes it) verifies across the change, the
// field is in the line's hash, and moving a line to another instance's
// name breaks the chain.
func TestVerifyInstance(t *testing.T) {
	old := trail(3, Zero)
	prev := HashLine(old[2])
	lines := old
	for i, name := range []string{"bastion-a", "bastion-a"} {
		line := Stamp(Marshal(Event{Event: SessionEnd, Actor: "alice", Source: "192.0.2.10", Instance: name, Session: "aaaa00000001",
			Reason: "abandoned", RecordedBy: "bastion-b", Time: time.Date(2026, 12, 7, 3, 0, i, 0, time.UTC)}), prev)
		if !bytes.Contains(line, []byte(`"source":"192.0.2.10","instance":"bastion-a",`)) || !bytes.Contains(line, []byte(`"recorded_by":"bastion-b"`)) {
			t.Fatalf("line %s", line)
		}
		prev = HashLine(line)
		lines = append(lines, line)
	}
	if rep, err := Verify(file("a", lines)); err != nil || rep.Broken != nil || rep.Chained != 4 {
		t.Fatalf("a trail gaining the instance field: %+v %v", rep, err)
	}
	moved := slices.Clone(lines)
	moved[3] = bytes.Replace(moved[3], []byte(`"instance":"bastion-a"`), []byte(`"instance":"bastion-c"`), 1)
	if rep, _ := Verify(file("a", moved)); rep.Broken == nil || rep.Broken.Line != 5 {
		t.Errorf("an edited instance verified: %+v", rep)
	}
}
