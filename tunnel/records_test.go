package tunnel

import (
	"bytes"
	"net"
	"testing"
)

// writesConn records the writes that reach it.
type writesConn struct {
	net.Conn
	writes [][]byte
}

func (c *writesConn) Write(p []byte) (int, error) {
	c.writes = append(c.writes, bytes.Clone(p))
	return len(p), nil
}

func TestRecordConnGathersFrames(t *testing.T) {
	under := &writesConn{}
	rc := newRecordConn(under)
	piece := bytes.Repeat([]byte{1}, wsLibraryBuffer)
	var want []byte
	for range 5 { // the middle of a frame: held
		rc.Write(piece)
		want = append(want, piece...)
	}
	if len(under.writes) != 0 {
		t.Fatalf("%d writes before the frame's end", len(under.writes))
	}
	rc.Write([]byte("end")) // the frame's end: everything, in one write
	want = append(want, "end"...)
	if len(under.writes) != 1 || !bytes.Equal(under.writes[0], want) {
		t.Fatalf("writes %d, want one of %d bytes", len(under.writes), len(want))
	}

	// More than maxGathered: written in pieces of at most maxGathered, in order.
	under.writes = nil
	want = want[:0]
	for i := range 40 {
		p := bytes.Repeat([]byte{byte(i)}, wsLibraryBuffer)
		rc.Write(p)
		want = append(want, p...)
	}
	rc.Write([]byte{0xff})
	want = append(want, 0xff)
	var got []byte
	for _, w := range under.writes {
		if len(w) > maxGathered+1 {
			t.Errorf("a write of %d bytes", len(w))
		}
		got = append(got, w...)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%d bytes arrived, want %d in order", len(got), len(want))
	}

	// A frame ending on a buffer boundary waits for Flush.
	under.writes = nil
	rc.Write(piece)
	if len(under.writes) != 0 {
		t.Fatal("a held piece was written before Flush")
	}
	if err := rc.Flush(); err != nil || len(under.writes) != 1 || len(under.writes[0]) != wsLibraryBuffer {
		t.Fatalf("flush: %v, writes %d", err, len(under.writes))
	}
	if err := rc.Flush(); err != nil || len(under.writes) != 1 {
		t.Fatalf("an empty flush wrote: %v, %d", err, len(under.writes))
	}
}
