// Package quicinitial reads the TLS ClientHello out of a client's QUIC
// version 1 Initial packets before the QUIC stack sees them: it parses the
// long header (RFC 9000 section 17.2), derives the client Initial keys from
// the packet's own Destination Connection ID (RFC 9001 section 5.2), which
// anyone can do, removes header protection and decrypts the packet (RFC 9001
// sections 5.3 and 5.4), returns its CRYPTO frames, and reassembles the start
// of the crypto stream, the ClientHello, from frames that may come out of
// order, overlapping and spread over several packets. It keeps no state
// between packets other than an Assembler's, never sends anything, and only
// reads what a client is allowed to put in an Initial packet.
package quicinitial
