package access

import (
	"reflect"
	"testing"
)

func testPolicy() *Policy {
	targets := []Target{
		{Name: "web1", Tags: []string{"linux", "prod"}, SSH: 22, Tunnel: []uint16{5432}},
		{Name: "web2", Tags: []string{"linux"}, SSH: 2222},
		{Name: "win1", Tags: []string{"windows"}, RDP: 3389, Tunnel: []uint16{5985}},
	}
	groups := map[string][]string{"ops": {"alice", "bob"}, "dba": {"dave"}}
	roles := []Role{
		{Name: "ops-linux", Subjects: []string{"group:ops"}, Targets: []string{"tag:linux"}, Protocols: []string{SSH}, Logins: []string{"deploy"}, Record: true},
		{Name: "carol-win", Subjects: []string{"user:carol"}, Targets: []string{"win1"}, Protocols: []string{RDP}, DisableClipboard: true},
		{Name: "dba-pg", Subjects: []string{"group:dba"}, Targets: []string{"web1"}, Protocols: []string{"tunnel:5432"}},
		{Name: "elsewhere", Subjects: []string{"user:erin"}, Targets: []string{"*"}, Protocols: []string{SSH, RDP, Tunnel}, Bastions: []string{"other.example"}},
		{Name: "here", Subjects: []string{"user:frank"}, Targets: []string{"*"}, Protocols: []string{Tunnel}, Bastions: []string{"Bastion.Example."}},
		{Name: "granted-only", Targets: []string{"web2"}, Protocols: []string{SSH}, Logins: []string{"*"}},
	}
	return New("bastion.example", targets, groups, roles)
}

func TestCheck(t *testing.T) {
	p := testPolicy()
	for _, tc := range []struct {
		name  string
		req   Request
		allow bool
		roles []string
	}{
		{"group member, ssh on a tagged target", Request{User: "alice", Target: "web1", Protocol: SSH}, true, []string{"ops-linux"}},
		{"group member, allowed login", Request{User: "bob", Target: "web2", Protocol: SSH, Login: "deploy"}, true, []string{"ops-linux"}},
		{"group member, other login", Request{User: "bob", Target: "web2", Protocol: SSH, Login: "root"}, false, nil},
		{"group member, protocol not in role", Request{User: "alice", Target: "web1", Protocol: Tunnel, Port: 22}, false, nil},
		{"group member, target outside the tag", Request{User: "alice", Target: "win1", Protocol: RDP}, false, nil},
		{"user subject, rdp", Request{User: "carol", Target: "win1", Protocol: RDP, Login: "Administrator"}, true, []string{"carol-win"}},
		{"user subject, ssh not offered by the target", Request{User: "carol", Target: "win1", Protocol: SSH}, false, nil},
		{"tunnel to the one allowed port", Request{User: "dave", Target: "web1", Protocol: Tunnel, Port: 5432}, true, []string{"dba-pg"}},
		{"tunnel to another offered port", Request{User: "dave", Target: "web1", Protocol: Tunnel, Port: 22}, false, nil},
		{"tunnel to a port the target does not offer", Request{User: "frank", Target: "web1", Protocol: Tunnel, Port: 80}, false, nil},
		{"role for another bastion", Request{User: "erin", Target: "web1", Protocol: SSH}, false, nil},
		{"role naming this bastion (case, trailing dot)", Request{User: "frank", Target: "win1", Protocol: Tunnel, Port: 5985}, true, []string{"here"}},
		{"unknown target", Request{User: "alice", Target: "db9", Protocol: SSH}, false, nil},
		{"unknown protocol", Request{User: "alice", Target: "web1", Protocol: "telnet"}, false, nil},
		{"unknown user", Request{User: "mallory", Target: "web1", Protocol: SSH}, false, nil},
		{"role granted in the store", Request{User: "mallory", Granted: []string{"granted-only"}, Target: "web2", Protocol: SSH, Login: "root"}, true, []string{"granted-only"}},
		{"granted role that does not exist", Request{User: "mallory", Granted: []string{"admins"}, Target: "web2", Protocol: SSH}, false, nil},
		{"two roles: both listed", Request{User: "alice", Granted: []string{"granted-only"}, Target: "web2", Protocol: SSH}, true, []string{"ops-linux", "granted-only"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Check(tc.req)
			if d.Allowed != tc.allow || !reflect.DeepEqual(d.Roles, tc.roles) {
				t.Fatalf("%+v: got %+v", tc.req, d)
			}
			if !d.Allowed && d.Reason == "" {
				t.Error("a refusal without a reason")
			}
		})
	}
}

