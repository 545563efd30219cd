package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// browserConfig grants sessions in the browser (ssh, rdp); its interface
// names exist on no host, so that no check of it goes past the host check.
const browserConfig = `listen:
  server_name: bastion.test.example
  tls:
    self_signed: true
bastion:
  public_interface: bst-nope-pub0
  vnet_interface: bst-nope-vnet0
  subnets: [198.18.0.0/26, "2001:db8:b5::/64"]
  mode: bridged
inventory:
  targets:
    - name: vm1
      addresses: [198.18.1.11, "2001:db8:b5:1::11"]
      ports: {ssh: 22}
    - name: vm2
      addresses: [198.18.1.12, "2001:db8:b5:1::12"]
      ports: {rdp: 3389, tunnel: [3390]}
access:
  roles:
    - name: ops
      targets: ["*"]
      protocols: [ssh]
    - name: desk
      targets: [vm2]
      protocols: [rdp]
state_dir: STATE
`

// TestWithoutWebClient builds bastiond as a plain `go build` on a fresh
// clone does, with web/dist holding only its placeholder (whatever this
// checkout holds: an overlay hides the built client), and checks that it
// refuses a configuration that grants sessions in the browser, at
// -check-config and at start, and says to run make web; that it takes one
// that grants tunnels only; and that a build with -tags nowebclient takes
// both.
func TestWithoutWebClient(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: builds bastiond twice")
	}
	dir := t.TempDir()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	// Every file of web/dist but the placeholder is deleted in the overlay.
	dist := filepath.Join(root, "web", "dist")
	entries, err := os.ReadDir(dist)
	if err != nil {
		t.Fatal(err)
	}
	replace := map[string]string{}
	for _, e := range entries {
		if e.Name() != "README.txt" {
			replace[filepath.Join(dist, e.Name())] = ""
		}
	}
	overlay := filepath.Join(dir, "overlay.json")
	data, _ := json.Marshal(map[string]any{"Replace": replace})
	if err := os.WriteFile(overlay, data, 0o600); err != nil {
		t.Fatal(err)
	}
	build := func(name string, tags ...string) string {
		bin := filepath.Join(dir, name)
		args := append([]string{"build", "-overlay", overlay, "-o", bin}, tags...)
		cmd := exec.Command("go", append(args, "./cmd/bastiond")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
		return bin
	}
	plain := build("bastiond")
	optional := build("bastiond-nowebclient", "-tags", "nowebclient")

	writeConfig := func(name, text string) string {
		f := filepath.Join(dir, name)
		text = strings.ReplaceAll(text, "STATE", filepath.Join(dir, "state"))
		if err := os.WriteFile(f, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	browser := writeConfig("browser.yaml", browserConfig)
	tunnels := writeConfig("tunnels.yaml", strings.NewReplacer("protocols: [ssh]", "protocols: [tunnel]", "protocols: [rdp]", "protocols: [tunnel]").Replace(browserConfig))
	run := func(bin string, args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=", "LISTEN_FDS=", "LISTEN_PID=")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatalf("%s %q: %v", bin, args, err)
		}
		return string(out), cmd.ProcessState.ExitCode()
	}
	const refusal = "this bastiond was built without its browser client (web/dist was empty: run make web before go build, or make build), but roles ops, desk grant sessions in the browser or recording playback"
	for _, c := range []struct {
		name    string
		bin     string
		args    []string
		refused bool
	}{
		{"check-config, browser roles", plain, []string{"-check-config", "-config", browser}, true},
		{"start, browser roles", plain, []string{"-config", browser}, true},
		{"check-config, tunnels only", plain, []string{"-check-config", "-config", tunnels}, false},
		{"start, tunnels only", plain, []string{"-config", tunnels}, false},
		{"nowebclient, check-config, browser roles", optional, []string{"-check-config", "-config", browser}, false},
		{"nowebclient, start, browser roles", optional, []string{"-config", browser}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, code := run(c.bin, c.args...)
			if code != 1 {
				// The host check fails for every configuration here.
				t.Fatalf("exit status %d, want 1:\n%s", code, out)
			}
			if got := strings.Contains(out, refusal); got != c.refused {
				t.Fatalf("refused for want of the web client: %v, want %v:\n%s", got, c.refused, out)
			}
			if !c.refused && !strings.Contains(out, "bst-nope-pub0") {
				t.Fatalf("did not reach the host check:\n%s", out)
			}
		})
	}
}
