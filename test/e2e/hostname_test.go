package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestLabHostnames: every lab host has a hostname of its own, and the lab's
// servers run under it, so a user who reaches vm1 (straight from the
// bastion's namespace or through bastiond's tunnel, over IPv4 and IPv6)
// sees "vm1" and not the name of the machine running the lab.
func TestLabHostnames(t *testing.T) {
	NeedLab(t)
	for _, host := range LabHosts {
		t.Run("uname/"+host, func(t *testing.T) {
			out, err := LabCommand(t, host, "uname", "-n").CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != host {
				t.Errorf("uname -n on %s: %q, %v; want %q", host, got, err, host)
			}
		})
	}
	t.Run("servers", func(t *testing.T) {
		pids, _ := filepath.Glob(filepath.Join(labDir(), "pids", "*"))
		if len(pids) == 0 {
			t.Fatal("the lab recorded no server PIDs")
		}
		for _, f := range pids {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var pid int
			var comm string
			if _, err := fmt.Sscan(string(data), &pid, &comm); err != nil {
				t.Fatalf("%s: %q: %v", f, data, err)
			}
			host := hostOfNetns(t, pid)
			want := nsInode(t, filepath.Join(LabValue(t, "UTS_DIR"), "bl-"+host))
			if got := nsInode(t, fmt.Sprintf("/proc/%d/ns/uts", pid)); got != want {
				t.Errorf("%s (%s, PID %d) runs in %s's network namespace but not in its UTS namespace", filepath.Base(f), comm, pid, host)
			}
		}
	})
	for _, name := range []string{"vm1-v4", "vm1-v6"} {
		t.Run("ssh-from-bastion/"+name, func(t *testing.T) {
			out, err := LabCommand(t, "bastion", "ssh", "-F", "none", "-o", "StrictHostKeyChecking=no",
				"-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
				"-i", LabValue(t, "LAB_KEY"), "lab@"+name, "hostname").CombinedOutput()
			if got := strings.TrimSpace(string(out)); err != nil || got != "vm1" {
				t.Errorf("ssh lab@%s hostname: %q, %v; want vm1", name, got, err)
			}
		})
	}

	d := StartDaemonWith(t, ViaFDs, func(dir string) string { return TunnelConfig(dir, TunnelAccess("")) })
	AddLabUsers(t, d, "alice")
	for _, fam := range []struct{ name, addr string }{{"ipv4", LabValue(t, "BASTION_PUB4")}, {"ipv6", LabValue(t, "BASTION_PUB6")}} {
		t.Run("ssh-through-bastiond/"+fam.name, func(t *testing.T) {
			creds := LoginAs(t, "alice", fam.addr)
			ssh := LabCommand(t, "client", "ssh", "-F", "none",
				"-o", "ProxyCommand="+filepath.Join(binDir, "bastionctl")+" ssh-proxy vm1",
				"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
				"-o", "LogLevel=ERROR", "-i", LabValue(t, "LAB_KEY"), "lab@vm1", "hostname")
			ssh.Env = append(os.Environ(), "BASTION_CREDENTIALS="+creds)
			var stdout, stderr strings.Builder
			ssh.Stdout, ssh.Stderr = &stdout, &stderr
			if err := ssh.Run(); err != nil {
				t.Fatalf("ssh through the bastion: %v\n%s%s\ndaemon log:\n%s", err, stdout.String(), stderr.String(), d.Log.String())
			}
			if got := strings.TrimSpace(stdout.String()); got != "vm1" {
				t.Errorf("hostname through the bastion: %q, want vm1", got)
			}
		})
	}
}

// nsInode is the inode of a namespace file (/proc/PID/ns/uts, a bind mount
// of one, /run/netns/NAME): two files name one namespace when it is equal.
func nsInode(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatalf("namespace %s: %v", path, err)
	}
	return st.Ino
}

// hostOfNetns names the lab host whose network namespace pid is in.
func hostOfNetns(t testing.TB, pid int) string {
	t.Helper()
	net := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", pid))
	for _, host := range LabHosts {
		if nsInode(t, "/run/netns/bl-"+host) == net {
			return host
		}
	}
	t.Fatalf("PID %d is in no lab host's network namespace", pid)
	return ""
}
