package webrdp

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/bastiond/bastiond/proxy/rdcleanpath"
	"github.com/bastiond/bastiond/proxy/recording"
	"github.com/bastiond/bastiond/proxy/watch"
)

// watchTo serves Watch of w on a pipe and returns the watcher's client end,
// after its RDCleanPath exchange, and Watch's result.
func watchTo(t *testing.T, w *watch.Watcher) (net.Conn, *rdcleanpath.PDU, <-chan error) {
	t.Helper()
	page, conn := net.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- Watch(context.Background(), conn, w, 5*time.Second, zaptest.NewLogger(t))
		conn.Close()
	}()
	t.Cleanup(func() { page.Close() })
	b, _ := request("anything", anyTLS).Marshal()
	go page.Write(b)
	page.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := rdcleanpath.Read(page, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return page, resp, done
}

// TestGatewayWatched: a watcher's client is answered as a player's is, gets
// the server's side from the start (the catch-up) and live, and nothing it
// sends reaches the server: the server echoes every byte it gets, and the
// page sees only the echoes of its own frames, and the bytes up count only
// the page's.
func TestGatewayWatched(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			srv := newRDPServer(t, network, modeTLS)
			hub := watch.NewHub()
			var mu sync.Mutex
			var told [][]string
			g := newGateway(t, srv, func(p *Params) {
				p.Watch, p.User = hub, "alice"
				p.Watched = func(_ Session, names []string) {
					mu.Lock()
					told = append(told, names)
					mu.Unlock()
				}
			})
			g.pin(srv)
			if resp := g.send(request("good", anyTLS)); resp.Error != nil {
				t.Fatalf("error answer: %+v", resp.Error)
			}
			roundTrip := func(payload string) {
				t.Helper()
				frame := tpktFrame(payload)
				go g.page.Write(frame)
				echo := make([]byte, len(frame))
				if _, err := io.ReadFull(g.page, echo); err != nil || !bytes.Equal(echo, asciiUpper(frame)) {
					t.Fatalf("echo %q, %v", echo, err)
				}
			}
			roundTrip("before the watcher")
			s, ok := hub.Get("s1")
			if !ok {
				t.Fatal("the desktop is not watchable")
			}
			if i := s.Info(); i.User != "alice" || i.Target != "vm2" || i.Protocol != "rdp" || len(i.CertChain) != 1 {
				t.Errorf("info %+v", i)
			}
			w, err := s.Subscribe("carol")
			if err != nil {
				t.Fatal(err)
			}
			wpage, resp, done := watchTo(t, w)
			if resp.Error != nil || len(resp.ServerCertChain) != 1 || !bytes.Equal(resp.ServerCertChain[0], srv.cert.Certificate[0]) {
				t.Fatalf("the watcher's answer %+v", resp)
			}
			if cc, err := rdcleanpath.ParseConnectionConfirm(resp.X224ConnectionPDU); err != nil || cc.Protocol != rdcleanpath.ProtocolSSL {
				t.Errorf("confirm %+v, %v", cc, err)
			}
			readWatcher := func(payload string) {
				t.Helper()
				want := asciiUpper(tpktFrame(payload))
				got := make([]byte, len(want))
				wpage.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.ReadFull(wpage, got); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("the watcher got %q, %v; want %q", got, err, want)
				}
			}
			readWatcher("before the watcher") // the catch-up
			roundTrip("while watched")
			readWatcher("while watched") // live

			// Everything the watcher's client sends is dropped.
			for _, p := range [][]byte{tpktFrame("watcher typed"), {0x44, 0x08, 0x01, 0x1e}, []byte("raw bytes")} {
				wpage.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if _, err := wpage.Write(p); err != nil {
					t.Fatalf("watcher write: %v", err)
				}
			}
			wpage.Close()
			if err := <-done; !errors.Is(err, watch.ErrLeft) {
				t.Errorf("Watch: %v, want ErrLeft", err)
			}
			roundTrip("after the watcher")
			g.page.Close()
			g.wait()
			g.mu.Lock()
			up := g.session.up
			g.mu.Unlock()
			want := len(tpktFrame("before the watcher")) + len(tpktFrame("while watched")) + len(tpktFrame("after the watcher"))
			if up != int64(want) {
				t.Errorf("the server got %d bytes, want the page's %d", up, want)
			}
			if _, ok := hub.Get("s1"); ok {
				t.Error("the ended desktop is still watchable")
			}
			mu.Lock()
			defer mu.Unlock()
			if len(told) < 2 || !slices.Equal(told[0], []string{"carol"}) || len(told[len(told)-1]) != 0 {
				t.Errorf("Watched was told %q", told)
			}
		})
	}
}