// TestCovers: what a user may be told about the inventory. A user is
// covered only by a role that names the target (or "*") and the port;
// whether the target exists or offers the port does not change the answer.
func TestCovers(t *testing.T) {
	p := testPolicy()
	for _, tc := range []struct {
		name  string
		req   Request
		cover bool
	}{
		{"allowed", Request{User: "dave", Target: "web1", Protocol: Tunnel, Port: 5432}, true},
		{"any port, one the target does not offer", Request{User: "frank", Target: "web1", Protocol: Tunnel, Port: 80}, true},
		{"\"*\", a target the inventory lacks", Request{User: "frank", Target: "db9", Protocol: Tunnel, Port: 22}, true},
		{"one port, another", Request{User: "dave", Target: "web1", Protocol: Tunnel, Port: 22}, false},
		{"one port, a target the inventory lacks", Request{User: "dave", Target: "db9", Protocol: Tunnel, Port: 5432}, false},
		{"a tag, a target the inventory lacks", Request{User: "alice", Target: "db9", Protocol: SSH}, false},
		{"no role", Request{User: "mallory", Target: "db9", Protocol: Tunnel, Port: 22}, false},
		{"role for another bastion", Request{User: "erin", Target: "db9", Protocol: Tunnel, Port: 22}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Covers(tc.req); got != tc.cover {
				t.Errorf("%+v: Covers %v, want %v", tc.req, got, tc.cover)
			}
		})
	}
}

func TestStricterSettingsWin(t *testing.T) {
	p := New("b", []Target{{Name: "w", RDP: 3389}}, nil, []Role{
		{Name: "a", Subjects: []string{"user:u"}, Targets: []string{"*"}, Protocols: []string{RDP}, DisableClipboard: true},
		{Name: "b", Subjects: []string{"user:u"}, Targets: []string{"*"}, Protocols: []string{RDP}, Record: true},
		{Name: "c", Subjects: []string{"user:u"}, Targets: []string{"*"}, Protocols: []string{RDP}, DisableFileTransfer: true},
	})
	d := p.Check(Request{User: "u", Target: "w", Protocol: RDP})
	if !d.Allowed || !d.Record || !d.DisableClipboard || !d.DisableFileTransfer {
		t.Fatalf("%+v", d)
	}
}

