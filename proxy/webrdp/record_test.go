package webrdp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
)

// tpktFrame is a TPKT packet around an X.224 Data TPDU and payload.
func tpktFrame(payload string) []byte {
	b := append([]byte{3, 0, 0, 0, 2, 0xf0, 0x80}, payload...)
	binary.BigEndian.PutUint16(b[2:], uint16(len(b)))
	return b
}

// TestGatewayRecords: a recorded desktop's file holds what went each way
// after the negotiation, and the server's Confirm and certificate.
func TestGatewayRecords(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			srv := newRDPServer(t, network, modeTLS)
			dir := t.TempDir()
			var path string
			g := newGateway(t, srv, func(p *Params) {
				p.Record = func(sess Session, h recording.RDPHeader) (*recording.RDPRecorder, error) {
					h.User = "alice"
					rec, err := recording.CreateRDP(dir, h)
					if err == nil {
						path = rec.Path()
					}
					return rec, err
				}
			})
			g.pin(srv)
			if resp := g.send(request("good", anyTLS)); resp.Error != nil {
				t.Fatalf("error answer: %+v", resp.Error)
			}
			frame := tpktFrame("hello, desktop")
			go g.page.Write(frame)
			echo := make([]byte, len(frame))
			if _, err := io.ReadFull(g.page, echo); err != nil {
				t.Fatal(err)
			}
			g.page.Close()
			g.wait()
			r, err := recording.OpenRDP(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			h := r.Header
			if h.Session != "s1" || h.Target != "vm2" || h.User != "alice" || h.Protocol != rdcleanpath.ProtocolSSL ||
				len(h.CertChain) != 1 || !bytes.Equal(h.CertChain[0], srv.cert.Certificate[0]) ||
				!bytes.Equal(h.Confirm, confirm(rdcleanpath.RDPNegRsp, rdcleanpath.ProtocolSSL)) {
				t.Errorf("header %+v", h)
			}
			var up, down []byte
			for {
				rec, err := r.Next()
				if err != nil {
					break
				}
				switch rec.Kind {
				case recording.RDPClient:
					up = append(up, rec.Data...)
				case recording.RDPServer:
					down = append(down, rec.Data...)
				}
			}
			if !bytes.Equal(up, frame) || !bytes.Equal(down, asciiUpper(frame)) {
				t.Errorf("recorded up %q, down %q", up, down)
			}
		})
	}
}

// TestGatewayRecordingUnavailable: a desktop that must be recorded and
// cannot be is refused, with the reason in its record.
func TestGatewayRecordingUnavailable(t *testing.T) {
	srv := newRDPServer(t, "tcp4", modeTLS)
	g := newGateway(t, srv, func(p *Params) {
		p.Record = func(Session, recording.RDPHeader) (*recording.RDPRecorder, error) {
			return nil, errors.New("recording: open /x: read-only file system")
		}
	})
	g.pin(srv)
	resp := g.send(request("good", anyTLS))
	if resp.Error == nil || resp.Error.HTTPStatus != 503 {
		t.Errorf("answer %+v", resp)
	}
	o := g.wait()
	if o.Class != ClassRecording || !strings.Contains(o.Message, "storage is read-only") || strings.Contains(o.Message, "/x") {
		t.Errorf("outcome %+v", o)
	}
	if r := g.reason(); !strings.HasPrefix(r, broker.ReasonRecordingFailed+": ") {
		t.Errorf("end reason %q", r)
	}
}

// TestTapConnFails: a recording that fails mid-session ends the session
// through failed, and the read fails.
func TestTapConnFails(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ended := make(chan error, 1)
	// As the session's End does: close the connections.
	c := &tapConn{Conn: a, record: func([]byte) error { return errors.New("disk full") }, failed: func(err error) { ended <- err; a.Close() }}
	go func() {
		b.Write([]byte("x"))
		b.Write([]byte("not relayed"))
	}()
	if n, err := c.Read(make([]byte, 8)); n != 0 || err == nil {
		t.Fatalf("read %d, %v", n, err)
	}
	if err := <-ended; err.Error() != "disk full" {
		t.Fatalf("failed with %v", err)
	}
	if out := endedOutcome(broker.ReasonRecordingFailed + ": disk full"); out.Class != ClassRecording {
		t.Errorf("outcome %+v", out)
	}
}

func endedOutcome(reason string) Outcome { return ended(reason, "vm2") }