// TestTeeSample: the recorded desktop in testdata, fed through the tap into
// a watchers' stream, reaches a watcher who joins late as the start of the
// server's side (the capability exchange and activation) followed by its
// latest PDUs, every frame whole; the client's side never reaches it.
func TestTeeSample(t *testing.T) {
	r, err := recording.OpenRDP("../recording/testdata/sample.rdp.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var server [][]byte
	var client int
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		switch rec.Kind {
		case recording.RDPServer:
			server = append(server, bytes.Clone(rec.Data))
		case recording.RDPClient:
			client++
		}
	}
	if len(server) < 4 || client == 0 {
		t.Fatalf("sample: %d server records, %d client ones", len(server), client)
	}
	total := 0
	for _, p := range server {
		total += len(p)
	}
	hub := watch.NewHub()
	lim := watch.Limits{Head: len(server[0]) + len(server[1]), Tail: total / 3, Queue: 1 << 30}
	s := hub.Open(watch.Info{Session: "s1", Protocol: "rdp"}, lim, nil)
	defer s.Close()
	te := tee{stream: s}
	te.Record(recording.RDPMeta, []byte(`{"width":1024,"height":768}`))
	for i, p := range server {
		te.Record(recording.RDPServer, p)
		te.Record(recording.RDPClient, []byte("client bytes never watched"))
		if i == len(server)/2 {
			break
		}
	}
	w, err := s.Subscribe("carol")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range server[len(server)/2+1:] {
		te.Record(recording.RDPServer, p)
	}
	frames, _ := w.Next()
	if frames[0].Kind != watch.Size || string(frames[0].Data) != `{"width":1024,"height":768}` {
		t.Errorf("first frame %q", frames[0].Data)
	}
	var got [][]byte
	for _, f := range frames[1:] {
		if bytes.Contains(f.Data, []byte("client bytes")) {
			t.Fatal("the client's side reached a watcher")
		}
		got = append(got, f.Data)
	}
	if len(got) < 3 || !bytes.Equal(got[0], server[0]) || !bytes.Equal(got[1], server[1]) {
		t.Fatalf("the catch-up does not start with the session's start")
	}
	// After the head, the frames are a contiguous run of the server's
	// records that ends with the last one.
	rest := got[2:]
	tailStart := len(server) - len(rest)
	for i, p := range rest {
		if !bytes.Equal(p, server[tailStart+i]) {
			t.Fatalf("frame %d after the head is not record %d", i, tailStart+i)
		}
	}
}

// fastPathPDU is a fast-path output PDU holding one update of fragmentation
// frag (compressed: with a compressionFlags byte) and size bytes of data.
func fastPathPDU(frag byte, compressed bool, size int) []byte {
	u := []byte{0x01 | frag<<4}
	if compressed {
		u[0] |= 2 << 6
		u = append(u, 0x21)
	}
	u = binary.LittleEndian.AppendUint16(u, uint16(size))
	u = append(u, make([]byte, size)...)
	n := 3 + len(u)
	return append([]byte{0, 0x80 | byte(n>>8), byte(n)}, u...)
}

