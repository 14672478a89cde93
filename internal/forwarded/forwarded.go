// Package forwarded gives the HTTP front its view of the client. A request
// that comes straight from the client is taken as it is; one whose direct
// peer is a trusted reverse proxy carries the client's address, scheme and
// host in Forwarded (RFC 7239) or X-Forwarded-For/-Proto/-Host, and Front
// puts them where every handler already looks: r.RemoteAddr (limits, logs,
// access checks), r.Host and Scheme(r) (Location headers, page links).
//
// From any other peer those headers are ignored: anyone can send them, and
// believing them would let a client pick the address its limits are
// counted against.
package forwarded

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/wishbridge/bridge/internal/addrlimit"
	"github.com/wishbridge/bridge/internal/ratelog"
)

// maxHops bounds how many proxies of a chain are walked (and how many
// elements of one Forwarded line are kept while scanning it). Real chains
// are a CDN, a load balancer and an ingress, rarely more than 4; 16 leaves
// room for any of them, while a header listing thousands of hops costs one
// linear scan of at most the server's MaxHeaderBytes, never an allocation
// per hop.
const maxHops = 16

// Schemes the client may have used.
const (
	HTTP  = "http"
	HTTPS = "https"
)

// Front is the middleware that applies trusted proxies' headers. Create
// it with New. Its trusted set can be swapped at any time (config
// reload); a request sees either the old set or the new one. Safe for
// concurrent use.
type Front struct {
	next    http.Handler
	log     *slog.Logger
	trusted atomic.Pointer[[]netip.Prefix] // never nil after New
	// malformed lets one line per proxy address per interval through: a
	// misconfigured proxy sends the same bad header with every request.
	malformed ratelog.Limiter
}

// New returns a Front that serves next, trusting the proxies in trusted
// (none: every forwarding header is ignored).
func New(next http.Handler, trusted []netip.Prefix, log *slog.Logger) *Front {
	f := &Front{next: next, log: log}
	f.SetTrusted(trusted)
	return f
}

// SetTrusted replaces the trusted proxies; requests already being served
// keep what they were given.
func (f *Front) SetTrusted(trusted []netip.Prefix) {
	p := make([]netip.Prefix, 0, len(trusted))
	for _, t := range trusted {
		p = append(p, unmapPrefix(t))
	}
	f.trusted.Store(&p)
}

// unmapPrefix turns an IPv4-mapped IPv6 prefix (::ffff:10.0.0.0/104) into
// the IPv4 one it means, since addresses are compared unmapped.
func unmapPrefix(p netip.Prefix) netip.Prefix {
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		return netip.PrefixFrom(a.Unmap(), p.Bits()-96).Masked()
	}
	return p.Masked()
}

type schemeKey struct{}

// Scheme returns the scheme the client used for r: what a trusted proxy
// said, or else "https" for a request that came over TLS and "http"
// otherwise.
func Scheme(r *http.Request) string {
	if s, ok := r.Context().Value(schemeKey{}).(string); ok {
		return s
	}
	if r.TLS != nil {
		return HTTPS
	}
	return HTTP
}

// ServeHTTP applies the forwarding headers of a trusted peer to a copy of
// r and serves next with it: r.RemoteAddr becomes the client's address
// ("ip:port", port 0 when the proxy did not give one), r.Host the host it
// asked for, Scheme the scheme it used. A request with malformed headers
// is served as if it had none (the proxy's own address, host and scheme),
// and one line per proxy and interval says why.
func (f *Front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !hasForwarding(r.Header) {
		f.next.ServeHTTP(w, r)
		return
	}
	peer := addrlimit.AddrOf(r.RemoteAddr)
	trusted := *f.trusted.Load()
	if !peer.IsValid() || !isTrusted(trusted, peer) {
		f.next.ServeHTTP(w, r)
		return
	}
	c, err := resolve(r.Header, trusted)
	if err != nil {
		if ok, n := f.malformed.Allow(peer.String()); ok {
			f.log.Warn("forwarding headers from a trusted proxy ignored: "+err.Error(), "peer", r.RemoteAddr, "suppressed", n)
		}
		f.next.ServeHTTP(w, r)
		return
	}
	ctx := r.Context()
	if c.scheme != "" {
		ctx = context.WithValue(ctx, schemeKey{}, c.scheme)
	}
	r2 := r.WithContext(ctx)
	if c.addr.IsValid() {
		r2.RemoteAddr = c.addr.String()
	}
	if c.host != "" {
		r2.Host = c.host
	}
	f.next.ServeHTTP(w, r2)
}

var forwardingHeaders = []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host"}

