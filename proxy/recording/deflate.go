package recording

import (
	"bytes"
	"encoding/binary"
	"hash/crc32"
	"io"
	"sync"

	"github.com/klauspost/compress/flate"
)

// A terminal's recording is one gzip stream (RFC 1952) whose deflate
// blocks (RFC 1951) are written at each flush by a compressor that keeps
// nothing between flushes (flate.StatelessDeflate): a recorder holds the
// events waiting for the next flush, the last few KiB of what it flushed,
// and the stream's checksum and length. A deflate compressor kept per
// recording, as compress/gzip's Writer is, holds about 900 KiB (its hash
// chains and window), whether the terminal is busy or idle, which a
// thousand open terminals cannot afford.
//
// Each flush ends on a byte boundary with an empty stored block (the sync
// marker 00 00 ff ff, as a gzip Flush writes, which store.go's unfinished
// looks for), so the file is a readable gzip stream up to its last flush;
// and each flush's blocks may refer back into the previous flushes' data
// (the dictionary below), which a decompressor's window holds, so a
// full-screen program that repaints once a second compresses about as well
// as with a compressor kept throughout.

// dictSize is how much of what was flushed the next flush may refer back
// to: the most flate.StatelessDeflate uses.
const dictSize = 8 << 10

// A flush looks back dictPerByte times as far as it has bytes, and at
// least minDict bytes (within dictSize).
const (
	dictPerByte = 4
	minDict     = 256
)

// blockSize is how many bytes of events wait at most: a terminal that
// shows more within a FlushInterval has them compressed and written at
// once, a block at a time.
const blockSize = 32 << 10

// keepBuf is the largest event buffer kept between flushes; a larger one
// (a burst of output) is let go, so that a terminal that goes quiet keeps
// a small one.
const keepBuf = 1 << 10

// bigPool lends the event buffers of terminals that show more than keepBuf
// between two flushes; a flush gives them back.
var bigPool = sync.Pool{New: func() any { b := make([]byte, 0, blockSize+blockSize/2); return &b }}

// gzipHeader is RFC 1952's header: no name, no time, deflate, unknown OS
// (what compress/gzip writes without a Header).
var gzipHeader = [10]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

// outPool lends the buffers a flush compresses into, so that a flush is
// one write to the file.
var outPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// gzipStream is the state of one recording's gzip stream between flushes.
type gzipStream struct {
	buf  []byte  // events not yet compressed
	big  *[]byte // buf's array, when it is from bigPool
	dict []byte  // the last dictSize bytes compressed
	crc  uint32  // CRC-32 of everything compressed
	size uint32  // bytes compressed, modulo 2^32 (RFC 1952's ISIZE)
}

// start writes the stream's header to w.
func (z *gzipStream) start(w io.Writer) error {
	_, err := w.Write(gzipHeader[:])
	return err
}

// flush compresses the waiting events and writes them to w in one write,
// ending on a byte boundary; final ends the stream instead (the last
// block and the trailer). Nothing is kept of a failed write: the
// recording ends with it.
func (z *gzipStream) flush(w io.Writer, final bool) error {
	if len(z.buf) == 0 && !final {
		return nil
	}
	out := outPool.Get().(*bytes.Buffer)
	defer outPool.Put(out)
	out.Reset()
	// The dictionary costs time in proportion to its length (it is
	// indexed at each flush): a flush of a few bytes (a keystroke's echo)
	// looks back a little, one of a screenful as far as it may.
	dict := z.dict[len(z.dict)-min(len(z.dict), max(dictPerByte*len(z.buf), minDict)):]
	// Writing to a bytes.Buffer does not fail.
	flate.StatelessDeflate(out, z.buf, final, dict)
	z.crc = crc32.Update(z.crc, crc32.IEEETable, z.buf)
	z.size += uint32(len(z.buf))
	if final {
		out.Write(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, z.crc), z.size))
	}
	z.keep(z.buf)
	switch {
	case z.big != nil:
		bigPool.Put(z.big)
		z.buf, z.big = nil, nil
	case cap(z.buf) > keepBuf:
		z.buf = nil
	default:
		z.buf = z.buf[:0]
	}
	_, err := w.Write(out.Bytes())
	return err
}

// grow makes room for about n more bytes of events, in a pooled buffer
// when they are more than keepBuf.
func (z *gzipStream) grow(n int) {
	if cap(z.buf)-len(z.buf) >= n || z.big != nil || len(z.buf)+n <= keepBuf {
		return
	}
	z.big = bigPool.Get().(*[]byte)
	z.buf = append((*z.big)[:0], z.buf...)
}

// keep makes p the end of the dictionary, whose array grows in steps to
// dictSize and no further.
func (z *gzipStream) keep(p []byte) {
	if len(p) >= dictSize {
		p, z.dict = p[len(p)-dictSize:], z.dict[:0]
	}
	if over := len(z.dict) + len(p) - dictSize; over > 0 {
		z.dict = z.dict[:copy(z.dict, z.dict[over:])]
	}
	if need := len(z.dict) + len(p); need > cap(z.dict) {
		grown := make([]byte, len(z.dict), min(dictSize, max(2*cap(z.dict), need)))
		copy(grown, z.dict)
		z.dict = grown
	}
	z.dict = append(z.dict, p...)
}
