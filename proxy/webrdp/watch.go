package webrdp

import (
	"context"
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
// gets the stream's catch-up (the connection's first MiB, which holds the
// capability exchange and activation, and the latest 4 MiB of updates),
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
	return g.p.Watch.Open(info, watch.RDPLimits, func(names []string) {
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
