package daemon

import (
	"bytes"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/internal/statedb"
	"github.com/bastiond/bastiond/internal/store"
)

// TestSSOFlowKey: a key (here the flows') is made once and read back by the next
// process (and every instance on the same store).
func TestSSOFlowKey(t *testing.T) {
	db, err := statedb.Open(filepath.Join(t.TempDir(), "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cfg := &config.Config{Store: config.Store{Backend: config.StoreBBolt}}
	k1, err := sealingKey(db, cfg, ssoFlowName)
	if err != nil || len(k1) != 32 {
		t.Fatalf("%x %v", k1, err)
	}
	k2, err := sealingKey(db, cfg, ssoFlowName)
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second read %x, %v; want %x", k2, err, k1)
	}
	db.Update(func(tx store.Tx) error { return tx.Bucket(keysBucket).Put([]byte(ssoFlowName), []byte("short")) })
	if _, err := sealingKey(db, cfg, ssoFlowName); err == nil {
		t.Error("a damaged key was used")
	}
	other, err := sealingKey(db, cfg, passkeyCeremonyName)
	if err != nil || len(other) != 32 || bytes.Equal(other, k1) {
		t.Errorf("the passkey ceremonies' key %x (%v) is the flows' or none", other, err)
	}
}

// TestReadSecret: a client secret's file must be its owner's only; a
// systemd credential is read from $CREDENTIALS_DIRECTORY.
func TestReadSecret(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret")
	os.WriteFile(p, []byte("  s3cret\n"), 0o600)
	if s, err := readSecret(p); err != nil || s != "s3cret" {
		t.Fatalf("%q %v", s, err)
	}
	os.Chmod(p, 0o644)
	if _, err := readSecret(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable secret: %v", err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, err := readSecret(empty); err == nil {
		t.Error("an empty secret")
	}
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	os.WriteFile(filepath.Join(dir, "oidc-lab"), []byte("from-systemd"), 0o600)
	if s, err := readSecret("credential:oidc-lab"); err != nil || s != "from-systemd" {
		t.Errorf("credential: %q %v", s, err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := readSecret("credential:oidc-lab"); err == nil || !strings.Contains(err.Error(), "LoadCredential=oidc-lab") {
		t.Errorf("no credentials directory: %v", err)
	}
}

// TestSSOEgress: the egress chain lets the daemon reach each provider's
// issuer host on its port (443 by default), addresses of both families as
// they are, names resolved.
func TestSSOEgress(t *testing.T) {
	cfg := labPolicyConfig(t, func(s string) string {
		return s + `auth:
  oidc:
    - {name: a, issuer: "https://192.0.2.80:5556/dex", client_id: c, client_secret_file: /s}
    - {name: b, issuer: "https://[2001:db8::80]/realms/x", client_id: c, client_secret_file: /s}
    - {name: c, issuer: "https://localhost:8443", client_id: c, client_secret_file: /s}
`
	})
	got := ssoEgress(cfg, zap.NewNop())
	for _, want := range []string{"192.0.2.80:5556", "[2001:db8::80]:443", "127.0.0.1:8443"} {
		if !slices.Contains(got, netip.MustParseAddrPort(want)) {
			t.Errorf("egress to the providers %v lacks %s", got, want)
		}
	}
	in := policyInput(cfg, labPolicyVNet, egressFacts{IdentityProviders: got})
	if !slices.Equal(in.Egress.IdentityProviders, got) {
		t.Errorf("policy input's provider egress %v, want %v", in.Egress.IdentityProviders, got)
	}
}

// TestSSOFlowKeyCluster: instances on one PostgreSQL database share the
// flow key (and the passkey sign-ins' key) (a flow begun on one is finished on the other), sealed in the
// database with the seal key, never stored in clear; another seal key
// cannot open it.
func TestSSOFlowKeyCluster(t *testing.T) {
	s := pgtest.Start(t)
	name := s.NewDatabase(t)
	sink := audit.SinkFunc(func(audit.Event) {})
	keyFile := filepath.Join(t.TempDir(), "seal.key")
	os.WriteFile(keyFile, []byte(seal.Generate()), 0o600)
	open := func(host, key string) (*config.Config, stateStore) {
		cfg := pgStoreConfig(t, s.DSN(host, name), s.CAFile)
		cfg.Store.Postgres.SealKey = key
		db, _, err := openState(cfg, zap.NewNop(), sink)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return cfg, db
	}
	cfgA, dbA := open("127.0.0.1", keyFile)
	cfgB, dbB := open("::1", keyFile)
	kA, err := sealingKey(dbA, cfgA, ssoFlowName)
	if err != nil {
		t.Fatal(err)
	}
	kB, err := sealingKey(dbB, cfgB, ssoFlowName)
	if err != nil || !bytes.Equal(kA, kB) {
		t.Fatalf("instance B's key %x (%v), A's %x", kB, err, kA)
	}
	stored, _ := store.Get(dbA, keysBucket, []byte(ssoFlowName))
	if bytes.Contains(stored, kA) {
		t.Fatal("the flow key is in the database in clear")
	}
	other := filepath.Join(t.TempDir(), "other.key")
	os.WriteFile(other, []byte(seal.Generate()), 0o600)
	// Its accounts do not even open: the key of passkey sign-ins is sealed
	// too.
	cfgC := pgStoreConfig(t, s.DSN("127.0.0.1", name), s.CAFile)
	cfgC.Store.Postgres.SealKey = other
	if db, _, err := openState(cfgC, zap.NewNop(), sink); err == nil || !strings.Contains(err.Error(), "sealed with another key") {
		if db != nil {
			db.Close()
		}
		t.Errorf("an instance with another seal key: %v", err)
	}
	if _, err := sealingKey(dbA, cfgC, ssoFlowName); err == nil {
		t.Error("another seal key opened the flow key")
	}
}
