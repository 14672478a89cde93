package forwarded

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// seen is what a handler behind Front sees of the client.
type seen struct {
	addr, host, scheme string
}

func (s seen) String() string { return fmt.Sprintf("%s %s://%s", s.addr, s.scheme, s.host) }

// echo answers with what it sees, one field per line.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	fmt.Fprintf(w, "%s\n%s\n%s", r.RemoteAddr, r.Host, Scheme(r))
})

func prefixes(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, p := range s {
		out = append(out, netip.MustParsePrefix(p))
	}
	return out
}

// serve runs one request from peer with hdr through f.
func serve(f *Front, peer string, tlsConn bool, hdr http.Header) seen {
	r := httptest.NewRequest(http.MethodGet, "/whep/live/x", nil)
	r.RemoteAddr = peer
	r.Host = "bridge.internal:8080"
	if tlsConn {
		r.TLS = &tls.ConnectionState{}
	}
	for k, v := range hdr {
		r.Header[k] = v
	}
	w := httptest.NewRecorder()
	f.ServeHTTP(w, r)
	parts := strings.SplitN(w.Body.String(), "\n", 3)
	return seen{addr: parts[0], host: parts[1], scheme: parts[2]}
}

// testLogger logs into buf.
func testLogger(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(buf, nil))
}

const proxy = "10.0.0.1:5555" // trusted below

var trusted = prefixes("10.0.0.0/8", "127.0.0.1/32", "2001:db8:1::/48")

// unchanged is what the handler sees of a request from proxy whose
// forwarding headers are ignored.
var unchanged = seen{proxy, "bridge.internal:8080", "http"}

