// Package watch fans the output of live browser sessions out to auditors who
// watch them, read-only.
//
// A relay (proxy/webssh, proxy/webrdp) opens a Stream for its session on the
// instance's Hub and publishes what the machine shows the user: terminal
// output and sizes, or the RDP server's PDUs. A watcher subscribes and gets a
// catch-up first (the session's start, up to Limits.Head bytes, then its
// most recent output, up to Limits.Tail bytes), then the live output.
//
// The package has no path back: a Stream takes frames only from its relay
// (Publish), and a Watcher is receive-only (Next, Leave). Nothing a watcher
// sends can reach the machine because nothing here accepts it.
//
// A slow watcher never slows the session: each watcher has a queue bounded
// by Limits.Queue bytes; Publish never blocks on it, and a watcher whose
// queue would overflow is dropped (ErrBehind), not the user.
package watch

import (
	"errors"
	"slices"
	"sync"
	"time"
)

// Kinds of frames.
const (
	// Output is what the machine shows: terminal bytes (SSH) or complete
	// server PDUs (RDP).
	Output byte = iota
	// Size is the screen's size as JSON: {"cols":C,"rows":R} (SSH) or
	// {"width":W,"height":H} (RDP). The latest one is part of every
	// catch-up.
	Size
)

// Frame is one piece of a session's output. Its Data is shared by every
// watcher: never modify it.
type Frame struct {
	Kind byte
	Data []byte

	clean bool // a client may start reading at it (Limits.Boundary)
}

// Info describes a watchable session.
type Info struct {
	Session  string
	User     string
	Target   string
	Protocol string // "ssh" or "rdp"
	Start    time.Time
	Recorded bool
	// RDP: the server's Connection Confirm and certificate chain, which
	// a watcher's client is answered with (as a recording's player is).
	Confirm   []byte
	CertChain [][]byte
}

// Limits bound the memory a stream and its watchers hold.
type Limits struct {
	// Head is how many bytes of the session's first output are kept for
	// a catch-up: an RDP client needs the connection's activation. 0:
	// none.
	Head int
	// Tail is how many bytes of the latest output are kept (whole frames,
	// the oldest dropped first).
	Tail int
	// Queue bounds each watcher's unread frames, in bytes; a watcher
	// that would exceed it is dropped. Default 1 MiB.
	Queue int
	// Boundary, when set, makes the stream's judge of its Output frames,
	// called with each in order, once: whether a client may start reading
	// at it (cleanStart) and whether it ends inside something later frames
	// complete (openEnd): for RDP, a PDU cut between reads or a fragmented
	// fast-path update. A catch-up then never cuts one: the head ends
	// where nothing is open, the tail starts at a clean start, and a
	// watcher that joins while something is open, without its start, gets
	// the live frames from the next clean start. nil: every frame is whole.
	Boundary func() func(frame []byte) (cleanStart, openEnd bool)
	// Bytes says the output is a byte stream whose frame boundaries mean
	// nothing (a terminal's): small frames are joined in the tail, in
	// chunks of up to 4 KiB (and a sixteenth of Tail).
	Bytes bool
}

// SSHLimits and RDPLimits are the limits the relays use. A terminal's last
// 64 KiB of output redraws most screens (a full-screen program repaints
// often); a desktop needs its activation (a few KiB; the head keeps the
// first paint too, as far as it fits) and then the recent updates. Every
// watchable desktop keeps up to 2.25 MiB, watched or not: the head cannot
// be had later.
var (
	SSHLimits = Limits{Tail: 64 << 10, Queue: 1 << 20, Bytes: true}
	RDPLimits = Limits{Head: 256 << 10, Tail: 2 << 20, Queue: 8 << 20}
)

// MaxWatchers bounds the watchers of one session.
const MaxWatchers = 16