func hasForwarding(h http.Header) bool {
	return slices.ContainsFunc(forwardingHeaders, func(k string) bool { return len(h[k]) > 0 })
}

func isTrusted(trusted []netip.Prefix, a netip.Addr) bool {
	return slices.ContainsFunc(trusted, func(p netip.Prefix) bool { return p.Contains(a) })
}

// client is what the headers say about the client; an invalid addr or an
// empty scheme or host means the proxy did not say (the request's own
// stands).
type client struct {
	addr   netip.AddrPort
	scheme string
	host   string
}

// resolve reads the client from the headers of a request whose direct
// peer is a trusted proxy: Forwarded or X-Forwarded-*. The chain is
// walked from the right (the hop nearest to the bridge) past every
// trusted address: the first address that is not a trusted proxy is the
// client, and anything left of it was written by the client itself and is
// not read at all.
//
// A proxy writes one of the two kinds and passes the other on as the
// client sent it. So when both Forwarded and X-Forwarded-For are present
// they must name the same client, or one of them is the client's own
// claim: which one cannot be told, and both are refused.
func resolve(h http.Header, trusted []netip.Prefix) (client, error) {
	fwd, xff := h["Forwarded"], h["X-Forwarded-For"]
	if len(fwd) == 0 {
		return resolveXForwarded(h, trusted)
	}
	c, err := resolveForwarded(fwd, trusted)
	if err != nil || len(xff) == 0 {
		return c, err
	}
	x, err := resolveXForwarded(h, trusted)
	if err != nil {
		return client{}, err
	}
	if x.addr.Addr() != c.addr.Addr() {
		return client{}, fmt.Errorf("Forwarded and X-Forwarded-For name different clients (%v, %v): one of them is the client's own; have the proxy set one and remove the other", c.addr, x.addr)
	}
	return c, nil
}

// errTooManyHops refuses a chain of more than maxHops trusted proxies.
var errTooManyHops = fmt.Errorf("more than %d trusted proxies in the chain", maxHops)

func resolveForwarded(lines []string, trusted []netip.Prefix) (client, error) {
	var c client
	hops := 0
	for i := len(lines) - 1; i >= 0; i-- {
		elems, truncated, err := lastElements(lines[i])
		if err != nil {
			return client{}, fmt.Errorf("Forwarded: %w", err)
		}
		for _, el := range elems {
			if hops++; hops > maxHops {
				return client{}, fmt.Errorf("Forwarded: %w", errTooManyHops)
			}
			e, err := parseElement(el)
			if err != nil {
				return client{}, fmt.Errorf("Forwarded: %q: %w", el, err)
			}
			c.scheme, c.host = e.proto, e.host
			if !e.addr.IsValid() {
				// "unknown", obfuscated or left out: the client is behind
				// this hop, and its address is the last one known.
				return c, nil
			}
			c.addr = e.addr
			if !isTrusted(trusted, e.addr.Addr()) {
				return c, nil
			}
		}
		if truncated { // more hops left of maxHops trusted ones
			return client{}, fmt.Errorf("Forwarded: %w", errTooManyHops)
		}
	}
	// Every hop is a trusted proxy: the farthest one is the client.
	return c, nil
}

func resolveXForwarded(h http.Header, trusted []netip.Prefix) (client, error) {
	var c client
	// skipped counts the trusted hops right of the client: each proxy
	// that appends to X-Forwarded-For and X-Forwarded-Proto/-Host appends
	// to all of them, so the client's entries are as far from the right.
	skipped := 0
	if lines := h["X-Forwarded-For"]; len(lines) > 0 {
		var err error
		if skipped, err = walkFor(lines, &c, trusted); err != nil {
			return client{}, fmt.Errorf("X-Forwarded-For: %w", err)
		}
	}
	if v, ok := entryFromRight(h["X-Forwarded-Proto"], skipped); ok {
		s, err := parseProto(v)
		if err != nil {
			return client{}, fmt.Errorf("X-Forwarded-Proto: %w", err)
		}
		c.scheme = s
	}
	if v, ok := entryFromRight(h["X-Forwarded-Host"], skipped); ok {
		if !validHost(v) {
			return client{}, fmt.Errorf("X-Forwarded-Host: %q is not a host[:port]", v)
		}
		c.host = v
	}
	return c, nil
}

