package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastiond/bastiond/tunnel/tunneltest"
)

// TestTransportCache: a run that finds UDP blocked (QUIC has no answer,
// TLS carries the tunnel) writes the cache file, 0600; the next run goes
// straight to TLS without a QUIC packet; an expired entry is ignored and
// QUIC is tried again.
func TestTransportCache(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	cache, ok := userTransportCache()
	if !ok {
		t.Fatal("no cache file")
	}
	blackholed := tunneltest.New(t, tunneltest.Config{NoQUIC: true})
	run := func(s *tunneltest.Server) string {
		t.Helper()
		cl := testClient(t, s, "auto")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := cl.Dial(ctx, "vm1", 22)
		if err != nil {
			t.Fatal(err)
		}
		conn.Close()
		via := cl.Transport()
		cl.Close()
		return via
	}
	if via := run(blackholed); via != "websocket" {
		t.Fatalf("UDP blocked: via %s", via)
	}
	fi, err := os.Stat(cache.path)
	if err != nil || fi.Mode().Perm() != 0o600 || filepath.Base(filepath.Dir(cache.path)) != "bastionctl" {
		t.Fatalf("cache file %s: %v, %v", cache.path, fi, err)
	}
	if !cache.udpBlocked("bastion.test", time.Now()) || cache.udpBlocked("bastion.test", time.Now().Add(udpBlockedFor+time.Second)) {
		t.Fatalf("cache holds %v", cache.read())
	}

	// Honoured: a server whose QUIC works is not even tried.
	working := tunneltest.New(t, tunneltest.Config{})
	if via := run(working); via != "websocket" || working.UDPPackets.Load() != 0 {
		t.Fatalf("with UDP remembered blocked: via %s, %d QUIC packets", via, working.UDPPackets.Load())
	}

	// Expired: QUIC is tried again, and works.
	if err := cache.note("bastion.test", true, time.Now().Add(-udpBlockedFor-time.Second)); err != nil {
		t.Fatal(err)
	}
	if cache.udpBlocked("bastion.test", time.Now()) {
		t.Fatal("an expired entry counts")
	}
	if via := run(working); via != "quic" {
		t.Fatalf("after expiry: via %s", via)
	}
}
