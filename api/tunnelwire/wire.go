package tunnelwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"unicode/utf8"
)

// Protocol constants. The wire format is described in the package
// documentation.
const (
	// ALPN is the QUIC application protocol of the tunnel.
	ALPN = "bastion-tunnel/1"
	// Version is the protocol version this package speaks.
	Version = 1
	// WebSocketPath is where the TCP fallback upgrades to a WebSocket.
	WebSocketPath = "/tunnel"
	// Subprotocol is the WebSocket subprotocol of the tunnel. The client
	// offers it and the server must select it.
	Subprotocol = "bastion-tunnel.v1"

	// MaxToken is the longest API token a request carries.
	MaxToken = 200
	// MaxTarget is the longest target name (that of a DNS name).
	MaxTarget = 253
	// MaxRequest bounds the length field of a request: a server never
	// reads more than 7+MaxRequest bytes before it answers.
	MaxRequest = 1024
	// MaxMessage is the longest message of a response, in bytes.
	MaxMessage = 1024
)

var magic = [4]byte{'B', 'T', 'U', 'N'}

const (
	requestPrefix  = 7 // magic, version, length
	responsePrefix = 8 // magic, version, status, length
	minRequestBody = 1 + 1 + 1 + 1 + 2
)

// Status is the server's answer to a request.
type Status uint8

// The statuses. Their numbers are part of the protocol.
const (
	StatusOK                 Status = 0 // the tunnel is open: the relayed bytes follow
	StatusBadRequest         Status = 1 // the request is malformed
	StatusUnauthorized       Status = 2 // the token is not valid, expired, revoked or lacks the tunnel scope
	StatusDenied             Status = 3 // no role of the token's user allows this target and port (whether or not they exist)
	StatusUnknownTarget      Status = 4 // no such target, or it offers no such port, to a user whose roles cover them
	StatusCapacity           Status = 5 // the bastion carries all the sessions it may
	StatusUserLimit          Status = 6 // the user has all the sessions they may have
	StatusUnreachable        Status = 7 // the bastion could not connect to the target
	StatusUnavailable        Status = 8 // the bastion is shutting down or failed
	StatusUnsupportedVersion Status = 9 // the server does not speak the request's version
	// StatusMoved: the bastion process that holds this QUIC connection
	// was replaced by a binary upgrade and serves only the tunnels it has;
	// a new connection reaches the new process. The client asks again on
	// one, and leaves the old connection to its tunnels.
	StatusMoved Status = 10
)

var statusNames = [...]string{
	StatusOK:                 "ok",
	StatusBadRequest:         "bad request",
	StatusUnauthorized:       "unauthorized",
	StatusDenied:             "denied",
	StatusUnknownTarget:      "unknown target",
	StatusCapacity:           "capacity",
	StatusUserLimit:          "user limit",
	StatusUnreachable:        "unreachable",
	StatusUnavailable:        "unavailable",
	StatusUnsupportedVersion: "unsupported version",
	StatusMoved:              "moved",
}

// String is the status's short name, e.g. "unknown target".
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// sentence says what s means to a person, for an answer without a message.
func (s Status) sentence() string {
	switch s {
	case StatusBadRequest:
		return "the bastion could not read the request"
	case StatusUnauthorized:
		return "the token is not valid (expired or revoked?): run bastionctl login"
	case StatusDenied:
		return "no role of yours allows this tunnel"
	case StatusUnknownTarget:
		return "the bastion has no such machine or port"
	case StatusCapacity:
		return "bastion at capacity"
	case StatusUserLimit:
		return "you have as many sessions open as you may"
	case StatusUnreachable:
		return "the bastion cannot reach the machine"
	case StatusUnavailable:
		return "the bastion is unavailable (shutting down?)"
	case StatusUnsupportedVersion:
		return "the bastion does not speak this version of the tunnel protocol"
	case StatusMoved:
		return "the bastion was upgraded while this connection was open: connect again"
	}
	return s.String()
}

// ProtocolError is a request that cannot be read or sent because it breaks
// the protocol. ReadRequest returns it for requests that deserve an
// answer: the server writes a Response with Status and Error() as its
// message, then closes.
type ProtocolError struct {
	// Status is StatusBadRequest or StatusUnsupportedVersion.
	Status Status
	// Msg says what is wrong, for the person at the client.
	Msg string
	// Version is the version the request asked for.
	Version uint8
	// Err is the underlying error, if any (io.ErrUnexpectedEOF for a
	// truncated request).
	Err error
}

func (e *ProtocolError) Error() string { return e.Msg }
func (e *ProtocolError) Unwrap() error { return e.Err }

func badRequest(format string, args ...any) error {
	return &ProtocolError{Status: StatusBadRequest, Version: Version, Msg: "tunnel request: " + fmt.Sprintf(format, args...)}
}

