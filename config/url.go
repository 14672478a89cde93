package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
)

// rawURL is a URL split as written, without decoding:
//
//	scheme "://" [userinfo "@"] host [":" port] [path] ["?" query]
//
// It differs from net/url in two ways that matter for the URLs in a
// configuration. "#" is not a fragment delimiter: SRT stream IDs in the
// access-control syntax start with "#!::", and ffmpeg and the SRT tools take
// them unescaped in the query. And userinfo runs to the last "@" before the
// query, so a password with an unescaped "/" is still taken as userinfo (and
// redacted) rather than shown as part of the path.
type rawURL struct {
	scheme   string // as written; compare with strings.EqualFold
	userinfo string
	hasUser  bool // an "@" was present (userinfo may be empty)
	hostport string
	path     string // "" or starting with "/"
	query    string
	hasQuery bool // a "?" was present (query may be empty)
}

// splitURL splits s, or reports false when s does not start with a scheme
// and "://".
func splitURL(s string) (rawURL, bool) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok || !isScheme(scheme) {
		return rawURL{}, false
	}
	u := rawURL{scheme: scheme}
	rest, u.query, u.hasQuery = strings.Cut(rest, "?")
	if at := strings.LastIndexByte(rest, '@'); at >= 0 {
		u.userinfo, u.hasUser, rest = rest[:at], true, rest[at+1:]
	}
	if slash := strings.IndexByte(rest, '/'); slash >= 0 {
		rest, u.path = rest[:slash], rest[slash:]
	}
	u.hostport = rest
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
func (u rawURL) String() string {
	var b strings.Builder
	b.WriteString(u.scheme)
	b.WriteString("://")
	if u.hasUser {
		b.WriteString(u.userinfo)
		b.WriteByte('@')
	}
	b.WriteString(u.hostport)
	b.WriteString(u.path)
	if u.hasQuery {
		b.WriteByte('?')
		b.WriteString(u.query)
	}
	return b.String()
}

