package web

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func newServer(t *testing.T, cfg Config) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	New(cfg).Register(mux)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, url string, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func checkPageHeaders(t *testing.T, resp *http.Response) {
	t.Helper()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "media-src blob: 'self'", "connect-src 'self'", "script-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "unsafe-eval") {
		t.Errorf("Content-Security-Policy allows inline code: %q", csp)
	}
	if v := resp.Header.Get("X-Content-Type-Options"); v != "nosniff" {
		t.Errorf("X-Content-Type-Options %q, want nosniff", v)
	}
	if v := resp.Header.Get("Referrer-Policy"); v != "no-referrer" {
		t.Errorf("Referrer-Policy %q, want no-referrer (a ?token= must not leak)", v)
	}
}

func TestIndexListsStreams(t *testing.T) {
	srv := newServer(t, Config{Streams: func() []string {
		return []string{"live/test", "a/<script>alert(1)</script>", "live/cam 2"}
	}})
	resp, body := get(t, srv.URL+"/", map[string]string{})
	checkPageHeaders(t, resp)
	host := strings.TrimPrefix(srv.URL, "http://")
	for _, want := range []string{
		`<a class="watch" href="/watch/live/test">live/test</a>`,
		"http://" + host + "/whep/live/test",
		`href="/watch/live/cam%202"`,
		"http://" + host + "/whep/live/cam%202",
		"a/&lt;script&gt;alert(1)&lt;/script&gt;",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("index lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>alert") {
		t.Errorf("index contains an unescaped stream path:\n%s", body)
	}
	// Sorted: "a/..." before "live/cam 2" before "live/test".
	a, cam, test := strings.Index(body, "a/&lt;script"), strings.Index(body, "live/cam"), strings.Index(body, ">live/test<")
	if !(a < cam && cam < test) {
		t.Errorf("streams not sorted (positions %d, %d, %d)", a, cam, test)
	}
	if strings.Contains(body, "Nothing is being published") {
		t.Error("index with streams shows the empty hint")
	}
}

func TestIndexEmptyShowsPublishHint(t *testing.T) {
	srv := newServer(t, Config{Streams: func() []string { return nil }, RTMPPort: 1935})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/", nil)
	req.Host = "media.example.com:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	checkPageHeaders(t, resp)
	for _, want := range []string{
		"Nothing is being published",
		"ffmpeg -re -i input.flv -c copy -f flv rtmp://media.example.com:1935/live/test",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("empty index lacks %q:\n%s", want, body)
		}
	}

	srv = newServer(t, Config{RTMPPort: 1936, RTMPSPort: 1937})
	_, body = get(t, srv.URL+"/", nil)
	if !strings.Contains(body, "rtmp://127.0.0.1:1936/live/test") {
		t.Errorf("publish hint ignores RTMPPort:\n%s", body)
	}
}

// TestIndexPublishHintRTMPS: with listen.rtmp off and listen.rtmps on, the
// hint names the RTMPS server an encoder can reach; with neither, no
// RTMP hint at all (the browser publisher stays).
func TestIndexPublishHintRTMPS(t *testing.T) {
	_, body := get(t, newServer(t, Config{RTMPSPort: 1937}).URL+"/", nil)
	if !strings.Contains(body, "ffmpeg -re -i input.flv -c copy -f flv rtmps://127.0.0.1:1937/live/test") ||
		!strings.Contains(body, "Server <code>rtmps://127.0.0.1:1937/live</code>") {
		t.Errorf("publish hint with only RTMPS on does not name rtmps://127.0.0.1:1937/live:\n%s", body)
	}
	if strings.Contains(body, "rtmp://") {
		t.Errorf("publish hint names an RTMP server that is off:\n%s", body)
	}
	_, body = get(t, newServer(t, Config{}).URL+"/", nil)
	if strings.Contains(body, "ffmpeg") || !strings.Contains(body, "Publish from this browser") {
		t.Errorf("without RTMP or RTMPS: want no ffmpeg hint, the browser publisher kept:\n%s", body)
	}
}

