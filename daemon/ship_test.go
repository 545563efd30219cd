package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap"

	"github.com/bastiond/bastiond/daemon/auditship"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
)

func TestOpenShipper(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "ca.pem")
	os.WriteFile(notPEM, []byte("not a certificate"), 0o600)
	for _, tt := range []struct {
		name    string
		logging config.Logging
		dests   []string
		err     string
	}{
		{"nothing", config.Logging{Journald: "off"}, nil, ""},
		{"syslog over TCP, IPv4", config.Logging{Journald: "off", Syslog: &config.Syslog{Address: "127.0.0.1:514", Facility: "auth", Queue: 10}},
			[]string{"syslog+tcp://127.0.0.1:514"}, ""},
		{"syslog over TLS, IPv6", config.Logging{Journald: "off", Syslog: &config.Syslog{Address: "[::1]:6514", TLS: true, ServerName: "::1", Facility: "local0", Queue: 10}},
			[]string{"syslog+tls://[::1]:6514"}, ""},
		{"a CA file without a certificate", config.Logging{Journald: "off", Syslog: &config.Syslog{Address: "[::1]:6514", TLS: true, CAFile: notPEM, ServerName: "::1"}},
			nil, "logging.syslog: auditship: CA file " + notPEM + ": no PEM certificate in it"},
		{"a missing CA file", config.Logging{Journald: "off", Syslog: &config.Syslog{Address: "[::1]:6514", TLS: true, CAFile: filepath.Join(dir, "none.pem"), ServerName: "::1"}},
			nil, "no such file or directory"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s, err := openShipper(tt.logging, zap.NewNop(), audit.Discard)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := s.Destinations(); strings.Join(got, " ") != strings.Join(tt.dests, " ") {
				t.Errorf("destinations %v, want %v", got, tt.dests)
			}
		})
	}
	if !auditship.UnderJournald() {
		if _, err := openShipper(config.Logging{Journald: "on"}, zap.NewNop(), audit.Discard); err == nil || !strings.Contains(err.Error(), "logging.journald: on") {
			t.Errorf("journald on without journald: %v", err)
		}
	}
}