// Request asks the bastion for a tunnel to Target's Port.
type Request struct {
	// Token is the API token: 1 to MaxToken printable ASCII characters.
	Token string
	// Target is the target's inventory name: 1 to MaxTarget lower-case
	// letters, digits, '-' and '.'; or an address inside one of the
	// inventory's networks, as CanonicalTarget writes it (2001:db8::5,
	// never [2001:db8::5] or ::ffff:10.0.0.1).
	Target string
	// Port is the target's port, 1 to 65535.
	Port uint16
}

// ValidToken reports whether s can be a request's token: 1 to MaxToken
// printable ASCII characters.
func ValidToken(s string) bool {
	if len(s) == 0 || len(s) > MaxToken {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// CanonicalTarget is what a user typed as a target, as a request carries
// it: an IP address (bracketed or not, IPv4-mapped or not) as netip writes
// it, unmapped; a name in lower case.
func CanonicalTarget(s string) string {
	a := s
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") {
		a = s[1 : len(s)-1]
	}
	if ip, err := netip.ParseAddr(a); err == nil && ip.Zone() == "" {
		return ip.Unmap().String()
	}
	return strings.ToLower(s)
}

func validTarget(s string) bool {
	if len(s) == 0 || len(s) > MaxTarget {
		return false
	}
	if strings.Contains(s, ":") {
		// An IPv6 address, written one way only.
		a, err := netip.ParseAddr(s)
		return err == nil && a.Zone() == "" && !a.Is4In6() && a.String() == s
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

func (r Request) check() error {
	switch {
	case !ValidToken(r.Token):
		return badRequest("the token must be 1 to %d printable ASCII characters", MaxToken)
	case !validTarget(r.Target):
		return badRequest("%q is not a target name (1 to %d lower-case letters, digits, '-' and '.')", r.Target, MaxTarget)
	case r.Port == 0:
		return badRequest("port 0")
	}
	return nil
}

// Marshal checks r and returns its bytes. An invalid request is a
// *ProtocolError.
func (r Request) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	l := 1 + len(r.Token) + 1 + len(r.Target) + 2
	b := make([]byte, 0, requestPrefix+l)
	b = append(b, magic[:]...)
	b = append(b, Version)
	b = binary.BigEndian.AppendUint16(b, uint16(l))
	b = append(b, byte(len(r.Token)))
	b = append(b, r.Token...)
	b = append(b, byte(len(r.Target)))
	b = append(b, r.Target...)
	b = binary.BigEndian.AppendUint16(b, r.Port)
	return b, nil
}

// ReadRequest reads one request from r: exactly its bytes, never more, so
// that the relayed bytes that follow stay in r. It reads the magic and the
// version first and stops there if they are wrong, and never reads more
// than 7+MaxRequest bytes.
//
// A request that deserves an answer is a *ProtocolError: a malformed or
// truncated one (StatusBadRequest) or one of another version
// (StatusUnsupportedVersion). Other errors are r's (a timeout, a reset, or
// io.EOF before the first byte): nothing to answer.
func ReadRequest(r io.Reader) (Request, error) {
	var buf [requestPrefix + MaxRequest]byte
	if err := readFull(r, buf[:5], true); err != nil {
		return Request{}, err
	}
	if [4]byte(buf[:4]) != magic {
		return Request{}, badRequest("not a tunnel request")
	}
	if v := buf[4]; v != Version {
		return Request{}, &ProtocolError{Status: StatusUnsupportedVersion, Version: v,
			Msg: fmt.Sprintf("tunnel protocol version %d is not supported: this bastion speaks version %d", v, Version)}
	}
	if err := readFull(r, buf[5:7], false); err != nil {
		return Request{}, err
	}
	l := int(binary.BigEndian.Uint16(buf[5:7]))
	if l > MaxRequest {
		return Request{}, badRequest("%d bytes long, more than %d", l, MaxRequest)
	}
	if l < minRequestBody {
		return Request{}, badRequest("%d bytes long, less than %d", l, minRequestBody)
	}
	body := buf[requestPrefix : requestPrefix+l]
	if err := readFull(r, body, false); err != nil {
		return Request{}, err
	}
	return parseRequestBody(body)
}

func parseRequestBody(b []byte) (Request, error) {
	var req Request
	n := int(b[0])
	if len(b) < 1+n+1 {
		return req, badRequest("the token runs past the end")
	}
	req.Token, b = string(b[1:1+n]), b[1+n:]
	n = int(b[0])
	if len(b) < 1+n {
		return req, badRequest("the target runs past the end")
	}
	req.Target, b = string(b[1:1+n]), b[1+n:]
	switch {
	case len(b) < 2:
		return Request{}, badRequest("no port")
	case len(b) > 2:
		return Request{}, badRequest("%d bytes after the port", len(b)-2)
	}
	req.Port = binary.BigEndian.Uint16(b)
	if err := req.check(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// readFull reads len(p) bytes of a request. An end of stream is a
// truncated request, unless it comes before the first byte.
func readFull(r io.Reader, p []byte, first bool) error {
	n, err := io.ReadFull(r, p)
	if err == nil {
		return nil
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		if first && n == 0 && err == io.EOF {
			return fmt.Errorf("tunnel request: %w", io.EOF)
		}
		return &ProtocolError{Status: StatusBadRequest, Version: Version, Msg: "tunnel request: truncated", Err: io.ErrUnexpectedEOF}
	}
	var pe *ProtocolError
	if errors.As(err, &pe) {
		return err
	}
	return fmt.Errorf("tunnel request: %w", err)
}

// Response is the server's answer to a request.
type Response struct {
	Status Status
	// Message is the session's ID for StatusOK, otherwise a sentence for
	// the person at the client. At most MaxMessage bytes of UTF-8.
	Message string
	// Version is the version of the response header, 1 or more: zero
	// means this package's Version when writing; ReadResponse sets it. A
	// server answers StatusUnsupportedVersion with its own version.
	Version uint8
}

// WriteResponse writes r in one Write. A message that is not valid UTF-8
// is repaired and one longer than MaxMessage is cut (at a character
// boundary), so that a server can pass any error's text.
func WriteResponse(w io.Writer, r Response) error {
	_, err := w.Write(r.marshal())
	if err != nil {
		return fmt.Errorf("tunnel response: %w", err)
	}
	return nil
}

func (r Response) marshal() []byte {
	msg := strings.ToValidUTF8(r.Message, "\uFFFD")
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	v := r.Version
	if v == 0 {
		v = Version
	}
	b := make([]byte, 0, responsePrefix+len(msg))
	b = append(b, magic[:]...)
	b = append(b, v, byte(r.Status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// ErrNotTunnel is an answer that is not in the tunnel protocol: something
// else answered.
var ErrNotTunnel = errors.New("tunnel response: the server did not answer in the tunnel protocol")

// ReadResponse reads one response from r: exactly its bytes, so that the
// relayed bytes that follow stay in r. A response of another version is
// an error unless its status is StatusUnsupportedVersion.
func ReadResponse(r io.Reader) (Response, error) {
	var buf [responsePrefix + MaxMessage]byte
	if err := readResponse(r, buf[:responsePrefix]); err != nil {
		return Response{}, err
	}
	if [4]byte(buf[:4]) != magic {
		return Response{}, ErrNotTunnel
	}
	resp := Response{Version: buf[4], Status: Status(buf[5])}
	if resp.Version == 0 {
		return Response{}, errors.New("tunnel response: version 0")
	}
	if resp.Version != Version && resp.Status != StatusUnsupportedVersion {
		return Response{}, fmt.Errorf("tunnel response: version %d with status %v, this client speaks version %d", resp.Version, resp.Status, Version)
	}
	l := int(binary.BigEndian.Uint16(buf[6:8]))
	if l > MaxMessage {
		return Response{}, fmt.Errorf("tunnel response: a message of %d bytes, more than %d", l, MaxMessage)
	}
	msg := buf[responsePrefix : responsePrefix+l]
	if err := readResponse(r, msg); err != nil {
		return Response{}, err
	}
	if !utf8.Valid(msg) {
		return Response{}, errors.New("tunnel response: the message is not UTF-8")
	}
	resp.Message = string(msg)
	return resp, nil
}

func readResponse(r io.Reader, p []byte) error {
	if _, err := io.ReadFull(r, p); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF // the server closed without a complete answer
		}
		return fmt.Errorf("tunnel response: %w", err)
	}
	return nil
}

// Error is a tunnel the bastion refused: what Client.Dial returns for an
// answer other than StatusOK.
type Error struct {
	Status Status
	// Message is the bastion's explanation.
	Message string
	// Target and Port are what was asked for.
	Target string
	Port   uint16
	// Version is the protocol version the bastion speaks.
	Version uint8
}

// Error is one sentence for a person, e.g. "bastion refused the tunnel to
// vm1:3389: bastion at capacity".
func (e *Error) Error() string {
	why := e.Message
	switch {
	case e.Status == StatusUnsupportedVersion && e.Version > Version:
		why = fmt.Sprintf("the bastion speaks tunnel protocol version %d and this bastionctl only version %d: upgrade bastionctl", e.Version, Version)
	case e.Status == StatusUnsupportedVersion && e.Version < Version:
		why = fmt.Sprintf("the bastion is older (tunnel protocol version %d, this bastionctl speaks version %d): ask its admin to upgrade it, or use an older bastionctl", e.Version, Version)
	case why == "":
		why = e.Status.sentence()
	}
	return fmt.Sprintf("bastion refused the tunnel to %s:%d: %s", e.Target, e.Port, why)
}