func TestResolve(t *testing.T) {
	long := strings.Repeat("198.51.100.1, ", 1000) + "203.0.113.7"
	chain := strings.TrimSuffix(strings.Repeat("10.0.0.9, ", maxHops+1), ", ")
	tests := []struct {
		name string
		hdr  http.Header
		want seen
	}{
		{"X-Forwarded-*", http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"pub.example"}},
			seen{"203.0.113.7:0", "pub.example", "https"}},
		{"address only", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},
		{"scheme and host only", http.Header{"X-Forwarded-Proto": {"HTTPS"}, "X-Forwarded-Host": {"pub.example:8443"}},
			seen{proxy, "pub.example:8443", "https"}},
		{"trusted hops skipped, spoofed left ignored", http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.7, 10.0.0.2"}},
			seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},
		{"garbage left of the client is not read", http.Header{"X-Forwarded-For": {"not an address, 203.0.113.7"}},
			seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},
		{"lines walked from the last", http.Header{"X-Forwarded-For": {"198.51.100.1", "203.0.113.7, 10.0.0.2"}},
			seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},
		{"all trusted: the farthest", http.Header{"X-Forwarded-For": {"10.0.0.3, 10.0.0.2"}}, seen{"10.0.0.3:0", "bridge.internal:8080", "http"}},
		{"unknown", http.Header{"X-Forwarded-For": {"unknown"}, "X-Forwarded-Proto": {"https"}}, seen{proxy, "bridge.internal:8080", "https"}},
		{"IPv6", http.Header{"X-Forwarded-For": {"2001:db8::7"}}, seen{"[2001:db8::7]:0", "bridge.internal:8080", "http"}},
		{"IPv6 with port", http.Header{"X-Forwarded-For": {"[2001:db8::7]:4711"}}, seen{"[2001:db8::7]:4711", "bridge.internal:8080", "http"}},
		{"IPv4 with port", http.Header{"X-Forwarded-For": {"203.0.113.7:4711"}}, seen{"203.0.113.7:4711", "bridge.internal:8080", "http"}},
		{"IPv4-mapped", http.Header{"X-Forwarded-For": {"::ffff:203.0.113.7"}}, seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},
		{"appended proto aligned with the client's hop", http.Header{"X-Forwarded-For": {"203.0.113.7, 10.0.0.2"}, "X-Forwarded-Proto": {"http, https, http"}},
			seen{"203.0.113.7:0", "bridge.internal:8080", "https"}},
		{"one proto set by the outer proxy", http.Header{"X-Forwarded-For": {"203.0.113.7, 10.0.0.2"}, "X-Forwarded-Proto": {"https"}},
			seen{"203.0.113.7:0", "bridge.internal:8080", "https"}},
		{"a thousand spoofed hops cost one", http.Header{"X-Forwarded-For": {long}}, seen{"203.0.113.7:0", "bridge.internal:8080", "http"}},

		{"Forwarded", http.Header{"Forwarded": {`for=192.0.2.60;proto=https;host=pub.example, for=10.0.0.2`}},
			seen{"192.0.2.60:0", "pub.example", "https"}},
		{"Forwarded quoted IPv6 and port", http.Header{"Forwarded": {`For="[2001:db8:cafe::17]:4711";Proto=http;by=10.0.0.1`}},
			seen{"[2001:db8:cafe::17]:4711", "bridge.internal:8080", "http"}},
		{"Forwarded over lines", http.Header{"Forwarded": {`for=198.51.100.1`, `for=192.0.2.60;host="pub.example:8443";proto=https`, `for=10.0.0.2`}},
			seen{"192.0.2.60:0", "pub.example:8443", "https"}},
		{"Forwarded quoted comma", http.Header{"Forwarded": {`for=192.0.2.60;ext="a, b; c", for=10.0.0.2`}},
			seen{"192.0.2.60:0", "bridge.internal:8080", "http"}},
		{"Forwarded unknown", http.Header{"Forwarded": {`for=unknown;proto=https`}}, seen{proxy, "bridge.internal:8080", "https"}},
		{"Forwarded obfuscated", http.Header{"Forwarded": {`for=_hidden, for=10.0.0.2`}}, seen{"10.0.0.2:0", "bridge.internal:8080", "http"}},
		{"Forwarded obfuscated port", http.Header{"Forwarded": {`for="192.0.2.60:_p1"`}}, seen{"192.0.2.60:0", "bridge.internal:8080", "http"}},
		{"Forwarded and X-Forwarded-* that agree: Forwarded", http.Header{"Forwarded": {`for="192.0.2.60:4711";host=pub.example`},
			"X-Forwarded-For": {"192.0.2.60, 10.0.0.2"}, "X-Forwarded-Proto": {"https"}},
			seen{"192.0.2.60:4711", "pub.example", "http"}},
		{"Forwarded long chain, client near", http.Header{"Forwarded": {strings.Repeat("for=198.51.100.1, ", 1000) + "for=192.0.2.60"}},
			seen{"192.0.2.60:0", "bridge.internal:8080", "http"}},

		// Malformed: ignored as a whole.
		{"bad address", http.Header{"X-Forwarded-For": {"203.0.113.300"}, "X-Forwarded-Proto": {"https"}}, unchanged},
		{"hostname for address", http.Header{"X-Forwarded-For": {"client.example"}}, unchanged},
		{"zone", http.Header{"X-Forwarded-For": {"fe80::1%eth0"}}, unchanged},
		{"bad port", http.Header{"X-Forwarded-For": {"203.0.113.7:99999"}}, unchanged},
		{"bad proto", http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"ftp"}}, unchanged},
		{"host with a path", http.Header{"X-Forwarded-Host": {"evil.example/x"}}, unchanged},
		{"host with userinfo", http.Header{"X-Forwarded-Host": {"user@evil.example"}}, unchanged},
		{"host with a space", http.Header{"X-Forwarded-Host": {"a b"}}, unchanged},
		{"host with a bad port", http.Header{"X-Forwarded-Host": {"pub.example:0"}}, unchanged},
		{"host with a bare IPv6", http.Header{"X-Forwarded-Host": {"2001:db8::1"}}, unchanged},
		{"too many trusted hops", http.Header{"X-Forwarded-For": {chain}}, unchanged},
		{"Forwarded too many trusted hops", http.Header{"Forwarded": {strings.Repeat("for=10.0.0.9, ", 1000) + "for=10.0.0.9"}}, unchanged},
		{"Forwarded unterminated quote", http.Header{"Forwarded": {`for="192.0.2.60`}}, unchanged},
		{"Forwarded not name=value", http.Header{"Forwarded": {`192.0.2.60`}}, unchanged},
		{"Forwarded parameter twice", http.Header{"Forwarded": {`for=192.0.2.60;for=203.0.113.7`}}, unchanged},
		{"Forwarded bad host", http.Header{"Forwarded": {`for=192.0.2.60;host="evil.example/x"`}}, unchanged},
		{"Forwarded bad token", http.Header{"Forwarded": {`for=192.0.2.60;proto=ht tp`}}, unchanged},
		// A proxy that sets X-Forwarded-For passes the client's own Forwarded
		// on, and the other way round: which is the proxy's is unknown.
		{"client's Forwarded through an X-Forwarded proxy", http.Header{"Forwarded": {`for=198.51.100.99;host=evil.example`},
			"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}}, unchanged},
		{"client's X-Forwarded-For through a Forwarded proxy", http.Header{"Forwarded": {`for=203.0.113.7;proto=https`},
			"X-Forwarded-For": {"198.51.100.99"}}, unchanged},
		{"Forwarded with a malformed X-Forwarded-For", http.Header{"Forwarded": {`for=203.0.113.7`}, "X-Forwarded-For": {"nonsense"}}, unchanged},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			f := New(echo, trusted, testLogger(&logs))
			got := serve(f, proxy, false, tt.hdr)
			if got != tt.want {
				t.Errorf("handler saw %s, want %s", got, tt.want)
			}
			if ignored := tt.want == unchanged; ignored != strings.Contains(logs.String(), "ignored") {
				t.Errorf("log %q (headers ignored: %v)", logs.String(), ignored)
			}
		})
	}
}

