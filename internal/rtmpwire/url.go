package rtmpwire

import (
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// URL is a parsed rtmp:// or rtmps:// URL, to play from or publish to.
type URL struct {
	TLS      bool
	Host     string // for TLS server name verification
	Addr     string // host:port to dial (ports 1935 and 443 by default)
	App      string // connect's app: the path without its last segment
	Name     string // the stream name played or published: the last segment and the query
	TCURL    string // connect's tcUrl: scheme://host[:port]/app
	Redacted string // the URL for logs and errors (rawurl.Redact)
}

// ParseURL reads rtmp[s]://host[:port]/app[/...]/name[?query]. The last
// path segment is the stream name and everything before it the app, so
// rtmp://host/a/b/c names "c" in app "a/b". The query goes with the name,
// which is where ffmpeg and OBS send tokens ("key?token=..."), and is cut
// off first: as RFC 3986 3.2 has it, "?" ends the authority too, and a
// query may hold "/". Leading and trailing slashes of the path are
// dropped. A user and password are refused: RTMP has no place
// for them. Errors show the URL redacted.
func ParseURL(raw string) (URL, error) {
	u := URL{Redacted: rawurl.Redact(raw)}
	scheme, rest, ok := strings.Cut(raw, "://")
	switch {
	case !ok:
		return u, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL", u.Redacted)
	case strings.EqualFold(scheme, "rtmp"):
	case strings.EqualFold(scheme, "rtmps"):
		u.TLS = true
	default:
		return u, fmt.Errorf("%q is not an rtmp:// or rtmps:// URL", u.Redacted)
	}
	rest, query, hasQuery := strings.Cut(rest, "?")
	hostport, path, _ := strings.Cut(rest, "/")
	if strings.Contains(hostport, "@") {
		return u, fmt.Errorf("%q: user and password in RTMP URLs are not supported", u.Redacted)
	}
	port := "1935"
	if u.TLS {
		port = "443"
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		host, port = h, p
	} else if strings.HasPrefix(hostport, "[") && strings.HasSuffix(hostport, "]") {
		host = hostport[1 : len(hostport)-1]
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return u, fmt.Errorf("%q has an invalid port", u.Redacted)
	}
	if host == "" {
		return u, fmt.Errorf("%q has no host", u.Redacted)
	}
	u.Host, u.Addr = host, net.JoinHostPort(host, port)
	path = strings.Trim(path, "/")
	i := strings.LastIndexByte(path, '/')
	if i <= 0 || i == len(path)-1 {
		return u, fmt.Errorf("%q has no application and stream name (expected rtmp://host[:port]/app/name)", u.Redacted)
	}
	u.App, u.Name = path[:i], path[i+1:]
	if hasQuery {
		u.Name += "?" + query
	}
	u.TCURL = strings.ToLower(scheme) + "://" + hostport + "/" + u.App
	return u, nil
}

// Secrets returns what must not be shown of the URL: the stream name, with
// and without its query.
func (u URL) Secrets() []string {
	key, _, _ := strings.Cut(u.Name, "?")
	return []string{u.Name, key}
}
