package webrdp

import (
	"net"
)

// tapConn gives what is read from Conn to record before returning it. A
// failed recording starts failed, which ends the session, and the read
// returns only once the session's end has closed Conn, so that the end's
// reason is the recording's, not the relay's. failed runs on a goroutine
// of its own: the session's End waits for the relay, which this Read is
// part of.
type tapConn struct {
	net.Conn
	record func([]byte) error
	failed func(error)
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if rerr := c.record(p[:n]); rerr != nil {
			go c.failed(rerr)
			for {
				// Nothing more is relayed unrecorded.
				if _, err := c.Conn.Read(p); err != nil {
					return 0, err
				}
			}
		}
	}
	return n, err
}

// tapTLSConn is a tapConn over the server's TLS connection, whose
// half-close the relay uses at the server's end of stream.
type tapTLSConn struct{ tapConn }

func (c *tapTLSConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
