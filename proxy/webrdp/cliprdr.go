package webrdp

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
	"sync"
	"sync/atomic"
	"unicode/utf16"
)

// Files copied through a desktop's clipboard ([MS-RDPECLIP] 3.1.1.2) go
// through the gateway as clipboard PDUs on the cliprdr static channel: the
// side that copies files sends a Format List naming FileGroupDescriptorW,
// the other side asks for that format's data (the list of files: names and
// sizes) and then for each file's bytes with File Contents Requests, which
// the first side answers in File Contents Responses. The gateway reads the
// channel's messages in both directions (clipGate) to audit each file and,
// when the role disables file transfer, to take the file formats out of the
// format lists and answer any File Contents Request with a failure itself.
//
// Everything else on the channel (text, images, the capabilities) passes,
// and every other channel passes unparsed beyond its MCS header.
//
// Virtual channel data is compressed only in a direction whose receiver
// announced it in its Virtual Channel Capability Set ([MS-RDPBCGR]
// 2.2.7.1.10); IronRDP's client announces none (NO_COMPRESSION) and, not
// decompressing, compresses nothing either. So the channel is readable, and
// a compressed chunk is a stream the gateway refuses (the session ends)
// rather than pass unread.

// Clipboard PDU types ([MS-RDPECLIP] 2.2.1) and flags.
const (
	cbMonitorReady        = 0x0001
	cbFormatList          = 0x0002
	cbFormatListResponse  = 0x0003
	cbFormatDataRequest   = 0x0004
	cbFormatDataResponse  = 0x0005
	cbClipCaps            = 0x0007
	cbFileContentsRequest = 0x0008
	cbFileContentsResp    = 0x0009

	cbResponseOK   = 0x0001
	cbResponseFail = 0x0002
	cbASCIINames   = 0x0004

	cbCapsGeneral         = 0x0001
	cbUseLongFormatNames  = 0x0002
	cbStreamFileclip      = 0x0004
	fileContentsSize      = 0x0001
	fileContentsRange     = 0x0002
	cfHDROP               = 15
	fileDescriptorSize    = 592
	clipHeaderSize        = 8
	channelFlagFirst      = 0x01
	channelFlagLast       = 0x02
	channelFlagCompressed = 0x00200000
)

// Limits: what the gateway holds of one clipboard message it must read
// whole (a format list, a list of files), and how many files of a list it
// follows.
const (
	maxClipMessage = 4 << 20
	maxListedFiles = 4096
	maxStreams     = 256 // File Contents Requests awaiting their response, per side
)

// fileFormatNames are the clipboard formats that carry files, by name
// (compared without case); CF_HDROP (15) by its ID.
var fileFormatNames = []string{"FileGroupDescriptorW", "FileGroupDescriptor", "FileContents", "FileNameW", "FileName",
	"x-special/gnome-copied-files", "text/uri-list"}

// Direction of a file, as audited.
const (
	Upload   = "upload"   // from the page to the machine
	Download = "download" // from the machine to the page
)

// ErrClipboardStream is a clipboard channel the gateway cannot read: the
// session ends rather than let files pass unchecked.
var ErrClipboardStream = errors.New("webrdp: clipboard channel")

// FileEvent is one file the clipboard carried, or refused.
type FileEvent struct {
	// Refused: the role stopped it (Name may then be empty).
	Refused bool
	// Direction is Upload or Download.
	Direction string
	Name      string
	// Size is the file's size as listed, -1 when unknown.
	Size int64
	// Bytes is how many bytes of it passed, in order, and SHA256 their hash.
	Bytes  int64
	SHA256 string
	// Complete: every byte passed, in order.
	Complete bool
}

// side is who sends a clipboard message: the page or the machine.
type side int

const (
	client side = 0
	server side = 1
)

func (s side) direction() string {
	if s == client {
		return Upload
	}
	return Download
}

// clipGate is the state of one session's clipboard, shared by the two
// directions' filters: mu guards it, each direction's parsing holding it
// only while it handles a clipboard message's chunk.
type clipGate struct {
	allow bool // files may pass
	event func(FileEvent)

	mu      sync.Mutex
	caps    [2]uint32 // each side's general capability flags
	capsSet [2]bool
	offers  [2]offer
	// inject holds the PDUs the gateway sends to a side in the name of
	// the other (failure responses), by the side they go to.
	inject [2][][]byte
	queued [2]atomic.Bool // inject has messages for that side
}

// offer is the files a side copied: its last format list's, and what
// passed of them.
type offer struct {
	descriptorFormat uint32 // FileGroupDescriptorW's ID, 0 if none
	fileFormats      map[uint32]bool
	descriptorWanted bool // the other side asked for the descriptor
	refused          bool // a file_transfer_refused was written for it
	files            []*fileState
	streams          map[uint32]stream // the other side's requests, by stream ID
}

