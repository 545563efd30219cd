package certs

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSelfSignedPersists(t *testing.T) {
	dir := t.TempDir()
	var s Store
	cfg := Config{SelfSigned: true, ServerName: "bastion.test", Dir: dir}
	if err := s.Load(cfg); err != nil {
		t.Fatal(err)
	}
	first := s.Current().Certificate[0]
	if err := s.Current().Leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("self-signed certificate does not cover loopback: %v", err)
	}
	info, err := os.Stat(filepath.Join(dir, "tls", "self-signed.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v mode %v", err, info.Mode())
	}
	var again Store
	if err := again.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first, again.Current().Certificate[0]) {
		t.Error("a restart generated a new certificate instead of reusing the stored one")
	}
	// A new server name needs a new certificate.
	cfg.ServerName = "other.test"
	if err := again.Load(cfg); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, again.Current().Certificate[0]) {
		t.Error("certificate not regenerated for a new server name")
	}
}

func TestLoadFilesKeepsOldOnError(t *testing.T) {
	dir := t.TempDir()
	certPEM, keyPEM, err := generate("bastion.test", timeNow())
	if err != nil {
		t.Fatal(err)
	}
	cf, kf := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	os.WriteFile(cf, certPEM, 0o600)
	os.WriteFile(kf, keyPEM, 0o600)
	var s Store
	if err := s.Load(Config{CertFile: cf, KeyFile: kf, ServerName: "bastion.test"}); err != nil {
		t.Fatal(err)
	}
	good := s.Current()
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"missing file", Config{CertFile: cf + ".gone", KeyFile: kf, ServerName: "bastion.test"}, "no such file"},
		{"wrong name", Config{CertFile: cf, KeyFile: kf, ServerName: "elsewhere.test"}, "does not cover server_name"},
		{"key is not a key", Config{CertFile: cf, KeyFile: cf, ServerName: "bastion.test"}, "certs:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.Load(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Load = %v, want error containing %q", err, tt.want)
			}
			if s.Current() != good {
				t.Error("a failed Load replaced the working certificate")
			}
		})
	}
}

var timeNow = time.Now
