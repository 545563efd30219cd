package cluster

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/api/tunnelwire"
	"github.com/bastiond/bastiond/test/e2e"
	"github.com/bastiond/bastiond/tunnel"
)

// pgCtl runs PostgreSQL's pg_ctl on the lab's cluster (test/lab/cluster.sh
// start_postgres), as user postgres in the database's namespace.
func pgCtl(t testing.TB, args ...string) {
	t.Helper()
	bin, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if len(bin) == 0 {
		t.Fatal("no pg_ctl")
	}
	dir := filepath.Dir(e2e.LabValue(t, "DB_DSN_FILE"))
	argv := append([]string{"netns", "exec", e2e.LabValue(t, "NS_DB"), "setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups",
		bin[len(bin)-1], "-D", filepath.Join(dir, "data"), "-w", "-t", "60"}, args...)
	cmd := exec.Command("ip", argv...)
	cmd.WaitDelay = 10 * time.Second // the server it starts keeps no pipe of ours (-l), but never hang on one
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl %v: %v\n%s", args, err, out)
	}
}

// stopPostgres stops the lab's PostgreSQL as its admin would (fast:
// every connection is ended).
func stopPostgres(t testing.TB) { t.Helper(); pgCtl(t, "stop", "-m", "fast") }

// startPostgres starts the lab's PostgreSQL again, on the same data and
// settings, and records its PID where lab.sh keeps its services'.
func startPostgres(t testing.TB) {
	t.Helper()
	dir := filepath.Dir(e2e.LabValue(t, "DB_DSN_FILE"))
	pgCtl(t, "-l", filepath.Join(dir, "run", "restart.log"), "start")
	pid, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(pid), "\n")
	os.WriteFile(filepath.Join(e2e.LabValue(t, "LAB_DIR"), "pids", "postgres"), []byte(first+" postgres\n"), 0o644)
}

// echoer is a live session that can show bytes flowing both ways.
type echoer struct {
	what, id string
	echo     func(t testing.TB, mark string)
	end      func(t testing.TB)
}

