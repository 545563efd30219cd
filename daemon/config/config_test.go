package config

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseLab(t *testing.T) {
	cfg, err := Load("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Listen.Addresses, []netip.AddrPort{netip.MustParseAddrPort("[::]:443")}; len(got) != 1 || got[0] != want[0] {
		t.Errorf("default listen addresses = %v, want %v", got, want)
	}
	if cfg.Limits.DrainGrace != 30*time.Second || cfg.Limits.Weights.RDP != 2 || cfg.Listen.AdminGroup != "bastion-admin" {
		t.Errorf("defaults not filled: %+v", cfg.Limits)
	}
	if len(cfg.Inventory.Targets) != 2 || cfg.Inventory.Targets[1].Ports.Tunnel[0] != (Port{Number: 3390, TCP: true}) {
		t.Errorf("inventory = %+v", cfg.Inventory)
	}
	if a := cfg.Inventory.Targets[0].Addresses[1]; a != netip.MustParseAddr("2001:db8:b5:1::11") {
		t.Errorf("IPv6 target address = %v", a)
	}
	if fw := cfg.Firewall; fw.TrapThreshold != 1 || fw.BlockFor != 10*time.Minute || len(fw.ExemptPorts) != 1 || fw.ExemptPorts[0] != 80 {
		t.Errorf("firewall defaults: %+v", fw)
	}
	noExempt, err := Parse("x.yaml", []byte(strings.Replace(mustRead(t, "testdata/lab.yaml"), "state_dir:", "firewall: {exempt_ports: []}\nstate_dir:", 1)))
	if err != nil || noExempt.Firewall.ExemptPorts == nil || len(noExempt.Firewall.ExemptPorts) != 0 {
		t.Errorf("exempt_ports: [] must mean none, got %v (%v)", noExempt.Firewall.ExemptPorts, err)
	}
	if l := cfg.Limits; l.TargetTimeout != 30*time.Second || l.SSH.IdleTimeout != 20*time.Minute || l.Tunnel.MaxSessionDuration != 12*time.Hour {
		t.Errorf("per-protocol limits must default to the global ones: %+v", l)
	}
	perProto, err := Parse("x.yaml", []byte(mustRead(t, "testdata/lab.yaml")+"limits: {idle_timeout: 5m, rdp: {idle_timeout: 1h}}\n"))
	if err != nil || perProto.Limits.RDP.IdleTimeout != time.Hour || perProto.Limits.SSH.IdleTimeout != 5*time.Minute {
		t.Errorf("limits.rdp.idle_timeout must override limits.idle_timeout for rdp only: %+v (%v)", perProto.Limits, err)
	}
	lab := mustRead(t, "testdata/lab.yaml")
	lab = strings.Replace(lab, "ports: {ssh: 22}\n", "ports: {ssh: 22}\n      ssh_certificates: true\n", 1)
	lab = strings.Replace(lab, "state_dir:", "    - name: auditors\n      subjects: [user:carol]\n      auditor: true\nstate_dir:", 1)
	extra, err := Parse("x.yaml", []byte(lab))
	if err != nil {
		t.Fatalf("ssh_certificates and an auditor-only role: %v", err)
	}
	if !extra.Inventory.Targets[0].SSHCertificates || extra.Inventory.Targets[1].SSHCertificates {
		t.Errorf("ssh_certificates: %+v", extra.Inventory.Targets)
	}
	if r := extra.Access.Roles[1]; !r.Auditor || r.Name != "auditors" || extra.Access.Roles[0].Auditor {
		t.Errorf("auditor: %+v", extra.Access.Roles)
	}
	if cfg.Limits.RecordingsKeep != 0 || cfg.Limits.RecordingsMaxBytes != 0 {
		t.Errorf("recordings retention must default to none: %+v", cfg.Limits)
	}
	kept, err := Parse("x.yaml", []byte(mustRead(t, "testdata/lab.yaml")+"limits: {recordings_keep: 90d, recordings_max_bytes: 20GiB}\n"))
	if err != nil || kept.Limits.RecordingsKeep != 90*24*time.Hour || kept.Limits.RecordingsMaxBytes != 20<<30 {
		t.Errorf("recordings_keep 90d, recordings_max_bytes 20GiB: %+v (%v)", kept.Limits, err)
	}
	for in, want := range map[string]ByteSize{"1000": 1000, "5MB": 5e6, "5 MiB": 5 << 20, "1TB": 1e12} {
		c, err := Parse("x.yaml", []byte(mustRead(t, "testdata/lab.yaml")+"limits: {recordings_max_bytes: "+in+"}\n"))
		if err != nil || c.Limits.RecordingsMaxBytes != want {
			t.Errorf("recordings_max_bytes %s: %v (%v)", in, c.Limits.RecordingsMaxBytes, err)
		}
	}
	if len(cfg.Digest) != 64 || cfg.File != "testdata/lab.yaml" {
		t.Errorf("digest %q file %q", cfg.Digest, cfg.File)
	}
}

