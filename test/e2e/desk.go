package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
	"github.com/bastiond/bastiond/web/browsertest"
)

// vm2's second desktop (test/lab/lab.sh start_vm2_desk): GNOME Remote
// Desktop on a headless mutter, port VM2_DESK_PORT of vm2's addresses
// VM2_DESK_4 and VM2_DESK_6, with NLA as the lab user. Unlike FreeRDP's shadow server it takes unicode keyboard input and
// opens the RDP clipboard. Its one window is an xterm whose shell appends
// each line typed to VM2_DESK_TYPED; its X display (Xwayland) holds the
// CLIPBOARD selection, which xclip reads and sets inside vm2.

// DeskTarget is the inventory name of vm2's second desktop.
const DeskTarget = "vm2-desk"

// deskTarget is the inventory entry of vm2-desk (LabConfigTargets): both of
// the addresses vm2 has for it (an address belongs to one target).
func deskTarget() string {
	return "    - name: " + DeskTarget + "\n      addresses: [" + deskAddresses() + "]\n      ports: {rdp: " + lab["VM2_DESK_PORT"] + "}\n"
}

func deskAddresses() string { return lab["VM2_DESK_4"] + `, "` + lab["VM2_DESK_6"] + `"` }

// DeskAt is cfg (with the vm2-desk of WebRDPConfig) with vm2-desk on addr
// alone: one address family for the gateway's dial.
func DeskAt(cfg, addr string) string {
	return strings.Replace(cfg, "addresses: ["+deskAddresses()+"]\n      ports: {rdp: "+lab["VM2_DESK_PORT"],
		`addresses: ["`+addr+`"]`+"\n      ports: {rdp: "+lab["VM2_DESK_PORT"], 1)
}

// DeskTyped is what has been typed into the desktop's xterm so far.
func DeskTyped(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(LabValue(t, "VM2_DESK_TYPED"))
	if err != nil {
		t.Fatalf("the desktop's typed lines: %v", err)
	}
	return string(data)
}

// WaitDeskLine waits until line is a whole line typed into the desktop's
// xterm (the shell writes it on Enter).
func WaitDeskLine(t testing.TB, line string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		typed := DeskTyped(t)
		for _, l := range strings.Split(typed, "\n") {
			if l == line {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("vm2's desktop did not receive the line %q; its xterm got %q", line, tail(typed, 600))
		}
	}
}

// DeskViewport sizes b's page so that the desktop page asks for a desktop
// of 1280x800, the size of GNOME Remote Desktop's monitor, which it
// mirrors whatever the client asks: IronRDP 0.11 panics on a frame of
// another size than it asked ("Failed to construct 'ImageData'"), after
// which it draws, sends and answers nothing, clipboard included.
func DeskViewport(t testing.TB, b *browsertest.Browser) {
	t.Helper()
	b.Viewport(t, 1280, 846)
}

// deskX is a command run in vm2 on the desktop's X display, killed after
// limit whatever it waits for (xclip -o waits as long as the selection's
// owner takes to answer, and that owner may be the browser, through GNOME
// Remote Desktop).
func deskX(t testing.TB, limit time.Duration, args ...string) *exec.Cmd {
	t.Helper()
	c := LabCommand(t, "vm2", append([]string{"timeout", "-s", "KILL", fmt.Sprint(int(limit.Seconds())),
		"env", "DISPLAY=" + LabValue(t, "VM2_DESK_DISPLAY"), "XAUTHORITY=" + LabValue(t, "VM2_DESK_XAUTHORITY"),
		"LANG=C.UTF-8"}, args...)...)
	c.WaitDelay = time.Second
	return c
}

// DeskSelection reads the desktop's CLIPBOARD selection as target (an X
// selection target: UTF8_STRING, text/uri-list); ok is false when nothing
// holds it or its owner gave nothing within 10 s.
func DeskSelection(t testing.TB, target string) (data string, ok bool) {
	t.Helper()
	out, err := deskX(t, 10*time.Second, "xclip", "-o", "-selection", "clipboard", "-t", target).Output()
	return string(out), err == nil
}

// DeskClipboard reads the desktop's CLIPBOARD selection as text.
func DeskClipboard(t testing.TB) (text string, ok bool) {
	t.Helper()
	return DeskSelection(t, "UTF8_STRING")
}

