package handover

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"time"

	"github.com/quic-go/quic-go"
)

// Lineage is what the QUIC connection IDs of a line of bastiond processes
// share across upgrades. Key is a secret: it travels only to the
// successor, over a private channel.
type Lineage struct {
	Key        [16]byte  // AES key of the connection IDs
	Born       time.Time // epoch of the IDs' seconds field
	Generation uint16    // this process's generation; its successor's is Generation+1
}

// ID is a public name of the line: the same for every generation, another
// for every NewLineage, and telling nothing of Key (a hash of it), so that
// it may be written where others read it (a cluster's registry).
func (l Lineage) ID() string {
	h := sha256.New()
	h.Write([]byte("bastiond lineage id\x00"))
	h.Write(l.Key[:])
	return hex.EncodeToString(h.Sum(nil)[:12])
}

// NewLineage starts a line: a random key, born now, generation 0.
func NewLineage() Lineage {
	l := Lineage{Born: time.Now()}
	rand.Read(l.Key[:]) // never fails (crypto/rand, Go 1.24+)
	return l
}

// Next is the lineage of the successor: same key and birth, the next
// generation. After 65535 upgrades without a restart the count wraps, and
// a process no longer takes its predecessors' IDs for earlier ones: their
// connections end, as on a restart.
func (l Lineage) Next() Lineage {
	l.Generation++
	return l
}

const (
	lineageVersion = 1
	lineageLen     = 1 + 16 + 8 + 2
)

// MarshalBinary encodes l: a version byte (1), the key, Born in Unix
// nanoseconds and the generation, big-endian.
func (l Lineage) MarshalBinary() ([]byte, error) {
	if l.Born.IsZero() {
		return nil, errors.New("handover: lineage: no Born time")
	}
	b := append(make([]byte, 0, lineageLen), lineageVersion)
	b = append(b, l.Key[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(l.Born.UnixNano()))
	return binary.BigEndian.AppendUint16(b, l.Generation), nil
}

// UnmarshalBinary decodes what MarshalBinary encoded.
func (l *Lineage) UnmarshalBinary(b []byte) error {
	if len(b) != lineageLen || b[0] != lineageVersion {
		return errors.New("handover: lineage: not a version 1 encoding")
	}
	copy(l.Key[:], b[1:17])
	l.Born = time.Unix(0, int64(binary.BigEndian.Uint64(b[17:25])))
	l.Generation = binary.BigEndian.Uint16(b[25:])
	return nil
}

// ConnIDs issues the connection IDs of one generation of a lineage, for
// quic-go to use as the source ID of its Retry packets and connections
// (it is a quic.ConnectionIDGenerator), and recognizes them later without
// keeping any: an ID is one AES block under the lineage's key, holding 6
// random bytes, the generation, the second it was issued (counted from the
// lineage's birth) and 4 zero bytes. A forged ID passes for one of the
// lineage's once in 2^32 tries, and for one this generation issued only
// within its short lifetime. Unlike a table of the IDs handed out, this
// cannot be filled by a flood of hellos, which would make a gate drop the
// Initials of handshakes under way; and every process of the lineage can
// tell which of them a datagram is for.
type ConnIDs struct {
	block cipher.Block
	born  time.Time // the lineage's birth, on this process's monotonic clock
	gen   uint16
}

// ConnIDLen is the length of the IDs ConnIDs issues.
const ConnIDLen = 16

var _ quic.ConnectionIDGenerator = (*ConnIDs)(nil)

// NewConnIDs returns the IDs of l's generation.
func NewConnIDs(l Lineage) *ConnIDs {
	block, err := aes.NewCipher(l.Key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	// A Born from the predecessor has no monotonic reading: take it over on
	// ours, so that a step of the wall clock moves no ID's age.
	born := time.Now().Add(-max(time.Since(l.Born), 0))
	return &ConnIDs{block: block, born: born, gen: l.Generation}
}

// GenerateConnectionID issues an ID of this generation, now.
func (c *ConnIDs) GenerateConnectionID() (quic.ConnectionID, error) {
	var b [ConnIDLen]byte
	rand.Read(b[:6])
	binary.BigEndian.PutUint16(b[6:8], c.gen)
	binary.BigEndian.PutUint32(b[8:12], uint32(time.Since(c.born)/time.Second))
	c.block.Encrypt(b[:], b[:])
	return quic.ConnectionIDFromBytes(b[:]), nil
}

// ConnectionIDLen is ConnIDLen.
func (c *ConnIDs) ConnectionIDLen() int { return ConnIDLen }

// Generation is the generation whose IDs c issues.
func (c *ConnIDs) Generation() uint16 { return c.gen }

// open decrypts id and returns the generation and second it holds, and ok
// false if it is not an ID of the lineage.
func (c *ConnIDs) open(id []byte) (gen uint16, second uint32, ok bool) {
	if len(id) != ConnIDLen {
		return 0, 0, false
	}
	var b [ConnIDLen]byte
	c.block.Decrypt(b[:], id)
	if binary.BigEndian.Uint32(b[12:]) != 0 {
		return 0, 0, false
	}
	return binary.BigEndian.Uint16(b[6:8]), binary.BigEndian.Uint32(b[8:12]), true
}

// GenerationOf returns the generation that issued id, however long ago,
// and ok false if id is not of the lineage.
func (c *ConnIDs) GenerationOf(id []byte) (gen uint16, ok bool) {
	gen, _, ok = c.open(id)
	return gen, ok
}

// Issued reports whether this generation issued id at most maxAge before now.
func (c *ConnIDs) Issued(id []byte, now time.Time, maxAge time.Duration) bool {
	gen, second, ok := c.open(id)
	if !ok || gen != c.gen {
		return false
	}
	age := now.Sub(c.born) - time.Duration(second)*time.Second
	return age >= 0 && age <= maxAge+time.Second
}