func TestParseSyslog(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	for _, tt := range []struct {
		name, yaml string
		want       Syslog
	}{
		{"TLS over IPv4 with defaults", `{address: "198.51.100.7:6514", tls: true, ca_file: /etc/ca.pem}`,
			Syslog{Address: "198.51.100.7:6514", TLS: true, CAFile: "/etc/ca.pem", ServerName: "198.51.100.7", Queue: 100000, Facility: "auth", AppName: "bastiond"}},
		{"TLS over IPv6 with a client certificate", `{address: "[2001:db8::7]:6514", tls: true, server_name: logs.example.net, cert_file: /c.pem, key_file: /k.pem, queue: 10, facility: local3, app_name: bastion-1}`,
			Syslog{Address: "[2001:db8::7]:6514", TLS: true, ServerName: "logs.example.net", CertFile: "/c.pem", KeyFile: "/k.pem", Queue: 10, Facility: "local3", AppName: "bastion-1"}},
		{"plain TCP to a name", `{address: "logs.example.net:514"}`,
			Syslog{Address: "logs.example.net:514", ServerName: "logs.example.net", Queue: 100000, Facility: "auth", AppName: "bastiond"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("x.yaml", []byte(lab+"logging: {journald: off, syslog: "+tt.yaml+"}\n"))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Logging.Syslog == nil || *cfg.Logging.Syslog != tt.want {
				t.Errorf("syslog = %+v, want %+v", cfg.Logging.Syslog, tt.want)
			}
			if cfg.Logging.Journald != "off" {
				t.Errorf("journald = %q", cfg.Logging.Journald)
			}
		})
	}
	cfg, err := Load("testdata/lab.yaml")
	if err != nil || cfg.Logging.Syslog != nil || cfg.Logging.Journald != "auto" {
		t.Errorf("without a logging section: syslog %+v, journald %q (%v)", cfg.Logging.Syslog, cfg.Logging.Journald, err)
	}
}

// TestParseProxyProtocol: balancers of both families and a drain delay
// are read; absent, there is none.
func TestParseProxyProtocol(t *testing.T) {
	lab, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("lab.yaml", lab)
	if err != nil || cfg.Listen.ProxyProtocol.From != nil || cfg.Listen.ProxyProtocol.DrainDelay != 0 {
		t.Fatalf("without the section: %+v, %v", cfg.Listen.ProxyProtocol, err)
	}
	edited := strings.Replace(string(lab), "    self_signed: true\n",
		"    self_signed: true\n  proxy_protocol:\n    from: [10.0.0.5/32, \"fd00::5/128\", 192.0.2.0/28]\n    drain_delay: 10s\n", 1)
	cfg, err = Parse("lab.yaml", []byte(edited))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.5/32"), netip.MustParsePrefix("fd00::5/128"), netip.MustParsePrefix("192.0.2.0/28")}
	if pp := cfg.Listen.ProxyProtocol; !slices.Equal(pp.From, want) || pp.DrainDelay != 10*time.Second {
		t.Errorf("got %+v", pp)
	}
}

