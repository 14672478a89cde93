package forwarded

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzResolve: whatever a trusted proxy sends, resolving it terminates,
// and what it accepts is safe to build URLs from: a known scheme, and a
// host that url.Parse reads back as the whole host.
func FuzzResolve(f *testing.F) {
	f.Add(`for=192.0.2.60;proto=https;host=pub.example, for=10.0.0.2`, "", "", "")
	f.Add(`For="[2001:db8:cafe::17]:4711";ext="a, \"b\"; c"`, "", "", "")
	f.Add("", "198.51.100.1, 203.0.113.7, 10.0.0.2", "http, https", "pub.example:8443")
	f.Add("", "[2001:db8::7]:4711, unknown", "HTTPS", "[2001:db8::1]:443")
	f.Add(`for="unterminated`, "", "", "")
	f.Fuzz(func(t *testing.T, fwd, xff, xfp, xfh string) {
		h := http.Header{}
		for k, v := range map[string]string{"Forwarded": fwd, "X-Forwarded-For": xff, "X-Forwarded-Proto": xfp, "X-Forwarded-Host": xfh} {
			if v != "" {
				h[k] = strings.Split(v, "\n")
			}
		}
		c, err := resolve(h, trusted)
		if err != nil {
			return
		}
		if c.scheme != "" && c.scheme != HTTP && c.scheme != HTTPS {
			t.Fatalf("scheme %q", c.scheme)
		}
		if c.host != "" {
			u, err := url.Parse("https://" + c.host + "/whep/x")
			if err != nil || u.Host != c.host || u.Path != "/whep/x" || u.User != nil {
				t.Fatalf("host %q reads back as %+v (%v)", c.host, u, err)
			}
		}
		if c.addr.IsValid() && c.addr.Addr().Is4In6() {
			t.Fatalf("address %v not unmapped", c.addr)
		}
	})
}
