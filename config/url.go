package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// urlInMessage redacts raw, the value of a key that takes one of schemes, for
// a validation message. It also hides the last path segment when that could
// be an RTMP stream key: when the key takes rtmp URLs, or when raw has some
// other scheme (a typo such as "rmtp://host/app/KEY").
func urlInMessage(raw string, schemes []string) string {
	u, _ := rawurl.Split(raw)
	if slices.Contains(schemes, "rtmp") || !slices.Contains(schemes, strings.ToLower(u.Scheme)) {
		return rawurl.RedactKey(raw)
	}
	return rawurl.Redact(raw)
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
	u, ok := rawurl.Split(raw)
	scheme := strings.ToLower(u.Scheme)
	if !ok || !slices.Contains(schemes, scheme) {
		return fmt.Errorf("is not %s URL", schemeList(schemes))
	}
	if strings.ContainsFunc(raw, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return fmt.Errorf("contains a space or control character (expected them percent-encoded)")
	}
	host, port, ok := splitHostPort(u.HostPort)
	switch {
	case u.HostPort == "":
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
		if p, ok := u.QueryParam("passphrase"); ok && p != "" && (len(p) < minPassphrase || len(p) > maxPassphrase) {
			return fmt.Errorf("has a passphrase that is not %d-%d characters long (SRT's limit)", minPassphrase, maxPassphrase)
		}
	case "rtmp", "rtmps":
		// connect takes the app, publish or play the stream name (the key).
		segs := strings.FieldsFunc(u.Path, func(r rune) bool { return r == '/' })
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
