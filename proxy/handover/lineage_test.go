package handover

import (
	"testing"
	"time"
)

// newID is an ID c issues now.
func newID(t *testing.T, c *ConnIDs) []byte {
	t.Helper()
	id, err := c.GenerateConnectionID()
	if err != nil {
		t.Fatal(err)
	}
	return id.Bytes()
}

func TestConnIDs(t *testing.T) {
	root := NewLineage()
	now := time.Now()
	for _, gen := range []uint16{0, 1, 2, 65535} {
		l := root
		l.Generation = gen
		c := NewConnIDs(l)
		seen := map[string]bool{}
		for range 100 {
			id := newID(t, c)
			seen[string(id)] = true
			for _, other := range []uint16{0, 1, 2, 65535} {
				o := NewConnIDs(Lineage{Key: root.Key, Born: root.Born, Generation: other})
				if g, ok := o.GenerationOf(id); !ok || g != gen {
					t.Fatalf("generation %d reads %d, %v from an ID of generation %d", other, g, ok, gen)
				}
				if o.Issued(id, now, time.Minute) != (other == gen) {
					t.Fatalf("generation %d takes an ID of generation %d for its own: %v", other, gen, !(other == gen))
				}
			}
		}
		if len(seen) != 100 {
			t.Errorf("%d distinct IDs of 100", len(seen))
		}
	}

	c := NewConnIDs(root)
	id := newID(t, c)
	if _, ok := NewConnIDs(NewLineage()).GenerationOf(id); ok {
		t.Error("an ID read under another lineage's key")
	}
	if _, ok := c.GenerationOf(id[:15]); ok {
		t.Error("a 15-byte ID read")
	}
	if !c.Issued(id, now.Add(30*time.Second), time.Minute) || c.Issued(id, now.Add(2*time.Minute), time.Minute) {
		t.Error("age not checked")
	}

	// A lineage born two days ago, as the successor reads it.
	old := Lineage{Key: root.Key, Born: time.Now().Add(-48 * time.Hour).Round(0), Generation: 3}
	b, err := old.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var l Lineage
	if err := l.UnmarshalBinary(b); err != nil || l.Key != old.Key || !l.Born.Equal(old.Born) || l.Generation != 3 {
		t.Fatalf("%+v, %v", l, err)
	}
	if n := l.Next(); n.Generation != 4 || n.Key != l.Key || !n.Born.Equal(l.Born) {
		t.Errorf("Next: %+v", n)
	}
	c = NewConnIDs(l)
	if !c.Issued(newID(t, c), time.Now(), time.Minute) {
		t.Error("an ID of an old lineage is not recognized")
	}
	for name, b := range map[string][]byte{"empty": nil, "short": b[:lineageLen-1], "version 2": append([]byte{2}, b[1:]...)} {
		if err := l.UnmarshalBinary(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	if _, err := (Lineage{}).MarshalBinary(); err == nil {
		t.Error("a lineage without Born encoded")
	}
}
