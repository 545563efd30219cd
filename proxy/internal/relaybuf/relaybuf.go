// Package relaybuf lends relays their copy buffers. An idle direction must
// not pin a large buffer (thousands of idle sessions must stay small), so a
// Reader waits for data on a small buffer of its own and reads on a large
// pooled one only while data flows.
package relaybuf

import (
	"io"
	"sync"
)

const (
	// Large is the size of the pooled buffers.
	Large = 32 << 10
	// hot is a read big enough to take (or keep) a large buffer.
	hot = 1 << 10
)

var pool = sync.Pool{New: func() any { b := make([]byte, Large); return &b }}

// Get lends a large buffer; Put gives it back.
func Get() *[]byte { return pool.Get().(*[]byte) }

// Put gives back a buffer from Get.
func Put(b *[]byte) { pool.Put(b) }

// Reader reads a source on a small buffer while it is quiet and on a large
// pooled one while data flows. It is not safe for concurrent use.
type Reader struct {
	src   io.Reader
	small []byte
	big   *[]byte
	last  int // bytes the previous Read returned
}

// NewReader reads src, waiting on a buffer of small bytes.
func NewReader(src io.Reader, small int) *Reader {
	return &Reader{src: src, small: make([]byte, small)}
}

// Read reads src once. What it returns is valid until the next Read or
// Close: the buffer changes only here, once the caller is done with it.
func (r *Reader) Read() ([]byte, error) {
	switch {
	case r.big == nil && r.last >= min(hot, len(r.small)):
		r.big = Get()
	case r.big != nil && r.last < hot:
		Put(r.big)
		r.big = nil
	}
	buf := r.small
	if r.big != nil {
		buf = *r.big
	}
	n, err := r.src.Read(buf)
	r.last = n
	return buf[:n], err
}

// Close gives the large buffer back, if the Reader holds one.
func (r *Reader) Close() {
	if r.big != nil {
		Put(r.big)
		r.big = nil
	}
}
