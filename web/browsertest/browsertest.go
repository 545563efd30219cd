// Package browsertest lets Go tests drive a page in headless Chromium. It
// runs web/test/driver.mjs under node, which controls Debian's Chromium with
// playwright-core, and calls the driver's operations one at a time. The
// web package's browser tests use it against a fake bastiond; end-to-end
// tests can use it against a real one (PortalLogin, OpenTerminal, SignIn).
//
// Every method takes the calling test's testing.TB and fails it on error,
// so that one Browser serves a sequence of subtests.
package browsertest

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bastiond/bastiond/internal/syncbuf"
)

// DefaultChromium is the browser the driver launches unless Config.Chromium says otherwise.
const DefaultChromium = "/usr/bin/chromium"

// Config says where things are.
type Config struct {
	// WebDir is the web/ directory, holding test/driver.mjs and node_modules. Required.
	WebDir string
	// Chromium is the browser binary; empty means DefaultChromium.
	Chromium string
	// Artifacts is the directory for screenshots. Required.
	Artifacts string
	// Netns is a network namespace to run the driver and its browser in
	// (`ip netns exec`, which also gives them the namespace's /etc/hosts);
	// empty: this process's.
	Netns string
	// Args are more Chromium flags, after the driver's own (web/test/lib.mjs).
	Args []string
	// StrictTLS keeps certificate errors errors (the driver's default
	// ignores them): for pages that need a secure context without them,
	// such as WebAuthn's; trust the server's certificate with
	// --ignore-certificate-errors-spki-list in Args.
	StrictTLS bool
	// Timeout bounds each call; zero means 30 seconds. The driver's own
	// waits give up after 10 seconds, so a call fails with the driver's
	// message rather than this timeout.
	Timeout time.Duration
}

func (c Config) withDefaults() Config {
	if c.Chromium == "" {
		c.Chromium = DefaultChromium
	}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	return c
}

// Missing returns why the browser tests cannot run here, or "" when they can:
// node, the browser and playwright-core (npm ci in web/) must be installed.
func Missing(cfg Config) string {
	cfg = cfg.withDefaults()
	if _, err := exec.LookPath("node"); err != nil {
		return "node is not installed (test/deps.sh installs it)"
	}
	if _, err := os.Stat(cfg.Chromium); err != nil {
		return cfg.Chromium + " is missing (test/deps.sh installs chromium)"
	}
	if _, err := os.Stat(filepath.Join(cfg.WebDir, "node_modules", "playwright-core")); err != nil {
		return "web/node_modules/playwright-core is missing: run make web"
	}
	return ""
}

// Browser is one page in a running driver.
type Browser struct {
	cfg     Config
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan reply
	stderr  *syncbuf.Buffer

	mu     sync.Mutex // serializes calls
	nextID int
}

type reply struct {
	ID     int             `json:"id"`
	Ready  bool            `json:"ready"`
	Result json.RawMessage `json:"result"`
	Error  string          `json:"error"`
}

// Start launches the driver and its browser, and closes them when the test ends.
func Start(t testing.TB, cfg Config) *Browser {
	t.Helper()
	cfg = cfg.withDefaults()
	if cfg.WebDir == "" || cfg.Artifacts == "" {
		t.Fatal("browsertest: Config.WebDir and Config.Artifacts are required")
	}
	argv := []string{"node", filepath.Join("test", "driver.mjs")}
	if cfg.Netns != "" {
		argv = append([]string{"ip", "netns", "exec", cfg.Netns}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = cfg.WebDir
	cmd.Env = append(os.Environ(), "CHROMIUM="+cfg.Chromium, "ARTIFACTS="+cfg.Artifacts)
	if cfg.StrictTLS {
		cmd.Env = append(cmd.Env, "STRICT_TLS=1")
	}
	if len(cfg.Args) > 0 {
		args, _ := json.Marshal(cfg.Args)
		cmd.Env = append(cmd.Env, "CHROMIUM_ARGS="+string(args))
	}
	b := &Browser{cfg: cfg, cmd: cmd, replies: make(chan reply, 1), stderr: &syncbuf.Buffer{}}
	cmd.Stderr = b.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("browsertest: %v", err)
	}
	b.stdin = stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("browsertest: start driver: %v", err)
	}
	go b.read(stdout)
	t.Cleanup(func() { b.close(t) })
	select {
	case r, ok := <-b.replies:
		if !ok || !r.Ready {
			t.Fatalf("browsertest: the driver did not start: %s", b.stderr)
		}
	case <-time.After(2 * cfg.Timeout): // launching Chromium on a busy machine is slow
		t.Fatalf("browsertest: the driver did not start within %v: %s", 2*cfg.Timeout, b.stderr)
	}
	return b
}