// walkFor walks the X-Forwarded-For entries from the right, setting c.addr
// to each until one is not trusted, and returns how many trusted ones it
// passed.
func walkFor(lines []string, c *client, trusted []netip.Prefix) (skipped int, err error) {
	hops := 0
	for v := range entriesFromRight(lines) {
		if hops++; hops > maxHops {
			return 0, errTooManyHops
		}
		if strings.EqualFold(v, "unknown") {
			return hops - 1, nil
		}
		a, err := parseNode(v)
		if err != nil {
			return 0, err
		}
		c.addr = a
		if !isTrusted(trusted, a.Addr()) {
			return hops - 1, nil
		}
	}
	return max(hops-1, 0), nil
}

// entryFromRight returns the entry k places from the right of the
// comma-separated entries of lines or, when there are fewer, the leftmost
// (a proxy that sets the header instead of appending to it writes one).
func entryFromRight(lines []string, k int) (last string, found bool) {
	n := 0
	for v := range entriesFromRight(lines) {
		last, found = v, true
		if n == k {
			break
		}
		n++
	}
	return last, found
}

// entriesFromRight yields the non-empty comma-separated entries of the
// header lines, trimmed, from the last one back, without splitting more
// than the caller reads.
func entriesFromRight(lines []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := len(lines) - 1; i >= 0; i-- {
			rest := lines[i]
			for more := true; more; {
				v := rest
				if j := strings.LastIndexByte(rest, ','); j >= 0 {
					v, rest = rest[j+1:], rest[:j]
				} else {
					more = false
				}
				if v = strings.TrimSpace(v); v != "" && !yield(v) {
					return
				}
			}
		}
	}
}

// element is one forwarded-element of RFC 7239: what one proxy saw.
type element struct {
	addr  netip.AddrPort // for=; invalid when unknown, obfuscated or absent
	proto string         // proto=, "" when absent
	host  string         // host=, "" when absent
}

// lastElements splits a Forwarded field value at the commas that are not
// inside quoted strings and returns its non-empty elements from the right,
// at most maxHops of them, and whether there are more. The whole line is
// scanned, since quotes decide where elements end, but only the bounds of
// the last elements are kept.
func lastElements(line string) (elems []string, truncated bool, err error) {
	const keep = maxHops
	var ends [keep]int // ring of the positions of the last commas
	commas := 0
	balanced := scanUnquoted(line, ',', func(i int) bool {
		ends[commas%keep] = i
		commas++
		return true
	})
	if !balanced {
		return nil, false, errors.New("unterminated quoted string")
	}
	end := len(line)
	for k := 0; k < keep && k <= commas; k++ {
		start := 0
		if k < commas {
			start = ends[(commas-1-k)%keep] + 1
		}
		if el := strings.TrimSpace(line[start:end]); el != "" {
			elems = append(elems, el)
		}
		end = start - 1
	}
	return elems, commas >= keep && strings.Trim(line[:end], " \t,") != "", nil
}

// parseElement parses "name=value;name=value" (RFC 7239 section 4); a
// value is a token or a quoted string. Parameters other than for, proto
// and host (by, extensions) are skipped; a repeated one is an error.
func parseElement(el string) (element, error) {
	var e element
	seen := map[string]bool{}
	for rest := el; rest != ""; {
		pair := rest
		rest = ""
		if j := unquotedIndex(pair, ';'); j >= 0 {
			pair, rest = pair[:j], pair[j+1:]
		}
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		name, raw, ok := strings.Cut(pair, "=")
		name = strings.ToLower(name)
		if !ok || !isToken(name) {
			return element{}, fmt.Errorf("%q is not name=value", pair)
		}
		if seen[name] {
			return element{}, fmt.Errorf("%s given twice", name)
		}
		seen[name] = true
		v, err := unquote(raw)
		if err != nil {
			return element{}, fmt.Errorf("%s: %w", name, err)
		}
		switch name {
		case "for":
			if v == "unknown" || strings.HasPrefix(v, "_") { // RFC 7239 section 6.2, 6.3
				continue
			}
			if e.addr, err = parseNode(v); err != nil {
				return element{}, fmt.Errorf("for: %w", err)
			}
		case "proto":
			if e.proto, err = parseProto(v); err != nil {
				return element{}, err
			}
		case "host":
			if !validHost(v) {
				return element{}, fmt.Errorf("host: %q is not a host[:port]", v)
			}
			e.host = v
		}
	}
	return e, nil
}

// unquotedIndex is strings.IndexByte of c outside quoted strings.
func unquotedIndex(s string, c byte) int {
	at := -1
	scanUnquoted(s, c, func(i int) bool { at = i; return false })
	return at
}

