package portal

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/bastiond/bastiond/proxy/access"
	"github.com/bastiond/bastiond/web"
)

// asset is one file of the browser client, with its validator and, when
// that is smaller, its gzip encoding (the desktop's module, mostly
// WebAssembly, shrinks from 6 MB to 2).
type asset struct {
	data        []byte
	gz          []byte
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
		a := asset{data: data, etag: hex.EncodeToString(sum[:12]), contentType: ct}
		var gz bytes.Buffer
		zw := gzip.NewWriter(&gz)
		zw.Write(data)
		if zw.Close() == nil && gz.Len() < len(data)*9/10 {
			a.gz = gz.Bytes()
		}
		out[p] = a
		return nil
	})
	return out
})

// WarmAssets loads the browser client's files and compresses them now,
// rather than on the first request for one of them.
func WarmAssets() { appAssets() }

// WebClientMissing reports whether this bastiond lacks its browser
// client: built while web/dist held only its placeholder, and not with
// -tags nowebclient, which says it is meant to run without (web.Optional).
func WebClientMissing() bool { return !web.Built() && !web.Optional }

// CheckWebClient returns an error when missing (WebClientMissing) and
// policy has roles that need the browser client (access.Policy.BrowserRoles):
// a bastion that serves tunnels only needs none.
func CheckWebClient(policy *access.Policy, missing bool) error {
	if !missing {
		return nil
	}
	roles := policy.BrowserRoles()
	if len(roles) == 0 {
		return nil
	}
	return fmt.Errorf("proxy: this bastiond was built without its browser client (web/dist was empty: run make web "+
		"before go build, or make build), but roles %s grant sessions in the browser or recording playback; "+
		"rebuild it with the client, or grant only tunnel on this bastion", strings.Join(roles, ", "))
}

// appAsset is GET /static/app/{name}. The browser revalidates each time
// (ETag), so an upgraded bastion never serves a stale client.
func (s *Portal) appAsset(w http.ResponseWriter, r *http.Request) {
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
	h.Set("Cache-Control", "no-cache")
	data, etag := a.data, `"`+a.etag+`"`
	if a.gz != nil {
		h.Set("Vary", "Accept-Encoding")
		if acceptsGzip(r) {
			data, etag = a.gz, `"`+a.etag+`-gz"`
			h.Set("Content-Encoding", "gzip")
		}
	}
	h.Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// acceptsGzip reports whether r's Accept-Encoding allows gzip.
func acceptsGzip(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept-Encoding") {
		for part := range strings.SplitSeq(v, ",") {
			coding, q, _ := strings.Cut(strings.TrimSpace(part), ";")
			if strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
				return true
			}
		}
	}
	return false
}