// Errors of Subscribe and Next.
var (
	// ErrEnded: the session ended.
	ErrEnded = errors.New("watch: the session ended")
	// ErrBehind: the watcher fell behind and was dropped.
	ErrBehind = errors.New("watch: the watcher fell behind the session and was dropped")
	// ErrLeft: the watcher left (Leave).
	ErrLeft = errors.New("watch: the watcher left")
	// ErrTooMany: the session has MaxWatchers watchers already.
	ErrTooMany = errors.New("watch: the session has as many watchers as it may")
	// ErrUnknown: no live session of this instance has that ID.
	ErrUnknown = errors.New("watch: no such live session on this instance")
)

// Hub is the watchable sessions of one instance, by session ID.
type Hub struct {
	mu      sync.Mutex // guards streams
	streams map[string]*Stream
}

// NewHub returns an empty hub.
func NewHub() *Hub { return &Hub{streams: make(map[string]*Stream)} }

// Open registers the session info describes and returns its stream, which
// its relay publishes to and closes when the session ends. changed, if not
// nil, is called with the watchers' names (sorted, a name once per watcher)
// each time one joins or leaves; it must not block, and is never called
// after Close returned.
func (h *Hub) Open(info Info, lim Limits, changed func(watchers []string)) *Stream {
	if lim.Queue <= 0 {
		lim.Queue = 1 << 20
	}
	s := &Stream{hub: h, info: info, lim: lim, changed: changed, watchers: make(map[*Watcher]struct{})}
	if lim.Boundary != nil {
		s.judge = lim.Boundary()
	}
	h.mu.Lock()
	h.streams[info.Session] = s
	h.mu.Unlock()
	return s
}

// Get returns the live stream of session id.
func (h *Hub) Get(id string) (*Stream, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.streams[id]
	return s, ok
}

// List is the live streams' infos, oldest first.
func (h *Hub) List() []Info {
	h.mu.Lock()
	list := make([]Info, 0, len(h.streams))
	for _, s := range h.streams {
		list = append(list, s.info)
	}
	h.mu.Unlock()
	slices.SortFunc(list, func(a, b Info) int { return a.Start.Compare(b.Start) })
	return list
}

// Stream is one live session's output, as its relay publishes it.
type Stream struct {
	hub     *Hub
	info    Info
	lim     Limits
	changed func([]string)

	// cmu serializes the calls of changed, in the order of the changes.
	cmu sync.Mutex

	mu        sync.Mutex // guards the fields below
	head      []Frame    // the first output, up to lim.Head bytes
	headBytes int
	headClean int  // how many of head's frames a catch-up sends: no sequence open after them
	headFull  bool // head stopped taking frames: later ones go to tail
	lastOpen  bool // the last Output frame ended inside a sequence (Boundary)
	judge     func([]byte) (cleanStart, openEnd bool)
	tail      []Frame // the latest output, up to lim.Tail bytes, from tailOff on
	tailOff   int
	tailBytes int
	size      *Frame // the latest Size
	watchers  map[*Watcher]struct{}
	ended     bool
}

// Info describes the session.
func (s *Stream) Info() Info { return s.info }

// Size is the latest Size frame's data, or nil.
func (s *Stream) Size() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.size == nil {
		return nil
	}
	return s.size.Data
}

// Publish gives the watchers a copy of p. It never blocks on a watcher:
// one whose queue is full is dropped. It is safe for concurrent use, and
// a no-op once the stream is closed. p is not kept: with no one watching,
// a terminal's output is only copied into its catch-up's chunks.
func (s *Stream) Publish(kind byte, p []byte) {
	if len(p) == 0 {
		return
	}
	f := Frame{Kind: kind, Data: p}
	var dropped bool
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	borrowed := len(s.watchers) == 0 // else the watchers' queues share one copy
	if !borrowed {
		f.Data = slices.Clone(p)
	}
	open := false
	if f.Kind == Output {
		f.clean, open = s.boundary(f.Data)
	}
	s.keep(f, open, borrowed)
	for w := range s.watchers {
		if !w.push(f) {
			delete(s.watchers, w)
			dropped = true
		}
	}
	s.mu.Unlock()
	if dropped {
		s.notify()
	}
}