func TestReachable(t *testing.T) {
	p := testPolicy()
	got := p.Reachable(Principal{User: "alice"})
	want := []Reachable{
		{Name: "web1", Tags: []string{"linux", "prod"}, Protocols: []string{SSH}, Logins: []string{"deploy"}},
		{Name: "web2", Tags: []string{"linux"}, Protocols: []string{SSH}, Logins: []string{"deploy"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("alice:\n got %+v\nwant %+v", got, want)
	}
	got = p.Reachable(Principal{User: "frank"})
	if len(got) != 3 || !reflect.DeepEqual(got[2].TunnelPorts, []uint16{3389, 5985}) || got[2].Logins != nil {
		t.Errorf("frank: %+v", got)
	}
	if got := p.Reachable(Principal{User: "erin"}); len(got) != 0 {
		t.Errorf("erin, whose role is for another bastion, sees %+v", got)
	}
}

func TestAuditor(t *testing.T) {
	p := New("bastion.example", []Target{{Name: "web1", SSH: 22}}, map[string][]string{"auditors": {"carol"}}, []Role{
		{Name: "audit", Subjects: []string{"group:auditors"}, Auditor: true},
		{Name: "audit-granted", Auditor: true},
		{Name: "audit-elsewhere", Subjects: []string{"user:erin"}, Auditor: true, Bastions: []string{"other.example"}},
		{Name: "ops", Subjects: []string{"user:alice"}, Targets: []string{"*"}, Protocols: []string{SSH}},
	})
	for _, tc := range []struct {
		name    string
		user    string
		granted []string
		want    bool
	}{
		{"group member", "carol", nil, true},
		{"granted the role", "dave", []string{"audit-granted"}, true},
		{"role for another bastion", "erin", nil, false},
		{"session role only", "alice", nil, false},
		{"no role", "mallory", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Auditor(Principal{User: tc.user, Granted: tc.granted}); got != tc.want {
				t.Errorf("Auditor(%q, %q) = %v, want %v", tc.user, tc.granted, got, tc.want)
			}
		})
	}
	// An auditor role opens no sessions.
	if d := p.Check(Request{User: "carol", Target: "web1", Protocol: SSH}); d.Allowed {
		t.Errorf("auditor role allowed a session: %+v", d)
	}
	if got := p.Reachable(Principal{User: "carol"}); len(got) != 0 {
		t.Errorf("auditor sees targets: %+v", got)
	}
}

// TestRecordedTunnels: a tunnel is recorded (so refused) when an allowing
// role records, and when it goes to the SSH or RDP port of a target on
// which a role of the user records that protocol: it would carry the
// session that role says must be recorded. Other ports stay open.
func TestRecordedTunnels(t *testing.T) {
	p := New("b", []Target{{Name: "vm1", SSH: 22, Tunnel: []uint16{9000}}, {Name: "vm2", RDP: 3389}, {Name: "vm3", SSH: 22}}, nil, []Role{
		{Name: "ssh-recorded", Subjects: []string{"user:u"}, Targets: []string{"vm1"}, Protocols: []string{SSH}, Logins: []string{"deploy"}, Record: true},
		{Name: "rdp-recorded", Subjects: []string{"user:u"}, Targets: []string{"vm2"}, Protocols: []string{RDP}, Record: true},
		{Name: "tunnels", Subjects: []string{"user:u", "user:v"}, Targets: []string{"*"}, Protocols: []string{Tunnel}},
		{Name: "granted-recorded", Targets: []string{"vm3"}, Protocols: []string{SSH}, Record: true},
	})
	for _, tc := range []struct {
		name    string
		user    string
		granted []string
		target  string
		port    uint16
		want    bool
	}{
		{"to the recorded SSH port", "u", nil, "vm1", 22, true},
		{"to another port", "u", nil, "vm1", 9000, false},
		{"to the recorded RDP port", "u", nil, "vm2", 3389, true},
		{"SSH of a target without recording", "u", nil, "vm3", 22, false},
		{"SSH recorded by a granted role", "u", []string{"granted-recorded"}, "vm3", 22, true},
		{"a user without the recorded role", "v", nil, "vm1", 22, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Check(Request{User: tc.user, Granted: tc.granted, Target: tc.target, Protocol: Tunnel, Port: tc.port})
			if !d.Allowed || d.Record != tc.want || (len(d.RecordedBy) > 0) != tc.want {
				t.Errorf("%+v", d)
			}
		})
	}
}