// scanUnquoted calls found with the index of each c in s that is not
// inside a quoted string (RFC 9110 section 5.6.4, backslash escapes
// included) until found returns false. It reports whether every quoted
// string it passed was closed.
func scanUnquoted(s string, c byte, found func(i int) bool) (balanced bool) {
	quoted, escaped := false, false
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case escaped:
			escaped = false
		case quoted && ch == '\\':
			escaped = true
		case ch == '"':
			quoted = !quoted
		case !quoted && ch == c:
			if !found(i) {
				return true
			}
		}
	}
	return !quoted
}

// unquote returns a token as it is and the content of a quoted string
// (RFC 9110 section 5.6.4) with its escapes undone.
func unquote(v string) (string, error) {
	if !strings.HasPrefix(v, `"`) {
		if !isToken(v) {
			return "", fmt.Errorf("%q is neither a token nor a quoted string", v)
		}
		return v, nil
	}
	if len(v) < 2 || !strings.HasSuffix(v, `"`) {
		return "", fmt.Errorf("%s: unterminated quoted string", v)
	}
	var b strings.Builder
	for i := 1; i < len(v)-1; i++ {
		ch := v[i]
		if ch == '\\' {
			if i++; i == len(v)-1 {
				return "", fmt.Errorf("%s: escape at the end", v)
			}
			ch = v[i]
		} else if ch == '"' {
			return "", fmt.Errorf("%s: quote inside a quoted string", v)
		}
		if ch < 0x20 && ch != '\t' || ch == 0x7f {
			return "", fmt.Errorf("%q: control character", v)
		}
		b.WriteByte(ch)
	}
	return b.String(), nil
}

// isToken reports whether s is an RFC 9110 token.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", ch) >= 0) {
			return false
		}
	}
	return true
}

// parseNode parses a hop's address: "192.0.2.1", "192.0.2.1:4711",
// "[2001:db8::1]", "[2001:db8::1]:4711" or a bare IPv6 address (what
// X-Forwarded-For carries). An obfuscated port ("_abc", RFC 7239 section
// 6.3) counts as none.
func parseNode(v string) (netip.AddrPort, error) {
	if a, err := netip.ParseAddr(v); err == nil && a.Zone() == "" {
		return netip.AddrPortFrom(a.Unmap(), 0), nil
	}
	host, port := v, ""
	if strings.HasPrefix(v, "[") {
		end := strings.IndexByte(v, ']')
		if end < 0 {
			return netip.AddrPort{}, fmt.Errorf("%q: unterminated [", v)
		}
		host, port = v[1:end], v[end+1:]
		if port != "" && port[0] != ':' {
			return netip.AddrPort{}, fmt.Errorf("%q is not an address", v)
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(v, ':'); i >= 0 && strings.Count(v, ":") == 1 {
		host, port = v[:i], v[i+1:]
	}
	a, err := netip.ParseAddr(host)
	if err != nil || a.Zone() != "" {
		return netip.AddrPort{}, fmt.Errorf("%q is not an IP address", v)
	}
	var p uint16
	if !strings.HasPrefix(port, "_") && port != "" {
		n, ok := parsePort(port)
		if !ok {
			return netip.AddrPort{}, fmt.Errorf("%q: bad port", v)
		}
		p = n
	}
	return netip.AddrPortFrom(a.Unmap(), p), nil
}

// parsePort parses a decimal port 1-65535.
func parsePort(s string) (uint16, bool) {
	if s == "" || len(s) > 5 {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 1 || n > 65535 {
		return 0, false
	}
	return uint16(n), true
}

// parseProto accepts the two schemes the bridge serves.
func parseProto(v string) (string, error) {
	switch strings.ToLower(v) {
	case HTTP:
		return HTTP, nil
	case HTTPS:
		return HTTPS, nil
	}
	return "", fmt.Errorf("proto %q is neither http nor https", v)
}

// maxHostLen is a DNS name's longest (253) plus ":65535".
const maxHostLen = 253 + 6

// validHost accepts what may stand in a Host header and be pasted into a
// URL unescaped: a DNS name or IPv4 address, or a bracketed IPv6 address,
// each with an optional port. Anything else (a path, a userinfo, spaces,
// control characters) could change the meaning of the URLs built from it.
func validHost(h string) bool {
	if h == "" || len(h) > maxHostLen {
		return false
	}
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		if a, err := netip.ParseAddr(h[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		rest := h[end+1:]
		if rest == "" {
			return true
		}
		_, ok := parsePort(strings.TrimPrefix(rest, ":"))
		return rest[0] == ':' && ok
	}
	name := h
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		if _, ok := parsePort(h[i+1:]); !ok {
			return false
		}
		name = h[:i]
	}
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		ch := name[i]
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '.' || ch == '_') {
			return false
		}
	}
	return true
}
