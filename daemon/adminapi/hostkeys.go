package adminapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/proxy/hostkeys"
	"github.com/bastiond/bastiond/proxy/sshca"
)

// HostKeys is the store of targets' pinned host keys as the admin API
// offers it. *hostkeys.Store implements it; the daemon wraps it to refuse
// targets that are not in the inventory (ErrUnknownTarget).
type HostKeys interface {
	List(target string) ([]hostkeys.Key, error)
	// Scan collects the keys of target's servers for protocols ("ssh",
	// "rdp"; none: every one the target offers).
	Scan(ctx context.Context, target string, protocols []string, dial func(ctx context.Context, protocol string) (net.Conn, error)) ([]hostkeys.Key, error)
	Pin(target string, fingerprints []string, by string) ([]hostkeys.Key, error)
	PinKey(target, line, by string) (hostkeys.Key, error)
	PinCertificate(target string, data []byte, by string) (hostkeys.Key, error)
	Forget(target, fingerprint string) ([]hostkeys.Key, error)
}

var _ HostKeys = (*hostkeys.Store)(nil)

// SSHCA is the bastion's SSH user certificate authority.
type SSHCA interface {
	// PublicKey is the authorized_keys line machines trust.
	PublicKey() string
}

var _ SSHCA = (*sshca.CA)(nil)

// ScanDial connects to the port of protocol ("ssh", "rdp") on an inventory
// target, through the same dial policy as sessions.
type ScanDial func(ctx context.Context, target, protocol string) (net.Conn, error)

func (s *Server) hostKeyRoutes(mux *http.ServeMux, h HostKeys, dial ScanDial) {
	answer := func(w http.ResponseWriter, keys []hostkeys.Key, err error) {
		switch {
		case errors.Is(err, hostkeys.ErrNoKey), errors.Is(err, ErrUnknownTarget):
			writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
		case err != nil:
			writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		case keys == nil:
			writeJSON(w, http.StatusOK, []hostkeys.Key{})
		default:
			writeJSON(w, http.StatusOK, keys)
		}
	}
	body := func(w http.ResponseWriter, r *http.Request, v any) bool {
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 256<<10))
		dec.DisallowUnknownFields()
		if err := dec.Decode(v); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed request: " + err.Error()})
			return false
		}
		return true
	}
	logKeys := func(r *http.Request, msg, target string, keys []hostkeys.Key) {
		fps := make([]string, len(keys))
		for i, k := range keys {
			fps[i] = k.Fingerprint
		}
		s.log.Info(msg, zap.String("target", target), zap.Strings("fingerprints", fps), peerField(r))
	}

	// auditKeys records one event per key.
	auditKeys := func(r *http.Request, event, detail string, keys []hostkeys.Key) {
		for _, k := range keys {
			s.audit(r, audit.Event{Event: event, Target: k.Target, Protocol: k.Kind, Fingerprint: k.Fingerprint, Detail: detail})
		}
	}

	mux.HandleFunc("GET /v1/hostkeys", func(w http.ResponseWriter, r *http.Request) {
		keys, err := h.List(r.URL.Query().Get("target"))
		answer(w, keys, err)
	})
	mux.HandleFunc("POST /v1/hostkeys/{target}/scan", func(w http.ResponseWriter, r *http.Request) {
		var req ScanRequest
		if !body(w, r, &req) {
			return
		}
		target := r.PathValue("target")
		if dial == nil {
			writeJSON(w, http.StatusServiceUnavailable, apiError{Error: fmt.Sprintf(
				"this bastiond cannot scan host keys (it has no dialer for scans); pin a key taken from the machine instead: "+
					"`bastionctl hostkeys pin %s --key-file /etc/ssh/ssh_host_ed25519_key.pub` (a copy of that file)", target)})
			return
		}
		var protocols []string
		if req.Protocol != "" {
			protocols = []string{req.Protocol}
		}
		keys, err := h.Scan(r.Context(), target, protocols, func(ctx context.Context, protocol string) (net.Conn, error) {
			return dial(ctx, target, protocol)
		})
		if err != nil {
			if errors.Is(err, ErrUnknownTarget) {
				answer(w, nil, err)
				return
			}
			writeJSON(w, http.StatusBadGateway, apiError{Error: err.Error()})
			return
		}
		logKeys(r, "host keys scanned", target, keys)
		if req.Pin {
			var pinned []hostkeys.Key
			keys, pinned, err = pinScanned(h, target, keys, peerName(r))
			if err != nil {
				writeJSON(w, http.StatusConflict, apiError{Error: err.Error()})
				return
			}
			logKeys(r, "host keys pinned", target, keys)
			auditKeys(r, audit.HostKeyPinned, "pinned as a scan found it", pinned)
		}
		answer(w, keys, nil)
	})
	mux.HandleFunc("POST /v1/hostkeys/{target}/pin", func(w http.ResponseWriter, r *http.Request) {
		var req PinRequest
		if !body(w, r, &req) {
			return
		}
		target, by := r.PathValue("target"), peerName(r)
		given := 0
		for _, n := range []int{len(req.Fingerprints), len(req.Keys), len(req.Certificates)} {
			if n > 0 {
				given++
			}
		}
		if given > 1 {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "give fingerprints of keys seen, key lines or certificates, only one of them"})
			return
		}
		var keys []hostkeys.Key
		var err error
		var how string
		switch {
		case len(req.Keys) > 0:
			keys, err = pinLines(h, target, req.Keys, by)
			how = "pinned from a key line the admin gave"
		case len(req.Certificates) > 0:
			keys, err = pinCertificates(h, target, req.Certificates, by)
			how = "pinned from a certificate the admin gave"
		case len(req.Fingerprints) > 0:
			keys, err = h.Pin(target, req.Fingerprints, by)
			how = "pinned by fingerprint, as seen before"
		default:
			keys, err = h.Pin(target, nil, by)
			how = "pinned as seen before (every pending key)"
		}
		if err == nil {
			logKeys(r, "host keys pinned", target, keys)
			auditKeys(r, audit.HostKeyPinned, how, keys)
		}
		answer(w, keys, err)
	})
	mux.HandleFunc("POST /v1/hostkeys/{target}/forget", func(w http.ResponseWriter, r *http.Request) {
		var req ForgetRequest
		if !body(w, r, &req) {
			return
		}
		target := r.PathValue("target")
		keys, err := h.Forget(target, req.Fingerprint)
		if err == nil {
			logKeys(r, "host keys forgotten", target, keys)
			auditKeys(r, audit.HostKeyForgot, "", keys)
		}
		answer(w, keys, err)
	})
}

