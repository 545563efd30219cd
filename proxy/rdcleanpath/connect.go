package rdcleanpath

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"time"
	"unicode/utf16"
)

// ClientTLS is the TLS configuration of the bastion's connections to RDP
// servers. verify decides on the server's certificate: RDP servers mostly
// present self-signed certificates, so the chain is not checked against CAs
// but pinned per target (hostkeys.Store.CertificateCheck). No session
// resumption: the client runs CredSSP against this very handshake's
// certificate.
func ClientTLS(verify func(tls.ConnectionState) error) *tls.Config {
	return &tls.Config{
		InsecureSkipVerify:     true, // verify checks the certificate instead
		VerifyConnection:       verify,
		MinVersion:             tls.VersionTLS12,
		SessionTicketsDisabled: true,
		Renegotiation:          tls.RenegotiateNever,
	}
}

// Connect does the gateway's part of the RDP connection sequence on conn,
// a new connection to an RDP server: it writes pcb (a preconnection PDU, or
// nil) and cr (an X.224 Connection Request), reads the server's Connection
// Confirm and, when the server selected TLS or NLA, does the TLS handshake
// with cfg. It returns the Confirm as the server sent it, also when it
// refuses the connection (a failure, or standard RDP security only: the
// error is then ErrNegotiationFailed or ErrStandardSecurity), and the TLS
// connection. ctx bounds it all; conn keeps the deadline it sets.
func Connect(ctx context.Context, conn net.Conn, pcb, cr []byte, cfg *tls.Config) ([]byte, *tls.Conn, error) {
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Now()) })
	defer stop()
	if len(pcb) > 0 {
		if _, err := conn.Write(pcb); err != nil {
			return nil, nil, fmt.Errorf("rdcleanpath: sending the preconnection PDU: %w", err)
		}
	}
	if _, err := conn.Write(cr); err != nil {
		return nil, nil, fmt.Errorf("rdcleanpath: sending the X.224 Connection Request: %w", err)
	}
	cc, err := ReadTPKT(conn, MaxTPKT)
	if err != nil {
		return nil, nil, fmt.Errorf("rdcleanpath: reading the server's X.224 Connection Confirm: %w", err)
	}
	confirm, err := ParseConnectionConfirm(cc)
	if err != nil {
		return nil, nil, err
	}
	if err := confirm.Err(); err != nil {
		return cc, nil, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return cc, nil, fmt.Errorf("rdcleanpath: TLS handshake with the server: %w", err)
	}
	return cc, tc, nil
}

// PreconnectionPDU encodes blob as an RDP_PRECONNECTION_PDU_V2
// ([MS-RDPEPS] 2.2.1.2), which a gateway sends before the X.224 request to
// servers that pick a session by it (Hyper-V consoles): the blob in
// UTF-16LE, NUL-terminated, with id 0.
func PreconnectionPDU(blob string) []byte {
	w := utf16.Encode([]rune(blob))
	w = append(w, 0)
	b := make([]byte, 18, 18+2*len(w))
	binary.LittleEndian.PutUint32(b[0:], uint32(cap(b)))
	binary.LittleEndian.PutUint32(b[4:], 0)  // flags
	binary.LittleEndian.PutUint32(b[8:], 2)  // version 2
	binary.LittleEndian.PutUint32(b[12:], 0) // id
	binary.LittleEndian.PutUint16(b[16:], uint16(len(w)))
	for _, c := range w {
		b = binary.LittleEndian.AppendUint16(b, c)
	}
	return b
}
