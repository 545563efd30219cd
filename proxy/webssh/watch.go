package webssh

import (
	"context"
	"encoding/json"
	"errors"
	"io"

	"github.com/coder/websocket"
	"go.uber.org/zap"

	"github.com/bastiond/bastiond/proxy/watch"
)

// WatchSubprotocol is the WebSocket subprotocol of a watcher's page
// (web/src/watch.ts).
//
// Server to page only:
//
//	{"type":"hello","session":"5f2c0a9e13b7","user":"alice","target":"vm1","recorded":true}
//	{"type":"size","cols":120,"rows":40}
//	    The terminal's size: first, and at each resize.
//	binary frames: the terminal's output, from the catch-up (the last
//	    64 KiB the machine showed) on.
//	{"type":"end","reason":"ended|behind|shutdown","message":"…"}
//	    The last message: the session ended, the watcher fell behind and
//	    was dropped, or the bastion is shutting down.
//
// Whatever the page sends is read and dropped: a watcher's socket has no
// path to the session (a *watch.Watcher only receives).
const WatchSubprotocol = "bastion-watch.v1"

type watchHello struct {
	Type     string `json:"type"`
	Session  string `json:"session"`
	User     string `json:"user"`
	Target   string `json:"target"`
	Recorded bool   `json:"recorded"`
}

type watchEnd struct {
	Type    string `json:"type"`
	Reason  string `json:"reason"`
	Message string `json:"message"`
}

// maxWatcherMessage bounds what is read (and dropped) from a watcher's page.
const maxWatcherMessage = 4 << 10

// Watch carries the terminal w watches to the page on ws until the session
// ends, the watcher falls behind, the page goes away or ctx ends; then it
// closes ws and returns why the watcher stopped (watch.ErrEnded,
// watch.ErrBehind, watch.ErrLeft when the page left, or ctx's error). It
// never writes to the session: a watcher has no way to.
func Watch(ctx context.Context, ws *websocket.Conn, w *watch.Watcher, log *zap.Logger) error {
	defer w.Leave()
	info := w.Stream().Info()
	ws.SetReadLimit(maxWatcherMessage)
	gone := make(chan struct{})
	go func() {
		defer close(gone)
		dropped := 0
		for {
			_, r, err := ws.Reader(context.Background())
			if err != nil {
				return
			}
			n, _ := io.Copy(io.Discard, r)
			if dropped++; dropped == 1 {
				log.Info("a watcher's page sent something: dropped (watchers are read-only)", zap.Int64("bytes", n))
			}
		}
	}()
	send := func(v any) error {
		b, _ := json.Marshal(v)
		wctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		return ws.Write(wctx, websocket.MessageText, b)
	}
	write := func(f watch.Frame) error {
		wctx, cancel := context.WithTimeout(ctx, sendTimeout)
		defer cancel()
		if f.Kind == watch.Size {
			var sz struct{ Cols, Rows int }
			if json.Unmarshal(f.Data, &sz) != nil {
				return nil
			}
			b, _ := json.Marshal(map[string]any{"type": "size", "cols": sz.Cols, "rows": sz.Rows})
			return ws.Write(wctx, websocket.MessageText, b)
		}
		return ws.Write(wctx, websocket.MessageBinary, f.Data)
	}
	if err := send(watchHello{Type: "hello", Session: info.Session, User: info.User, Target: info.Target,
		Recorded: info.Recorded}); err != nil {
		ws.CloseNow()
		return watch.ErrLeft
	}
	for {
		frames, err := w.Next()
		for _, f := range frames {
			if werr := write(f); werr != nil {
				ws.CloseNow()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return watch.ErrLeft
			}
		}
		if err != nil {
			e := watchEnd{Type: "end", Reason: "ended", Message: "The session ended."}
			if errors.Is(err, watch.ErrBehind) {
				e = watchEnd{Type: "end", Reason: "behind",
					Message: "This page fell behind the session's output and was disconnected; the session goes on. Reload to watch again."}
			}
			send(e)
			ws.Close(websocket.StatusNormalClosure, "")
			return err
		}
		if frames != nil {
			continue
		}
		select {
		case <-w.Wait():
		case <-gone:
			ws.CloseNow()
			return watch.ErrLeft
		case <-ctx.Done():
			send(watchEnd{Type: "end", Reason: "shutdown", Message: "The bastion is shutting down."})
			ws.Close(websocket.StatusGoingAway, "")
			return ctx.Err()
		}
	}
}
