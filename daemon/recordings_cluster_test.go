package daemon

import (
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/bastiond/bastiond/daemon/adminapi"
	"github.com/bastiond/bastiond/daemon/config"
	"github.com/bastiond/bastiond/internal/audit"
	"github.com/bastiond/bastiond/internal/pgtest"
	"github.com/bastiond/bastiond/internal/store/pgstore"
	"github.com/bastiond/bastiond/internal/store/pgstore/pgstoretest"
	"github.com/bastiond/bastiond/proxy/broker"
	"github.com/bastiond/bastiond/proxy/recording"
)

// clusterDaemon is an instance of a cluster as far as its recordings go:
// its own state_dir and audit file, the cluster's PostgreSQL (over host)
// and recordings directory.
func clusterDaemon(t *testing.T, s *pgtest.Server, host, db, instance, recordDir string) *daemon {
	t.Helper()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Named(instance)
	state := t.TempDir()
	cfg := &config.Config{StateDir: state, RecordingsDir: recordDir}
	cfg.Cluster.Instance = instance
	cfg.Logging.AuditFile = filepath.Join(state, "audit.jsonl")
	tr := newTrail(log)
	t.Cleanup(tr.close)
	tr.attach(audit.Discard)
	d := &daemon{log: log, cfg: cfg, trail: tr, state: pgState{pgstoretest.On(t, s, host, db).(*pgstore.DB)}}
	if err := checkRecordDir(cfg, false); err != nil {
		t.Fatal(err)
	}
	d.recordDir, d.instance = cfg.RecordingsDir, instance
	d.openCatalog(cfg)
	if d.catalog == nil {
		t.Fatal("no catalog on a PostgreSQL store")
	}
	return d
}

// recordSSH records an SSH session on d as the proxy does: the recording
// starts (portal RecordingStarted), output, close (RecordingClosed).
func recordSSH(t *testing.T, d *daemon, id, output string, client netip.AddrPort) *recording.Recorder {
	t.Helper()
	r, err := recording.Create(d.recordDir, id, recording.Header{Width: 80, Height: 24, Title: "root@vm1 by alice"})
	if err != nil {
		t.Fatal(err)
	}
	i := broker.Info{ID: id, Instance: d.instance, User: "alice", Client: client, Target: "vm1", Protocol: "ssh",
		Login: "root", Start: time.Now().Add(-time.Minute).Truncate(time.Second), Recording: r.Path()}
	d.recordingStarted(i)
	r.Output([]byte(output))
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	i.RecordingSHA256 = r.SHA256()
	d.recordingClosed(i, r.Size())
	return r
}

