package tunnel

import (
	"net"
	"sync"
)

// wsLibraryBuffer is the size of the buffer coder/websocket masks a
// client's frames through: a frame's payload reaches the connection in
// writes of exactly this size, and its end in a shorter one.
const wsLibraryBuffer = 4096

// maxGathered bounds what a recordConn holds before it writes.
const maxGathered = 64 << 10

// recordConn gathers the 4 KiB pieces in which the WebSocket library
// writes a client's masked frame, so that the TLS connection under it
// sends full 16 KiB records: with one record, one read and one write on
// the bastion per 4 KiB, a bulk upload spends most of the bastion's CPU
// on system calls and wakeups.
//
// A write of exactly wsLibraryBuffer bytes is the middle of a frame and is
// held; any other write (a frame's end, a control frame) sends what is
// held and itself at once. A frame whose end falls on a buffer boundary is
// held until Flush, which the tunnel calls after each message it writes.
type recordConn struct {
	net.Conn
	mu   sync.Mutex
	held []byte
}

func newRecordConn(c net.Conn) *recordConn { return &recordConn{Conn: c} }

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(p) == wsLibraryBuffer {
		if len(c.held)+len(p) > maxGathered {
			if err := c.flushLocked(); err != nil {
				return 0, err
			}
		}
		if c.held == nil {
			c.held = make([]byte, 0, maxGathered)
		}
		c.held = append(c.held, p...)
		return len(p), nil
	}
	if len(c.held) == 0 {
		return c.Conn.Write(p)
	}
	if len(c.held)+len(p) <= maxGathered {
		c.held = append(c.held, p...)
		return len(p), c.flushLocked()
	}
	if err := c.flushLocked(); err != nil {
		return 0, err
	}
	return c.Conn.Write(p)
}

// Flush sends what is held.
func (c *recordConn) Flush() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.flushLocked()
}

func (c *recordConn) flushLocked() error {
	if len(c.held) == 0 {
		return nil
	}
	_, err := c.Conn.Write(c.held)
	c.held = c.held[:0]
	return err
}
