package security

import (
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// Invariant 8: the admin plane is a unix socket checked by peer
// credentials; metrics listen on loopback only.
func TestInvariant08AdminPlaneIsLocal(t *testing.T) {
	e2e.NeedLab(t)
	d := e2e.StartDaemon(t, e2e.ViaFDs, allowClient(t))
	removeFirewallAtEnd(t)

	t.Run("the admin socket checks who calls", func(t *testing.T) {
		fi, err := os.Stat(filepath.Join(d.Dir, "admin.sock"))
		if err != nil || fi.Mode().Type() != fs.ModeSocket {
			t.Fatalf("admin socket: %v %v", fi, err)
		}
		out, err := d.Ctl([]string{"--reuid=65534", "--regid=65534", "--clear-groups"}, "status")
		if err == nil || !strings.Contains(out, "permission denied: uid 65534 is not root and not in the bastion admin group") {
			t.Errorf("a user outside the admin group: %v\n%s", err, out)
		}
		out, err = d.Ctl([]string{"--reuid=65534", "--regid=65534", "--groups=100"}, "status")
		if err != nil || !strings.Contains(out, "bastiond") {
			t.Errorf("a user of the admin group: %v\n%s", err, out)
		}
	})

	t.Run("no listening socket but 443 and loopback metrics", func(t *testing.T) {
		out, err := e2e.InBastion(t, "ss", "-Hlntup")
		if err != nil {
			t.Fatalf("ss: %v\n%s", err, out)
		}
		pid := "pid=" + strconv.Itoa(d.Cmd.Process.Pid) + ","
		var seen []string
		for _, line := range strings.Split(out, "\n") {
			if !strings.Contains(line, pid) {
				continue
			}
			f := strings.Fields(line) // netid state recv-q send-q local peer process
			if len(f) < 5 {
				continue
			}
			local := f[0] + " " + f[4]
			seen = append(seen, local)
			switch local {
			case "tcp *:443", "udp *:443", "tcp 127.0.0.1:9443":
			default:
				t.Errorf("bastiond listens on %s", local)
			}
		}
		if strings.Join(seen, ",") == "" || !strings.Contains(strings.Join(seen, ","), "127.0.0.1:9443") {
			t.Errorf("bastiond's listening sockets %v; want 443 and the metrics", seen)
		}
	})

	t.Run("metrics answer on loopback only", func(t *testing.T) {
		if out, err := e2e.InBastion(t, "curl", "-sSf", "--max-time", "10", "http://127.0.0.1:9443/metrics"); err != nil || !strings.Contains(out, "bastiond_") {
			t.Errorf("metrics on loopback: %v", err)
		}
		for _, key := range []string{"BASTION_PUB4", "BASTION_PUB6", "BASTION_VNET4", "BASTION_VNET6"} {
			e2e.ExpectProbe(t, e2e.LabValue(t, "NS_BASTION"), e2e.LabValue(t, key), 9443, "refused")
		}
		e2e.ExpectProbe(t, e2e.LabValue(t, "NS_CLIENT"), e2e.LabValue(t, "BASTION_PUB4"), 9443, "filtered")
	})

	t.Run("the configuration refuses metrics elsewhere", func(t *testing.T) {
		for _, addr := range []string{"0.0.0.0:9443", "'[::]:9443'", e2e.LabValue(t, "BASTION_PUB4") + ":9443",
			"'[" + e2e.LabValue(t, "BASTION_VNET6") + "]:9443'"} {
			cfg := strings.Replace(e2e.LabConfig(t.TempDir(), ""), "  admin_group: users\n", "  admin_group: users\n  metrics: "+addr+"\n", 1)
			if out, err := checkConfig(t, cfg); err == nil || !strings.Contains(out, "listen.metrics") || !strings.Contains(out, "must be a loopback address") {
				t.Errorf("metrics on %s: %v\n%s", addr, err, out)
			}
		}
	})
}

// Invariant 10: passwords and keys that users type are never logged or
// stored. Every secret a user gives the bastion, right or wrong, is looked
// for in the daemon's log and in every file it wrote: the audit log, the
// state store, the live-session journals and the session recordings.
func TestInvariant10SecretsAreNeverKept(t *testing.T) {
	e2e.NeedLab(t)
	// At debug level, so that whatever the daemon can log is in the log.
	d := e2e.StartDaemonWith(t, e2e.ViaFDs, func(dir string) string {
		return strings.Replace(e2e.WebSSHConfig(dir, "", ""), "logging: {", "logging: {level: debug, ", 1)
	})
	removeFirewallAtEnd(t)
	e2e.PinVM1(t, d)
	pub4, labUser, labPW := e2e.LabValue(t, "BASTION_PUB4"), e2e.LabValue(t, "LAB_USER"), e2e.LabValue(t, "LAB_PASSWORD")
	portalPW, portalTypo := secret("portal password"), secret("portal typo")
	sshTypo, passphrase, passTypo := secret("ssh typo"), secret("key passphrase"), secret("passphrase typo")
	secrets := []string{portalPW, portalTypo, sshTypo, passphrase, passTypo, labPW}

	if out, err := d.CtlStdin(portalPW+"\n", "users", "add", "alice", "--password-stdin"); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	u := e2e.NewWebUser(t, pub4)
	if code, _ := u.SignIn("alice", portalTypo, ""); code != 401 {
		t.Errorf("a wrong portal password: %d", code)
	}
	if code, page := u.SignIn("alice", portalPW, ""); code != 303 {
		t.Fatalf("sign in: %d\n%s", code, page)
	}

	// A password, wrong first, then right.
	tc := u.OpenTerminal("vm1")
	tc.Send(e2e.WSMsg{Type: "auth", Login: labUser, Password: sshTypo, Cols: 80, Rows: 24})
	tc.Message("auth_failed", 20*time.Second)
	tc.Shell(labPW)
	tc.TypeText("echo typed-$((6*7))\r")
	tc.ScreenHas("typed-42", 10*time.Second)
	tc.TypeText("exit\r")
	tc.Ended()

	// An encrypted private key, with a wrong passphrase first.
	key := e2e.EncryptedLabKey(t, passphrase)
	secrets = append(secrets, keyBody(key))
	raw, err := os.ReadFile(e2e.LabValue(t, "LAB_KEY"))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, keyBody(string(raw)))
	tc = u.OpenTerminal("vm1")
	tc.Send(e2e.WSMsg{Type: "auth", Login: labUser, PrivateKey: key, Passphrase: passTypo, Cols: 80, Rows: 24})
	tc.Message("auth_failed", 20*time.Second)
	tc.Send(e2e.WSMsg{Type: "auth", Login: labUser, PrivateKey: key, Passphrase: passphrase, Cols: 80, Rows: 24})
	tc.Message("ready", 20*time.Second)
	tc.TypeText("exit\r")
	tc.Ended()

	// The API token bastionctl login got in exchange for the password.
	if out, err := d.CtlStdin(e2e.TunnelPassword+"\n", "users", "add", "bob", "--password-stdin"); err != nil {
		t.Fatalf("users add: %v\n%s", err, out)
	}
	creds := e2e.LoginAs(t, "bob", pub4) // signs in with e2e.TunnelPassword
	secrets = append(secrets, e2e.TunnelPassword)
	var c struct{ Token string }
	if data, err := os.ReadFile(creds); err != nil || json.Unmarshal(data, &c) != nil || c.Token == "" {
		t.Fatalf("credentials: %v", err)
	}
	_, tokenSecret, _ := strings.Cut(strings.TrimPrefix(c.Token, "bst_"), "_")
	secrets = append(secrets, tokenSecret)

	d.Stop() // everything it had to write is written
	var files []string
	filepath.WalkDir(d.Dir, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.Type().IsRegular() && filepath.Base(path) != "bastiond.yaml" {
			files = append(files, path)
		}
		return nil
	})
	if len(files) < 3 {
		t.Fatalf("the daemon wrote only %v", files)
	}
	if !strings.Contains(d.Log.String(), `"level":"debug"`) {
		t.Error("the daemon did not log at debug level")
	}
	t.Logf("searched the log and %d files: %v", len(files), files)
	// Recordings are compressed: they are searched decompressed, and one
	// must hold the session's output, or the search proves nothing.
	contents := map[string]string{}
	recorded := false
	for _, f := range files {
		data, _ := os.ReadFile(f)
		contents[f] = string(data)
		if strings.HasSuffix(f, ".gz") {
			contents[f] = gunzipFile(t, f)
			recorded = recorded || strings.Contains(contents[f], "typed-42")
		}
	}
	if !recorded {
		t.Error("no recording holds the session's output")
	}
	for _, s := range secrets {
		if strings.Contains(d.Log.String(), s) {
			t.Errorf("the daemon's log holds %q", s)
		}
		for _, f := range files {
			if strings.Contains(contents[f], s) {
				t.Errorf("%s holds %q", f, s)
			}
		}
	}
}

// keyBody is the first line of a PEM key's base64 body: enough of the key
// to find it anywhere.
func keyBody(pemKey string) string {
	lines := strings.Split(pemKey, "\n")
	for i, l := range lines {
		if strings.HasPrefix(l, "-----BEGIN") && i+1 < len(lines) {
			return lines[i+1]
		}
	}
	return pemKey
}
