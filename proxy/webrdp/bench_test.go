package webrdp

import (
	"crypto/tls"
	"io"
	"net"
	"testing"

	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/proxy/recording"
)

// sampleStream is the reads of a real desktop session (vm2's FreeRDP shadow
// server with ico's animation, xfreerdp through the gateway: the first MiB),
// by direction, as BenchmarkRDPRecording in test/e2e captured them.
func sampleStream(b *testing.B) (server, client [][]byte, total int64) {
	b.Helper()
	r, err := recording.OpenRDP("../recording/testdata/sample.rdp.gz")
	if err != nil {
		b.Skip(err)
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		p := append([]byte(nil), rec.Data...)
		switch rec.Kind {
		case recording.RDPServer:
			server = append(server, p)
		case recording.RDPClient:
			client = append(client, p)
		}
		total += int64(len(p))
	}
	return server, client, total
}

// BenchmarkRDPRelay reads the server's side of a captured session from a
// TLS connection over loopback TCP, as the relay does, without the
// recording tap and with it (gzip to a file in a temporary directory):
// the tap's cost against what relaying costs anyway.
func BenchmarkRDPRelay(b *testing.B) {
	server, _, _ := sampleStream(b)
	var stream []byte
	for _, p := range server {
		stream = append(stream, p...)
	}
	cert := testcert.New(b, testcert.Options{Name: "vm2"})
	for _, tapped := range []bool{false, true} {
		name := "plain"
		if tapped {
			name = "tapped"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(stream)))
			for b.Loop() {
				b.StopTimer()
				ln, err := net.Listen("tcp4", "127.0.0.1:0")
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					tc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
					tc.Write(stream)
					tc.Close()
				}()
				raw, err := net.Dial("tcp4", ln.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				tc := tls.Client(raw, &tls.Config{InsecureSkipVerify: true})
				var conn net.Conn = tc
				var rec *recording.RDPRecorder
				if tapped {
					rec, err = recording.CreateRDP(b.TempDir(), recording.RDPHeader{Session: "bench", Protocol: 1})
					if err != nil {
						b.Fatal(err)
					}
					tap := recording.NewRDPTap(rec, 1)
					conn = &tapConn{Conn: tc, record: tap.FromServer, failed: func(error) {}}
				}
				b.StartTimer()
				if _, err := io.Copy(io.Discard, conn); err != nil {
					b.Fatal(err)
				}
				// The file's close and fsync are once a session, not per byte.
				b.StopTimer()
				if rec != nil {
					rec.Close()
				}
				tc.Close()
				ln.Close()
				b.StartTimer()
			}
		})
	}
}

// BenchmarkRDPTap is the tap alone over both directions of the captured
// session: framing, redaction and gzip to a file (its creation, close and
// fsync, once a session, not counted).
func BenchmarkRDPTap(b *testing.B) {
	server, client, total := sampleStream(b)
	b.SetBytes(total)
	for b.Loop() {
		rec, err := recording.CreateRDP(b.TempDir(), recording.RDPHeader{Session: "bench", Protocol: 1})
		if err != nil {
			b.Fatal(err)
		}
		tap := recording.NewRDPTap(rec, 1)
		for i := range max(len(server), len(client)) {
			if i < len(client) {
				tap.FromClient(client[i])
			}
			if i < len(server) {
				tap.FromServer(server[i])
			}
		}
		b.StopTimer() // the file's close and fsync are once a session
		if err := rec.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