// A role that keeps files out of a target's browser sessions keeps them out
// of tunnels to the same protocol's port too: scp and sftp would carry them.
func TestFilesKeptOutOfTunnels(t *testing.T) {
	p := New("b", []Target{{Name: "vm1", SSH: 22, Tunnel: []uint16{9000}}, {Name: "vm2", RDP: 3389}, {Name: "vm3", SSH: 22}}, nil, []Role{
		{Name: "ssh-no-files", Subjects: []string{"user:u"}, Targets: []string{"vm1"}, Protocols: []string{SSH}, DisableFileTransfer: true},
		{Name: "rdp-no-files", Subjects: []string{"user:u"}, Targets: []string{"vm2"}, Protocols: []string{RDP}, DisableFileTransfer: true},
		{Name: "tunnels", Subjects: []string{"user:u", "user:v"}, Targets: []string{"*"}, Protocols: []string{Tunnel}},
	})
	for _, tc := range []struct {
		name   string
		user   string
		target string
		port   uint16
		want   bool
	}{
		{"to the SSH port", "u", "vm1", 22, true},
		{"to another port", "u", "vm1", 9000, false},
		{"to the RDP port", "u", "vm2", 3389, true},
		{"a target whose roles allow files", "u", "vm3", 22, false},
		{"a user without the role", "v", "vm1", 22, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Check(Request{User: tc.user, Target: tc.target, Protocol: Tunnel, Port: tc.port})
			if !d.Allowed || d.DisableFileTransfer != tc.want || (len(d.FilesDisabledBy) > 0) != tc.want {
				t.Errorf("%+v", d)
			}
		})
	}
}

func TestBrowserRoles(t *testing.T) {
	if got, want := testPolicy().BrowserRoles(), []string{"ops-linux", "carol-win", "granted-only"}; !reflect.DeepEqual(got, want) {
		t.Errorf("BrowserRoles() = %q, want %q", got, want)
	}
	p := New("bastion.example", []Target{{Name: "db", Tunnel: []uint16{5432}}}, nil, []Role{
		{Name: "audit", Auditor: true},
		{Name: "pg", Targets: []string{"db"}, Protocols: []string{"tunnel:5432"}},
		{Name: "audit-elsewhere", Auditor: true, Bastions: []string{"other.example"}},
	})
	if got, want := p.BrowserRoles(), []string{"audit"}; !reflect.DeepEqual(got, want) {
		t.Errorf("BrowserRoles() = %q, want %q", got, want)
	}
	tunnelsOnly := New("bastion.example", nil, nil, []Role{
		{Name: "tunnels", Targets: []string{"*"}, Protocols: []string{Tunnel}},
		{Name: "ssh-elsewhere", Targets: []string{"*"}, Protocols: []string{SSH}, Bastions: []string{"other.example"}},
	})
	if got := tunnelsOnly.BrowserRoles(); len(got) != 0 {
		t.Errorf("tunnels only: BrowserRoles() = %q, want none", got)
	}
}

// TestOIDCGroups: a role bound to oidc-group:PROVIDER/GROUP applies to a
// user whom that provider puts in that group, not to a member of a group
// of the same name at another provider, nor to a local group of that name.
func TestOIDCGroups(t *testing.T) {
	p := New("bastion.lab.example", []Target{{Name: "vm1", SSH: 22}}, map[string][]string{"ops": {"bob"}},
		[]Role{{Name: "ops", Subjects: []string{"oidc-group:lab/ops"}, Targets: []string{"*"}, Protocols: []string{SSH}}})
	for _, tc := range []struct {
		who  Principal
		want bool
	}{
		{Principal{User: "ana@lab.example", Groups: []string{"lab/everyone", "lab/ops"}}, true},
		{Principal{User: "ana@lab.example", Groups: []string{"other/ops"}}, false},
		{Principal{User: "ana@lab.example"}, false},
		{Principal{User: "bob"}, false},
	} {
		d := p.Check(Request{User: tc.who.User, Groups: tc.who.Groups, Target: "vm1", Protocol: SSH})
		if d.Allowed != tc.want || (len(p.Reachable(tc.who)) == 1) != tc.want || (len(p.RolesOf(tc.who)) == 1) != tc.want {
			t.Errorf("%+v: allowed %v, want %v", tc.who, d.Allowed, tc.want)
		}
	}
}
