package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// udpBlockedFor is how long bastionctl remembers that UDP to a bastion
// was blocked: its tunnels go straight to TLS meanwhile.
const udpBlockedFor = 10 * time.Minute

// transportCache is the file, under the user's cache directory
// ($XDG_CACHE_HOME/bastionctl/transport.json, mode 0600), in which
// bastionctl remembers per bastion until when UDP is taken to be blocked.
type transportCache struct{ path string }

// cacheEntry is one bastion's line of the file.
type cacheEntry struct {
	UDPBlockedUntil time.Time `json:"udp_blocked_until"`
}

// userTransportCache is the user's cache file; ok false without a cache
// directory (no $HOME), when nothing is remembered.
func userTransportCache() (transportCache, bool) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return transportCache{}, false
	}
	return transportCache{path: filepath.Join(dir, "bastionctl", "transport.json")}, true
}

func (tc transportCache) read() map[string]cacheEntry {
	m := map[string]cacheEntry{}
	data, err := os.ReadFile(tc.path)
	if err == nil {
		json.Unmarshal(data, &m) // a damaged file is an empty one
	}
	return m
}

// udpBlocked says whether UDP to server was found blocked less than
// udpBlockedFor ago.
func (tc transportCache) udpBlocked(server string, now time.Time) bool {
	return now.Before(tc.read()[server].UDPBlockedUntil)
}

// note remembers what a client learnt of server: UDP blocked (until
// udpBlockedFor from now) or working (forgotten). Expired entries go.
func (tc transportCache) note(server string, blocked bool, now time.Time) error {
	m := tc.read()
	for s, e := range m {
		if !now.Before(e.UDPBlockedUntil) {
			delete(m, s)
		}
	}
	if blocked {
		m[server] = cacheEntry{UDPBlockedUntil: now.Add(udpBlockedFor)}
	} else if _, ok := m[server]; !ok {
		return nil
	} else {
		delete(m, server)
	}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(tc.path), 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(tc.path), ".transport-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), tc.path)
}
