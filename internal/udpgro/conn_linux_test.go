package udpgro_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/quic-go/quic-go"

	"github.com/bastiond/bastiond/internal/testcert"
	"github.com/bastiond/bastiond/internal/udpgro"
)

// TestConnDownload: a quic-go client reading through a Conn receives 8 MiB
// that a quic-go server sends with GSO, whole and in order, and the
// server's trains reach it whole (on loopback the kernel never cuts them),
// on IPv4 and IPv6.
func TestConnDownload(t *testing.T) {
	for _, c := range []struct{ network, host string }{{"udp4", "127.0.0.1"}, {"udp6", "::1"}} {
		t.Run(c.network, func(t *testing.T) {
			srv, err := net.ListenUDP(c.network, &net.UDPAddr{IP: net.ParseIP(c.host)})
			if err != nil {
				t.Skipf("no %s loopback: %v", c.network, err)
			}
			defer srv.Close()
			cli, err := net.ListenUDP(c.network, &net.UDPAddr{IP: net.ParseIP(c.host)})
			if err != nil {
				t.Fatal(err)
			}
			defer cli.Close()
			pc := udpgro.NewConn(cli)
			gc, ok := pc.(*udpgro.Conn)
			if !ok {
				t.Skip("UDP_GRO is off: the kernel refuses it")
			}

			payload := make([]byte, 8<<20)
			for i := range payload {
				payload[i] = byte(i * 7 / 5)
			}
			cert := testcert.New(t, testcert.Options{})
			ln, err := quic.Listen(srv, &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			served := make(chan error, 1)
			go func() {
				conn, err := ln.Accept(ctx)
				if err != nil {
					served <- err
					return
				}
				str, err := conn.OpenStreamSync(ctx)
				if err == nil {
					_, err = str.Write(payload)
				}
				if err == nil {
					err = str.Close()
				}
				served <- err
			}()

			tr := &quic.Transport{Conn: pc}
			defer tr.Close()
			conn, err := tr.Dial(ctx, srv.LocalAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"t"}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.CloseWithError(0, "")
			str, err := conn.AcceptStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(str)
			if err != nil {
				t.Fatal(err)
			}
			if err := <-served; err != nil {
				t.Fatalf("server: %v", err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("received %d bytes, not the %d sent", len(got), len(payload))
			}
			if gc.Reader().Trains() == 0 {
				t.Error("no train reached the client whole: is UDP_GRO on, and does the server send with GSO?")
			}
		})
	}
}
