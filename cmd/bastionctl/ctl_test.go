package main

// The tests of the admin commands, and those that start the daemon's
// servers (which run on Linux only), carry a linux build tag; those in
// files without one run on Linux, macOS and Windows.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// userCacheHome is $XDG_CACHE_HOME as the tests found it (ok false:
// unset), for the go command they run, whose build cache is there.
var userCacheHome struct {
	dir string
	ok  bool
}

// TestMain keeps the tests' transport cache (which tunnels find UDP
// blocked) out of the user's cache directory.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "bastionctl-test-cache-")
	if err != nil {
		panic(err)
	}
	userCacheHome.dir, userCacheHome.ok = os.LookupEnv("XDG_CACHE_HOME")
	os.Setenv("XDG_CACHE_HOME", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// runCtl runs bastionctl with args and returns what it printed and the
// code it would exit with.
func runCtl(t *testing.T, args ...string) (string, int) {
	t.Helper()
	return runCtlOn(t, runtime.GOOS, args...)
}

// runCtlOn is runCtl as bastionctl would run on the system goos.
func runCtlOn(t *testing.T, goos string, args ...string) (string, int) {
	t.Helper()
	root := newRootOn(goos)
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	if err := root.Execute(); err != nil {
		out.WriteString("bastionctl: " + err.Error() + "\n")
		return out.String(), exitCode(err)
	}
	return out.String(), 0
}

// adminCommands are the commands that talk to the admin socket, with
// arguments that would reach it.
var adminCommands = map[string][]string{
	"status":     {"status"},
	"policy":     {"policy", "show"},
	"targets":    {"targets", "discover"},
	"users":      {"users", "list"},
	"tokens":     {"tokens", "list"},
	"sessions":   {"sessions", "kill", "0123456789abcdef", "--reason", "test"},
	"hostkeys":   {"hostkeys", "list"},
	"ca":         {"ca", "show"},
	"upgrade":    {"upgrade"},
	"reload":     {"reload"},
	"recordings": {"recordings", "list"},
	"links":      {"links", "revoke", "0123456789abcdef"},
}

// userCommands run on every system.
var userCommands = []string{"login", "logout", "tunnel", "ssh-proxy", "rdp", "audit"}

// TestAdminCommandsOffLinux: on macOS and Windows every admin command, and
// each of its subcommands, says that it runs on the bastion host, and
// reaches for no socket; on Linux the same command line goes to the
// socket. The user commands are not refused anywhere.
func TestAdminCommandsOffLinux(t *testing.T) {
	// Every command is one or the other: a new command must be sorted.
	var names []string
	for _, c := range newRoot().Commands() {
		if c.Name() != "help" && c.Name() != "completion" {
			names = append(names, c.Name())
		}
	}
	for _, n := range names {
		if _, admin := adminCommands[n]; !admin && !slices.Contains(userCommands, n) {
			t.Errorf("command %q is neither an admin command nor a user command in this test", n)
		}
	}
	none := filepath.Join(t.TempDir(), "none.sock")
	for name, args := range adminCommands {
		for _, goos := range []string{"darwin", "windows"} {
			t.Run(name+"/"+goos, func(t *testing.T) {
				out, code := runCtlOn(t, goos, append([]string{"--socket", none}, args...)...)
				want := "bastionctl: " + name + ": admin commands run on the bastion host (Linux); this is " + goos + "\n"
				if code != 1 || out != want {
					t.Errorf("exit %d, %q; want exit 1, %q", code, out, want)
				}
			})
		}
		t.Run(name+"/linux", func(t *testing.T) {
			out, code := runCtlOn(t, "linux", append([]string{"--socket", none}, args...)...)
			if code == 0 || strings.Contains(out, "admin commands run on") || !strings.Contains(out, "none.sock") {
				t.Errorf("exit %d, %q; want the socket's error", code, out)
			}
		})
	}
	for _, goos := range []string{"darwin", "windows", "linux"} {
		t.Run("logout/"+goos, func(t *testing.T) {
			t.Setenv("BASTION_CREDENTIALS", filepath.Join(t.TempDir(), "credentials.json"))
			out, code := runCtlOn(t, goos, "logout")
			if code != 1 || !strings.Contains(out, "not logged in: run bastionctl login") {
				t.Errorf("exit %d, %q", code, out)
			}
		})
		t.Run("help/"+goos, func(t *testing.T) {
			if out, code := runCtlOn(t, goos, "users", "--help"); code != 0 || !strings.Contains(out, "bastionctl users") {
				t.Errorf("exit %d, %q", code, out)
			}
		})
	}
}

// TestCredentialsFile: login's credentials go to BASTION_CREDENTIALS, or
// bastiond/credentials.json under the user's config directory, and load
// back as saved; the file is its owner's only (mode 0600 where modes
// exist, even over a file that was readable by others).
func TestCredentialsFile(t *testing.T) {
	t.Run("default path", func(t *testing.T) {
		t.Setenv("BASTION_CREDENTIALS", "")
		dir, err := os.UserConfigDir()
		if err != nil {
			t.Skip("no config directory:", err)
		}
		if p, err := credentialsPath(); err != nil || p != filepath.Join(dir, "bastiond", "credentials.json") {
			t.Errorf("credentialsPath: %q, %v", p, err)
		}
	})
	path := filepath.Join(t.TempDir(), "sub", "credentials.json")
	t.Setenv("BASTION_CREDENTIALS", path)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := credentials{Server: "bastion.example", Address: "[2001:db8::1]:443", User: "alice", Token: "bt_0123_secret",
		TokenID: "0123", Expires: time.Date(2026, 12, 7, 9, 0, 0, 0, time.UTC)}
	got, err := want.save()
	if err != nil || got != path {
		t.Fatalf("save: %q, %v", got, err)
	}
	if runtime.GOOS != "windows" {
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, %v; want 0600", fi.Mode(), err)
		}
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Errorf("the temporary file is left: %v", err)
	}
	c, p, err := loadCredentials()
	if err != nil || p != path || !c.Expires.Equal(want.Expires) {
		t.Fatalf("load: %+v, %q, %v", c, p, err)
	}
	c.Expires = want.Expires
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(want)
	if !bytes.Equal(a, b) {
		t.Errorf("loaded %s, saved %s", a, b)
	}
}

// TestPasswordLine: --password-stdin takes the first line without its
// ending, as Unix and as Windows write it; spaces are the password's.
func TestPasswordLine(t *testing.T) {
	for _, tc := range []struct{ name, in, want string }{
		{"unix", "s3cret pw\nnext\n", "s3cret pw"},
		{"windows", "s3cret pw\r\nnext\r\n", "s3cret pw"},
		{"no line ending", "s3cret pw", "s3cret pw"},
		{"spaces kept", " s3cret \r\n", " s3cret "},
		{"empty", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := passwordLine(bufio.NewReader(strings.NewReader(tc.in)))
			if err != nil || got != tc.want {
				t.Errorf("passwordLine(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}
