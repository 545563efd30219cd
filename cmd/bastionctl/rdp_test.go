package main

import (
	"errors"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// TestFindRDPClient: the client and command line bastionctl rdp starts, on
// each system, from what is installed.
func TestFindRDPClient(t *testing.T) {
	installed := func(names ...string) lookPath {
		return func(name string) (string, error) {
			if slices.Contains(names, name) {
				return "/usr/bin/" + name, nil
			}
			return "", exec.ErrNotFound
		}
	}
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	x11 := env("DISPLAY", ":0")
	s := rdpSettings{port: 40123, target: "vm2"}
	withUser := rdpSettings{port: 40123, target: "vm2", user: "admin", extra: []string{"/size:1600x900"}}
	const file = "/tmp/bastionctl-rdp-1/vm2.rdp"
	for _, c := range []struct {
		name     string
		goos     string
		getenv   func(string) string
		look     lookPath
		program  string
		s        rdpSettings
		wantPath string
		wantArgs []string
		wantFile bool
	}{
		{"windows", "windows", env(), installed("mstsc"), "", s,
			"/usr/bin/mstsc", []string{"/v:127.0.0.1:40123"}, false},
		{"windows with an account: a .rdp file", "windows", env(), installed("mstsc"), "", withUser,
			"/usr/bin/mstsc", []string{file, "/size:1600x900"}, true},
		{"macOS: open(1) on a .rdp file, waiting", "darwin", env(), installed("open"), "", s,
			"/usr/bin/open", []string{"-W", file}, true},
		{"macOS with the app's arguments", "darwin", env(), installed("open"), "", withUser,
			"/usr/bin/open", []string{"-W", file, "--args", "/size:1600x900"}, true},
		{"linux X11: FreeRDP 3 first", "linux", x11, installed("xfreerdp", "xfreerdp3", "wlfreerdp"), "", s,
			"/usr/bin/xfreerdp3", []string{"/v:127.0.0.1:40123", "/t:vm2 (through the bastion)"}, false},
		{"linux X11: FreeRDP 2", "linux", x11, installed("xfreerdp", "wlfreerdp"), "", withUser,
			"/usr/bin/xfreerdp", []string{"/v:127.0.0.1:40123", "/t:vm2 (through the bastion)", "/u:admin", "/size:1600x900"}, false},
		{"linux, Wayland alone", "linux", env("WAYLAND_DISPLAY", "wayland-0"), installed("xfreerdp", "wlfreerdp"), "", s,
			"/usr/bin/wlfreerdp", []string{"/v:127.0.0.1:40123", "/t:vm2 (through the bastion)"}, false},
		{"linux, Wayland with XWayland", "linux", env("WAYLAND_DISPLAY", "wayland-0", "DISPLAY", ":0"), installed("xfreerdp", "wlfreerdp"), "", s,
			"/usr/bin/xfreerdp", []string{"/v:127.0.0.1:40123", "/t:vm2 (through the bastion)"}, false},
		{"--client: a FreeRDP program", "linux", x11, installed("sdl-freerdp"), "sdl-freerdp", s,
			"/usr/bin/sdl-freerdp", []string{"/v:127.0.0.1:40123", "/t:vm2 (through the bastion)"}, false},
		{"--client mstsc.exe", "windows", env(), installed("mstsc.exe"), "mstsc.exe", s,
			"/usr/bin/mstsc.exe", []string{"/v:127.0.0.1:40123"}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := findRDPClient(c.goos, c.getenv, c.look, c.program, c.s, file)
			if err != nil {
				t.Fatal(err)
			}
			if got.path != c.wantPath || !slices.Equal(got.args, c.wantArgs) || (got.rdpFile != "") != c.wantFile {
				t.Errorf("got %s %q (file %q), want %s %q (file: %v)", got.path, got.args, got.rdpFile, c.wantPath, c.wantArgs, c.wantFile)
			}
			if c.wantFile && got.rdpFile != rdpFileFor(c.s) {
				t.Errorf("file %q, want rdpFileFor's", got.rdpFile)
			}
		})
	}

	t.Run("none installed", func(t *testing.T) {
		_, err := findRDPClient("linux", x11, installed(), "", s, file)
		if err == nil || !strings.Contains(err.Error(), "freerdp3-x11") || !strings.Contains(err.Error(), "--print-rdp-file") {
			t.Errorf("got %v, want what to install and the alternatives", err)
		}
		_, err = findRDPClient("windows", env(), installed(), "", s, file)
		if err == nil || !strings.Contains(err.Error(), "mstsc") {
			t.Errorf("windows: got %v", err)
		}
		_, err = findRDPClient("linux", x11, installed("xfreerdp"), "remmina", s, file)
		if err == nil || !strings.Contains(err.Error(), "--client remmina") || !errors.Is(err, exec.ErrNotFound) {
			t.Errorf("--client missing: got %v", err)
		}
	})
}

// TestRDPFile: the .rdp file points at the tunnel, in CRLF lines, with the
// account when given and never a password.
func TestRDPFile(t *testing.T) {
	f := rdpFileFor(rdpSettings{port: 40123, target: "vm2", user: `CORP\admin`})
	lines := strings.Split(strings.TrimSuffix(f, "\r\n"), "\r\n")
	for _, want := range []string{"full address:s:127.0.0.1:40123", `username:s:CORP\admin`, "prompt for credentials:i:1", "autoreconnection enabled:i:0"} {
		if !slices.Contains(lines, want) {
			t.Errorf("no line %q in %q", want, f)
		}
	}
	if strings.Contains(strings.ReplaceAll(f, "\r\n", ""), "\n") || !strings.HasSuffix(f, "\r\n") {
		t.Errorf("not CRLF lines: %q", f)
	}
	if strings.Contains(strings.ToLower(f), "password") {
		t.Errorf("a password line: %q", f)
	}
	if f := rdpFileFor(rdpSettings{port: 1}); strings.Contains(f, "username") {
		t.Errorf("a username line without an account: %q", f)
	}
}

// TestRDPArgs: one machine, then the client's own arguments after --.
func TestRDPArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		dash int
		want string
	}{
		{[]string{"vm2"}, -1, ""},
		{[]string{"vm2", "/size:800x600", "+clipboard"}, 1, ""},
		{[]string{"vm2", "vm3"}, -1, "one machine at a time (got vm2, vm3)"},
		{[]string{"vm2", "vm3", "/f"}, 2, "one machine at a time (got vm2, vm3)"},
		{[]string{"vm2"}, 0, "the machine comes before --"},
	} {
		err := rdpArgs(c.args, c.dash)
		if c.want == "" && err != nil || c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
			t.Errorf("rdpArgs(%q, %d) = %v, want %q", c.args, c.dash, err, c.want)
		}
	}
}