// HoldDeskSelection makes data the desktop's CLIPBOARD selection as target,
// held by an xclip in vm2 until another owner takes the selection or the
// test ends: its cleanup kills the xclip's process group (timeout forks it).
func HoldDeskSelection(t testing.TB, target, data string) {
	t.Helper()
	// -quiet keeps xclip in the foreground, the child of timeout, in the
	// process group that timeout makes of itself (the PID started: nsenter
	// and ip netns exec exec what they run).
	c := deskX(t, 5*time.Minute, "xclip", "-quiet", "-i", "-selection", "clipboard", "-t", target)
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	c.Stdin = strings.NewReader(data)
	var out syncbuf.Buffer
	c.Stdout, c.Stderr = &out, &out
	if err := c.Start(); err != nil {
		t.Fatalf("xclip in vm2: %v", err)
	}
	t.Cleanup(func() {
		syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
		c.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if got, ok := DeskSelection(t, target); ok && got == data {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("xclip in vm2 did not take the clipboard: %s", out.String())
		}
	}
}

// SetDeskClipboard makes text the desktop's CLIPBOARD selection (HoldDeskSelection).
func SetDeskClipboard(t testing.TB, text string) {
	t.Helper()
	HoldDeskSelection(t, "UTF8_STRING", text)
}

// DeskGRDLog is GNOME Remote Desktop's log so far.
func DeskGRDLog(t testing.TB) string {
	t.Helper()
	data, _ := os.ReadFile(filepath.Join(LabValue(t, "LAB_DIR"), "log", "desk-grd.log"))
	return string(data)
}

// DeskClipboardChannels counts the RDP clipboard channels GNOME Remote
// Desktop has opened: it logs the client's clipboard capabilities once per
// channel, and a session without the channel never gets that far.
func DeskClipboardChannels(t testing.TB) int {
	t.Helper()
	return strings.Count(DeskGRDLog(t), "[RDP.CLIPRDR] Client capabilities")
}

// NeedDeskClipboard waits (up to 10 s) until GNOME Remote Desktop has
// opened a clipboard channel beyond the before it had, for a desktop whose
// role allows the clipboard, and fails the test when none opens: the
// gateway removed it (d's log says so), or the browser client asked for
// none, as it did when the page connected before the component had set its
// clipboard up.
func NeedDeskClipboard(t testing.TB, d *Daemon, before int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if DeskClipboardChannels(t) > before {
			return
		}
	}
	if strings.Contains(d.Log.String(), "rdp clipboard channel removed") {
		t.Fatal("the gateway removed the clipboard channel of a desktop whose role allows it")
	}
	t.Fatal("GNOME Remote Desktop opened no clipboard channel for a desktop whose role allows it, and the gateway " +
		"removed none: the browser client asked for none (GNOME Remote Desktop's log lists the client's channels)")
}

// Key is one key event as Chromium's input pipeline gets it from a
// keyboard (CDP Input.dispatchKeyEvent): what the key makes (Key, the
// KeyboardEvent.key), where it sits (Code), the text it types.
type Key struct {
	Key, Code, Text string
	// VK is the Windows virtual key code Chromium needs for keys that type
	// no text (Enter).
	VK int
	// Location is KeyboardEvent.location (2: the right-hand modifier).
	Location int
}

// Press sends k down and up to the current tab, as a keyboard would.
func Press(t testing.TB, b *browsertest.Browser, k Key) {
	t.Helper()
	Down(t, b, k)
	Up(t, b, k)
}

// Down sends k's keydown (with its text, so a keypress too).
func Down(t testing.TB, b *browsertest.Browser, k Key) {
	t.Helper()
	p := map[string]any{"type": "keyDown", "key": k.Key, "code": k.Code, "location": k.Location}
	if k.Text != "" {
		p["text"], p["unmodifiedText"] = k.Text, k.Text
	} else {
		p["type"] = "rawKeyDown"
	}
	if k.VK != 0 {
		p["windowsVirtualKeyCode"], p["nativeVirtualKeyCode"] = k.VK, k.VK
	}
	b.CDP(t, "Input.dispatchKeyEvent", p, nil)
}