// TestClusterRecordings: instance A records a session into the directory
// the cluster shares; instance B (another connection to the cluster's
// PostgreSQL, another audit file that knows nothing of it) lists it with
// who, what and where, plays it and verifies it. An instance whose
// recordings_dir is not the shared one is told where the recording is;
// one that retention removed is said to be removed, and by whom.
func TestClusterRecordings(t *testing.T) {
	s := pgtest.Start(t)
	db := s.NewDatabase(t)
	shared := t.TempDir()
	a := clusterDaemon(t, s, "127.0.0.1", db, "bastion-a", shared)
	b := clusterDaemon(t, s, "::1", db, "bastion-b", shared)
	c := clusterDaemon(t, s, "::1", db, "bastion-c", t.TempDir()) // its own directory, not the shared one

	r4 := recordSSH(t, a, "fffffffffff4", "hello from A over IPv4", netip.MustParseAddrPort("192.0.2.10:50000"))
	r6 := recordSSH(t, a, "fffffffffff6", "hello from A over IPv6", netip.MustParseAddrPort("[2001:db8::7]:50001"))

	list, err := recordingsAPI{b}.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 {
		t.Fatalf("B lists %d recordings, want A's 2: %+v", len(list), list)
	}
	for i, r := range []*recording.Recorder{r4, r6} {
		got := list[i]
		if got.ID != filepath.Base(strings.TrimSuffix(r.Path(), recording.ExtCastGzip)) || got.Instance != "bastion-a" || got.User != "alice" ||
			got.Target != "vm1" || got.Login != "root" || got.SHA256 != r.SHA256() || got.Size != r.Size() || got.Start.IsZero() {
			t.Errorf("B describes %+v; want A's recording %s by alice on root@vm1, hash %s", got, r.Path(), r.SHA256())
		}
	}

	rc, info, err := recordingsAPI{b}.Export("fffffffffff6", "auditor", false)
	if err != nil {
		t.Fatalf("B plays A's recording: %v", err)
	}
	out, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !strings.Contains(string(out), "hello from A over IPv6") || info.ID != "fffffffffff6" {
		t.Errorf("B plays %q, %v", out, err)
	}

	checks, err := recordingsAPI{b}.Verify(nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) != 2 || checks[0].Outcome != adminapi.CheckOK || checks[1].Outcome != adminapi.CheckOK {
		t.Errorf("B verifies A's recordings: %+v; want both ok (the hashes from the catalog)", checks)
	}

	// C does not mount the shared directory: it says where the recording is.
	_, _, err = recordingsAPI{c}.Export("fffffffffff4", "auditor", false)
	if err == nil || !strings.Contains(err.Error(), "instance bastion-a") || !strings.Contains(err.Error(), c.recordDir) {
		t.Errorf("C exports a recording not in its directory: %v; want the instance and the directory named", err)
	}

	// B's retention removes A's first recording: A is told, by whom.
	os.Chtimes(r4.Path(), time.Now().Add(-48*time.Hour), time.Now().Add(-48*time.Hour))
	ret := recording.NewRetention(b.recordDir, recording.Limits{Keep: time.Hour}, audit.Discard, b.log)
	ret.Share(b.catalog, b.instance)
	if got := ret.Pass(time.Now()); len(got) != 1 {
		t.Fatalf("B's retention removed %v", got)
	}
	_, _, err = recordingsAPI{a}.Export("fffffffffff4", "auditor", false)
	if err == nil || !strings.Contains(err.Error(), "removed by the retention of instance bastion-b") {
		t.Errorf("A exports the removed recording: %v", err)
	}
	checks, err = recordingsAPI{a}.Verify([]string{"fffffffffff4"})
	if err != nil || len(checks) != 1 || checks[0].Outcome != adminapi.CheckRemoved {
		t.Errorf("A verifies the removed recording: %+v %v; want removed", checks, err)
	}
}

// TestCheckRecordDir: a recordings directory that cannot take recordings
// stops start-up (and -check-config) with an error naming recordings_dir;
// the default one in state_dir is made at start, and left to start by
// -check-config, which changes nothing.
func TestCheckRecordDir(t *testing.T) {
	state := t.TempDir()
	def := &config.Config{StateDir: state, RecordingsDir: filepath.Join(state, "recordings")}
	if err := checkRecordDir(def, true); err != nil {
		t.Fatalf("check of a default directory not made yet: %v", err)
	}
	if _, err := os.Stat(def.RecordingsDir); err == nil {
		t.Fatal("-check-config made the recordings directory")
	}
	if err := checkRecordDir(def, false); err != nil {
		t.Fatalf("start with the default directory: %v", err)
	}
	if fi, err := os.Stat(def.RecordingsDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("start made %v, %v; want a directory of mode 0700", fi, err)
	}

	ro := t.TempDir()
	if os.Geteuid() == 0 {
		if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, "size=64k"); err != nil {
			t.Skipf("cannot mount a read-only tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	} else {
		os.Chmod(ro, 0o500)
		t.Cleanup(func() { os.Chmod(ro, 0o700) })
	}
	for _, tc := range []struct{ name, dir, want string }{
		{"missing mount", filepath.Join(t.TempDir(), "nfs"), "does not exist"},
		{"read-only", ro, "is not writable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &config.Config{StateDir: state, RecordingsDir: tc.dir}
			for _, check := range []bool{true, false} {
				err := checkRecordDir(cfg, check)
				if err == nil || !strings.HasPrefix(err.Error(), "recordings_dir: ") || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("check=%v: %v; want recordings_dir: ... %s", check, err, tc.want)
				}
			}
			if _, err := os.Stat(tc.dir); tc.name == "missing mount" && err == nil {
				t.Error("a missing configured directory was made")
			}
		})
	}
}