func TestWatchPage(t *testing.T) {
	srv := newServer(t, Config{AudioNote: "AAC sources play <b>without</b> sound"})
	resp, body := get(t, srv.URL+"/watch/live/test", nil)
	checkPageHeaders(t, resp)
	for _, want := range []string{
		`data-path="live/test"`,
		`data-whep="/whep/live/test"`,
		"<code>" + srv.URL + "/whep/live/test</code>", // for other WHEP players
		`<video id="video" autoplay playsinline muted>`,
		`src="/static/player.js"`,
		"Click to unmute",
		"AAC sources play &lt;b&gt;without&lt;/b&gt; sound",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("watch page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "onclick") {
		t.Errorf("watch page has inline script (the CSP forbids it):\n%s", body)
	}

	// No note configured: no note element.
	srv2 := newServer(t, Config{})
	_, body = get(t, srv2.URL+"/watch/live/test", nil)
	if strings.Contains(body, `id="audio-note"`) {
		t.Error("audio note shown although AudioNote is empty")
	}
}

func TestWatchPageEscapesPath(t *testing.T) {
	srv := newServer(t, Config{})
	// %3C = <, %3E = >, %22 = ", %20 = space.
	resp, body := get(t, srv.URL+"/watch/live/%3Cscript%3Ealert(1)%3C/script%3E%22x%20y", nil)
	checkPageHeaders(t, resp)
	if strings.Contains(body, "<script>alert") || strings.Contains(body, `"x y"`) {
		t.Fatalf("path not escaped:\n%s", body)
	}
	if !strings.Contains(body, `data-path="live/&lt;script&gt;alert(1)&lt;/script&gt;&#34;x y"`) {
		t.Errorf("data-path not as expected:\n%s", body)
	}
	// The WHEP URL is percent-encoded per segment, the slash kept.
	if !strings.Contains(body, `data-whep="/whep/live/%3Cscript%3Ealert%281%29%3C/script%3E%22x%20y"`) {
		t.Errorf("data-whep not percent-encoded:\n%s", body)
	}
}

func TestWatchWithoutPathRedirects(t *testing.T) {
	srv := newServer(t, Config{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Get(srv.URL + "/watch/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != "/" {
		t.Errorf("GET /watch/: %d Location %q, want 302 to /", resp.StatusCode, resp.Header.Get("Location"))
	}
}

func TestStatic(t *testing.T) {
	srv := newServer(t, Config{})
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/static/whep.js", "text/javascript; charset=utf-8", "export class WHEPSession"},
		{"/static/player.js", "text/javascript; charset=utf-8", "window.whepStats"},
		{"/static/style.css", "text/css; charset=utf-8", "#unmute"},
		{"/static/wish.js", "text/javascript; charset=utf-8", "export class WISHSession"},
		{"/static/whip.js", "text/javascript; charset=utf-8", "export class WHIPSession"},
		{"/static/publisher.js", "text/javascript; charset=utf-8", "window.whipStats"},
		{"/static/index.js", "text/javascript; charset=utf-8", "dataset.refresh"},
	} {
		resp, body := get(t, srv.URL+tc.path, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: status %d", tc.path, resp.StatusCode)
			continue
		}
		if ct := resp.Header.Get("Content-Type"); ct != tc.ctype {
			t.Errorf("%s: Content-Type %q, want %q", tc.path, ct, tc.ctype)
		}
		if v := resp.Header.Get("X-Content-Type-Options"); v != "nosniff" {
			t.Errorf("%s: X-Content-Type-Options %q", tc.path, v)
		}
		if !strings.Contains(body, tc.contains) {
			t.Errorf("%s: body lacks %q", tc.path, tc.contains)
		}
		etag := resp.Header.Get("ETag")
		if etag == "" {
			t.Errorf("%s: no ETag", tc.path)
			continue
		}
		resp, _ = get(t, srv.URL+tc.path, map[string]string{"If-None-Match": etag})
		if resp.StatusCode != http.StatusNotModified {
			t.Errorf("%s with If-None-Match: %d, want 304", tc.path, resp.StatusCode)
		}
	}
	for _, p := range []string{"/static/nope.js", "/static/", "/static", "/static/../web.go", "/static/%2e%2e/web.go", "/static/templates/index.html"} {
		resp, _ := get(t, srv.URL+p, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", p, resp.StatusCode)
		}
	}
}

func TestMethods(t *testing.T) {
	srv := newServer(t, Config{})
	for _, p := range []string{"/", "/watch/live/test", "/publish/live/test", "/static/whep.js"} {
		resp, err := http.Post(srv.URL+p, "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", p, resp.StatusCode)
		}
	}
	// HEAD works like GET.
	resp, err := http.Head(srv.URL + "/watch/live/test")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD /watch/live/test: %d", resp.StatusCode)
	}
}

