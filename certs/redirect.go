package certs

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/wishbridge/bridge/internal/forwarded"
)

// Redirect answers page requests that arrived over plain HTTP with a 308
// Permanent Redirect to the same URL on HTTPS (httpsPort; left out of the
// URL when 443), and passes everything else to next:
//   - requests over TLS (forwarded.Scheme: to the bridge, or to a trusted
//     proxy that said so);
//   - methods other than GET and HEAD: a WHIP/WHEP POST, PATCH or DELETE
//     from a client that would not follow a redirect (or would lose its
//     body), and CORS preflights, which may not be redirected;
//   - paths under any of keep (the WHIP/WHEP endpoints and their session
//     resources), whatever the method;
//   - requests without a Host (HTTP/1.0), which have nowhere to go.
//
// The target host is the one the client asked for, so a redirect never
// sends a client to another site.
func Redirect(next http.Handler, httpsPort int, keep ...string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if forwarded.Scheme(r) == forwarded.HTTPS || (r.Method != http.MethodGet && r.Method != http.MethodHead) || r.Host == "" || hasPrefix(r.URL.Path, keep) {
			next.ServeHTTP(w, r)
			return
		}
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]" // IPv6 literal
		}
		if httpsPort != 443 {
			host += ":" + strconv.Itoa(httpsPort)
		}
		u := *r.URL
		u.Scheme, u.Host = "https", host
		http.Redirect(w, r, u.String(), http.StatusPermanentRedirect)
	})
}

func hasPrefix(path string, prefixes []string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(path, p) {
			return true
		}
	}
	return false
}
