package tunnel

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"unicode/utf8"
)

// Protocol constants.
const (
	// ALPN is the QUIC application protocol.
	ALPN = "bastion-tunnel/1"
	// Version is the protocol version this package speaks.
	Version = 1
	// WebSocketPath is where the TCP fallback upgrades.
	WebSocketPath = "/tunnel"
	// Subprotocol is the WebSocket subprotocol.
	Subprotocol = "bastion-tunnel.v1"

	MaxToken   = 200
	MaxTarget  = 253
	MaxHeader  = 1024 // the most L may say, request or response
	MaxMessage = 1024
)

var magic = [4]byte{'B', 'T', 'U', 'N'}

// Status is the server's answer to a request.
type Status uint8

const (
	StatusOK Status = iota
	StatusBadRequest
	StatusUnauthorized
	StatusDenied
	StatusUnknownTarget
	StatusCapacity
	StatusUserLimit
	StatusUnreachable
	StatusUnavailable
	StatusUnsupportedVersion
)

func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusBadRequest:
		return "bad request"
	case StatusUnauthorized:
		return "unauthorized"
	case StatusDenied:
		return "denied"
	case StatusUnknownTarget:
		return "unknown target"
	case StatusCapacity:
		return "capacity"
	case StatusUserLimit:
		return "user limit"
	case StatusUnreachable:
		return "unreachable"
	case StatusUnavailable:
		return "unavailable"
	case StatusUnsupportedVersion:
		return "unsupported version"
	}
	return fmt.Sprintf("status %d", uint8(s))
}

// Request asks for a tunnel to Target's Port.
type Request struct {
	Token  string
	Target string
	Port   uint16
}

// ProtocolError is a request the server cannot read; Status is what it
// answers.
type ProtocolError struct {
	Status Status
	Msg    string
}

func (e *ProtocolError) Error() string { return e.Msg }

func badRequest(format string, args ...any) error {
	return &ProtocolError{Status: StatusBadRequest, Msg: "tunnel: " + fmt.Sprintf(format, args...)}
}

func validToken(s string) bool {
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

func validTarget(s string) bool {
	if len(s) == 0 || len(s) > MaxTarget {
		return false
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
	case !validToken(r.Token):
		return badRequest("the token must be 1 to %d printable characters", MaxToken)
	case !validTarget(r.Target):
		return badRequest("%q is not a target name (lower-case letters, digits, '-' and '.', at most %d)", r.Target, MaxTarget)
	case r.Port == 0:
		return badRequest("port 0")
	}
	return nil
}

// Marshal returns the request's bytes.
func (r Request) Marshal() ([]byte, error) {
	if err := r.check(); err != nil {
		return nil, err
	}
	l := 1 + len(r.Token) + 1 + len(r.Target) + 2
	b := make([]byte, 0, 7+l)
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

// ReadRequest reads exactly one request from r, and nothing after it.
// Errors that deserve an answer are *ProtocolError.
func ReadRequest(r io.Reader) (Request, error) {
	var head [7]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return Request{}, fmt.Errorf("tunnel: reading the request: %w", err)
	}
	if [4]byte(head[:4]) != magic {
		return Request{}, badRequest("not a tunnel request")
	}
	if head[4] != Version {
		return Request{}, &ProtocolError{Status: StatusUnsupportedVersion,
			Msg: fmt.Sprintf("tunnel: protocol version %d is not supported; this bastion speaks version %d", head[4], Version)}
	}
	l := int(binary.BigEndian.Uint16(head[5:]))
	if l > MaxHeader {
		return Request{}, badRequest("request of %d bytes, more than %d", l, MaxHeader)
	}
	body := make([]byte, l)
	if _, err := io.ReadFull(r, body); err != nil {
		return Request{}, fmt.Errorf("tunnel: reading the request: %w", err)
	}
	var req Request
	rest, ok := body, true
	field := func() string {
		if !ok || len(rest) < 1 || len(rest) < 1+int(rest[0]) {
			ok = false
			return ""
		}
		v := string(rest[1 : 1+int(rest[0])])
		rest = rest[1+int(rest[0]):]
		return v
	}
	req.Token = field()
	req.Target = field()
	if !ok || len(rest) != 2 {
		return Request{}, badRequest("malformed request")
	}
	req.Port = binary.BigEndian.Uint16(rest)
	if err := req.check(); err != nil {
		return Request{}, err
	}
	return req, nil
}

// Response is the server's answer.
type Response struct {
	Status  Status
	Message string
}

func (r Response) marshal() []byte {
	msg := r.Message
	if len(msg) > MaxMessage {
		msg = msg[:MaxMessage]
		for !utf8.ValidString(msg) {
			msg = msg[:len(msg)-1]
		}
	}
	b := make([]byte, 0, 8+len(msg))
	b = append(b, magic[:]...)
	b = append(b, Version, byte(r.Status))
	b = binary.BigEndian.AppendUint16(b, uint16(len(msg)))
	return append(b, msg...)
}

// WriteResponse writes r in one Write. A message longer than MaxMessage is
// cut.
func WriteResponse(w io.Writer, r Response) error {
	_, err := w.Write(r.marshal())
	return err
}

// ErrNotTunnel is an answer that is not the tunnel protocol: something
// else answered on the port.
var ErrNotTunnel = errors.New("tunnel: the server did not answer in the tunnel protocol")

// ReadResponse reads exactly one response from r.
func ReadResponse(r io.Reader) (Response, error) {
	var head [8]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return Response{}, fmt.Errorf("tunnel: reading the answer: %w", err)
	}
	if [4]byte(head[:4]) != magic {
		return Response{}, ErrNotTunnel
	}
	l := int(binary.BigEndian.Uint16(head[6:]))
	if l > MaxMessage {
		return Response{}, fmt.Errorf("tunnel: answer of %d bytes, more than %d", l, MaxMessage)
	}
	msg := make([]byte, l)
	if _, err := io.ReadFull(r, msg); err != nil {
		return Response{}, fmt.Errorf("tunnel: reading the answer: %w", err)
	}
	if !utf8.Valid(msg) {
		return Response{}, errors.New("tunnel: the answer is not UTF-8")
	}
	resp := Response{Status: Status(head[5]), Message: string(msg)}
	if head[4] != Version && resp.Status != StatusUnsupportedVersion {
		return Response{}, fmt.Errorf("tunnel: the bastion speaks protocol version %d, this client %d", head[4], Version)
	}
	return resp, nil
}

// Error is a request the bastion refused.
type Error struct {
	Status  Status
	Message string
	Target  string
	Port    uint16
}

func (e *Error) Error() string {
	return fmt.Sprintf("bastion refused the tunnel to %s:%d: %s", e.Target, e.Port, e.Message)
}
