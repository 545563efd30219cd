package webrdp

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
)

// Replay: a recorded desktop played to the IronRDP web client. The player
// acts as the client's RDCleanPath gateway: it answers the request with the
// recording's certificates and a Connection Confirm that selects TLS alone
// (no CredSSP: the recording starts after it), then sends the server's
// recorded bytes in order, at their recorded pace scaled by the speed, and
// ignores what the client sends. The client must ask for the recorded
// desktop size, so that the server's answers fit it. A seek is a new
// connection that fast-forwards (sends without delay) to the position.

// Speeds a player accepts.
var Speeds = []int{1, 2, 8}

// Player is the clock of one replay: the position in the recording, which
// advances at the speed while playing. Its methods may be called from any
// goroutine.
type Player struct {
	mu      sync.Mutex // guards the fields below
	pos     time.Duration
	wall    time.Time // when pos was set
	speed   int
	paused  bool
	ended   bool
	gen     int           // counts seeks: a connection plays while its seek is the last
	changed chan struct{} // closed and replaced at each change: wakes every waiting connection
	now     func() time.Time
}

// NewPlayer returns a player playing from from, at speed; its first
// connection is the seek Generation returns.
func NewPlayer(from time.Duration, speed int) *Player {
	p := &Player{changed: make(chan struct{}), now: time.Now}
	p.Seek(from, speed)
	return p
}

// Generation is the last seek's: the connection that plays it.
func (p *Player) Generation() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.gen
}

// PlayerState is what the page shows.
type PlayerState struct {
	Position int64 `json:"position"` // ms
	Speed    int   `json:"speed"`
	Paused   bool  `json:"paused"`
	Ended    bool  `json:"ended"`
}

// validSpeed returns speed if it is one of Speeds, else 1.
func validSpeed(speed int) int {
	for _, s := range Speeds {
		if s == speed {
			return s
		}
	}
	return 1
}

// Seek moves the clock to from at speed, playing, for a new connection:
// the one of the generation it returns. The connection of an earlier seek
// stops sending.
func (p *Player) Seek(from time.Duration, speed int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos, p.wall, p.speed, p.paused, p.ended = max(0, from), p.now(), validSpeed(speed), false, false
	p.gen++
	p.signal()
	return p.gen
}

// SetPaused pauses or resumes.
func (p *Player) SetPaused(paused bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos, p.wall = p.position(), p.now()
	p.paused = paused
	p.signal()
}

// SetSpeed changes the speed (1, 2 or 8; anything else is 1).
func (p *Player) SetSpeed(speed int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pos, p.wall = p.position(), p.now()
	p.speed = validSpeed(speed)
	p.signal()
}

// State is the player's state now.
func (p *Player) State() PlayerState {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PlayerState{Position: p.position().Milliseconds(), Speed: p.speed, Paused: p.paused, Ended: p.ended}
}

// setEnded says that the connection of seek gen sent the last record, at.
func (p *Player) setEnded(gen int, at time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gen == p.gen {
		p.pos, p.wall, p.paused, p.ended = at, p.now(), true, true
	}
}

// position is the clock's reading; p.mu is held.
func (p *Player) position() time.Duration {
	if p.paused {
		return p.pos
	}
	return p.pos + p.now().Sub(p.wall)*time.Duration(p.speed)
}

// signal wakes the waiting connections; p.mu is held.
func (p *Player) signal() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// until waits until the clock reaches at; false if ctx ended first, or a
// later seek than gen took over.
func (p *Player) until(ctx context.Context, gen int, at time.Duration) bool {
	for {
		p.mu.Lock()
		pos, paused, speed, last, changed := p.position(), p.paused, p.speed, p.gen, p.changed
		p.mu.Unlock()
		if last != gen {
			return false
		}
		if !paused && pos >= at {
			return true
		}
		wait := time.Hour
		if !paused {
			wait = (at - pos) / time.Duration(speed)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

// ReplayParams are one replay connection's settings.
type ReplayParams struct {
	// Recording is the open recording, positioned after its header.
	Recording *recording.RDPReader
	Player    *Player
	// Generation is the seek this connection plays (Player.Seek's, or
	// Player.Generation of a new player).
	Generation int
	// HandshakeTimeout bounds reading the client's request. Default 30s.
	HandshakeTimeout time.Duration
	Logger           *zap.Logger
}

// Replay plays the recording to the client on conn (its WebSocket as a
// byte stream) until the client goes away or ctx ends. It returns once the
// client has gone; the caller closes conn.
func Replay(ctx context.Context, conn net.Conn, p ReplayParams) error {
	if p.HandshakeTimeout <= 0 {
		p.HandshakeTimeout = 30 * time.Second
	}
	conn.SetDeadline(time.Now().Add(p.HandshakeTimeout))
	if _, err := rdcleanpath.Read(conn, rdcleanpath.MaxRequest); err != nil {
		return err
	}
	h := p.Recording.Header
	b, err := rdcleanpath.Response(ReplayConfirm(h.Confirm), h.CertChain, h.Target).Marshal()
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return err
	}
	conn.SetDeadline(time.Time{})

	outer := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gone := make(chan struct{})
	go func() {
		// What the client sends answers the server it thinks it has: it
		// is read and dropped, and its end is the replay's.
		io.Copy(io.Discard, conn)
		cancel()
		close(gone)
	}()
	var last time.Duration
	for {
		rec, err := p.Recording.Next()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				p.Logger.Warn("rdp replay: read the recording", zap.Error(err))
			}
			break
		}
		if rec.Kind != recording.RDPServer {
			continue
		}
		if !p.Player.until(ctx, p.Generation, rec.At) {
			break
		}
		last = rec.At
		if _, err := conn.Write(rec.Data); err != nil {
			break
		}
	}
	if ctx.Err() == nil {
		p.Player.setEnded(p.Generation, last)
	}
	// The last picture stays on the page until it closes the connection.
	select {
	case <-gone:
	case <-outer.Done():
	}
	return nil
}

// ReplayConfirm is the Connection Confirm a replay answers with: the
// recorded one (its flags are the server's) with TLS selected.
func ReplayConfirm(recorded []byte) []byte {
	// TPKT (4), X.224 CC (LI, code, DST-REF, SRC-REF, class), RDP_NEG_RSP
	// (type, flags, length 8, selectedProtocol).
	cc := []byte{3, 0, 0, 19, 14, 0xd0, 0, 0, 0x12, 0x34, 0, rdcleanpath.RDPNegRsp, 0, 8, 0, 0, 0, 0, 0}
	if c, err := rdcleanpath.ParseConnectionConfirm(recorded); err == nil && c.Negotiation == rdcleanpath.RDPNegRsp {
		cc[12] = c.Flags
	}
	binary.LittleEndian.PutUint32(cc[15:], rdcleanpath.ProtocolSSL)
	return cc
}