// TestPostgresRestartedUnderLiveSessions stops the cluster's PostgreSQL
// while users of both address families have tunnels (TCP and QUIC) and
// browser terminals open on both instances, and starts it again: the
// sessions carry bytes all along; sessions that end while it is down get
// their end records, and leave the registry once it is back; a sign-in in
// the browser, a bastionctl login and a new tunnel are refused while it is
// down with a message that says so, and work again after, from the same
// bastiond processes; no instance takes the other for dead, the registry
// lists exactly the sessions that live, and the audit files verify.
func TestPostgresRestartedUnderLiveSessions(t *testing.T) {
	e2e.NeedLab(t)
	a, b := newCluster(t, webConfig)
	e2e.PinVM1(t, a)
	e2e.StartSink(t, e2e.LabValue(t, "NS_VM1"), "[::]:9001", e2e.SinkEcho)
	pids := []int{a.Cmd.Process.Pid, b.Cmd.Process.Pid}
	families := []struct{ name, pub string }{{"IPv4", e2e.LabValue(t, "BASTION_PUB4")}, {"IPv6", e2e.LabValue(t, "BASTION_PUB6")}}
	creds := e2e.LoginAs(t, "alice", families[0].pub)
	// Whatever happens, the database is up for the tests after this one.
	defer startPostgresIfDown(t)

	// Per family: two tunnels over TCP and two over QUIC, and two browser
	// terminals; of each pair, the first lives through the outage and the
	// second ends during it.
	var staying, ending []echoer
	for _, f := range families {
		for _, transport := range []string{"tcp", "quic"} {
			for i := range 2 {
				e := openTunnel(t, creds, f.pub, transport, fmt.Sprintf("%s tunnel over %s #%d", f.name, transport, i+1))
				e.echo(t, "before")
				if i == 0 {
					staying = append(staying, e)
				} else {
					ending = append(ending, e)
				}
			}
		}
		for i := range 2 {
			e := openTerminal(t, f.pub, fmt.Sprintf("%s terminal #%d", f.name, i+1))
			e.echo(t, "before")
			if i == 0 {
				staying = append(staying, e)
			} else {
				ending = append(ending, e)
			}
		}
	}
	// A browser per family, signed in before the outage.
	browsers := map[string]*e2e.WebUser{}
	for _, f := range families {
		browsers[f.name] = e2e.SignedIn(t, f.pub, "alice")
	}
	all := append(append([]echoer(nil), staying...), ending...)
	waitRegistry(t, a, b, all)
	perInstance := map[any]int{}
	for _, s := range liveSessions(t, a) {
		perInstance[s["instance"]]++
	}
	t.Logf("%d sessions before the outage, by instance: %v", len(all), perInstance)

	stopPostgres(t)
	stopped := time.Now()
	t.Logf("PostgreSQL stopped")

	t.Run("while it is down", func(t *testing.T) {
		for _, e := range staying {
			e.echo(t, "during")
		}
		for _, e := range ending {
			e.end(t)
		}
		for _, e := range ending {
			recs := endRecords(t, e.id, 15*time.Second, a, b)
			if len(recs) != 1 {
				t.Errorf("%s (%s), ended while the database was down: %d end records", e.what, e.id, len(recs))
				continue
			}
			// Its bytes, both ways, before and during the outage.
			if up, _ := recs[0]["bytes_up"].(float64); up == 0 {
				t.Errorf("%s: end record without the bytes it carried: %v", e.what, recs[0])
			}
			if down, _ := recs[0]["bytes_down"].(float64); down == 0 {
				t.Errorf("%s: end record without the bytes it carried: %v", e.what, recs[0])
			}
		}
		for _, f := range families {
			if _, err := browsers[f.name].Ticket("vm1", "ssh"); err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "cannot reach its database") {
				t.Errorf("%s: a signed-in browser opens a terminal while the database is down: %v", f.name, err)
			}
			status, page := e2e.NewWebUser(t, f.pub).SignIn("alice", e2e.TunnelPassword, "")
			if status != http.StatusServiceUnavailable || !strings.Contains(page, "cannot reach its database") {
				t.Errorf("%s: a sign-in in the browser while the database is down: %d\n%s", f.name, status, lastBytes(page, 2000))
			}
			out, err := bastionctlLogin(t, f.pub)
			if err == nil || !strings.Contains(out, "cannot reach its database") {
				t.Errorf("%s: bastionctl login while the database is down: %v\n%s", f.name, err, out)
			}
			t.Logf("%s: bastionctl login while the database is down says: %s", f.name, strings.TrimSpace(out))
			for _, transport := range []string{"tcp", "quic"} {
				_, err := e2e.Dial(t, e2e.TunnelClient(t, creds, f.pub, transport), "vm1", 9001)
				e2e.WantRefusal(t, err, tunnelwire.StatusUnavailable, "cannot reach its database")
				if transport == "tcp" {
					t.Logf("%s: a new tunnel while the database is down: %v", f.name, err)
				}
			}
		}
		// At least as long as an instance's heartbeat may stay unchanged
		// before the others take it for dead (proxy/registry: Dead, 15 s).
		for time.Since(stopped) < 20*time.Second {
			time.Sleep(time.Second)
			for _, e := range staying {
				e.echo(t, "during")
			}
		}
	})

	startPostgres(t)
	restarted := time.Now()
	t.Logf("PostgreSQL started again after %s", restarted.Sub(stopped).Round(100*time.Millisecond))

	t.Run("after it is back", func(t *testing.T) {
		for _, e := range staying {
			e.echo(t, "after")
		}
		for _, f := range families {
			// The pool reconnects on demand: the first sign-ins may still
			// meet a connection the restart broke.
			var status int
			var page string
			for try := 0; try < 20 && status != http.StatusSeeOther; try++ {
				if try > 0 {
					time.Sleep(500 * time.Millisecond)
				}
				status, page = e2e.NewWebUser(t, f.pub).SignIn("alice", e2e.TunnelPassword, "")
			}
			if status != http.StatusSeeOther || !strings.Contains(page, "vm1") {
				t.Errorf("%s: a sign-in in the browser after the database is back: %d\n%s", f.name, status, lastBytes(page, 2000))
			}
			if out, err := bastionctlLogin(t, f.pub); err != nil {
				t.Errorf("%s: bastionctl login after the database is back: %v\n%s", f.name, err, out)
			}
			if _, err := browsers[f.name].Ticket("vm1", "ssh"); err != nil {
				t.Errorf("%s: the browser signed in before the outage, after it: %v", f.name, err)
			}
			for _, transport := range []string{"tcp", "quic"} {
				e := openTunnel(t, creds, f.pub, transport, f.name+" new tunnel over "+transport)
				e.echo(t, "new")
				e.end(t)
				if n := len(endRecords(t, e.id, 15*time.Second, a, b)); n != 1 {
					t.Errorf("%s: %d end records", e.what, n)
				}
			}
		}
		for i, pid := range pids {
			if err := syscall.Kill(pid, 0); err != nil {
				t.Errorf("instance %c (PID %d) is gone: %v", 'a'+i, pid, err)
			}
		}
	})

	t.Run("nothing half-written", func(t *testing.T) {
		// The sessions that ended while the database was down leave the
		// registry once it is back (the broker retries every second).
		waitRegistry(t, a, b, staying)
		// Past the time a survivor takes to judge a heartbeat, from the
		// restart: no instance took the other for dead.
		for time.Since(restarted) < 25*time.Second {
			time.Sleep(time.Second)
		}
		waitRegistry(t, a, b, staying)
		for _, e := range staying {
			e.echo(t, "later")
			if recs := endRecords(t, e.id, 0, a, b); len(recs) != 0 {
				t.Errorf("%s, still live, has end records: %v", e.what, recs)
			}
		}
		for _, d := range []*e2e.Daemon{a, b} {
			for _, e := range auditLines(t, d, "session_end") {
				if e["reason"] == "abandoned" {
					t.Errorf("a session recorded as abandoned: %v", e)
				}
			}
			if out, err := exec.Command(e2e.BinPath("bastionctl"), "audit", "verify", d.AuditFile()).CombinedOutput(); err != nil {
				t.Errorf("bastionctl audit verify %s: %v\n%s", d.AuditFile(), err, out)
			}
		}
		for _, e := range staying {
			e.end(t)
		}
		waitRegistry(t, a, b, nil)
		for _, e := range staying {
			if n := len(endRecords(t, e.id, 15*time.Second, a, b)); n != 1 {
				t.Errorf("%s: %d end records", e.what, n)
			}
		}
	})
}