func TestParseStore(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	cfg, err := Parse("x.yaml", []byte(lab))
	if err != nil || cfg.Store.Backend != StoreBBolt || cfg.Store.Postgres != nil {
		t.Fatalf("without a store section: %+v (%v), want bbolt", cfg.Store, err)
	}
	cfg, err = Parse("x.yaml", []byte(lab+"store:\n  backend: postgres\n  postgres: {credential: bastiond-db, ca_file: /etc/bastiond/db-ca.pem, seal_key: \"credential:bastiond-seal\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := Postgres{Credential: "bastiond-db", CAFile: "/etc/bastiond/db-ca.pem", SealKey: "credential:bastiond-seal", MaxConns: 10, StatementTimeout: 5 * time.Second, ConnectTimeout: 5 * time.Second,
		AuditKeep: 400 * 24 * time.Hour}
	if cfg.Store.Backend != StorePostgres || cfg.Store.Postgres == nil || *cfg.Store.Postgres != want {
		t.Fatalf("store = %+v %+v, want postgres %+v", cfg.Store, cfg.Store.Postgres, want)
	}
	cfg, err = Parse("x.yaml", []byte(lab+"store:\n  backend: postgres\n  postgres: {credential: db, seal_key: /k, audit_keep: 90d}\n"))
	if err != nil || cfg.Store.Postgres.AuditKeep != 90*24*time.Hour {
		t.Fatalf("audit_keep 90d: %+v, %v", cfg.Store.Postgres, err)
	}
}

// The commented example shipped in systemd/ must always be a valid config.
func TestParseExample(t *testing.T) {
	if _, err := Load("../../systemd/bastiond.example.yaml"); err != nil {
		t.Fatal(err)
	}
}

func TestParseProblems(t *testing.T) {
	lab, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(string) string
		want []string // each must appear, in this order
	}{
		{
			name: "misspelt key names line and suggestion",
			edit: func(s string) string { return strings.Replace(s, "server_name:", "sever_name:", 1) },
			want: []string{`lab.yaml:2: listen.sever_name: unknown key (did you mean "server_name"?)`},
		},
		{
			name: "unknown section lists allowed keys",
			edit: func(s string) string { return s + "frobnicate: {}\n" },
			want: []string{"lab.yaml:29: frobnicate: unknown key; allowed here: access, auth, bastion,"},
		},
		{
			name: "instance name with capitals and an underscore",
			edit: func(s string) string { return s + "cluster: {instance: Bastion_1}\n" },
			want: []string{`lab.yaml:29: cluster.instance: "Bastion_1" is not an instance name: 1 to 63 of a-z, 0-9 and '-'`},
		},
		{
			name: "instance name too long",
			edit: func(s string) string { return s + "cluster:\n  instance: " + strings.Repeat("a", 64) + "\n" },
			want: []string{`lab.yaml:30: cluster.instance: "aaaa`, `is not an instance name`},
		},
		{
			name: "access.mfa not a known second factor",
			edit: func(s string) string { return strings.Replace(s, "access:\n", "access:\n  mfa: sms\n", 1) },
			want: []string{`lab.yaml:21: access.mfa: "sms" is not one of totp, webauthn, any`},
		},
		{
			name: "every problem at once",
			edit: func(s string) string {
				s = strings.Replace(s, "vnet_interface:", "vnet_iface:", 1)
				s = strings.Replace(s, "ports: {ssh: 22}", "ports: {ssh: twenty-two}", 1)
				return strings.Replace(s, "198.18.1.12,", "198.18.1.312,", 1)
			},
			want: []string{
				`lab.yaml:7: bastion.vnet_iface: unknown key (did you mean "vnet_interface"?)`,
				`lab.yaml:14: inventory.targets[0].ports.ssh: "twenty-two" is not a whole number`,
				`lab.yaml:17: inventory.targets[1].addresses[0]: "198.18.1.312" is not an IP address`,
			},
		},
		{
			name: "proxy protocol balancers: every address, mapped, twice, multicast",
			edit: func(s string) string {
				return strings.Replace(s, "    self_signed: true\n", "    self_signed: true\n  proxy_protocol:\n    from: [0.0.0.0/0, \"::/0\", \"::ffff:10.0.0.0/120\", 10.0.0.5/32, 10.0.0.5/32, \"fd00::5/128\", \"ff02::/16\"]\n", 1)
			},
			want: []string{
				"lab.yaml:6: listen.proxy_protocol.from[0]: 0.0.0.0/0 is every address",
				"lab.yaml:6: listen.proxy_protocol.from[1]: ::/0 is every address",
				"lab.yaml:6: listen.proxy_protocol.from[2]: ::ffff:10.0.0.0/120 is IPv4-mapped: write the IPv4 prefix 10.0.0.0/24",
				"lab.yaml:6: listen.proxy_protocol.from[4]: 10.0.0.5/32 is listed twice",
				"lab.yaml:6: listen.proxy_protocol.from[6]: ff02::/16 cannot be a balancer's address",
			},
		},
		{
			name: "proxy protocol balancer without a prefix length",
			edit: func(s string) string {
				return strings.Replace(s, "    self_signed: true\n", "    self_signed: true\n  proxy_protocol:\n    from: [10.0.0.5/32, 10.0.0.6]\n", 1)
			},
			want: []string{`lab.yaml:6: listen.proxy_protocol.from[1]: "10.0.0.6" is not a CIDR prefix`},
		},
		{
			name: "proxy protocol drain delay without balancers",
			edit: func(s string) string {
				return strings.Replace(s, "    self_signed: true\n", "    self_signed: true\n  proxy_protocol: {drain_delay: 5s}\n", 1)
			},
			want: []string{"lab.yaml:5: listen.proxy_protocol.drain_delay: tells balancers the daemon drains: it needs listen.proxy_protocol.from"},
		},
		{
			name: "proxy protocol drain delay past the drain grace",
			edit: func(s string) string {
				return strings.Replace(s, "    self_signed: true\n", "    self_signed: true\n  proxy_protocol: {from: [10.0.0.5/32], drain_delay: 30s}\n", 1)
			},
			want: []string{"lab.yaml:5: listen.proxy_protocol.drain_delay: 30s leaves no time to drain within limits.drain_grace (30s)"},
		},
		{
			name: "wrong shape",
			edit: func(s string) string { return strings.Replace(s, "tags: [linux]", "tags: linux", 1) },
			want: []string{"lab.yaml:15: inventory.targets[0].tags: expected a list, found the value \"linux\""},
		},
		{
			name: "port out of range",
			edit: func(s string) string { return strings.Replace(s, "rdp: 3389", "rdp: 70000", 1) },
			want: []string{`lab.yaml:18: inventory.targets[1].ports.rdp: "70000" is not a whole number from 0 to 65535`},
		},
		{
			name: "duration without unit",
			edit: func(s string) string { return s + "limits:\n  drain_grace: 30\n" },
			want: []string{`lab.yaml:30: limits.drain_grace: "30" is not a duration`},
		},
		{
			name: "target timeout too short",
			edit: func(s string) string { return s + "limits:\n  target_timeout: 10ms\n" },
			want: []string{`lab.yaml:30: limits.target_timeout: must be at least 1s, not 10ms`},
		},
		{
			name: "subnet smaller than /27",
			edit: func(s string) string { return strings.Replace(s, "198.18.0.0/26", "198.18.0.0/28", 1) },
			want: []string{"lab.yaml:8: bastion.subnets[0]: 198.18.0.0/28 is smaller than /27"},
		},
		{
			name: "IPv6 subnet smaller than /64",
			edit: func(s string) string { return strings.Replace(s, "2001:db8:b5::/64", "2001:db8:b5::/80", 1) },
			want: []string{"lab.yaml:8: bastion.subnets[1]: 2001:db8:b5::/80 is smaller than /64"},
		},
		{
			name: "host bits in subnet",
			edit: func(s string) string { return strings.Replace(s, "198.18.0.0/26", "198.18.0.4/26", 1) },
			want: []string{"bastion.subnets[0]: \"198.18.0.4/26\" is not a CIDR prefix", "did you mean 198.18.0.0/26?"},
		},
		{
			name: "target inside the bastion subnet",
			edit: func(s string) string { return strings.Replace(s, "198.18.1.11,", "198.18.0.11,", 1) },
			want: []string{"lab.yaml:13: inventory.targets[0].addresses[0]: 198.18.0.11 is inside the dedicated bastion subnet"},
		},
		{
			name: "loopback and link-local targets",
			edit: func(s string) string {
				s = strings.Replace(s, "198.18.1.11,", "127.0.0.1,", 1)
				return strings.Replace(s, `"2001:db8:b5:1::12"`, `"fe80::1"`, 1)
			},
			want: []string{"127.0.0.1 is a loopback address", "fe80::1 is link-local"},
		},
		{
			name: "role names unknown target, group and protocol",
			edit: func(s string) string {
				s = strings.Replace(s, `targets: ["*"]`, "targets: [vm9]", 1)
				s = strings.Replace(s, "group:admins", "group:nobody", 1)
				return strings.Replace(s, "protocols: [ssh, rdp, tunnel]", "protocols: [ssh, vnc]", 1)
			},
			want: []string{
				`lab.yaml:25: access.roles[0].subjects[0]: group "nobody" is not defined`,
				`lab.yaml:26: access.roles[0].targets[0]: target "vm9" is not in the inventory`,
				`lab.yaml:27: access.roles[0].protocols[1]: "vnc" is not a protocol`,
			},
		},
		{
			name: "tunnel port and bastion name in a role",
			edit: func(s string) string {
				return strings.Replace(s, "protocols: [ssh, rdp, tunnel]", "protocols: [tunnel:5432, tunnel:0, tunnel:x]\n      bastions: [bastion.lab.example, \"not a name\"]", 1)
			},
			want: []string{
				`lab.yaml:27: access.roles[0].protocols[1]: "tunnel:0" is not a protocol`,
				`lab.yaml:27: access.roles[0].protocols[2]: "tunnel:x" is not a protocol`,
				`lab.yaml:28: access.roles[0].bastions[1]: "not a name" is not a server name`,
			},
		},
		{
			name: "ssh certificates without ssh",
			edit: func(s string) string {
				return strings.Replace(s, "ports: {rdp: 3389, tunnel: [3390]}\n", "ports: {rdp: 3389, tunnel: [3390]}\n      ssh_certificates: true\n", 1)
			},
			want: []string{"lab.yaml:19: inventory.targets[1].ssh_certificates: needs ports.ssh"},
		},
		{
			name: "role with neither targets nor protocols",
			edit: func(s string) string {
				return strings.Replace(s, "      targets: [\"*\"]\n      protocols: [ssh, rdp, tunnel]\n", "", 1)
			},
			want: []string{
				`lab.yaml:24: access.roles[0].targets: required: target names, "tag:TAG", "network:NAME" or "*" (a role with auditor: true may have neither`,
				"lab.yaml:24: access.roles[0].protocols: required: one or more of ssh, rdp, tunnel",
			},
		},
		{
			name: "auditor role with targets but no protocols",
			edit: func(s string) string {
				return strings.Replace(s, "      protocols: [ssh, rdp, tunnel]\n", "      auditor: true\n", 1)
			},
			want: []string{"lab.yaml:24: access.roles[0].protocols: required"},
		},
		{
			name: "recordings limits",
			edit: func(s string) string {
				return s + "limits:\n  recordings_keep: 90 days\n  recordings_max_bytes: 20 gigs\n"
			},
			want: []string{
				`lab.yaml:30: limits.recordings_keep: "90 days" is not a duration (write it with a unit, such as 30s, 10m, 1h or 90d)`,
				`lab.yaml:31: limits.recordings_max_bytes: "20 gigs" is not a size`,
			},
		},
		{
			name: "record with tunnel rights",
			edit: func(s string) string {
				return strings.Replace(s, "      protocols: [ssh, rdp, tunnel]\n", "      protocols: [ssh, tunnel, \"tunnel:5985\"]\n      record: true\n", 1)
			},
			want: []string{
				`lab.yaml:27: access.roles[0].protocols[1]: "tunnel" cannot go with record: true: a native tunnel carries an end-to-end encrypted protocol the bastion cannot see into`,
				`lab.yaml:27: access.roles[0].protocols[2]: "tunnel:5985" cannot go with record: true`,
			},
		},
		{
			name: "missing required key reported at its section",
			edit: func(s string) string { return strings.Replace(s, "  server_name: bastion.lab.example\n", "", 1) },
			want: []string{"lab.yaml:1: listen.server_name: required"},
		},
		{
			name: "metrics off loopback",
			edit: func(s string) string { return strings.Replace(s, "  tls:\n", "  metrics: 0.0.0.0:9443\n  tls:\n", 1) },
			want: []string{"lab.yaml:3: listen.metrics: must be a loopback address"},
		},
		{
			name: "syntax error",
			edit: func(s string) string { return strings.Replace(s, "mode: bridged", "mode: [bridged", 1) },
			want: []string{"lab.yaml:"},
		},
		{
			name: "firewall bounds",
			edit: func(s string) string {
				return s + "firewall:\n  trap_threshold: -1\n  exempt_ports: [80, 443]\n  block_for: 0s\n"
			},
			want: []string{
				"lab.yaml:30: firewall.trap_threshold: must be from 1 to 1000",
				"lab.yaml:31: firewall.exempt_ports[1]: 443 cannot be exempt",
			},
		},
		{
			name: "duplicate target",
			edit: func(s string) string { return strings.Replace(s, "name: vm2", "name: vm1", 1) },
			want: []string{`lab.yaml:16: inventory.targets[1].name: target "vm1" is listed twice`},
		},
		{
			name: "address of two targets, or twice in one",
			edit: func(s string) string {
				s = strings.Replace(s, "[198.18.1.12,", "[198.18.1.11,", 1)
				return strings.Replace(s, `[198.18.1.11, "2001:db8:b5:1::11"]`, `[198.18.1.11, "2001:db8:b5:1::11", "2001:db8:b5:1::11"]`, 1)
			},
			want: []string{
				`lab.yaml:13: inventory.targets[0].addresses[2]: 2001:db8:b5:1::11 is listed twice`,
				`lab.yaml:17: inventory.targets[1].addresses[0]: 198.18.1.11 is already target "vm1"'s address: an address belongs to one target`,
			},
		},
		{
			name: "syslog collector",
			edit: func(s string) string {
				return s + "logging:\n  journald: maybe\n  syslog:\n    address: logs.example.net\n    ca_file: ca.pem\n    cert_file: /etc/c.pem\n    queue: -1\n    facility: security\n    app_name: bastion d\n"
			},
			want: []string{
				`lab.yaml:30: logging.journald: "maybe" is not a choice; use auto, on or off`,
				`lab.yaml:31: logging.syslog: cert_file and key_file go together`,
				`lab.yaml:32: logging.syslog.address: "logs.example.net" is not host:port`,
				`lab.yaml:33: logging.syslog.ca_file: needs tls: true`,
				`lab.yaml:34: logging.syslog.cert_file: needs tls: true`,
				`lab.yaml:35: logging.syslog.queue: must be from 1 to 10000000 lines, not -1`,
				`lab.yaml:36: logging.syslog.facility: "security" is not a syslog facility`,
				`lab.yaml:37: logging.syslog.app_name: "bastion d" is not an APP-NAME`,
			},
		},
		{
			name: "store",
			edit: func(s string) string {
				return s + "store:\n  backend: postgres\n  postgres:\n    dsn_file: dsn\n    ca_file: ca.pem\n    max_conns: 0\n    statement_timeout: 1ms\n    audit_keep: 1h\n"
			},
			want: []string{
				`lab.yaml:32: store.postgres.dsn_file: must be an absolute path, not "dsn"`,
				`lab.yaml:33: store.postgres.ca_file: must be an absolute path, not "ca.pem"`,
				`lab.yaml:35: store.postgres.statement_timeout: must be from 100ms to 5m, not 1ms`,
				`lab.yaml:36: store.postgres.audit_keep: must be from 1d to 36500d (how long the database keeps its copy of the audit lines), not 1h0m0s`,
			},
		},
		{
			name: "store seal key",
			edit: func(s string) string {
				return s + "store:\n  backend: postgres\n  postgres:\n    dsn_file: /etc/bastiond/db.dsn\n    seal_key: seal.key\n"
			},
			want: []string{`lab.yaml:33: store.postgres.seal_key: must be an absolute path or credential:NAME, not "seal.key"`},
		},
		{
			name: "store seal key credential",
			edit: func(s string) string {
				return s + "store:\n  backend: postgres\n  postgres: {dsn_file: /etc/bastiond/db.dsn, seal_key: \"credential:../k\"}\n"
			},
			want: []string{`lab.yaml:31: store.postgres.seal_key: "../k" is not a systemd credential's name (letters, digits, _ . -)`},
		},
		{
			name: "store without a seal key",
			edit: func(s string) string {
				return s + "store:\n  backend: postgres\n  postgres: {dsn_file: /etc/bastiond/db.dsn}\n"
			},
			want: []string{`lab.yaml:31: store.postgres.seal_key: required: the file (or credential:NAME) with the 32-byte key`},
		},
		{
			name: "store backends",
			edit: func(s string) string { return s + "store: {backend: etcd}\n" },
			want: []string{`lab.yaml:29: store.backend: "etcd" is not a backend; use bbolt (one host, the default) or postgres (a cluster)`},
		},
		{
			name: "store without a DSN, or with two",
			edit: func(s string) string {
				return s + "store:\n  backend: postgres\n  postgres: {dsn_file: /etc/bastiond/db.dsn, credential: \"../x\", max_conns: 5000}\n"
			},
			want: []string{
				`lab.yaml:31: store.postgres: dsn_file and credential are two ways to give the connection string; keep one`,
				`lab.yaml:31: store.postgres.max_conns: must be from 1 to 1000, not 5000`,
			},
		},
		{
			name: "postgres settings with bbolt",
			edit: func(s string) string { return s + "store:\n  postgres: {dsn_file: /etc/bastiond/db.dsn}\n" },
			want: []string{`lab.yaml:30: store.postgres: is for backend: postgres; the backend is bbolt`},
		},
		{
			name: "postgres without its section",
			edit: func(s string) string { return s + "store: {backend: postgres}\n" },
			want: []string{`lab.yaml:29: store.postgres: required with backend: postgres`},
		},
		{
			name: "syslog address and files",
			edit: func(s string) string {
				return s + "logging:\n  syslog: {address: \"[2001:db8::1]:0\", tls: true, ca_file: ca.pem, key_file: /k.pem}\n"
			},
			want: []string{
				`lab.yaml:30: logging.syslog.address: "0" is not a port from 1 to 65535`,
				`lab.yaml:30: logging.syslog.ca_file: must be an absolute path, not "ca.pem"`,
				`lab.yaml:30: logging.syslog: cert_file and key_file go together`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("testdata/lab.yaml", []byte(tt.edit(string(lab))))
			if err == nil {
				t.Fatal("Parse accepted a broken config")
			}
			if _, ok := AsError(err); !ok {
				t.Fatalf("error is %T, want *Error", err)
			}
			msg := err.Error()
			rest := msg
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("error lacks %q (in order); got:\n%s", w, msg)
				}
				rest = rest[i+len(w):]
			}
		})
	}
}

