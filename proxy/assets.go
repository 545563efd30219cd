package proxy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/bastiond/bastiond/web"
)

// asset is one file of the browser client, with its validator.
type asset struct {
	data        []byte
	etag        string
	contentType string
}

// appAssets are the browser client's files (web/dist), loaded once.
var appAssets = sync.OnceValue(func() map[string]asset {
	out := map[string]asset{}
	fs.WalkDir(web.Assets(), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(web.Assets(), p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		ct := mime.TypeByExtension(path.Ext(p))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[p] = asset{data: data, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, contentType: ct}
		return nil
	})
	return out
})

// appAsset is GET /static/app/{name}. The browser revalidates each time
// (ETag), so an upgraded bastion never serves a stale client.
func (s *Server) appAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := appAssets()[r.PathValue("name")]
	if !ok {
		if !web.Built() {
			http.Error(w, "the web client was not built into this bastiond (run make)", http.StatusNotFound)
			return
		}
		notFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", a.contentType)
	h.Set("ETag", a.etag)
	h.Set("Cache-Control", "no-cache")
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.data))
}