// Up sends k's keyup.
func Up(t testing.TB, b *browsertest.Browser, k Key) {
	t.Helper()
	p := map[string]any{"type": "keyUp", "key": k.Key, "code": k.Code, "location": k.Location}
	if k.VK != 0 {
		p["windowsVirtualKeyCode"], p["nativeVirtualKeyCode"] = k.VK, k.VK
	}
	b.CDP(t, "Input.dispatchKeyEvent", p, nil)
}

// Enter is the Enter key.
var Enter = Key{Key: "Enter", Code: "Enter", Text: "\r", VK: 13}

// Char is the key that types r on a keyboard whose layout has it (its
// place: the US key for ASCII, a plausible one for others).
func Char(r rune) Key {
	s := string(r)
	switch {
	case r >= 'a' && r <= 'z':
		return Key{Key: s, Code: "Key" + strings.ToUpper(s), Text: s, VK: int(r - 'a' + 'A')}
	case r >= '0' && r <= '9':
		return Key{Key: s, Code: "Digit" + s, Text: s, VK: int(r)}
	case r == ' ':
		return Key{Key: s, Code: "Space", Text: s, VK: 32}
	}
	// The places of a German or French keyboard; Code only says where the
	// key sits, unicode input sends Key.
	codes := map[rune]string{'é': "Digit2", 'ß': "Minus", 'ü': "BracketLeft", 'ñ': "Semicolon", 'Ω': "KeyZ", '中': "KeyZ", '-': "Slash"}
	return Key{Key: s, Code: codes[r], Text: s}
}

// TypeKeys types s key by key (Char), then Enter.
func TypeKeys(t testing.TB, b *browsertest.Browser, s string) {
	t.Helper()
	for _, r := range s {
		Press(t, b, Char(r))
	}
	Press(t, b, Enter)
}

// WaitDeskInput waits until the desktop takes keys: GNOME Remote Desktop
// drops what comes before it has its input devices, a moment after the
// page says "connected". It types a probe line (digits, which every
// layout and both keyboard modes have) each second until one arrives.
func WaitDeskInput(t testing.TB, b *browsertest.Browser, probe string) {
	t.Helper()
	for i := 0; i < 30; i++ {
		line := fmt.Sprintf("%s %d", probe, i)
		TypeKeys(t, b, line)
		for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
			if strings.Contains(DeskTyped(t), line+"\n") {
				return
			}
		}
	}
	t.Fatalf("vm2's desktop took none of 30 probe lines; its xterm got %q", tail(DeskTyped(t), 600))
}

// AltGr types what AltGr with k makes (k.Key: "@" for AltGr+Q on a German
// keyboard): AltGraph down, k, AltGraph up.
func AltGr(t testing.TB, b *browsertest.Browser, k Key) {
	t.Helper()
	altGr := Key{Key: "AltGraph", Code: "AltRight", Location: 2, VK: 0xA5}
	Down(t, b, altGr)
	Press(t, b, k)
	Up(t, b, altGr)
}

// DeadKey types composed through a dead key (on a French keyboard, ^ then
// e make ê): the dead key, which types nothing, then the key whose event
// carries the composed character.
func DeadKey(t testing.TB, b *browsertest.Browser, deadCode string, composed Key) {
	t.Helper()
	Press(t, b, Key{Key: "Dead", Code: deadCode})
	Press(t, b, composed)
}

// BrowserClipboard is the text on the browser's clipboard.
func BrowserClipboard(t testing.TB, b *browsertest.Browser) string {
	t.Helper()
	var s string
	b.Eval(t, `navigator.clipboard.readText().catch(() => "")`, &s)
	return s
}

// SetBrowserClipboard puts text on the browser's clipboard, as a copy in
// another application would.
func SetBrowserClipboard(t testing.TB, b *browsertest.Browser, text string) {
	t.Helper()
	q, _ := json.Marshal(text)
	b.Eval(t, `navigator.clipboard.writeText(`+string(q)+`).then(() => true)`, nil)
}

// SessionAddresses are the addresses of the session_start records to
// target, oldest first.
func SessionAddresses(d *Daemon, target string) []string {
	d.t.Helper()
	var out []string
	data, _ := os.ReadFile(d.AuditFile())
	for _, line := range strings.Split(string(data), "\n") {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil && r["event"] == "session_start" && r["target"] == target {
			a, _ := r["address"].(string)
			out = append(out, a)
		}
	}
	return out
}
