package relaybuf

import (
	"bytes"
	"io"
	"testing"
	"testing/iotest"
)

// chunks returns each of its slices from one Read.
type chunks [][]byte

func (c *chunks) Read(p []byte) (int, error) {
	if len(*c) == 0 {
		return 0, io.EOF
	}
	n := copy(p, (*c)[0])
	(*c)[0] = (*c)[0][n:]
	if len((*c)[0]) == 0 {
		*c = (*c)[1:]
	}
	return n, nil
}

func TestReaderBuffers(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 3*Large)
	src := chunks{[]byte("quiet"), big, []byte("ok")}
	r := NewReader(&src, 2<<10)
	defer r.Close()
	var got []int // buffer capacity of each read
	var all []byte
	for {
		p, err := r.Read()
		all = append(all, p...)
		got = append(got, cap(p))
		if err != nil {
			break
		}
	}
	if !bytes.Equal(all, append(append([]byte("quiet"), big...), "ok"...)) {
		t.Fatalf("read %d bytes, not what was written", len(all))
	}
	// quiet on the small buffer; the first large chunk fills it; then the
	// large buffer while data flows; back to small after a short read.
	want := []int{2 << 10, 2 << 10, Large, Large, Large, Large, 2 << 10}
	if len(got) < len(want) {
		t.Fatalf("buffer sizes %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("buffer sizes %v, want %v", got, want)
		}
	}
	if r.big != nil {
		t.Error("a short read kept the large buffer")
	}
}

func TestReaderSmallerThanHot(t *testing.T) {
	r := NewReader(iotest.OneByteReader(bytes.NewReader(make([]byte, 4096))), 512)
	defer r.Close()
	r.Read()
	if r.big != nil {
		t.Error("one byte took the large buffer")
	}
	r = NewReader(bytes.NewReader(make([]byte, 4096)), 512)
	r.Read() // fills the 512-byte buffer
	if p, _ := r.Read(); cap(p) != Large {
		t.Errorf("a full small buffer did not move to the large one: cap %d", cap(p))
	}
	r.Close()
}