type stream struct {
	lindex   uint32
	flags    uint32
	position uint64
	cb       uint32 // bytes requested
}

// fileState is one listed file and what passed of it.
type fileState struct {
	name     string
	size     int64
	next     uint64 // the position the hash has reached
	skip     uint64 // bytes of the response passing that the hash has had
	want     uint32 // bytes the response passing was asked for
	got      uint64 // bytes of it so far
	h        hash.Hash
	touched  bool // a request for it passed
	disorder bool // a range came out of order
	done     bool // its event is written
}

func newClipGate(allow bool, event func(FileEvent)) *clipGate {
	if event == nil {
		event = func(FileEvent) {}
	}
	return &clipGate{allow: allow, event: event}
}

// longNames says whether format lists use long format names: both sides
// announced them ([MS-RDPECLIP] 1.3.2.2.1).
func (g *clipGate) longNames() bool {
	return g.capsSet[0] && g.capsSet[1] && g.caps[0]&g.caps[1]&cbUseLongFormatNames != 0
}

// msgAction is what a direction does with a clipboard message.
type msgAction int

const (
	actPass    msgAction = iota // relay its chunks as they come
	actInspect                  // relay them and keep a copy, read whole at the end
	actRewrite                  // hold them, and relay the message as rewritten
	actDrop                     // relay nothing of it
	actHash                     // relay them, hashing file contents
)

// begin decides what from does with a message whose first chunk starts
// with hdr (its CLIPRDR_HEADER, and the start of its data).
func (g *clipGate) begin(from side, first []byte) (msgAction, *fileState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	typ := binary.LittleEndian.Uint16(first)
	flags := binary.LittleEndian.Uint16(first[2:])
	data := first[clipHeaderSize:]
	to := 1 - from
	switch typ {
	case cbClipCaps, cbFormatList:
		if g.allow {
			return actInspect, nil // read, not changed
		}
		return actRewrite, nil
	case cbFormatDataRequest:
		if len(data) < 4 {
			return actPass, nil
		}
		id := binary.LittleEndian.Uint32(data)
		o := &g.offers[to]
		if o.fileFormats[id] {
			if !g.allow {
				g.refuseLocked(to, "")
				g.queueLocked(from, clipMessage(cbFormatDataResponse, cbResponseFail, nil))
				return actDrop, nil
			}
			if id == o.descriptorFormat {
				o.descriptorWanted = true
			}
		}
		return actPass, nil
	case cbFormatDataResponse:
		o := &g.offers[from]
		if o.descriptorWanted {
			o.descriptorWanted = false
			if flags&cbResponseOK != 0 {
				return actInspect, nil
			}
		}
		return actPass, nil
	case cbFileContentsRequest:
		if len(data) < 24 {
			return actPass, nil
		}
		id := binary.LittleEndian.Uint32(data)
		lindex := binary.LittleEndian.Uint32(data[4:])
		rflags := binary.LittleEndian.Uint32(data[8:])
		pos := uint64(binary.LittleEndian.Uint32(data[12:])) | uint64(binary.LittleEndian.Uint32(data[16:]))<<32
		o := &g.offers[to] // the files requested are the other side's
		if !g.allow {
			g.refuseLocked(to, o.fileName(lindex))
			g.queueLocked(from, clipMessage(cbFileContentsResp, cbResponseFail, binary.LittleEndian.AppendUint32(nil, id)))
			return actDrop, nil
		}
		if o.streams == nil {
			o.streams = make(map[uint32]stream)
		}
		if len(o.streams) >= maxStreams {
			clear(o.streams) // a peer that never answers: forget, the files stay incomplete
		}
		o.streams[id] = stream{lindex: lindex, flags: rflags, position: pos, cb: binary.LittleEndian.Uint32(data[20:])}
		if f := o.file(lindex); f != nil {
			f.touched = true
		}
		return actPass, nil
	case cbFileContentsResp:
		if !g.allow {
			g.refuseLocked(from, "")
			return actDrop, nil
		}
		if len(data) < 4 || flags&cbResponseOK == 0 {
			return actPass, nil
		}
		o := &g.offers[from]
		id := binary.LittleEndian.Uint32(data)
		st, ok := o.streams[id]
		if !ok {
			return actPass, nil
		}
		delete(o.streams, id)
		f := o.file(st.lindex)
		if f == nil || st.flags&fileContentsRange == 0 {
			return actPass, nil
		}
		// A range read again (a cache dropped, a read retried) is hashed
		// from where the hash is; a range past it leaves a gap.
		if st.position > f.next || f.disorder || f.done {
			f.disorder = f.disorder || !f.done
			return actPass, nil
		}
		f.skip = f.next - st.position
		f.want, f.got = st.cb, 0
		if f.h == nil {
			f.h = sha256.New()
		}
		return actHash, f
	}
	return actPass, nil
}