// writeRecording makes a recording with server records at the times given.
func writeRecording(t *testing.T, times []time.Duration) string {
	t.Helper()
	rec, err := recording.CreateRDP(t.TempDir(), recording.RDPHeader{Session: "s1", Target: "vm2",
		Protocol: rdcleanpath.ProtocolHybridEx, Confirm: confirm(rdcleanpath.RDPNegRsp, rdcleanpath.ProtocolHybridEx),
		CertChain: [][]byte{{0x30, 0x03, 1, 2, 3}}, Start: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for i, at := range times {
		time.Sleep(time.Until(start.Add(at)))
		rec.Record(recording.RDPClient, []byte("ignored"))
		rec.Record(recording.RDPServer, tpktFrame(string(rune('A'+i))))
	}
	rec.Close()
	return rec.Path()
}

// replayTo plays path to a page on a pipe; it returns the page's end.
func replayTo(t *testing.T, path string, p *Player) (net.Conn, *rdcleanpath.PDU) {
	t.Helper()
	r, err := recording.OpenRDP(path)
	if err != nil {
		t.Fatal(err)
	}
	page, conn := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Replay(ctx, conn, ReplayParams{Recording: r, Player: p, Generation: p.Generation(), Logger: zaptest.NewLogger(t)})
		conn.Close()
		r.Close()
	}()
	t.Cleanup(func() { page.Close(); cancel(); <-done })
	b, _ := request("replay", anyTLS).Marshal()
	go page.Write(b)
	page.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := rdcleanpath.Read(page, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return page, resp
}

// TestReplay: the client is told TLS alone, with the recorded certificate
// and the server's Confirm flags, then gets the server's side in order, at
// the recorded pace times the speed; a later start fast-forwards.
func TestReplay(t *testing.T) {
	path := writeRecording(t, []time.Duration{0, 400 * time.Millisecond, 800 * time.Millisecond})
	t.Run("from the start at 2x", func(t *testing.T) {
		p := NewPlayer(0, 2)
		page, resp := replayTo(t, path, p)
		if resp.Error != nil || len(resp.ServerCertChain) != 1 || resp.ServerAddr != "vm2" {
			t.Fatalf("answer %+v", resp)
		}
		if cc, err := rdcleanpath.ParseConnectionConfirm(resp.X224ConnectionPDU); err != nil || cc.Protocol != rdcleanpath.ProtocolSSL {
			t.Errorf("confirm %+v, %v", cc, err)
		}
		start := time.Now()
		got := make([]byte, 3*len(tpktFrame("A")))
		if _, err := io.ReadFull(page, got); err != nil {
			t.Fatal(err)
		}
		if want := concat(tpktFrame("A"), tpktFrame("B"), tpktFrame("C")); !bytes.Equal(got, want) {
			t.Errorf("replayed % x\nwant % x", got, want)
		}
		// 800 ms of recording at 2x: about 400 ms.
		if d := time.Since(start); d < 300*time.Millisecond || d > 3*time.Second {
			t.Errorf("replayed in %v", d)
		}
		waitEnded(t, p)
	})
	t.Run("a seek fast-forwards", func(t *testing.T) {
		p := NewPlayer(time.Hour, 1)
		page, _ := replayTo(t, path, p)
		start := time.Now()
		got := make([]byte, 3*len(tpktFrame("A")))
		if _, err := io.ReadFull(page, got); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 300*time.Millisecond {
			t.Errorf("fast-forward took %v", d)
		}
		waitEnded(t, p)
	})
}

// TestReplaySeekTakesOver: after a seek, the connection it replaces sends
// no more and cannot end the player; the new one plays to the end.
func TestReplaySeekTakesOver(t *testing.T) {
	path := writeRecording(t, []time.Duration{0, 300 * time.Millisecond, 600 * time.Millisecond})
	p := NewPlayer(0, 1)
	old, _ := replayTo(t, path, p)
	first := make([]byte, len(tpktFrame("A")))
	if _, err := io.ReadFull(old, first); err != nil {
		t.Fatal(err)
	}
	p.Seek(0, 8)
	page, _ := replayTo(t, path, p)
	got := make([]byte, 3*len(tpktFrame("A")))
	if _, err := io.ReadFull(page, got); err != nil {
		t.Fatal(err)
	}
	waitEnded(t, p)
	old.SetReadDeadline(time.Now().Add(700 * time.Millisecond))
	if n, err := old.Read(make([]byte, 64)); n > 0 || err == nil {
		t.Errorf("the replaced connection sent %d more bytes (%v)", n, err)
	}
}

func waitEnded(t *testing.T, p *Player) {
	t.Helper()
	for range 100 {
		if p.State().Ended {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the player did not end: %+v", p.State())
}

func concat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

// TestPlayerClock: pause holds the position, speed scales it.
func TestPlayerClock(t *testing.T) {
	now := time.Unix(1000, 0)
	p := &Player{changed: make(chan struct{}), now: func() time.Time { return now }}
	p.Seek(10*time.Second, 2)
	now = now.Add(time.Second)
	if s := p.State(); s.Position != 12000 || s.Speed != 2 || s.Paused {
		t.Errorf("after 1 s at 2x: %+v", s)
	}
	p.SetPaused(true)
	now = now.Add(time.Minute)
	if s := p.State(); s.Position != 12000 || !s.Paused {
		t.Errorf("paused: %+v", s)
	}
	p.SetPaused(false)
	p.SetSpeed(8)
	now = now.Add(time.Second)
	if s := p.State(); s.Position != 20000 || s.Speed != 8 {
		t.Errorf("after 1 s at 8x: %+v", s)
	}
	p.SetSpeed(3)
	if s := p.State(); s.Speed != 1 {
		t.Errorf("speed 3 is %d, want 1", s.Speed)
	}
}
