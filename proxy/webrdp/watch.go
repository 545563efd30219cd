package webrdp

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"time"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// Live view: a watched desktop's server PDUs go to a watch.Stream through
// the recording's tap (tee), and a watcher's IronRDP client is served as a
// recording's player is (Replay): its RDCleanPath request is answered with
// the server's certificates and a Confirm that selects TLS alone, then it
// gets the stream's catch-up (the connection's first 256 KiB, which hold
// the capability exchange and activation, and the latest 2 MiB of updates),
// then the live PDUs. What the client sends is read and dropped: nothing
// connects a watcher to the session.

// tee writes the tap's records to the recording, if any, and the server's
// PDUs and the desktop's size to the watchers' stream, if any. The client's
// PDUs never go to watchers.
type tee struct {
	rec    *recording.RDPRecorder
	stream *watch.Stream
}

var _ recording.RecordWriter = tee{}

func (t tee) Record(kind byte, p []byte) error {
	if t.stream != nil {
		switch kind {
		case recording.RDPServer:
			t.stream.Publish(watch.Output, p)
		case recording.RDPMeta:
			t.stream.Publish(watch.Size, p)
		}
	}
	if t.rec != nil {
		return t.rec.Record(kind, p)
	}
	return nil
}

// watchable opens the watchers' stream of sess, when Params.Watch is set.
func (g *gateway) watchable(sess Session, target string, cc []byte, chain [][]byte, recorded bool) *watch.Stream {
	if g.p.Watch == nil {
		return nil
	}
	info := watch.Info{Session: sess.ID(), User: g.p.User, Target: target, Protocol: "rdp", Start: time.Now(),
		Recorded: recorded, Confirm: cc, CertChain: chain}
	lim := watch.RDPLimits
	lim.Boundary = newPDUFramer
	return g.p.Watch.Open(info, lim, func(names []string) {
		if g.p.Watched != nil {
			g.p.Watched(sess, names)
		}
	})
}

// Watch serves the desktop w watches to the watcher's IronRDP client on
// conn (its WebSocket as a byte stream) until the session ends, the watcher
// falls behind, the client goes away or ctx ends, and returns why
// (watch.ErrEnded, watch.ErrBehind, watch.ErrLeft, or ctx's error). The
// caller closes conn.
func Watch(ctx context.Context, conn net.Conn, w *watch.Watcher, handshake time.Duration, log *zap.Logger) error {
	defer w.Leave()
	if handshake <= 0 {
		handshake = 30 * time.Second
	}
	info := w.Stream().Info()
	conn.SetDeadline(time.Now().Add(handshake))
	if _, err := rdcleanpath.Read(conn, rdcleanpath.MaxRequest); err != nil {
		return watch.ErrLeft
	}
	b, err := rdcleanpath.Response(ReplayConfirm(info.Confirm), info.CertChain, info.Target).Marshal()
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return watch.ErrLeft
	}
	conn.SetDeadline(time.Time{})
	gone := make(chan struct{})
	go func() {
		// The client answers the server it thinks it has: read and
		// dropped.
		n, _ := io.Copy(io.Discard, conn)
		log.Debug("rdp watcher's client gone", zap.Int64("bytes_dropped", n))
		close(gone)
	}()
	for {
		frames, err := w.Next()
		for _, f := range frames {
			if f.Kind != watch.Output {
				continue
			}
			conn.SetWriteDeadline(time.Now().Add(handshake))
			if _, werr := conn.Write(f.Data); werr != nil {
				return watch.ErrLeft
			}
		}
		if err != nil {
			if errors.Is(err, watch.ErrBehind) {
				log.Info("rdp watcher dropped: it fell behind the session")
			}
			return err
		}
		if frames != nil {
			continue
		}
		select {
		case <-w.Wait():
		case <-gone:
			return watch.ErrLeft
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Fast-path update fragmentation ([MS-RDPBCGR] 2.2.9.1.2.1.1): a large
// update comes as FIRST, NEXT…, LAST, each in a PDU of its own.
const (
	fragFirst = 2
	fragNext  = 3
)

// maxPDU bounds a PDU the framer waits for: a TPKT's length is 16 bits.
const maxPDU = 64 << 10

// pduFramer is the watch.Limits.Boundary of a desktop's server side. It
// follows the PDUs (TPKT or fast-path) across the tap's records, which
// are whole PDUs while the tap frames the stream and arbitrary reads once
// it records raw, and the fast-path updates' fragmentation: a frame is a
// clean start when it begins at a PDU boundary with no fragmented update
// open, and ends open when it ends inside a PDU or a fragmented update.
// Once the stream is not PDUs as it knows them it gives up: every frame
// is then whole, as before the live view had boundaries.
type pduFramer struct {
	pend []byte // the start of a PDU the frame ended in
	open bool   // a fragmented fast-path update is open
	lost bool
}

func newPDUFramer() func([]byte) (cleanStart, openEnd bool) { return (&pduFramer{}).judge }

func (f *pduFramer) judge(frame []byte) (cleanStart, openEnd bool) {
	if f.lost {
		return true, false
	}
	cleanStart = len(f.pend) == 0 && !f.open
	b := frame
	if len(f.pend) > 0 {
		b = append(f.pend, frame...)
	}
	for len(b) > 0 {
		n, hdr := framedPDULen(b)
		if n == 0 && len(b) >= 4 || n > maxPDU || n > 0 && n < hdr {
			f.lost, f.pend, f.open = true, nil, false
			return true, false
		}
		if n == 0 || n > len(b) {
			break // the PDU goes on in the next frame
		}
		f.update(b[:n], hdr)
		b = b[n:]
	}
	f.pend = append(f.pend[:0:0], b...)
	return cleanStart, len(f.pend) > 0 || f.open
}

// update follows the fragmentation of the fast-path updates in pdu.
func (f *pduFramer) update(pdu []byte, hdr int) {
	if pdu[0]&3 != 0 || pdu[0]>>6&2 != 0 { // slow-path (TPKT), or encrypted
		return
	}
	for u := pdu[hdr:]; len(u) >= 3; {
		h := u[0]
		i := 1
		if h>>6&2 != 0 { // FASTPATH_OUTPUT_COMPRESSION_USED: compressionFlags
			i++
		}
		if len(u) < i+2 {
			return
		}
		switch h >> 4 & 3 {
		case fragFirst, fragNext:
			f.open = true
		default:
			f.open = false
		}
		u = u[min(len(u), i+2+int(binary.LittleEndian.Uint16(u[i:]))):]
	}
}

// framedPDULen is the length of the PDU p starts with (TPKT or fast-path) and
// the length of its header; 0 if unknown.
func framedPDULen(p []byte) (n, hdr int) {
	switch {
	case len(p) >= 4 && p[0] == 3:
		return int(binary.BigEndian.Uint16(p[2:4])), 4
	case len(p) >= 2 && p[0]&3 == 0 && p[1]&0x80 == 0:
		return int(p[1]), 2
	case len(p) >= 3 && p[0]&3 == 0:
		return int(p[1]&0x7f)<<8 | int(p[2]), 3
	}
	return 0, 0
}