// hashed notes that n bytes of f passed (under the lock: the other
// direction may end the offer meanwhile).
func (g *clipGate) hashed(f *fileState, p []byte) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f.done {
		return
	}
	f.got += uint64(len(p))
	k := min(f.skip, uint64(len(p)))
	f.skip -= k
	p = p[k:]
	f.h.Write(p)
	f.next += uint64(len(p))
}

// hashEnd is the end of a File Contents Response for f: a file whose bytes
// have all passed is audited now.
func (g *clipGate) hashEnd(from side, f *fileState) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if f.size < 0 && f.got < uint64(f.want) {
		f.size = int64(f.next) // a file listed without its size ends where a range comes short
	}
	if !f.done && f.size >= 0 && f.next >= uint64(f.size) && !f.disorder {
		g.fileDoneLocked(from, f)
	}
}

// whole handles a message read whole (actInspect, actRewrite) and returns
// what to relay in its place: msg itself, or a rewrite.
func (g *clipGate) whole(from side, msg []byte) ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	typ := binary.LittleEndian.Uint16(msg)
	data := msg[clipHeaderSize:]
	switch typ {
	case cbClipCaps:
		return g.capsLocked(from, msg), nil
	case cbFormatList:
		return g.formatListLocked(from, msg)
	case cbFormatDataResponse:
		g.descriptorsLocked(from, data)
	}
	return msg, nil
}

// capsLocked reads a side's Clipboard Capabilities PDU: its general
// capability set's flags. Without file transfer, the flag that announces
// file streaming is cleared (the same length: nothing else moves).
func (g *clipGate) capsLocked(from side, msg []byte) []byte {
	data := msg[clipHeaderSize:]
	if len(data) < 4 {
		return msg
	}
	n := int(binary.LittleEndian.Uint16(data))
	at := 4
	for range n {
		if at+4 > len(data) {
			break
		}
		typ := binary.LittleEndian.Uint16(data[at:])
		size := int(binary.LittleEndian.Uint16(data[at+2:]))
		if size < 4 || at+size > len(data) {
			break
		}
		if typ == cbCapsGeneral && size >= 12 {
			flags := binary.LittleEndian.Uint32(data[at+8:])
			if !g.allow {
				flags &^= cbStreamFileclip
				binary.LittleEndian.PutUint32(data[at+8:], flags)
			}
			g.caps[from], g.capsSet[from] = flags, true
		}
		at += size
	}
	return msg
}

// format is one entry of a format list.
type format struct {
	id   uint32
	name string
	raw  []byte // its bytes in the list
}

// parseFormats reads a Format List's data: short names (32 bytes each) or
// long ones (NUL-terminated UTF-16).
func parseFormats(data []byte, long, ascii bool) ([]format, error) {
	var fs []format
	if !long {
		if len(data)%36 != 0 {
			return nil, fmt.Errorf("%w: a short format list of %d bytes", ErrClipboardStream, len(data))
		}
		for at := 0; at < len(data); at += 36 {
			name := data[at+4 : at+36]
			var s string
			if ascii {
				s = strings.TrimRight(string(name), "\x00")
			} else {
				s = utf16String(name)
			}
			fs = append(fs, format{id: binary.LittleEndian.Uint32(data[at:]), name: s, raw: data[at : at+36]})
		}
		return fs, nil
	}
	for at := 0; at < len(data); {
		if at+6 > len(data) {
			return nil, fmt.Errorf("%w: a long format list cut short", ErrClipboardStream)
		}
		end := at + 4
		for ; end+1 < len(data) && (data[end] != 0 || data[end+1] != 0); end += 2 {
		}
		if end+1 >= len(data) {
			return nil, fmt.Errorf("%w: a format name without its end", ErrClipboardStream)
		}
		fs = append(fs, format{id: binary.LittleEndian.Uint32(data[at:]), name: utf16String(data[at+4 : end]), raw: data[at : end+2]})
		at = end + 2
	}
	return fs, nil
}

// utf16String decodes little-endian UTF-16 up to its first NUL.
func utf16String(b []byte) string {
	u := make([]uint16, 0, len(b)/2)
	for i := 0; i+1 < len(b); i += 2 {
		c := binary.LittleEndian.Uint16(b[i:])
		if c == 0 {
			break
		}
		u = append(u, c)
	}
	return string(utf16.Decode(u))
}

func isFileFormat(f format) bool {
	if f.id == cfHDROP {
		return true
	}
	for _, n := range fileFormatNames {
		if strings.EqualFold(f.name, n) {
			return true
		}
	}
	return false
}