// startPostgresIfDown starts the lab's PostgreSQL unless it runs.
func startPostgresIfDown(t testing.TB) {
	dir := filepath.Dir(e2e.LabValue(t, "DB_DSN_FILE"))
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); err == nil {
		return
	}
	startPostgres(t)
}

// bastionctlLogin is bastionctl login as alice through the balancer's
// address pub, from the client namespace; its output and error.
func bastionctlLogin(t testing.TB, pub string) (string, error) {
	creds := filepath.Join(t.TempDir(), "credentials.json")
	login := exec.Command("ip", "netns", "exec", e2e.LabValue(t, "NS_CLIENT"), e2e.BinPath("bastionctl"), "login",
		"--server", e2e.ServerName, "--address", net.JoinHostPort(pub, "443"), "--insecure",
		"--user", "alice", "--password-stdin", "--ttl", "1h")
	login.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
	login.Stdin = strings.NewReader(e2e.TunnelPassword + "\n")
	out, err := login.CombinedOutput()
	return string(out), err
}

// openTunnel opens a tunnel to vm1's echo service with creds through the
// balancer's address pub.
func openTunnel(t testing.TB, creds, pub, transport, what string) echoer {
	t.Helper()
	conn, err := e2e.Dial(t, e2e.TunnelClient(t, creds, pub, transport), "vm1", 9001)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	t.Cleanup(func() { conn.Close() })
	return echoer{what: what, id: conn.(*tunnel.Conn).SessionID(),
		echo: func(t testing.TB, mark string) { t.Helper(); echoOnce(t, conn, what+" "+mark) },
		end:  func(testing.TB) { conn.Close() }}
}

// openTerminal signs alice in through the balancer's address pub and
// opens vm1's terminal there.
func openTerminal(t testing.TB, pub, what string) echoer {
	t.Helper()
	tc := e2e.SignedIn(t, pub, "alice").OpenTerminal("vm1")
	ready := tc.Shell(e2e.LabValue(t, "LAB_PASSWORD"))
	n := 0
	return echoer{what: what, id: ready.Session,
		echo: func(t testing.TB, mark string) {
			t.Helper()
			n++
			tc.TypeText(fmt.Sprintf("echo %s-%d-$((6*7))\n", mark, n))
			tc.ScreenHas(fmt.Sprintf("%s-%d-42", mark, n), 15*time.Second)
		},
		end: func(t testing.TB) {
			t.Helper()
			tc.TypeText("exit\n")
			tc.Ended()
		}}
}

// endRecords are the session_end records of session id in the instances'
// audit files, waiting up to wait for at least one.
func endRecords(t testing.TB, id string, wait time.Duration, ds ...*e2e.Daemon) []map[string]any {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		var recs []map[string]any
		for _, d := range ds {
			for _, e := range auditLines(t, d, "session_end") {
				if e["session"] == id {
					recs = append(recs, e)
				}
			}
		}
		if len(recs) > 0 || !time.Now().Before(deadline) {
			return recs
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRegistry waits until bastionctl sessions on every instance lists
// exactly the sessions want.
func waitRegistry(t testing.TB, a, b *e2e.Daemon, want []echoer) {
	t.Helper()
	ids := map[string]bool{}
	for _, e := range want {
		ids[e.id] = true
	}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ok := true
		last = ""
		for name, d := range map[string]*e2e.Daemon{"a": a, "b": b} {
			list := liveSessions(t, d)
			got := map[string]bool{}
			for _, s := range list {
				got[fmt.Sprint(s["id"])] = true
			}
			match := len(got) == len(ids) && len(list) == len(ids)
			for id := range ids {
				match = match && got[id]
			}
			if !match {
				ok = false
				last += fmt.Sprintf("\n%s lists %d: %v", name, len(list), list)
			}
		}
		if ok {
			return
		}
	}
	t.Fatalf("the registry does not list the %d live sessions:%s", len(ids), last)
}
