// Package rdcleanpath is the gateway side of the wire formats of browser RDP:
// RDCleanPath, which the IronRDP web client speaks to a gateway over a
// WebSocket, and the few pieces of the RDP connection sequence the gateway
// reads and writes on the client's behalf.
//
// # RDCleanPath
//
// A browser can neither open a TCP connection nor do TLS over one, so the
// IronRDP client hands both to the gateway. Over the WebSocket (a plain byte
// stream, no subprotocol) it sends one request PDU: the protocol version,
// proxyAuth (what the gateway authorizes the connection with), a
// destination, an optional preconnection blob and the client's X.224
// Connection Request. The gateway connects to the RDP server, forwards the
// blob and the request, reads the server's X.224 Connection Confirm, does
// the TLS handshake itself, and answers with one response PDU: the Confirm,
// the server's certificate chain (leaf first; the client needs the leaf's
// public key for CredSSP) and the server's address. From then on the
// WebSocket carries the RDP stream that runs inside that TLS connection.
// When something fails, the answer is an error PDU instead: a general error
// with an HTTP-like status, a Windows socket error code (WSA) or a TLS alert,
// or a negotiation failure carrying the server's Confirm.
//
// A PDU is the DER encoding of this ASN.1 type (IronRDP's
// crates/ironrdp-rdcleanpath), every tag EXPLICIT and context-specific:
//
//	RDCleanPathPdu ::= SEQUENCE {
//	    version           [0] INTEGER,                    -- 3390
//	    error             [1] RDCleanPathErr OPTIONAL,
//	    destination       [2] UTF8String OPTIONAL,
//	    proxyAuth         [3] UTF8String OPTIONAL,
//	    serverAuth        [4] UTF8String OPTIONAL,
//	    preconnectionBlob [5] UTF8String OPTIONAL,
//	    x224ConnectionPdu [6] OCTET STRING OPTIONAL,
//	    serverCertChain   [7] SEQUENCE OF OCTET STRING OPTIONAL,
//	    serverAddr        [9] UTF8String OPTIONAL }
//	RDCleanPathErr ::= SEQUENCE {
//	    errorCode         [0] INTEGER,                    -- 1 general, 2 negotiation
//	    httpStatusCode    [1] INTEGER OPTIONAL,
//	    wsaLastError      [2] INTEGER OPTIONAL,
//	    tlsAlertCode      [3] INTEGER OPTIONAL }
//
// The encoding is written and read with golang.org/x/crypto/cryptobyte,
// which takes DER only (shortest lengths and integers, no indefinite
// length), rather than with encoding/asn1, which accepts any string type
// where UTF8String is required and ignores fields it does not know; Parse
// refuses both. The client
// and the gateway read PDUs from a byte stream, so Read takes exactly one
// PDU's bytes, bounded before its body is read.
//
// # X.224
//
// The client's Connection Request and the server's Connection Confirm
// ([MS-RDPBCGR] 2.2.1.1 and 2.2.1.2) are X.224 TPDUs in TPKT packets: a
// 4-byte header (version 3, a reserved byte, a big-endian length that
// counts the header), then the TPDU. The Request may carry a cookie
// ("Cookie: mstshash=NAME\r\n") or a routing token line, then an
// RDP_NEG_REQ with the security protocols the client can do; the Confirm
// carries an RDP_NEG_RSP with the protocol the server chose, or an
// RDP_NEG_FAILURE saying why it refused. The gateway checks the Request it
// forwards, reads the Confirm (bounded by MaxTPKT) to learn whether to go on
// with TLS, and builds a Request of its own to fetch a server's certificate.
// Standard RDP security (protocol 0), which the browser client cannot do,
// is refused.
package rdcleanpath
