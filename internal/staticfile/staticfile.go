// Package staticfile serves files compiled into the binary: the built-in
// pages' and the dashboard's scripts and styles. Each file is read once at
// start, typed by its extension and given a strong ETag from its content,
// so browsers revalidate it cheaply and a new binary's files are never
// mixed with an old page's.
package staticfile

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

// File is one file ready to serve. The zero value is not useful: get Files
// from Load.
type File struct {
	body        []byte
	contentType string
	etag        string
}

// Load reads every file under dir in fsys whose extension has a content
// type in types (".js" -> "text/javascript; charset=utf-8"), by its name
// relative to dir; other files are left out.
func Load(fsys fs.FS, dir string, types map[string]string) (map[string]File, error) {
	files := make(map[string]File)
	err := fs.WalkDir(fsys, dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		ct, ok := types[path.Ext(p)]
		if !ok {
			return nil
		}
		body, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		files[strings.TrimPrefix(p, dir+"/")] = File{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:8]) + `"`}
		return nil
	})
	return files, err
}

// Serve answers r with f: 200 with the body (none for HEAD), or 304 when
// r's If-None-Match holds f's ETag. The client must revalidate every time
// (Cache-Control: no-cache).
func (f File) Serve(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Type", f.contentType)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Cache-Control", "no-cache")
	hdr.Set("ETag", f.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