func TestAliasBomb(t *testing.T) {
	// Ten levels of ten aliases: 10^10 values if expanded naively.
	var b strings.Builder
	b.WriteString("access:\n  groups:\n    a: &a [x, x, x, x, x, x, x, x, x, x]\n")
	for c := 'b'; c <= 'j'; c++ {
		p := "*" + string(c-1)
		fmt.Fprintf(&b, "    %c: &%c [%s]\n", c, c, strings.Repeat(p+", ", 9)+p)
	}
	done := make(chan error, 1)
	go func() { _, err := Parse("bomb.yaml", []byte(b.String())); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("accepted")
		}
	case <-time.After(time.Minute):
		t.Fatal("Parse did not return: aliases are expanded without bound")
	}
}

func TestEmptyFile(t *testing.T) {
	_, err := Parse("x.yaml", []byte("# nothing\n"))
	if err == nil || !strings.Contains(err.Error(), "x.yaml: the file is empty") {
		t.Fatalf("got %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		want int
	}{{"", "", 0}, {"abc", "", 3}, {"sever_name", "server_name", 1}, {"kitten", "sitting", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

// FuzzParse checks that no input makes Parse panic, and that a config
// that parses has its defaults filled and parses again the same.
func FuzzParse(f *testing.F) {
	lab, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(lab)
	f.Add([]byte("listen: {server_name: a}\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("limits: {drain_grace: 1h, capacity: 0x10}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if err != nil {
			if _, ok := AsError(err); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if cfg.Limits.Capacity == 0 || cfg.StateDir == "" {
			t.Fatalf("defaults not filled: %+v", cfg)
		}
		again, err := Parse("fuzz.yaml", data)
		if err != nil || again.Digest != cfg.Digest {
			t.Fatalf("second parse differs: %v", err)
		}
	})
}

func mustRead(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Ports carry their protocols: tunnel ports and firewall.egress_allow say
// them after a slash, and a typo is an error with its file and line.
func TestParsePortsAndEgress(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	withTunnel := func(list string) string { return strings.Replace(lab, "tunnel: [3390]", "tunnel: "+list, 1) }
	cfg, err := Parse("lab.yaml", []byte(withTunnel(`[3390, "5353/udp", "4000/tcp+udp", "8080/tcp"]`)+
		"firewall:\n  restrict_egress: all\n  egress_user: svc-bastion\n  egress_dns: [192.0.2.53]\n  egress_allow: [\"192.0.2.7:5432\", \"[2001:db8::7]:88/tcp+udp\"]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Port{{3390, true, false}, {5353, false, true}, {4000, true, true}, {8080, true, false}}
	if got := cfg.Inventory.Targets[1].Ports.Tunnel; !slices.Equal(got, want) {
		t.Errorf("tunnel = %v, want %v", got, want)
	}
	if got := cfg.Inventory.Targets[1].Ports.TunnelPorts(); !slices.Equal(got, []uint16{3390, 4000, 8080}) {
		t.Errorf("TCP tunnel ports = %v", got)
	}
	if got := cfg.Inventory.Targets[1].Ports.Services(); !slices.Equal(got[:1], []Port{{3389, true, true}}) {
		t.Errorf("services = %v: RDP is TCP and UDP", got)
	}
	fw := cfg.Firewall
	if fw.RestrictEgress != EgressAll || fw.EgressUser != "svc-bastion" || len(fw.EgressDNS) != 1 ||
		!slices.Equal(fw.EgressAllow, []Endpoint{{netip.MustParseAddr("192.0.2.7"), Port{5432, true, false}}, {netip.MustParseAddr("2001:db8::7"), Port{88, true, true}}}) {
		t.Errorf("firewall = %+v", fw)
	}
	if fw.EgressAllow[1].String() != "[2001:db8::7]:88/tcp+udp" {
		t.Errorf("endpoint string %q", fw.EgressAllow[1])
	}
	def, _ := Load("testdata/lab.yaml")
	if def.Firewall.RestrictEgress != EgressUser || def.Firewall.EgressUser != "bastiond" || def.Firewall.EgressDNS != nil {
		t.Errorf("egress defaults: %+v", def.Firewall)
	}

	for _, tt := range []struct{ name, yaml, want string }{
		{"protocol typo", withTunnel(`[3390, "5353/udpp"]`), `lab.yaml:18: inventory.targets[1].ports.tunnel[1]: "udpp" is not a protocol`},
		{"port out of range", withTunnel(`["70000/tcp"]`), `lab.yaml:18: inventory.targets[1].ports.tunnel[0]: "70000" is not a port from 1 to 65535`},
		{"a list for a port", withTunnel(`[[3390]]`), `lab.yaml:18: inventory.targets[1].ports.tunnel[0]: expected a port such as 8080`},
		{"restrict_egress", lab + "firewall:\n  restrict_egress: some\n", `lab.yaml:30: firewall.restrict_egress: "some" is not user, all or off`},
		{"egress_allow name", lab + "firewall:\n  egress_allow: [\"idp.example.com:443\"]\n", `lab.yaml:30: firewall.egress_allow[0]: "idp.example.com:443" is not address:port`},
		{"egress_allow protocol", lab + "firewall:\n  egress_allow: [\"192.0.2.7:443/sctp\"]\n", `lab.yaml:30: firewall.egress_allow[0]: "sctp" is not a protocol`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("lab.yaml", []byte(tt.yaml))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzParsePortAndEndpoint: whatever parses prints back to the same value,
// and a port always has a protocol.
func FuzzParsePortAndEndpoint(f *testing.F) {
	for _, s := range []string{"8080", "5353/udp", "4000/tcp+udp", "22/tcp", "3389/udp+tcp", "0", "70000", "1/", "1/tcp+", "x/udp",
		"192.0.2.7:5432", "[2001:db8::7]:88/tcp+udp", "192.0.2.8:514/udp", "idp.example.com:443", "[fe80::1%eth0]:53/udp"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if p, err := ParsePort(s); err == nil {
			if !p.TCP && !p.UDP || p.Number == 0 {
				t.Fatalf("%q parsed to %+v", s, p)
			}
			if back, err := ParsePort(p.String()); err != nil || back != p {
				t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, p, p.String(), back, err)
			}
		}
		if e, err := ParseEndpoint(s); err == nil {
			if back, err := ParseEndpoint(e.String()); err != nil || back != e {
				t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, e, e.String(), back, err)
			}
		}
	})
}

func TestClusterInstance(t *testing.T) {
	lab, err := os.ReadFile("testdata/lab.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse("lab.yaml", lab)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cfg.Cluster.Instance, DefaultInstance(); got != want || want == "" {
		t.Errorf("default instance %q, want the host name's first label %q", got, want)
	}
	cfg, err = Parse("lab.yaml", append(lab, "cluster: {instance: bastion-b2}\n"...))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.Instance != "bastion-b2" {
		t.Errorf("instance %q, want bastion-b2", cfg.Cluster.Instance)
	}
}

// TestParseOIDC: providers are read, and every mistake in them or in an
// oidc-group subject is reported with its line.
func TestParseOIDC(t *testing.T) {
	lab := mustRead(t, "testdata/lab.yaml")
	good := lab + `auth:
  oidc:
    - name: corp
      title: Corp SSO
      issuer: https://login.example.com/realms/corp
      client_id: bastiond
      client_secret_file: credential:oidc-corp
      scopes: [openid, email, groups]
      email_domains: [example.com]
`
	good = strings.Replace(good, "subjects: [group:admins]", "subjects: [group:admins, oidc-group:corp/ops, user:ana@example.com]", 1)
	cfg, err := Parse("x.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := cfg.Auth.OIDCProvider("corp"); !ok || p.Title != "Corp SSO" || p.ClientSecretFile != "credential:oidc-corp" || len(p.Scopes) != 3 {
		t.Fatalf("provider: %+v", cfg.Auth.OIDC)
	}
	bad := lab + `auth:
  oidc:
    - name: Corp_1
      issuer: http://login.example.com
      scopes: ["a b"]
      user_claim: "x y"
      email_domains: [EXAMPLE..com]
    - name: corp
      issuer: https://login.example.com
      client_id: c
      client_secret_file: /s
    - name: corp
      issuer: https://login.example.com
      client_id: c
      client_secret_file: /s
`
	bad = strings.Replace(bad, "subjects: [group:admins]", "subjects: [oidc-group:nowhere/ops, oidc-group:corp/, oidc:corp]", 1)
	_, err = Parse("x.yaml", []byte(bad))
	for _, want := range []string{
		`x.yaml:25: access.roles[0].subjects[0]: "oidc-group:nowhere/ops": write oidc-group:PROVIDER/GROUP with a provider of auth.oidc`,
		`access.roles[0].subjects[1]: "oidc-group:corp/"`,
		`access.roles[0].subjects[2]: "oidc:corp" is not a subject`,
		`x.yaml:31: auth.oidc[0].name: "Corp_1": lowercase letters`,
		`x.yaml:32: auth.oidc[0].issuer: "http://login.example.com" is not an https URL`,
		`auth.oidc[0].client_id: required`,
		`auth.oidc[0].client_secret_file: required`,
		`auth.oidc[0].scopes[0]: "a b" is not a scope`,
		`auth.oidc[0].user_claim: "x y" is not a claim name`,
		`auth.oidc[0].email_domains[0]: "EXAMPLE..com" is not a domain name`,
		`auth.oidc[2].name: provider "corp" is defined twice`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q; got:\n%v", want, err)
		}
	}
}