// queryParam returns the decoded value of the first query parameter named
// key (case-insensitive).
func (u rawURL) queryParam(key string) (string, bool) {
	for p := range strings.SplitSeq(u.query, "&") {
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

const redacted = "<redacted>"

// secretParams are query parameters whose values RedactURL hides.
var secretParams = []string{"passphrase", "key", "token", "s", "password", "secret", "access_token", "auth"}

// RedactURL returns raw fit for logs and error messages, with its secrets
// replaced by "<redacted>":
//   - the password in the userinfo ("rtmp://user:<redacted>@host/...");
//   - the values of the query parameters passphrase, key, token, s, password,
//     secret, access_token and auth (names compared case-insensitively and
//     after percent-decoding);
//   - in a streamid query parameter, the u= and s= values of the SRT
//     access-control syntax ("#!::r=live/x,m=publish,u=<redacted>,s=<redacted>")
//     and the secret parameters above after a "?" ("publish:live/x?key=<redacted>");
//     a percent-encoded streamid with something redacted is shown decoded;
//   - for rtmp:// and rtmps:// URLs, the last non-empty path segment, which
//     is the stream key ("rtmp://a.rtmp.youtube.com/live2/<redacted>").
//
// Everything else is kept as written. A value that is not a URL (no
// "scheme://") could be a secret pasted in the wrong place, so it is replaced
// whole. The result is for people to read, not to dial.
func RedactURL(raw string) string {
	u, _ := splitURL(raw)
	return redactURL(raw, isRTMP(u.scheme))
}

func isRTMP(scheme string) bool {
	return strings.EqualFold(scheme, "rtmp") || strings.EqualFold(scheme, "rtmps")
}

// urlInMessage redacts raw, the value of a key that takes one of schemes, for
// a validation message. It also hides the last path segment when that could
// be an RTMP stream key: when the key takes rtmp URLs, or when raw has some
// other scheme (a typo such as "rmtp://host/app/KEY").
func urlInMessage(raw string, schemes []string) string {
	u, _ := splitURL(raw)
	return redactURL(raw, slices.Contains(schemes, "rtmp") || !slices.Contains(schemes, strings.ToLower(u.scheme)))
}

// redactURL is RedactURL, hiding the last path segment if lastSegment.
func redactURL(raw string, lastSegment bool) string {
	if raw == "" {
		return ""
	}
	u, ok := splitURL(raw)
	if !ok {
		return redacted
	}
	if user, _, hasPassword := strings.Cut(u.userinfo, ":"); hasPassword {
		u.userinfo = user + ":" + redacted
	}
	if lastSegment {
		trimmed := strings.TrimRight(u.path, "/")
		if i := strings.LastIndexByte(trimmed, '/'); i >= 0 && i < len(trimmed)-1 {
			u.path = trimmed[:i+1] + redacted + u.path[len(trimmed):]
		}
	}
	if u.hasQuery {
		u.query = redactQuery(u.query)
	}
	return u.String()
}

// redactQuery hides the values of secretParams and the secrets in streamid
// in an "&"-separated query.
func redactQuery(q string) string {
	params := strings.Split(q, "&")
	for i, p := range params {
		k, v, hasValue := strings.Cut(p, "=")
		switch name := strings.ToLower(unescape(k)); {
		case !hasValue:
		case slices.Contains(secretParams, name):
			params[i] = k + "=" + redacted
		case name == "streamid":
			params[i] = k + "=" + redactStreamID(v)
		}
	}
	return strings.Join(params, "&")
}

// redactStreamID hides the credentials in an SRT stream ID as found in a URL
// query (possibly percent-encoded).
func redactStreamID(raw string) string {
	id := unescape(raw)
	var out string
	if body, ok := strings.CutPrefix(id, "#!::"); ok {
		// Access-control syntax: comma-separated key=value pairs.
		pairs := strings.Split(body, ",")
		for i, p := range pairs {
			if k, _, ok := strings.Cut(p, "="); ok {
				if k := strings.TrimSpace(k); k == "u" || k == "s" {
					pairs[i] = k + "=" + redacted
				}
			}
		}
		out = "#!::" + strings.Join(pairs, ",")
	} else if name, query, ok := strings.Cut(id, "?"); ok {
		out = name + "?" + redactQuery(query)
	} else {
		return raw
	}
	if out == id {
		return raw // nothing to hide: keep it as written
	}
	return out
}

// Schemes of URLs in routes.
var (
	pullSchemes = []string{"srt", "rtmp", "rtmps", "whep+http", "whep+https"}
	whipSchemes = []string{"http", "https"}
	rtmpSchemes = []string{"rtmp", "rtmps"}
	srtSchemes  = []string{"srt"}
)

// schemeList names schemes for messages: "an rtmp:// or rtmps://". Every
// list above starts with a letter read with a vowel sound (h, r, s), hence
// "an".
func schemeList(schemes []string) string {
	names := make([]string, len(schemes))
	for i, s := range schemes {
		names[i] = s + "://"
	}
	list := names[0]
	if n := len(names); n > 1 {
		list = strings.Join(names[:n-1], ", ") + " or " + names[n-1]
	}
	return "an " + list
}

// checkURL checks raw, a URL with one of schemes, offline. The error text
// follows the quoted redacted URL in a message:
// `"http://x" is not an rtmp:// or rtmps:// URL`.
func checkURL(raw string, schemes []string) error {
	u, ok := splitURL(raw)
	scheme := strings.ToLower(u.scheme)
	if !ok || !slices.Contains(schemes, scheme) {
		return fmt.Errorf("is not %s URL", schemeList(schemes))
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("contains a space or control character (expected them percent-encoded)")
	}
	host, port, ok := splitHostPort(u.hostport)
	switch {
	case u.hostport == "":
		return fmt.Errorf("has no host (expected %s://host[:port]...)", scheme)
	case !ok || !(isIP(host) || isHostname(host)):
		return fmt.Errorf("has an invalid host (expected a hostname, an IPv4 address or an IPv6 address in [])")
	case port != "" && !isPort(port):
		return fmt.Errorf("has an invalid port (expected 1-65535)")
	}
	switch scheme {
	case "srt":
		if port == "" {
			return fmt.Errorf("has no port (expected srt://host:port; SRT has no default port)")
		}
		if p, ok := u.queryParam("passphrase"); ok && p != "" && (len(p) < minPassphrase || len(p) > maxPassphrase) {
			return fmt.Errorf("has a passphrase that is not %d-%d characters long (SRT's limit)", minPassphrase, maxPassphrase)
		}
	case "rtmp", "rtmps":
		// connect takes the app, publish or play the stream name (the key).
		segs := strings.FieldsFunc(u.path, func(r rune) bool { return r == '/' })
		if len(segs) < 2 {
			return fmt.Errorf("has no application and stream name (expected %s://host[:port]/app/stream)", scheme)
		}
	default: // http, https, whep+http, whep+https: net/http must take it
		httpURL := raw
		if strings.HasPrefix(scheme, "whep+") {
			httpURL = raw[len("whep+"):]
		}
		if _, err := url.Parse(httpURL); err != nil {
			return fmt.Errorf("is not a valid URL (expected e.g. %s://host.example/whep/path with special characters percent-encoded)", scheme)
		}
	}
	return nil
}

// splitHostPort splits "host", "host:port", "[v6]" or "[v6]:port". port is
// "" when there is none and "-" (invalid) for "host:"; ok is false for other
// shapes, such as an IPv6 address without brackets.
func splitHostPort(hp string) (host, port string, ok bool) {
	if h, p, err := net.SplitHostPort(hp); err == nil {
		if p == "" {
			p = "-" // "host:": a port was announced but is empty
		}
		if strings.HasPrefix(hp, "[") && !isIPv6(h) {
			return "", "", false
		}
		return h, p, true
	}
	if h, ok := strings.CutPrefix(hp, "["); ok {
		h, ok = strings.CutSuffix(h, "]")
		return h, "", ok && isIPv6(h)
	}
	return hp, "", !strings.ContainsAny(hp, ":[]")
}

func isIPv6(s string) bool {
	ip, err := netip.ParseAddr(s)
	return err == nil && ip.Is6()
}

func isPort(p string) bool {
	n, err := strconv.ParseUint(p, 10, 16)
	return err == nil && n > 0
}
