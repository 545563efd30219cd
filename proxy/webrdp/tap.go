package webrdp

import (
	"net"
)

// tapConn gives what is read from Conn to record before returning it. A
// failed recording fails the read, after failed has ended the session (its
// reason wins over the read's).
type tapConn struct {
	net.Conn
	record func([]byte) error
	failed func(error)
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		if rerr := c.record(p[:n]); rerr != nil {
			c.failed(rerr)
			return 0, rerr
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
