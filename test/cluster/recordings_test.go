package cluster

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/seal"
	"github.com/bastiond/bastiond/test/e2e"
)

// recordingConfig makes instance name one of the cluster on dsn, with alice's SSH
// on vm1 recorded into the directory both instances share, and carol an
// auditor.
func recordingConfig(t testing.TB, name, dsn, sealKey, shared string) string {
	return fmt.Sprintf(`cluster: {instance: %s}
recordings_dir: %s
store:
  backend: postgres
  postgres:
    dsn_file: %s
    ca_file: %s
    seal_key: %s
access:
  groups:
    ops: [alice]
  roles:
    - name: recorded
      subjects: [group:ops]
      targets: [vm1]
      protocols: [ssh]
      record: true
    - name: audit
      subjects: [user:carol]
      auditor: true
`, name, shared, dsn, e2e.LabValue(t, "DB_CA"), sealKey)
}

// TestClusterRecordings: recorded browser SSH sessions through the
// balancer, over IPv4 and IPv6, land on either instance and are recorded
// into the shared directory; the other instance, which never saw them,
// lists each one with its instance, user, target and hash, exports (plays)
// it, and verifies it.
func TestClusterRecordings(t *testing.T) {
	e2e.NeedLab(t)
	sealKey := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(sealKey, []byte(seal.Generate()), 0o600); err != nil {
		t.Fatal(err)
	}
	shared := filepath.Join(t.TempDir(), "recordings") // the "NFS mount" both instances see
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	dsn := newDatabase(t) // its own: the CA another test sealed with its key is not this one's
	a := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION"), e2e.ViaFDs, instanceConfig(t, recordingConfig(t, "a", dsn, sealKey, shared)))
	b := e2e.StartDaemonIn(t, e2e.LabValue(t, "NS_BASTION2"), e2e.ViaFDs, instanceConfig(t, recordingConfig(t, "b", dsn, sealKey, shared)))
	waitStates(t, map[string]string{"a": "UP", "b": "UP"}, 20*time.Second)
	e2e.AddLabUsers(t, a, "alice", "carol")
	e2e.PinVM1(t, a) // pins are shared: b trusts them too
	pw := e2e.LabValue(t, "LAB_PASSWORD")
	instances := map[string]*e2e.Daemon{"a": a, "b": b}

	for _, via := range []struct{ family, addr string }{{"IPv4", e2e.LabValue(t, "BASTION_PUB4")}, {"IPv6", e2e.LabValue(t, "BASTION_PUB6")}} {
		t.Run(via.family, func(t *testing.T) {
			marker := fmt.Sprintf("CLUSTER-REC-%s-$((6*7))", via.family)
			tc := e2e.SignedIn(t, via.addr, "alice").OpenTerminal("vm1")
			ready := tc.Shell(pw)
			if ready.Session == "" {
				t.Fatalf("ready: %+v", ready)
			}
			id := ready.Session
			tc.TypeText("echo " + marker + "\r")
			want := strings.Replace(marker, "$((6*7))", "42", 1)
			tc.ScreenHas(want, 10*time.Second)
			tc.TypeText("exit\r")
			tc.Ended()

			// Which instance carried it: the one whose audit file has its end.
			var on string
			var end map[string]any
			for deadline := time.Now().Add(10 * time.Second); end == nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
				for name, d := range instances {
					for _, e := range auditLines(t, d, "session_end") {
						if e["session"] == id && e["recording_sha256"] != nil {
							on, end = name, e
						}
					}
				}
			}
			if end == nil {
				t.Fatalf("no end record with a recording for session %s on either instance", id)
			}
			other := map[string]string{"a": "b", "b": "a"}[on]
			d := instances[other]
			t.Logf("session %s over %s recorded on instance %s; played on %s", id, via.family, on, other)

			// The other instance lists it, described.
			out, err := d.Ctl(nil, "recordings", "list", "--json")
			if err != nil {
				t.Fatalf("recordings list on %s: %v\n%s", other, err, out)
			}
			var list []map[string]any
			if err := json.Unmarshal([]byte(out), &list); err != nil {
				t.Fatalf("recordings list --json: %v\n%s", err, out)
			}
			var got map[string]any
			for _, r := range list {
				if r["id"] == id {
					got = r
				}
			}
			if got == nil || got["instance"] != on || got["user"] != "alice" || got["target"] != "vm1" ||
				got["sha256"] != end["recording_sha256"] || got["login"] != e2e.LabValue(t, "LAB_USER") {
				t.Fatalf("%s lists %v; want %s's recording of alice on vm1 with the end record's hash %v", other, got, on, end["recording_sha256"])
			}
			table, err := d.Ctl(nil, "recordings", "list")
			if err != nil || !strings.Contains(table, "INSTANCE") {
				t.Errorf("recordings list on %s has no INSTANCE column: %v\n%s", other, err, table)
			}

			// And plays it: export decompressed, the terminal's output in it.
			file := filepath.Join(t.TempDir(), id+".cast")
			if out, err := d.Ctl(nil, "recordings", "export", id, "-o", file); err != nil {
				t.Fatalf("recordings export on %s: %v\n%s", other, err, out)
			}
			cast, err := os.ReadFile(file)
			if err != nil || !strings.HasPrefix(string(cast), `{"version":2`) || !strings.Contains(string(cast), want) {
				t.Errorf("the recording exported on %s lacks the output %q: %v\n%.400s", other, want, err, cast)
			}
			if out, err := d.Ctl(nil, "recordings", "verify", id); err != nil || !strings.Contains(out, " ok ") {
				t.Errorf("recordings verify on %s: %v\n%s", other, err, out)
			}
			if len(auditLines(t, d, "recording_exported")) == 0 {
				t.Errorf("the export on %s is not in its audit file", other)
			}
		})
	}
}