// formatListLocked reads a side's new Format List: its previous offer
// ends (files that had begun to pass and did not finish are audited
// incomplete), and the new one's file formats are noted. Without file
// transfer they are taken out of the list.
func (g *clipGate) formatListLocked(from side, msg []byte) ([]byte, error) {
	flags := binary.LittleEndian.Uint16(msg[2:])
	fs, err := parseFormats(msg[clipHeaderSize:], g.longNames(), flags&cbASCIINames != 0)
	if err != nil {
		return nil, err
	}
	g.endOfferLocked(from)
	o := &g.offers[from]
	var kept []byte
	removed := false
	for _, f := range fs {
		if !isFileFormat(f) {
			kept = append(kept, f.raw...)
			continue
		}
		if o.fileFormats == nil {
			o.fileFormats = make(map[uint32]bool)
		}
		o.fileFormats[f.id] = true
		if strings.EqualFold(f.name, "FileGroupDescriptorW") {
			o.descriptorFormat = f.id
		}
		removed = true
	}
	if g.allow || !removed {
		return msg, nil
	}
	g.refuseLocked(from, "")
	return clipMessage(cbFormatList, flags, kept), nil
}

// endOfferLocked ends a side's offer: its files that began to pass and
// whose events are not written are audited as they are.
func (g *clipGate) endOfferLocked(from side) {
	o := &g.offers[from]
	for _, f := range o.files {
		if f.touched && !f.done {
			g.fileDoneLocked(from, f)
		}
	}
	*o = offer{}
}

// close ends both offers, at the session's end.
func (g *clipGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.endOfferLocked(client)
	g.endOfferLocked(server)
}

// descriptorsLocked reads the list of files a side offers
// (CLIPRDR_FILELIST, [MS-RDPECLIP] 2.2.5.2.3.1).
func (g *clipGate) descriptorsLocked(from side, data []byte) {
	if len(data) < 4 {
		return
	}
	n := int(binary.LittleEndian.Uint32(data))
	o := &g.offers[from]
	o.files = o.files[:0]
	for i := 0; i < n && i < maxListedFiles && 4+(i+1)*fileDescriptorSize <= len(data); i++ {
		d := data[4+i*fileDescriptorSize : 4+(i+1)*fileDescriptorSize]
		size := int64(binary.LittleEndian.Uint32(d[64:]))<<32 | int64(binary.LittleEndian.Uint32(d[68:]))
		if binary.LittleEndian.Uint32(d)&0x40 == 0 { // FD_FILESIZE absent
			size = -1
		}
		o.files = append(o.files, &fileState{name: utf16String(d[72:]), size: size})
	}
}

func (o *offer) file(lindex uint32) *fileState {
	if int64(lindex) < int64(len(o.files)) {
		return o.files[lindex]
	}
	return nil
}

func (o *offer) fileName(lindex uint32) string {
	if f := o.file(lindex); f != nil {
		return f.name
	}
	return ""
}

// fileDoneLocked audits a file of from's offer.
func (g *clipGate) fileDoneLocked(from side, f *fileState) {
	f.done = true
	h := f.h
	if h == nil {
		h = sha256.New()
	}
	ev := FileEvent{Direction: from.direction(), Name: f.name, Size: f.size, Bytes: int64(f.next),
		SHA256: hex.EncodeToString(h.Sum(nil))}
	ev.Complete = !f.disorder && f.size >= 0 && int64(f.next) == f.size
	g.event(ev)
}

// refuseLocked audits a refusal of from's offer, once per offer.
func (g *clipGate) refuseLocked(from side, name string) {
	o := &g.offers[from]
	if o.refused {
		return
	}
	o.refused = true
	g.event(FileEvent{Refused: true, Direction: from.direction(), Name: name, Size: -1})
}

// queueLocked queues msg, a clipboard message, to be sent to side to.
func (g *clipGate) queueLocked(to side, msg []byte) {
	g.inject[to] = append(g.inject[to], msg)
	g.queued[to].Store(true)
}

// pending says whether messages are queued for side to.
func (g *clipGate) pending(to side) bool { return g.queued[to].Load() }

// takeInjected returns the clipboard messages queued for side to.
func (g *clipGate) takeInjected(to side) [][]byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	q := g.inject[to]
	g.inject[to] = nil
	g.queued[to].Store(false)
	return q
}

// clipMessage is a clipboard PDU: header and data.
func clipMessage(typ, flags uint16, data []byte) []byte {
	b := make([]byte, clipHeaderSize, clipHeaderSize+len(data))
	binary.LittleEndian.PutUint16(b, typ)
	binary.LittleEndian.PutUint16(b[2:], flags)
	binary.LittleEndian.PutUint32(b[4:], uint32(len(data)))
	return append(b, data...)
}