// TestUntrustedPeer: from an address that is not a trusted proxy, every
// forwarding header is ignored, silently (anyone can send them).
func TestUntrustedPeer(t *testing.T) {
	var logs bytes.Buffer
	f := New(echo, trusted, testLogger(&logs))
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"pub.example"},
		"Forwarded": {"for=192.0.2.60;proto=https;host=pub.example"}}
	for _, peer := range []string{"192.0.2.9:1234", "[2001:db8:2::1]:1234", "11.0.0.1:1", "not an address"} {
		want := seen{peer, "bridge.internal:8080", "http"}
		if got := serve(f, peer, false, hdr); got != want {
			t.Errorf("from %s: handler saw %s, want %s", peer, got, want)
		}
	}
	// Trusted: an IPv6 proxy in 2001:db8:1::/48, an IPv4-mapped one.
	for _, peer := range []string{"[2001:db8:1:2::5]:443", "[::ffff:10.1.2.3]:443"} {
		if got := serve(f, peer, false, http.Header{"Forwarded": {"for=192.0.2.60"}}); got.addr != "192.0.2.60:0" {
			t.Errorf("from trusted %s: handler saw %s", peer, got)
		}
	}
	if logs.Len() != 0 {
		t.Errorf("logged %q", logs.String())
	}
}

// TestScheme: a direct TLS request is https without any header; a trusted
// proxy's proto overrides it either way.
func TestScheme(t *testing.T) {
	f := New(echo, trusted, slog.New(slog.DiscardHandler))
	tests := []struct {
		peer string
		tls  bool
		hdr  http.Header
		want string
	}{
		{"192.0.2.9:1", true, nil, "https"},
		{"192.0.2.9:1", false, nil, "http"},
		{"192.0.2.9:1", true, http.Header{"X-Forwarded-Proto": {"http"}}, "https"},
		{"192.0.2.9:1", false, http.Header{"X-Forwarded-Proto": {"https"}}, "http"},
		{proxy, true, http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "https"},
		{proxy, true, http.Header{"X-Forwarded-Proto": {"http"}}, "http"},
		{proxy, false, http.Header{"Forwarded": {"proto=https"}}, "https"},
	}
	for _, tt := range tests {
		if got := serve(f, tt.peer, tt.tls, tt.hdr); got.scheme != tt.want {
			t.Errorf("from %s, TLS %v, %v: scheme %s, want %s", tt.peer, tt.tls, tt.hdr, got.scheme, tt.want)
		}
	}
	if s := Scheme(httptest.NewRequest(http.MethodGet, "https://x/", nil)); s != "https" {
		t.Errorf("a TLS request that did not go through Front: %s", s)
	}
}

// TestSetTrusted: a reload that drops a proxy applies to the next request.
func TestSetTrusted(t *testing.T) {
	f := New(echo, trusted, slog.New(slog.DiscardHandler))
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}}
	if got := serve(f, proxy, false, hdr); got.addr != "203.0.113.7:0" {
		t.Fatalf("trusted: %s", got)
	}
	f.SetTrusted(nil)
	if got := serve(f, proxy, false, hdr); got.addr != proxy {
		t.Errorf("after SetTrusted(nil): %s, want the proxy's own address", got)
	}
	f.SetTrusted(prefixes("::ffff:10.0.0.0/104"))
	if got := serve(f, proxy, false, hdr); got.addr != "203.0.113.7:0" {
		t.Errorf("trusted as an IPv4-mapped prefix: %s", got)
	}
}

