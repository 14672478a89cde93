// Package rawurl holds URLs as an operator writes them in a configuration:
// split without decoding (Split), and redacted for logs and error messages
// (Redact). It imports nothing from the bridge, so an adapter that logs the
// URL it dials needs only this package, not the configuration's.
package rawurl

import (
	"net/url"
	"strings"
)

// URL is a URL split as written, without decoding:
//
//	scheme "://" [userinfo "@"] host [":" port] [path] ["?" query]
//
// It differs from net/url in two ways that matter for the URLs in a
// configuration. "#" is not a fragment delimiter: SRT stream IDs in the
// access-control syntax start with "#!::", and ffmpeg and the SRT tools take
// them unescaped in the query. And userinfo runs to the last "@" before the
// query, so a password with an unescaped "/" is still taken as userinfo (and
// redacted) rather than shown as part of the path.
type URL struct {
	Scheme   string // as written; compare with strings.EqualFold
	Userinfo string
	HasUser  bool // an "@" was present (Userinfo may be empty)
	HostPort string
	Path     string // "" or starting with "/"
	Query    string
	HasQuery bool // a "?" was present (Query may be empty)
}

// Split splits s, or reports false when s does not start with a scheme
// and "://".
func Split(s string) (URL, bool) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !isScheme(scheme) {
		return URL{}, false
	}
	u := URL{Scheme: scheme}
	rest, u.Query, u.HasQuery = strings.Cut(rest, "?")
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		u.Userinfo, u.HasUser, rest = rest[:at], true, rest[at+1:]
	}
	if slash := strings.IndexByte(rest, '/'); slash >= 0 {
		rest, u.Path = rest[:slash], rest[slash:]
	}
	u.HostPort = rest
	return u, true
}

// isScheme checks RFC 3986's scheme syntax: a letter, then letters, digits,
// "+", "-" or ".".
func isScheme(s string) bool {
	if s == "" || !isLetter(s[0]) {
		return false
	}
	for _, c := range []byte(s) {
		if !isLetter(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	return true
}

func isLetter(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }

// String joins the parts back, as written.
func (u URL) String() string {
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	if u.HasUser {
		b.WriteString(u.Userinfo)
		b.WriteByte('@')
	}
	b.WriteString(u.HostPort)
	b.WriteString(u.Path)
	if u.HasQuery {
		b.WriteByte('?')
		b.WriteString(u.Query)
	}
	return b.String()
}

// QueryParam returns the decoded value of the first query parameter named
// key (case-insensitive).
func (u URL) QueryParam(key string) (string, bool) {
	for p := range strings.SplitSeq(u.Query, "&") {
		k, v, _ := strings.Cut(p, "=")
		if strings.EqualFold(unescape(k), key) {
			return unescape(v), true
		}
	}
	return "", false
}

// unescape percent-decodes s, or returns it as written if it is not valid
// percent-encoding.
func unescape(s string) string {
	if d, err := url.QueryUnescape(s); err == nil {
		return d
	}
	return s
}