func (b *Browser) read(stdout io.Reader) {
	defer close(b.replies)
	sc := bufio.NewScanner(stdout)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		var r reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			r = reply{ID: -1, Error: fmt.Sprintf("unreadable driver output %q", sc.Text())}
		}
		b.replies <- r
	}
}

func (b *Browser) close(t testing.TB) {
	b.stdin.Close()
	done := make(chan error, 1)
	go func() { done <- b.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Logf("browsertest: driver: %v: %s", err, b.stderr)
		}
	case <-time.After(10 * time.Second):
		b.cmd.Process.Kill()
		<-done
		t.Logf("browsertest: killed the driver, which did not exit: %s", b.stderr)
	}
}

// Call runs one driver operation (see test/driver.mjs) and decodes its result
// into result unless that is nil.
func (b *Browser) Call(t testing.TB, op string, args map[string]any, result any) {
	t.Helper()
	if err := b.call(op, args, result); err != nil {
		t.Fatalf("browser %s %v: %v", op, args, err)
	}
}

func (b *Browser) call(op string, args map[string]any, result any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.nextID++
	id := b.nextID
	req, err := json.Marshal(map[string]any{"id": id, "op": op, "args": args})
	if err != nil {
		return err
	}
	if _, err := b.stdin.Write(append(req, '\n')); err != nil {
		return fmt.Errorf("driver gone: %w: %s", err, b.stderr)
	}
	select {
	case r, ok := <-b.replies:
		switch {
		case !ok:
			return fmt.Errorf("driver exited: %s", b.stderr)
		case r.ID != id:
			return fmt.Errorf("driver answered request %d, want %d: %s", r.ID, id, r.Error)
		case r.Error != "":
			return errors.New(r.Error)
		case result != nil:
			return json.Unmarshal(r.Result, result)
		}
		return nil
	case <-time.After(b.cfg.Timeout):
		return fmt.Errorf("no answer within %v", b.cfg.Timeout)
	}
}

// Goto loads url and waits for its load event.
func (b *Browser) Goto(t testing.TB, url string) {
	t.Helper()
	b.Call(t, "goto", map[string]any{"url": url}, nil)
}

// URL is the page's current address.
func (b *Browser) URL(t testing.TB) string {
	t.Helper()
	var u string
	b.Call(t, "url", nil, &u)
	return u
}

// Click clicks the element selector names (a Playwright selector).
func (b *Browser) Click(t testing.TB, selector string) {
	t.Helper()
	b.Call(t, "click", map[string]any{"selector": selector}, nil)
}

// RightClick clicks the element with the secondary button.
func (b *Browser) RightClick(t testing.TB, selector string) {
	t.Helper()
	b.Call(t, "click", map[string]any{"selector": selector, "button": "right"}, nil)
}

// DoubleClick double-clicks the middle of the element selector names, even
// if another element covers it there (as the terminal screen covers its rows).
func (b *Browser) DoubleClick(t testing.TB, selector string) {
	t.Helper()
	b.Call(t, "dblclick", map[string]any{"selector": selector}, nil)
}

// Fill types value into an input, replacing what it held.
func (b *Browser) Fill(t testing.TB, selector, value string) {
	t.Helper()
	b.Call(t, "fill", map[string]any{"selector": selector, "value": value}, nil)
}

// Select picks the option with value in a select element.
func (b *Browser) Select(t testing.TB, selector, value string) {
	t.Helper()
	b.Call(t, "select", map[string]any{"selector": selector, "value": value}, nil)
}

// Press presses a key on the focused element ("Enter", "Control+Shift+V").
func (b *Browser) Press(t testing.TB, key string) {
	t.Helper()
	b.Call(t, "press", map[string]any{"key": key}, nil)
}

// Text is the rendered text of the first element selector names.
func (b *Browser) Text(t testing.TB, selector string) string {
	t.Helper()
	var s string
	b.Call(t, "text", map[string]any{"selector": selector}, &s)
	return s
}

// Count is how many elements selector names.
func (b *Browser) Count(t testing.TB, selector string) int {
	t.Helper()
	var n int
	b.Call(t, "count", map[string]any{"selector": selector}, &n)
	return n
}

// Visible reports whether the first element selector names is shown now.
func (b *Browser) Visible(t testing.TB, selector string) bool {
	t.Helper()
	var v bool
	b.Call(t, "visible", map[string]any{"selector": selector}, &v)
	return v
}

// WaitVisible waits until the first element selector names is shown.
func (b *Browser) WaitVisible(t testing.TB, selector string) {
	t.Helper()
	b.Call(t, "waitVisible", map[string]any{"selector": selector}, nil)
}

