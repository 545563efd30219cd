package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// Hash is the SHA-256 of one line, without its newline.
type Hash [sha256.Size]byte

// Zero is the prev of the first line of a new trail.
var Zero Hash

func (h Hash) String() string {
	if h == Zero {
		return ""
	}
	return hex.EncodeToString(h[:])
}

// HashLine is the hash the next line carries as its prev.
func HashLine(line []byte) Hash { return sha256.Sum256(line) }

// ParseHash reads a prev field: 64 hex digits, or "" for Zero.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if s == "" {
		return h, nil
	}
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("audit: prev %q is not a SHA-256", s)
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, fmt.Errorf("audit: prev %q is not a SHA-256", s)
	}
	return h, nil
}

// Stamp completes line, a JSON object from Marshal, with its prev field:
// the line that follows the one whose hash is prev. It returns a new slice.
func Stamp(line []byte, prev Hash) []byte {
	body := bytes.TrimRight(line, " \n")
	body = body[:len(body)-1] // the closing brace
	out := make([]byte, 0, len(body)+84)
	out = append(out, body...)
	out = append(out, `,"prev":"`...)
	out = append(out, prev.String()...)
	out = append(out, `"}`...)
	return out
}

// maxLine bounds the lines Tail reads back; events are far smaller.
const maxLine = 1 << 20

// ErrNoLine is Tail's answer for an empty file.
var ErrNoLine = errors.New("audit: the file holds no line")

// Tail returns the last line of a file of size bytes, without its newline,
// and whether it is whole (ends with a newline: a failed write can leave a
// partial one).
func Tail(r io.ReaderAt, size int64) (line []byte, whole bool, err error) {
	if size == 0 {
		return nil, false, ErrNoLine
	}
	n := min(size, maxLine+1)
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, size-n); err != nil && !errors.Is(err, io.EOF) {
		return nil, false, fmt.Errorf("audit: read the file's last line: %w", err)
	}
	whole = buf[len(buf)-1] == '\n'
	if whole {
		buf = buf[:len(buf)-1]
	}
	i := bytes.LastIndexByte(buf, '\n')
	if i < 0 && n < size {
		return nil, false, fmt.Errorf("audit: the file's last line is longer than %d bytes", maxLine)
	}
	return buf[i+1:], whole, nil
}
