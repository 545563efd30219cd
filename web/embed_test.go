package web

import (
	"io/fs"
	"testing"
)

func TestAssets(t *testing.T) {
	if _, err := fs.Stat(Assets(), "README.txt"); err != nil {
		t.Errorf("the placeholder is not embedded: %v", err)
	}
	if !Built() {
		t.Skip("web/dist is not built: run make web")
	}
	for _, name := range []string{"connect.js", "connect.css", "desktop.js", "desktop.css", "player.js", "player.css", "rdpplayer.css", "watch.js", "watch.css"} {
		fi, err := fs.Stat(Assets(), name)
		if err != nil {
			t.Error(err)
		} else if fi.Size() == 0 {
			t.Errorf("%s is empty", name)
		}
	}
}