// TestMalformedLoggedOncePerPeer: a proxy that keeps sending a bad header
// costs one log line per interval, naming it, and the next line counts
// what was held back.
func TestMalformedLoggedOncePerPeer(t *testing.T) {
	var logs bytes.Buffer
	f := New(echo, trusted, testLogger(&logs))
	bad := http.Header{"X-Forwarded-For": {"203.0.113.300"}}
	for range 50 {
		serve(f, proxy, false, bad)
	}
	serve(f, "10.0.0.2:1", false, bad)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines for 50 bad requests from one proxy and 1 from another, want 2:\n%s", len(lines), logs.String())
	}
	for i, peer := range []string{proxy, "10.0.0.2:1"} {
		if !strings.Contains(lines[i], "level=WARN") || !strings.Contains(lines[i], "peer="+peer) ||
			!strings.Contains(lines[i], `X-Forwarded-For: \"203.0.113.300\" is not an IP address`) {
			t.Errorf("line %d: %s", i, lines[i])
		}
	}
}

// clientFrom returns an HTTP client whose connections leave from ip
// (every 127.0.0.0/8 address is loopback on Linux).
func clientFrom(ip string) *http.Client {
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: d.DialContext}}
}

func get(t *testing.T, c *http.Client, url string, hdr http.Header) seen {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header = hdr
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	parts := strings.SplitN(string(body), "\n", 3)
	if len(parts) != 3 {
		t.Fatalf("answer %q", body)
	}
	return seen{addr: parts[0], host: parts[1], scheme: parts[2]}
}

// TestOverTheWire: a real server behind Front, asked from a trusted
// address (127.0.0.1) and from an untrusted one (127.0.0.2), over HTTP and
// over TLS.
func TestOverTheWire(t *testing.T) {
	var logs bytes.Buffer
	f := New(echo, prefixes("127.0.0.1/32"), testLogger(&logs))
	hdr := http.Header{"X-Forwarded-For": {"203.0.113.7"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"pub.example"}}

	srv := httptest.NewServer(f)
	defer srv.Close()
	if got, want := get(t, clientFrom("127.0.0.1"), srv.URL, hdr), (seen{"203.0.113.7:0", "pub.example", "https"}); got != want {
		t.Errorf("trusted peer: handler saw %s, want %s", got, want)
	}
	got := get(t, clientFrom("127.0.0.2"), srv.URL, hdr)
	if !strings.HasPrefix(got.addr, "127.0.0.2:") || got.host != strings.TrimPrefix(srv.URL, "http://") || got.scheme != "http" {
		t.Errorf("untrusted peer: handler saw %s, want its own address, host and http", got)
	}

	tsrv := httptest.NewTLSServer(f)
	defer tsrv.Close()
	c := tsrv.Client()
	if got := get(t, c, tsrv.URL, nil); got.scheme != "https" || got.host != strings.TrimPrefix(tsrv.URL, "https://") {
		t.Errorf("direct TLS: handler saw %s, want https to its own host", got)
	}
	if got := get(t, c, tsrv.URL, http.Header{"X-Forwarded-Proto": {"http"}}); got.scheme != "http" {
		t.Errorf("TLS from a proxy that says http: handler saw %s", got)
	}
	if logs.Len() != 0 {
		t.Errorf("logged %q", logs.String())
	}
}

// BenchmarkFront: what Front adds to a request: none of its headers (every
// direct client), an untrusted peer with them, and a trusted proxy's
// X-Forwarded-* and Forwarded.
func BenchmarkFront(b *testing.B) {
	nop := http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})
	f := New(nop, trusted, slog.New(slog.DiscardHandler))
	xff := http.Header{"X-Forwarded-For": {"198.51.100.1, 203.0.113.7, 10.0.0.2"}, "X-Forwarded-Proto": {"https"}, "X-Forwarded-Host": {"pub.example"}}
	fwd := http.Header{"Forwarded": {`for=192.0.2.60;proto=https;host="pub.example:8443", for=10.0.0.2`}}
	for _, bc := range []struct {
		name string
		peer string
		hdr  http.Header
	}{
		{"direct", "192.0.2.9:1", http.Header{}},
		{"untrusted", "192.0.2.9:1", xff},
		{"X-Forwarded", proxy, xff},
		{"Forwarded", proxy, fwd},
	} {
		b.Run(bc.name, func(b *testing.B) {
			r := httptest.NewRequest(http.MethodGet, "/whep/live/x", nil)
			r.RemoteAddr, r.Header = bc.peer, bc.hdr
			b.ReportAllocs()
			for b.Loop() {
				f.ServeHTTP(nil, r)
			}
		})
	}
}
