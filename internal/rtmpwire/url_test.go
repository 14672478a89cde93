package rtmpwire

import (
	"strings"
	"testing"
)

// TestParseURL holds the cases of the pull's and the push's URL parsers
// they replace (ingest/rtmp TestParseSource, egress/rtmp TestParseTarget).
func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		in                          string
		addr, app, name, tcURL, red string
		tls                         bool
		err                         string
	}{
		{in: "rtmp://host/live/cam", addr: "host:1935", app: "live", name: "cam", tcURL: "rtmp://host/live"},
		{in: "RTMP://host:1936/live/cam?key=k", addr: "host:1936", app: "live", name: "cam?key=k", tcURL: "rtmp://host:1936/live"},
		{in: "rtmp://host/a/b/c/", addr: "host:1935", app: "a/b", name: "c", tcURL: "rtmp://host/a/b"},
		{in: "rtmps://host/live/cam", addr: "host:443", app: "live", name: "cam", tcURL: "rtmps://host/live", tls: true},
		{in: "rtmp://[::1]:1940/live/cam", addr: "[::1]:1940", app: "live", name: "cam", tcURL: "rtmp://[::1]:1940/live"},
		{in: "rtmp://[::1]/live/cam", addr: "[::1]:1935", app: "live", name: "cam", tcURL: "rtmp://[::1]/live"},
		{in: "rtmp://a.rtmp.youtube.com/live2/abcd-efgh", addr: "a.rtmp.youtube.com:1935", app: "live2", name: "abcd-efgh", tcURL: "rtmp://a.rtmp.youtube.com/live2", red: "rtmp://a.rtmp.youtube.com/live2/<redacted>"},
		{in: "rtmps://live.example:4443/app/sub/KEY?token=T", addr: "live.example:4443", app: "app/sub", name: "KEY?token=T", tcURL: "rtmps://live.example:4443/app/sub", tls: true, red: "rtmps://live.example:4443/app/sub/<redacted>?token=<redacted>"},
		{in: "rtmps://x.example/app/k/", addr: "x.example:443", app: "app", name: "k", tcURL: "rtmps://x.example/app", tls: true, red: "rtmps://x.example/app/<redacted>/"},
		{in: "rtmp://[::1]:1936/live/k", addr: "[::1]:1936", app: "live", name: "k", tcURL: "rtmp://[::1]:1936/live", red: "rtmp://[::1]:1936/live/<redacted>"},
		// A query may hold "/": it stays with the name.
		{in: "rtmp://host/live/cam?t=a/b", addr: "host:1935", app: "live", name: "cam?t=a/b", tcURL: "rtmp://host/live"},
		{in: "rtmp://host/live", err: "expected rtmp://host[:port]/app/name"},
		{in: "rtmp://host/", err: "expected rtmp://host[:port]/app/name"},
		{in: "rtmp://host/onlyapp", err: "expected rtmp://host[:port]/app/name"},
		{in: "rtmp://:1935/live/cam", err: "has no host"},
		{in: "rtmp:///a/b", err: "has no host"},
		// "?" ends the host (RFC 3986 3.2), so this one has no path.
		{in: "rtmp://host?x=1/live/cam", err: "expected rtmp://host[:port]/app/name"},
		{in: "rtmp://host:99999/live/cam", err: "invalid port"},
		{in: "rtmp://u:p@host/live/cam", err: "user and password"},
		{in: "http://host/live/cam", err: "not an rtmp://"},
		{in: "host/live/cam", err: "not an rtmp://"},
		{in: "", err: "not an rtmp://"},
		{in: "srt://h:1/x", err: "is not an rtmp:// or rtmps:// URL"},
	} {
		u, err := ParseURL(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if u.Addr != tc.addr || u.App != tc.app || u.Name != tc.name || u.TCURL != tc.tcURL || u.TLS != tc.tls || (tc.red != "" && u.Redacted != tc.red) {
			t.Errorf("%q: got %+v", tc.in, u)
		}
	}
	for _, bad := range []string{"rtmp://u:secret@host/live/cam", "KEY", "rtmp://host/KEY", "rtmp://host:99999/a/KEY"} {
		if _, err := ParseURL(bad); err == nil || strings.Contains(err.Error(), "secret") || strings.Contains(err.Error(), "KEY") {
			t.Errorf("%q: error %v shows a secret", bad, err)
		}
	}
}

func FuzzParseURL(f *testing.F) {
	for _, s := range []string{"rtmp://host/live/cam", "rtmps://[::1]:443/a/b/c?k=v/w", "rtmp://u:p@h/a/b", "rtmp://h:0/a/b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := ParseURL(raw)
		if err != nil {
			return
		}
		if u.Host == "" || u.App == "" || u.Name == "" || strings.HasPrefix(u.Name, "?") || !strings.HasSuffix(u.TCURL, "/"+u.App) {
			t.Fatalf("%q parsed as %+v", raw, u)
		}
	})
}
