package realsystemd

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bastiond/bastiond/test/e2e"
)

// readmeCommands are the lines of the first sh block after heading in
// README.md: the commands the README tells an admin to type.
func readmeCommands(t testing.TB, repoRoot, heading string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var cmds []string
	inSection, inBlock := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == heading:
			inSection = true
		case !inSection:
		case !inBlock && line == "```sh":
			inBlock = true
		case inBlock && line == "```":
			return cmds
		case inBlock && strings.TrimSpace(line) != "":
			cmds = append(cmds, line)
		}
	}
	t.Fatalf("README.md has no sh block under %q", heading)
	return nil
}

// TestReadmeInstall is the README's install section followed word for
// word by an admin of a fresh Debian 12 system booted with systemd: a
// user in the sudo group types each line of the section's first block in
// the directory holding the downloaded .deb, its editor writing the lab's
// configuration. Then a user signs in from the client namespace and opens
// tunnels over TLS and QUIC, IPv4 and IPv6, and the admin installs the
// newer .deb with the same first line while the tunnels run: they carry on,
// and the new version serves.
func TestReadmeInstall(t *testing.T) {
	e2e.NeedLab(t)
	if why := cannotBoot(); why != "" {
		t.Skip(why)
	}
	wd, _ := os.Getwd()
	repoRoot := filepath.Clean(filepath.Join(wd, "..", ".."))
	cmds := readmeCommands(t, repoRoot, "## Install")
	if !strings.Contains(cmds[0], "apt-get install ./bastiond_") {
		t.Fatalf("the README's install section no longer starts with the package's install: %q", cmds[0])
	}
	oldDeb, newDeb := sharedPackages(t, repoRoot)
	rootfs, err := Rootfs()
	if err != nil {
		t.Fatalf("the container's root file system: %v", err)
	}
	// The admin's editor: what they type into the file is the lab's
	// configuration, on the lab's interfaces and addresses.
	edit := t.TempDir()
	os.Chmod(edit, 0o755)
	if err := os.WriteFile(filepath.Join(edit, "bastiond.yaml"), []byte(labConfig(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(edit, "editor"), []byte("#!/bin/sh\ncat /mnt/edit/bastiond.yaml > \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := Boot(t, rootfs, "/run/netns/"+e2e.LabValue(t, "NS_BASTION"), built.dir+":/mnt/packages", edit+":/mnt/edit")
	b := &bastion{Container: c, t: t}
	// As on an installed system, the host's name resolves (sudo looks it
	// up), and an admin is in the sudo group.
	b.MustExec("sh", "-c", `printf '127.0.1.1\t%s\n' "$(hostname)" >> /etc/hosts`)
	b.MustExec("useradd", "--create-home", "--groups", "sudo", "--shell", "/bin/bash", "admin")
	b.WriteFile("/etc/sudoers.d/admin", []byte("admin ALL=(ALL) NOPASSWD: ALL\n"), 0o440)

	// typed runs line as the admin, in dir (where the download is), as
	// their login shell would.
	typed := func(t *testing.T, dir, line string) string {
		t.Helper()
		cmd := b.Command("runuser", "-u", "admin", "--", "env", "HOME=/home/admin", "USER=admin", "SUDO_EDITOR=/mnt/edit/editor",
			"bash", "-c", "cd \"$0\" && "+line, dir)
		start := time.Now()
		out, err := cmd.CombinedOutput()
		if err != nil {
			j, _ := b.Exec("journalctl", "--no-pager", "-n", "40", "-u", "bastiond.service")
			t.Fatalf("$ %s\n%s\n%v\njournal:\n%s", line, out, err, j)
		}
		t.Logf("$ %s (%s)\n%s", line, time.Since(start).Round(10*time.Millisecond), out)
		return string(out)
	}
	inContainer := func(path string) string {
		return "/mnt/packages/" + strings.TrimPrefix(filepath.Dir(path), built.dir+"/")
	}

	var status string
	ok := t.Run("the install section, word for word", func(t *testing.T) {
		b.t, c.t = t, t
		defer func() { b.t, c.t = nil, nil }()
		for _, line := range cmds {
			out := typed(t, inContainer(oldDeb), line)
			if strings.Contains(line, "bastionctl status") {
				status = out
			}
		}
	})
	b.t, c.t = t, t
	if !ok {
		t.FailNow()
	}
	if status == "" {
		t.Fatal("the README's install section does not end with bastionctl status")
	}
	// Started now, not on a first connection: the firewall is in force.
	pid := b.waitActive(0, 10*time.Second)
	for _, want := range []string{fmt.Sprintf("(pid %d, running)", pid), "tcp [::]:443 (from systemd)", "udp [::]:443 (from systemd)"} {
		if !strings.Contains(status, want) {
			t.Errorf("bastionctl status does not say %q:\n%s", want, status)
		}
	}
	if s, _ := b.Exec("systemctl", "is-enabled", "bastiond.service"); strings.TrimSpace(s) != "enabled" {
		t.Errorf("bastiond.service is %q after the install section, want enabled (started at boot)", strings.TrimSpace(s))
	}

	// A user, signed in from the client namespace, with tunnels over both
	// transports and both address families.
	add := b.Command("bastionctl", "users", "add", "alice", "--password-stdin")
	add.Stdin = strings.NewReader(e2e.TunnelPassword + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("bastionctl users add: %v\n%s", err, out)
	}
	creds := e2e.LoginAs(t, "alice", e2e.LabValue(t, "BASTION_PUB6"))
	e2e.StartSink(t, e2e.LabValue(t, "NS_VM1"), ":9001", e2e.SinkEcho)
	var tunnels []*echo
	for _, via := range []struct{ addr, transport string }{
		{e2e.LabValue(t, "BASTION_PUB4"), "tcp"}, {e2e.LabValue(t, "BASTION_PUB6"), "quic"},
	} {
		conn, err := e2e.Dial(t, e2e.TunnelClient(t, creds, via.addr, via.transport), "vm1", 9001)
		if err != nil {
			t.Fatalf("tunnel to vm1:9001 over %s via %s: %v", via.transport, via.addr, err)
		}
		t.Cleanup(func() { conn.Close() })
		e := &echo{c: conn}
		e.roundTrip(t)
		tunnels = append(tunnels, e)
	}

	t.Run("the newer package, installed with the section's first line, keeps the tunnels", func(t *testing.T) {
		b.t, c.t = t, t
		defer func() { b.t, c.t = nil, nil }()
		typed(t, inContainer(newDeb), cmds[0])
		newPID := b.waitActive(pid, 30*time.Second)
		for _, e := range tunnels {
			e.roundTrip(t)
		}
		if v := b.status()["version"]; v != versionNew {
			t.Errorf("bastionctl status: version %v after the upgrade, want %s", v, versionNew)
		}
		if n := b.Property("bastiond.service", "NRestarts"); n != "0" {
			t.Errorf("NRestarts %s: the upgrade restarted the service", n)
		}
		t.Logf("MainPID %d -> %d", pid, newPID)
		// A tunnel opened now is the new process's.
		conn, err := e2e.Dial(t, e2e.TunnelClient(t, creds, e2e.LabValue(t, "BASTION_PUB4"), "quic"), "vm1", 9001)
		if err != nil {
			t.Fatalf("a new tunnel after the upgrade: %v", err)
		}
		defer conn.Close()
		(&echo{c: conn}).roundTrip(t)
		// bastionctl sessions lists both processes' sessions: the two
		// that crossed the upgrade and the new one.
		var live []struct{ User, Via string }
		out := b.ctl("sessions", "--json")
		if err := json.Unmarshal([]byte(out), &live); err != nil {
			t.Fatalf("bastionctl sessions --json: %v\n%s", err, out)
		}
		if len(live) != len(tunnels)+1 {
			t.Errorf("bastionctl sessions lists %d sessions after the upgrade, want %d:\n%s", len(live), len(tunnels)+1, out)
		}
		for _, s := range live {
			if s.User != "alice" {
				t.Errorf("a session of %q: %s", s.User, out)
			}
		}
	})
}