// WaitHidden waits until the first element selector names is hidden or gone.
func (b *Browser) WaitHidden(t testing.TB, selector string) {
	t.Helper()
	b.Call(t, "waitHidden", map[string]any{"selector": selector}, nil)
}

// WaitText waits until the first element the CSS selector names contains text.
func (b *Browser) WaitText(t testing.TB, selector, text string) {
	t.Helper()
	b.Call(t, "waitText", map[string]any{"selector": selector, "text": text}, nil)
}

// Eval evaluates a JavaScript expression in the page (promises are awaited)
// and decodes its JSON value into result unless that is nil.
func (b *Browser) Eval(t testing.TB, expression string, result any) {
	t.Helper()
	b.Call(t, "eval", map[string]any{"expression": expression}, result)
}

// Viewport resizes the page.
func (b *Browser) Viewport(t testing.TB, width, height int) {
	t.Helper()
	b.Call(t, "viewport", map[string]any{"width": width, "height": height}, nil)
}

// Screenshot saves the page as name.png in Config.Artifacts and returns the file.
func (b *Browser) Screenshot(t testing.TB, name string) string {
	t.Helper()
	var file string
	b.Call(t, "screenshot", map[string]any{"name": name}, &file)
	return file
}

// Problems is what went wrong in the page since the last call.
type Problems struct {
	// Violations are Content-Security-Policy violations.
	Violations []string `json:"violations"`
	// Exceptions are uncaught errors in the page's scripts.
	Exceptions []string `json:"exceptions"`
	// Console holds console errors, which include failed requests.
	Console []string `json:"console"`
}

// TakeProblems returns the page's problems and forgets them.
func (b *Browser) TakeProblems(t testing.TB) Problems {
	t.Helper()
	var p Problems
	b.Call(t, "problems", nil, &p)
	return p
}

// NewTab opens another tab in the browser's context (the same cookies)
// and makes it the one the other methods act on; it returns its index.
// The first tab is 0. Only the first tab's problems are collected.
func (b *Browser) NewTab(t testing.TB) int {
	t.Helper()
	var i int
	b.Call(t, "newTab", nil, &i)
	return i
}

// Tab makes tab index the one the other methods act on, and brings it to
// the front.
func (b *Browser) Tab(t testing.TB, index int) {
	t.Helper()
	b.Call(t, "tab", map[string]any{"index": index}, nil)
}

// CDP sends a Chrome DevTools Protocol command in the current tab's
// session and decodes its result into result unless that is nil.
func (b *Browser) CDP(t testing.TB, method string, params map[string]any, result any) {
	t.Helper()
	b.Call(t, "cdp", map[string]any{"method": method, "params": params}, result)
}

// PortalLogin signs in on a bastiond portal.
func (b *Browser) PortalLogin(t testing.TB, baseURL, user, password string) {
	t.Helper()
	b.Call(t, "portalLogin", map[string]any{"baseURL": baseURL, "user": user, "password": password}, nil)
}

// OpenTerminal clicks target's SSH button on the portal and waits for the connect page.
func (b *Browser) OpenTerminal(t testing.TB, target string) {
	t.Helper()
	b.Call(t, "openTerminal", map[string]any{"target": target}, nil)
}

// OpenDesktop clicks target's RDP button on the portal and waits for the connect page.
func (b *Browser) OpenDesktop(t testing.TB, target string) {
	t.Helper()
	b.Call(t, "openClient", map[string]any{"target": target, "protocol": "RDP"}, nil)
}

// SignIn answers the connect page's sign-in form; an empty password is left
// out, as for a certificate.
func (b *Browser) SignIn(t testing.TB, login, password string) {
	t.Helper()
	args := map[string]any{"login": login}
	if password != "" {
		args["password"] = password
	}
	b.Call(t, "signIn", args, nil)
}

// TerminalText is the terminal's visible screen, one line per row.
func (b *Browser) TerminalText(t testing.TB) string {
	t.Helper()
	var s string
	b.Call(t, "terminalText", nil, &s)
	return s
}

// WaitTerminalText waits until the terminal's screen shows text.
func (b *Browser) WaitTerminalText(t testing.TB, text string) {
	t.Helper()
	b.Call(t, "waitTerminalText", map[string]any{"text": text}, nil)
}

// Type focuses the terminal and types text key by key; "\r" or "\n" is Enter.
func (b *Browser) Type(t testing.TB, text string) {
	t.Helper()
	b.Call(t, "typeInTerminal", map[string]any{"text": text}, nil)
}

// Paste fires a paste event carrying text at the terminal, as Ctrl+Shift+V
// does, and reports whether the page cancelled its default action.
func (b *Browser) Paste(t testing.TB, text string) bool {
	t.Helper()
	var prevented bool
	b.Call(t, "pasteInTerminal", map[string]any{"text": text}, &prevented)
	return prevented
}
