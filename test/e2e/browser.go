package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/bastiond/bastiond/web"
	"github.com/bastiond/bastiond/web/browsertest"
)

// StartBrowser starts Chromium in the client namespace, with the Chromium
// flags args. Without the web client built or the browser installed it
// skips, except under CI, where test/deps.sh and make have put them in
// place and a skip would hide a broken install. Screenshots go to
// artifacts directory name.
func StartBrowser(t testing.TB, name string, args ...string) *browsertest.Browser {
	t.Helper()
	NeedLab(t)
	cfg := browsertest.Config{WebDir: filepath.Join(repoRoot, "web"), Artifacts: artifactsDir(t, name), Netns: lab["NS_CLIENT"], Args: args}
	why := browsertest.Missing(cfg)
	if why == "" && !web.Built() {
		why = "the web client is not built into this bastiond (make web)"
	}
	if why != "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("browser tests cannot run: %s", why)
		}
		t.Skipf("browser tests skipped: %s", why)
	}
	return browsertest.Start(t, cfg)
}

// artifactsDir is where browser tests keep their screenshots:
// $BASTIOND_ARTIFACTS, or test/artifacts/ in the repository.
func artifactsDir(t testing.TB, name string) string {
	dir := os.Getenv("BASTIOND_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(repoRoot, "test", "artifacts")
	}
	dir = filepath.Join(dir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// desktopPixels is what the page's desktop canvas shows: how many distinct
// colours a grid of samples finds, and the shares of white and of dark
// samples. vm2's display is a dark background with xclock's white face
// (300x300 of 1280x800: 9%) and black hands on it.
const desktopPixels = `(() => {
  const c = window.bastionDesktopCanvas && window.bastionDesktopCanvas();
  if (!c || !c.width || !c.height) return { colors: 0 };
  const copy = document.createElement("canvas");
  copy.width = c.width; copy.height = c.height;
  const g = copy.getContext("2d");
  g.drawImage(c, 0, 0);
  const px = g.getImageData(0, 0, c.width, c.height).data;
  const seen = new Set();
  let white = 0, dark = 0, n = 0;
  for (let y = 0; y < c.height; y += 8) for (let x = 0; x < c.width; x += 8) {
    const i = (y * c.width + x) * 4;
    seen.add((px[i] << 16) | (px[i + 1] << 8) | px[i + 2]);
    const sum = px[i] + px[i + 1] + px[i + 2];
    if (sum > 720) white++;
    if (sum < 200) dark++;
    n++;
  }
  return { colors: seen.size, white: white / n, dark: dark / n, width: c.width, height: c.height };
})()`

type pixels struct {
	Colors int     `json:"colors"`
	White  float64 `json:"white"`
	Dark   float64 `json:"dark"`
	Width  int     `json:"width"`
	Height int     `json:"height"`
}

// DesktopShown waits until the current tab's desktop canvas shows vm2's
// screen (the clock's white face on a dark background, not a blank or
// single-colour canvas) and returns its size.
func DesktopShown(t testing.TB, b *browsertest.Browser) (width, height int) {
	t.Helper()
	var p pixels
	deadline := time.Now().Add(30 * time.Second)
	for {
		b.Eval(t, desktopPixels, &p)
		if p.Colors >= 3 && p.White > 0.04 && p.White < 0.3 && p.Dark > 0.5 {
			return p.Width, p.Height
		}
		if time.Now().After(deadline) {
			t.Fatalf("the desktop canvas does not show vm2's screen: %+v", p)
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// ClientState is the current tab's client state (data-state of #client:
// "connected", "ended", ...).
func ClientState(t testing.TB, b *browsertest.Browser) string {
	t.Helper()
	var s string
	b.Eval(t, `document.querySelector("#client")?.dataset.state || ""`, &s)
	return s
}

// WaitClientState waits until the current tab's client is in state want.
func WaitClientState(t testing.TB, b *browsertest.Browser, want string) {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ClientState(t, b) != want; time.Sleep(200 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the page is %q, not %q; it says %q", ClientState(t, b), want, b.Text(t, "#client"))
		}
	}
}

// DesktopSignIn answers the desktop page's sign-in form as the lab user.
func DesktopSignIn(t testing.TB, b *browsertest.Browser, password string) {
	t.Helper()
	b.WaitVisible(t, `#client input[name="user"]`)
	b.Fill(t, `#client input[name="user"]`, lab["LAB_USER"])
	b.Fill(t, `#client input[name="password"]`, password)
	b.Click(t, `#client form button[type="submit"]`)
}