// TestPDUFramer: the framer follows PDUs across frames and fast-path
// fragmentation across PDUs.
func TestPDUFramer(t *testing.T) {
	const single, last = 0, 1
	first, next := fastPathPDU(fragFirst, false, 300), fastPathPDU(fragNext, true, 300)
	type judged struct{ clean, open bool }
	for _, tc := range []struct {
		name   string
		frames [][]byte
		want   []judged
	}{
		{"whole updates", [][]byte{fastPathPDU(single, false, 10), tpktFrame("x"), fastPathPDU(single, true, 5)},
			[]judged{{true, false}, {true, false}, {true, false}}},
		{"a fragmented update", [][]byte{first, next, fastPathPDU(last, false, 5), fastPathPDU(single, false, 5)},
			[]judged{{true, true}, {false, true}, {false, false}, {true, false}}},
		{"a slow-path PDU between fragments", [][]byte{first, tpktFrame("x"), fastPathPDU(last, false, 5)},
			[]judged{{true, true}, {false, true}, {false, false}}},
		{"a PDU cut between reads", [][]byte{first[:100], concat(first[100:], fastPathPDU(last, false, 5)), fastPathPDU(single, false, 1)},
			[]judged{{true, true}, {false, false}, {true, false}}},
		{"a cut header", [][]byte{first[:1], first[1:], fastPathPDU(last, false, 5)},
			[]judged{{true, true}, {false, true}, {false, false}}},
		{"two updates in one PDU", [][]byte{concat(fastPathPDU(single, false, 1), first), fastPathPDU(last, false, 1)},
			[]judged{{true, true}, {false, false}}},
		{"lost", [][]byte{first, []byte("\xffnot a PDU"), first},
			[]judged{{true, true}, {true, false}, {true, false}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			judge := newPDUFramer()
			for i, f := range tc.frames {
				clean, open := judge(f)
				if (judged{clean, open}) != tc.want[i] {
					t.Errorf("frame %d: clean %v open %v, want %+v", i, clean, open, tc.want[i])
				}
			}
		})
	}
}

// TestSampleCatchUpsAreWhole: joining the recorded desktop in testdata at
// every point, with limits small enough to cut it anywhere, a watcher never
// gets a fragment of an update without its start, nor a new update while
// one is open.
func TestSampleCatchUpsAreWhole(t *testing.T) {
	r, err := recording.OpenRDP("../recording/testdata/sample.rdp.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var server [][]byte
	fragmented := 0
	judge := newPDUFramer()
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		if rec.Kind == recording.RDPServer {
			server = append(server, bytes.Clone(rec.Data))
			if _, open := judge(rec.Data); open {
				fragmented++
			}
		}
	}
	t.Logf("%d server records, %d end inside a fragmented update", len(server), fragmented)
	for join := 1; join < len(server); join++ {
		s := watch.NewHub().Open(watch.Info{Session: "s1"}, watch.Limits{Head: 2 << 10, Tail: 8 << 10, Queue: 1 << 30,
			Boundary: newPDUFramer}, nil)
		for _, p := range server[:join] {
			s.Publish(watch.Output, p)
		}
		w, _ := s.Subscribe("carol")
		for _, p := range server[join:] {
			s.Publish(watch.Output, p)
		}
		frames, _ := w.Next()
		s.Close()
		// The watcher's frames, as a client reads them, are whole PDUs
		// and whole updates: a framer that sees only them is never cut.
		check := &pduFramer{}
		for i, f := range frames {
			clean, _ := check.judge(f.Data)
			if i == 0 && !clean || check.lost {
				t.Fatalf("joined at %d: frame %d cuts a PDU or an update", join, i)
			}
			if len(check.pend) > 0 && i == len(frames)-1 {
				t.Fatalf("joined at %d: the last frame ends inside a PDU", join)
			}
		}
		if fatal := checkFragments(frames); fatal != "" {
			t.Fatalf("joined at %d: %s", join, fatal)
		}
	}
}

// checkFragments reads frames as a client does and says where a fragment
// comes without its first, or a new update while one is open.
func checkFragments(frames []watch.Frame) string {
	var b []byte
	for _, f := range frames {
		b = append(b, f.Data...)
	}
	open := false
	for len(b) > 0 {
		n, hdr := framedPDULen(b)
		if n == 0 || n > len(b) {
			return "the stream ends inside a PDU"
		}
		pdu := b[:n]
		b = b[n:]
		if pdu[0]&3 != 0 {
			continue
		}
		for u := pdu[hdr:]; len(u) >= 3; {
			h := u[0]
			i := 1
			if h>>6&2 != 0 {
				i++
			}
			switch frag := h >> 4 & 3; {
			case (frag == 1 || frag == fragNext) && !open:
				return "a fragment without its first"
			case (frag == 0 || frag == fragFirst) && open:
				return "a new update while one is open"
			default:
				open = frag == fragFirst || frag == fragNext
			}
			u = u[min(len(u), i+2+int(binary.LittleEndian.Uint16(u[i:]))):]
		}
	}
	return ""
}