// keep adds f to the catch-up; open says it ends inside a sequence, and
// borrowed that f.Data is the caller's: it is copied before it is kept.
// s.mu is held.
func (s *Stream) keep(f Frame, open, borrowed bool) {
	own := func(f Frame) Frame {
		if borrowed {
			f.Data = slices.Clone(f.Data)
		}
		return f
	}
	if f.Kind == Size {
		size := own(f)
		s.size = &size
		return
	}
	s.lastOpen = open
	if !s.headFull {
		if s.headBytes+len(f.Data) <= s.lim.Head {
			s.head = append(s.head, own(f))
			s.headBytes += len(f.Data)
			if !open {
				s.headClean = len(s.head)
			}
			return
		}
		s.headFull = true
	}
	if len(f.Data) > s.lim.Tail {
		clear(s.tail)
		s.tail, s.tailOff, s.tailBytes = s.tail[:0], 0, 0
		return
	}
	s.tailBytes += len(f.Data)
	chunk := min(coalesce, s.lim.Tail/16) // a dropped chunk is a small part of the tail
	if n := len(s.tail); s.lim.Bytes && n > s.tailOff && len(s.tail[n-1].Data)+len(f.Data) <= chunk {
		// A byte stream (a terminal): small reads join the last chunk, so
		// that a tail of keystroke echoes is a few chunks, not thousands
		// of frames. Appending past a chunk's length never changes what a
		// watcher's queue holds of it, nor does moving the chunk to a
		// larger array (the queue keeps the old one).
		last := &s.tail[n-1]
		if need := len(last.Data) + len(f.Data); need > cap(last.Data) {
			grown := make([]byte, len(last.Data), min(chunk, max(2*cap(last.Data), need)))
			copy(grown, last.Data)
			last.Data = grown
		}
		last.Data = append(last.Data, f.Data...)
	} else if s.lim.Bytes && len(f.Data) < chunk {
		// Chunks start small and grow as output joins them: a quiet
		// terminal's catch-up holds its last screen's bytes, not 4 KiB
		// chunks.
		data := append(make([]byte, 0, min(chunk, max(len(f.Data), minChunk))), f.Data...)
		s.tail = append(s.tail, Frame{Kind: f.Kind, Data: data, clean: true})
	} else {
		s.tail = append(s.tail, own(f))
	}
	for s.tailBytes > s.lim.Tail && s.tailOff < len(s.tail) {
		s.tailBytes -= len(s.tail[s.tailOff].Data)
		s.tail[s.tailOff] = Frame{}
		s.tailOff++
	}
	// The dropped frames' slots are reclaimed once they are half the
	// slice: each frame is moved a bounded number of times.
	if s.tailOff > 64 && s.tailOff > len(s.tail)/2 {
		n := copy(s.tail, s.tail[s.tailOff:])
		clear(s.tail[n:])
		s.tail, s.tailOff = s.tail[:n], 0
	}
}

// coalesce is the largest chunk a byte stream's tail is kept in, and
// minChunk the capacity a chunk starts with.
const (
	coalesce = 4 << 10
	minChunk = 256
)

// boundary judges the next Output frame (Limits.Boundary); s.mu is held.
func (s *Stream) boundary(p []byte) (cleanStart, openEnd bool) {
	if s.judge == nil {
		return true, false
	}
	return s.judge(p)
}

// Subscribe adds a watcher named name (the auditor's user name). Its first
// frames are the catch-up: the latest Size, the head, and the tail.
func (s *Stream) Subscribe(name string) (*Watcher, error) {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return nil, ErrEnded
	}
	if len(s.watchers) >= MaxWatchers {
		s.mu.Unlock()
		return nil, ErrTooMany
	}
	w := &Watcher{s: s, name: name, max: s.lim.Queue, wake: make(chan struct{}, 1)}
	// The catch-up does not count against the queue's bound: it is
	// bounded by Head and Tail.
	if s.size != nil {
		w.q = append(w.q, *s.size)
	}
	w.q = append(w.q, s.head[:s.headClean]...)
	// The tail from its first frame a client can start at; without one,
	// the live frames wait for the next clean start when a sequence is
	// open.
	tail := s.tail[s.tailOff:]
	for len(tail) > 0 && !tail[0].clean {
		tail = tail[1:]
	}
	w.q = append(w.q, tail...)
	w.resync = len(tail) == 0 && s.lastOpen
	if len(w.q) > 0 {
		w.wake <- struct{}{}
	}
	s.watchers[w] = struct{}{}
	s.mu.Unlock()
	s.notify()
	return w, nil
}

