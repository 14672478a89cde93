package main

import (
	"html/template"
	"net/http"
	"slices"
)

var indexTmpl = template.Must(template.New("index").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>bridge: live streams</title></head>
<body><h1>Live streams</h1>
{{if .}}<ul>{{range .}}<li><code>{{.}}</code>: WHEP <a href="/whep/{{.}}">/whep/{{.}}</a></li>{{end}}</ul>
{{else}}<p>Nothing is being published. Publish with
<code>ffmpeg -re -i input.flv -c copy -f flv rtmp://HOST:1935/live/test</code>.</p>{{end}}
</body></html>
`))

// serveIndex lists the live streams.
func (b *Bridge) serveIndex(w http.ResponseWriter, r *http.Request) {
	paths := b.registry.Paths()
	slices.Sort(paths)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_ = indexTmpl.Execute(w, paths)
}