// pinScanned pins the pending keys among those a scan found. A target that
// has pinned keys and presents others may be another machine: its new keys
// are left for an admin to check and pin by fingerprint. It returns the
// scanned keys as they stand now, and those it pinned.
func pinScanned(h HostKeys, target string, scanned []hostkeys.Key, by string) (_, pinned []hostkeys.Key, _ error) {
	var pending []string
	for _, k := range scanned {
		if k.State == hostkeys.StatePending {
			pending = append(pending, k.Fingerprint)
		}
	}
	if len(pending) == 0 {
		return scanned, nil, nil
	}
	known, err := h.List(target)
	if err != nil {
		return nil, nil, err
	}
	rekeyed := func(kind string) bool {
		return slices.ContainsFunc(known, func(k hostkeys.Key) bool { return k.Kind == kind && k.State == hostkeys.StatePinned }) &&
			slices.ContainsFunc(scanned, func(k hostkeys.Key) bool { return k.Kind == kind && k.State == hostkeys.StatePending })
	}
	if rekeyed(hostkeys.KindSSH) || rekeyed(hostkeys.KindRDP) {
		return nil, nil, fmt.Errorf("not pinned: %s already has pinned keys and now also presents %s; "+
			"the machine may have been re-keyed, or someone may be in the way. Compare them with the machine's own, "+
			"then run `bastionctl hostkeys pin %s FINGERPRINT`", target, strings.Join(pending, ", "), target)
	}
	pinned, err = h.Pin(target, pending, by)
	if err != nil {
		return nil, nil, err
	}
	out := slices.Clone(scanned)
	for i, k := range out {
		if j := slices.IndexFunc(pinned, func(p hostkeys.Key) bool { return p.Fingerprint == k.Fingerprint }); j >= 0 {
			out[i] = pinned[j]
		}
	}
	return out, pinned, nil
}

// pinLines pins the keys on lines, all of them or, if one line is not a
// key, none. A key on several lines (a known_hosts file) is returned once.
func pinLines(h HostKeys, target string, lines []string, by string) ([]hostkeys.Key, error) {
	for i, l := range lines {
		if _, err := hostkeys.ParseSSHKey(l); err != nil {
			return nil, fmt.Errorf("key %d: %w", i+1, err)
		}
	}
	keys := make([]hostkeys.Key, 0, len(lines))
	for _, l := range lines {
		k, err := h.PinKey(target, l, by)
		if err != nil {
			return nil, err
		}
		if !slices.ContainsFunc(keys, func(o hostkeys.Key) bool { return o.Fingerprint == k.Fingerprint }) {
			keys = append(keys, k)
		}
	}
	return keys, nil
}

// pinCertificates pins the certificates in the PEM texts, all of them or,
// if one is not a certificate, none.
func pinCertificates(h HostKeys, target string, texts []string, by string) ([]hostkeys.Key, error) {
	for i, t := range texts {
		if _, err := hostkeys.ParseCertificate([]byte(t)); err != nil {
			return nil, fmt.Errorf("certificate %d: %w", i+1, err)
		}
	}
	keys := make([]hostkeys.Key, 0, len(texts))
	for _, t := range texts {
		k, err := h.PinCertificate(target, []byte(t), by)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func (s *Server) caRoutes(mux *http.ServeMux, ca SSHCA) {
	mux.HandleFunc("GET /v1/ca", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, CAInfo{PublicKey: ca.PublicKey()})
	})
}