// Watchers are the names of the watchers now, sorted.
func (s *Stream) Watchers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.names()
}

// names are the watchers' names, sorted; s.mu is held.
func (s *Stream) names() []string {
	names := make([]string, 0, len(s.watchers))
	for w := range s.watchers {
		names = append(names, w.name)
	}
	slices.Sort(names)
	return names
}

// notify calls changed with the watchers now.
func (s *Stream) notify() {
	if s.changed == nil {
		return
	}
	s.cmu.Lock()
	defer s.cmu.Unlock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	names := s.names()
	s.mu.Unlock()
	s.changed(names)
}

// Close ends the stream: its watchers get ErrEnded once they have read
// what was queued, and the hub forgets it. Only the first call does
// anything.
func (s *Stream) Close() {
	s.cmu.Lock() // no call of changed runs after Close
	defer s.cmu.Unlock()
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return
	}
	s.ended = true
	for w := range s.watchers {
		w.end(ErrEnded)
	}
	clear(s.watchers)
	s.head, s.tail, s.size = nil, nil, nil
	s.mu.Unlock()
	s.hub.mu.Lock()
	if s.hub.streams[s.info.Session] == s {
		delete(s.hub.streams, s.info.Session)
	}
	s.hub.mu.Unlock()
}

// Watcher is one auditor's view of a stream. It is receive-only: it has no
// way to send anything toward the session.
type Watcher struct {
	s    *Stream
	name string
	max  int
	wake chan struct{} // has a token when q is not empty or err is set

	mu     sync.Mutex // guards the fields below
	q      []Frame
	queued int   // bytes in q since the catch-up
	resync bool  // live Output frames are skipped until one a client can start at
	err    error // why the watcher stopped; frames left in q are still read unless ErrBehind
}

// push queues f, or returns false when the watcher is over its bound (it is
// then ended with ErrBehind). The stream's mu is held.
func (w *Watcher) push(f Frame) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return false
	}
	if w.resync && f.Kind == Output {
		if !f.clean {
			return true
		}
		w.resync = false
	}
	if w.queued+len(f.Data) > w.max {
		w.err, w.q = ErrBehind, nil
		w.signal()
		return false
	}
	w.q = append(w.q, f)
	w.queued += len(f.Data)
	w.signal()
	return true
}

func (w *Watcher) signal() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watcher) end(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = err
	}
	w.signal()
}

// Stream is the stream watched.
func (w *Watcher) Stream() *Stream { return w.s }

// Name is the watcher's name.
func (w *Watcher) Name() string { return w.name }

// Wait returns a channel that has a value when Next may have something.
func (w *Watcher) Wait() <-chan struct{} { return w.wake }

// Next returns the queued frames (nil if none), or the reason the watcher
// stopped once nothing is left to read: ErrEnded, ErrBehind or ErrLeft.
func (w *Watcher) Next() ([]Frame, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.q) > 0 {
		q := w.q
		w.q, w.queued = nil, 0
		if w.err != nil {
			w.signal() // the error follows
		}
		return q, nil
	}
	return nil, w.err
}

// Leave removes the watcher from its stream.
func (w *Watcher) Leave() {
	s := w.s
	s.mu.Lock()
	_, present := s.watchers[w]
	delete(s.watchers, w)
	s.mu.Unlock()
	w.end(ErrLeft)
	if present {
		s.notify()
	}
}