func TestIndexHasPublishForm(t *testing.T) {
	for _, streams := range [][]string{nil, {"live/test"}} {
		srv := newServer(t, Config{Streams: func() []string { return streams }})
		_, body := get(t, srv.URL+"/", nil)
		for _, want := range []string{
			`<form class="publish-form" action="/publish/" method="get">`,
			`name="path"`,
			`name="token"`,
			`src="/static/index.js"`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("index (streams %v) lacks %q:\n%s", streams, want, body)
			}
		}
		// Only the empty index refreshes, and only without JavaScript by
		// meta refresh (index.js spares a form being filled in).
		refresh := strings.Contains(body, `data-refresh="5"`)
		meta := strings.Contains(body, `<noscript><meta http-equiv="refresh" content="5"></noscript>`)
		if want := streams == nil; refresh != want || meta != want {
			t.Errorf("index (streams %v): data-refresh %v, noscript meta refresh %v, want %v", streams, refresh, meta, want)
		}
		if strings.Contains(body, "<script>") || strings.Contains(body, "oninput") {
			t.Errorf("index has inline script:\n%s", body)
		}
	}
}

func TestPublishPage(t *testing.T) {
	srv := newServer(t, Config{})
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/publish/live/cam", nil)
	req.Host = "media.example.com:8080"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := string(b)
	checkPageHeaders(t, resp)
	if pp := resp.Header.Get("Permissions-Policy"); pp != "camera=(self), microphone=(self)" {
		t.Errorf("Permissions-Policy %q", pp)
	}
	for _, want := range []string{
		`data-path="live/cam"`,
		`data-whip="/whip/live/cam"`,
		`data-state="idle"`,
		`<video id="preview" autoplay playsinline muted>`,
		`<button id="start" type="button" disabled>Start</button>`,
		`<button id="stop" type="button" hidden>Stop</button>`,
		`src="/static/publisher.js"`,
		`href="/watch/live/cam"`,
		`<code>http://media.example.com:8080/whip/live/cam</code>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("publish page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "<script>") || strings.Contains(body, "onclick") {
		t.Errorf("publish page has inline script (the CSP forbids it):\n%s", body)
	}
}

func TestPublishPageEscapesPath(t *testing.T) {
	srv := newServer(t, Config{})
	resp, body := get(t, srv.URL+"/publish/live/%3Cscript%3Ealert(1)%3C/script%3E%22x%20y", nil)
	checkPageHeaders(t, resp)
	if strings.Contains(body, "<script>alert") || strings.Contains(body, `"x y"`) {
		t.Fatalf("path not escaped:\n%s", body)
	}
	for _, want := range []string{
		`data-path="live/&lt;script&gt;alert(1)&lt;/script&gt;&#34;x y"`,
		`data-whip="/whip/live/%3Cscript%3Ealert%281%29%3C/script%3E%22x%20y"`,
		`href="/watch/live/%3Cscript%3Ealert%281%29%3C/script%3E%22x%20y"`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("publish page lacks %q:\n%s", want, body)
		}
	}
}

// The index's form submits /publish/?path=...&token=...; the server sends
// the browser on to the page for that path.
func TestPublishFormRedirects(t *testing.T) {
	srv := newServer(t, Config{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct{ query, want string }{
		{"?path=live%2Fcam&token=", "/publish/live/cam"},
		{"?path=+%2Flive%2F%2Fmy+cam%2F+", "/publish/live/my%20cam"},
		{"?path=live%2Fcam&token=s%26cret", "/publish/live/cam?token=s%26cret"},
		{"?path=..%2F.%2Flive", "/publish/live"},
		{"?path=", "/"},
		{"", "/"},
	} {
		resp, err := client.Get(srv.URL + "/publish/" + tc.query)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusFound || resp.Header.Get("Location") != tc.want {
			t.Errorf("GET /publish/%s: %d Location %q, want 302 to %q", tc.query, resp.StatusCode, resp.Header.Get("Location"), tc.want)
		}
	}
}

// TestConnectSources: in a cluster the pages may connect to the other
// nodes' public URLs (a 307 sends a WHEP POST there, and its session
// lives there): their origins join connect-src, once each; what is not an
// http(s) base URL (a registry entry is not trusted to be one) is left out,
// and nothing can add a directive. Outside a cluster connect-src is 'self'.
func TestConnectSources(t *testing.T) {
	srv := newServer(t, Config{ConnectSources: func() []string {
		return []string{
			"https://a.example.com:8443", "https://a.example.com:8443/", "http://10.0.0.2:8080/base",
			"https://[2001:db8::1]:8443",
			"javascript:alert(1)", "https://x.example.com; script-src *", "*", "'unsafe-inline'",
			"https://user:pw@b.example.com", "", "ftp://c.example.com", "//d.example.com", "https://e.example.com\r\nX: y",
		}
	}})
	for _, page := range []string{"/", "/watch/live/test", "/publish/live/cam"} {
		resp, _ := get(t, srv.URL+page, nil)
		checkPageHeaders(t, resp)
		csp := resp.Header.Get("Content-Security-Policy")
		want := "connect-src 'self' https://a.example.com:8443 http://10.0.0.2:8080 https://[2001:db8::1]:8443; "
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q, want %q", page, csp, want)
		}
		if strings.Count(csp, ";") != strings.Count(cspBefore+cspAfter, ";") {
			t.Errorf("%s: Content-Security-Policy %q has directives of its own", page, csp)
		}
	}

	resp, _ := get(t, newServer(t, Config{}).URL+"/watch/live/test", nil)
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self'; ") {
		t.Errorf("outside a cluster: Content-Security-Policy %q, want connect-src 'self' alone", csp)
	}
}

// TestConnectSourcesBounded: however many nodes the registry lists, the
// policy stays small enough for a reverse proxy's header buffer.
func TestConnectSourcesBounded(t *testing.T) {
	var many []string
	for i := range 1000 {
		many = append(many, fmt.Sprintf("https://node-%04d.example.com:8443", i))
	}
	resp, _ := get(t, newServer(t, Config{ConnectSources: func() []string { return many }}).URL+"/watch/live/test", nil)
	csp := resp.Header.Get("Content-Security-Policy")
	if len(csp) > len(cspBefore+cspAfter)+maxConnectSources {
		t.Errorf("Content-Security-Policy is %d bytes, want at most %d", len(csp), len(cspBefore+cspAfter)+maxConnectSources)
	}
	if !strings.Contains(csp, many[0]+" ") || !strings.HasSuffix(csp, cspAfter) {
		t.Errorf("Content-Security-Policy %q: want the first nodes listed and the policy's end intact", csp)
	}
}
