package config

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/rawurl"
)

// Validate reports every problem in c, joined with errors.Join; each one is
// an *Error naming the key path. It only reads c: it fills no defaults,
// resolves no names and opens no sockets, so it is cheap and safe to call on
// a candidate configuration before swapping it in. Secrets (credentials, keys,
// tokens) never appear in its messages.
//
// Unset optional values are valid and mean their defaults: a nil
// Route.Ingest allows every protocol, a nil WHEP.Enabled means enabled, zero
// Audio bitrates, a nil Grace, an empty BFrames and an empty Forward.Audio
// mean the defaults Parse would fill in (see the Route accessors).
//
// URLs are checked offline (scheme, host, port, the parts each protocol
// needs) and printed redacted (rawurl.Redact) in messages.
func (c *Config) Validate() error {
	var v validator
	return v.config(c)
}

type validator struct {
	// set holds the key paths written with a value in the file being
	// parsed; nil for a Config built in Go. A zero value that means "not
	// set" in Go is an error when it was written out.
	set  map[string]bool
	errs []error
}

func (v *validator) config(c *Config) error {
	v.listen(&c.Listen, c.TLS.Enabled())
	v.webrtc(&c.WebRTC)
	v.metrics(&c.Metrics)
	v.limits(&c.Limits)
	v.routes(c.Routes)
	v.tls(c)
	v.httpFront(&c.HTTP)
	v.api(c)
	v.logShutdown(c)
	v.cluster(c)
	return errors.Join(v.errs...)
}

func (v *validator) addf(path, format string, args ...any) {
	v.errs = append(v.errs, &Error{Path: path, Msg: fmt.Sprintf(format, args...)})
}

// listen checks the listen addresses. "" turns a listener off (a key
// left out or written with no value keeps its default instead), except
// webrtc_udp, which every WHIP/WHEP session needs. listen.https counts
// only when TLS is configured (its default is there either way) and
// listen.rtmps only when set (validate_tls.go says what each needs).
func (v *validator) listen(l *Listen, tlsOn bool) {
	type bound struct {
		path, addr, network, host string
		port                      uint16
	}
	if l.WebRTCUDP == "" {
		v.addf("listen.webrtc_udp", `"" cannot turn it off: every WHIP/WHEP session's ICE goes through it (expected host:port)`)
	}
	var ok []bound
	listeners := []bound{
		{path: "listen.http", addr: l.HTTP, network: "TCP"},
		{path: "listen.rtmp", addr: l.RTMP, network: "TCP"},
		{path: "listen.srt", addr: l.SRT, network: "UDP"},
		{path: "listen.webrtc_udp", addr: l.WebRTCUDP, network: "UDP"},
		{path: "listen.webrtc_tcp", addr: l.WebRTCTCP, network: "TCP"},
		{path: "listen.rtmps", addr: l.RTMPS, network: "TCP"},
	}
	if tlsOn {
		listeners = append(listeners, bound{path: "listen.https", addr: l.HTTPS, network: "TCP"})
	}
	for _, a := range listeners {
		if a.addr == "" { // off
			continue
		}
		host, port, good := splitListen(a.addr)
		if !good {
			v.addf(a.path, "%q is not a valid listen address (expected host:port with port 1-65535)", a.addr)
			continue
		}
		a.host, a.port = host, port
		for _, b := range ok {
			// A wildcard host binds every address, so it collides with any
			// other host on the same port and network.
			if a.network == b.network && a.port == b.port && (a.host == b.host || isWildcard(a.host) || isWildcard(b.host)) {
				v.addf(a.path, "%q collides with %s %q (both listen on %s port %d; expected distinct ports)", a.addr, b.path, b.addr, a.network, a.port)
			}
		}
		ok = append(ok, a)
	}
}

// splitListen splits "host:port", where host is empty, an IP or a hostname
// and port a number 1-65535 (no service names: the port is part of the
// public contract with encoders and firewalls, so it should be explicit).
func splitListen(addr string) (host string, port uint16, ok bool) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, false
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 {
		return "", 0, false
	}
	if host != "" && !isIP(host) && !isHostname(host) {
		return "", 0, false
	}
	return host, uint16(n), true
}

func isWildcard(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "" || (err == nil && ip.IsUnspecified())
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// isHostname accepts RFC 1123 names. A last label made only of digits is
// rejected so that a mistyped IP ("203.0.113.300") is not taken for a name.
func isHostname(s string) bool {
	s = strings.TrimSuffix(s, ".")
	if s == "" || len(s) > 253 {
		return false
	}
	labels := strings.Split(s, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range []byte(l) {
			if !(c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
				return false
			}
		}
	}
	last := labels[len(labels)-1]
	return strings.Trim(last, "0123456789") != ""
}

func (v *validator) webrtc(w *WebRTC) {
	for i, s := range w.ICEServers {
		v.iceServer(fmt.Sprintf("webrtc.ice_servers[%d]", i), &s)
	}
	seen := map[string]bool{}
	for i, a := range w.NAT1To1 {
		path := fmt.Sprintf("webrtc.nat_1to1[%d]", i)
		ip, err := netip.ParseAddr(a)
		switch {
		case a == "":
			v.addf(path, "empty (expected a public IP address or hostname)")
		case err == nil && (ip.IsUnspecified() || ip.IsMulticast()):
			v.addf(path, "%q is not an address peers can reach (expected a public IP address or hostname)", a)
		case err != nil && !isHostname(a):
			v.addf(path, "%q is neither an IP address nor a hostname (expected a public IP address or hostname)", a)
		case seen[a]:
			v.addf(path, "%q is listed twice", a)
		}
		seen[a] = true
	}
	seen = map[string]bool{}
	for i, name := range w.Interfaces {
		path := fmt.Sprintf("webrtc.interfaces[%d]", i)
		switch {
		case name == "":
			v.addf(path, `empty (expected a network interface name such as "eth0")`)
		case seen[name]:
			v.addf(path, "%q is listed twice", name)
		}
		seen[name] = true
	}
}

func (v *validator) iceServer(path string, s *ICEServer) {
	if len(s.URLs) == 0 {
		v.addf(path+".urls", "no URLs (expected at least one stun:, stuns:, turn: or turns: URL)")
	}
	turn := ""
	for i, u := range s.URLs {
		isTURN, err := checkICEURL(u)
		if err != nil {
			v.addf(fmt.Sprintf("%s.urls[%d]", path, i), "%q %v", u, err)
		}
		if isTURN && turn == "" {
			turn = u
		}
	}
	if s.Secret != "" || v.set[path+".secret"] || s.TTL != 0 || v.set[path+".ttl"] {
		switch {
		case s.Secret == "":
			v.addf(path+".ttl", "set without secret (expected ttl only with secret, the TURN server's static-auth-secret)")
		case turn == "":
			v.addf(path+".secret", "set, but no URL is a turn: or turns: URL (expected secret only for TURN servers)")
		case s.Username != "" || s.Credential != "":
			v.addf(path+".secret", "set together with username/credential (expected either secret, from which per-session credentials are derived, or static username and credential)")
		}
		if s.TTL < 0 || (v.set[path+".ttl"] && s.TTL < time.Minute) || s.TTL > 7*24*time.Hour {
			v.addf(path+".ttl", "%s is out of range (expected 1m-168h)", s.TTL)
		}
		return
	}
	if turn == "" {
		return
	}
	if s.Username == "" {
		v.addf(path+".username", "empty, but %q is a TURN URL (expected the TURN username, or secret)", turn)
	}
	if s.Credential == "" {
		v.addf(path+".credential", "empty, but %q is a TURN URL (expected the TURN password, or secret)", turn)
	}
}

// limitRange is the valid range of one limits key. Upper bounds catch
// typos (an extra zero), not policy: each is far above what one process
// can serve.
type limitRange struct {
	key    string
	value  int
	lo, hi int
	unit   string
}

func (v *validator) limits(l *Limits) {
	for _, r := range []limitRange{
		{"webrtc_sessions", l.WebRTCSessions, 1, 1_000_000, "sessions"},
		{"webrtc_sessions_per_address", l.WebRTCSessionsPerAddress, 1, 1_000_000, "sessions"},
		{"webrtc_pending", l.WebRTCPending, 1, 1_000_000, "sessions"},
		{"webrtc_pending_per_address", l.WebRTCPendingPerAddress, 1, 1_000_000, "sessions"},
		{"ice_candidates", l.ICECandidates, 1, 1000, "candidates"},
		{"patch_rate", l.PatchRate, 1, 1000, "requests per second"},
		{"ice_check_rate", l.ICECheckRate, 1, 100_000, "packets per second"},
		{"readers_per_stream", l.ReadersPerStream, 1, 1_000_000, "readers"},
		{"rtmp_connections", l.RTMPConnections, 1, 1_000_000, "connections"},
		{"rtmp_connections_per_address", l.RTMPConnectionsPerAddress, 1, 1_000_000, "connections"},
		{"srt_connections", l.SRTConnections, 1, 1_000_000, "connections"},
		{"srt_connections_per_address", l.SRTConnectionsPerAddress, 1, 1_000_000, "connections"},
		{"ingest_bitrate", l.IngestBitrate, 100_000, 10_000_000_000, "bit/s"},
		{"retransmit_percent", l.RetransmitPercent, 1, 100, "%"},
		{"video_reencoders", l.VideoReencoders, 1, 1000, "re-encoders"},
	} {
		path := "limits." + r.key
		if (r.value != 0 || v.set[path]) && (r.value < r.lo || r.value > r.hi) {
			v.addf(path, "%d is out of range (expected %d-%d %s)", r.value, r.lo, r.hi, r.unit)
		}
	}
	if t := l.WebRTCConnectTimeout; (t != 0 || v.set["limits.webrtc_connect_timeout"]) && (t < time.Second || t > time.Minute) {
		v.addf("limits.webrtc_connect_timeout", "%s is out of range (expected 1s-1m)", t)
	}
	if l.WebRTCPendingPerAddress > l.WebRTCSessionsPerAddress && l.WebRTCSessionsPerAddress != 0 {
		v.addf("limits.webrtc_pending_per_address", "%d is more than webrtc_sessions_per_address %d (pending sessions count toward both)", l.WebRTCPendingPerAddress, l.WebRTCSessionsPerAddress)
	}
}

// checkICEURL checks a STUN or TURN URI (RFC 7064, RFC 7065):
// scheme ":" host [":" port], plus "?transport=udp|tcp" for TURN.
func checkICEURL(u string) (isTURN bool, err error) {
	scheme, rest, ok := strings.Cut(u, ":")
	switch scheme = strings.ToLower(scheme); {
	case !ok:
		return false, errors.New("is not an ICE server URL (expected stun:, stuns:, turn: or turns: followed by host[:port])")
	case scheme == "turn" || scheme == "turns":
		isTURN = true
	case scheme != "stun" && scheme != "stuns":
		return false, fmt.Errorf("has the scheme %q (expected stun:, stuns:, turn: or turns:)", scheme)
	}
	hostport, query, hasQuery := strings.Cut(rest, "?")
	if hasQuery && (!isTURN || (query != "transport=udp" && query != "transport=tcp")) {
		return isTURN, errors.New(`has an unexpected query (expected none, or "?transport=udp" or "?transport=tcp" on TURN URLs)`)
	}
	if strings.HasPrefix(hostport, "//") {
		return isTURN, fmt.Errorf(`has "//" after the scheme (expected e.g. "%s:host.example.com:3478")`, scheme)
	}
	host := hostport
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
			return isTURN, errors.New("has an invalid port (expected 1-65535)")
		}
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	if !isIP(host) && !isHostname(host) {
		return isTURN, fmt.Errorf("has no valid host (expected %s:host[:port])", scheme)
	}
	return isTURN, nil
}

func (v *validator) metrics(m *Metrics) {
	if (m.Path != "" || v.set["metrics.path"]) && !isURLPath(m.Path) {
		v.addf("metrics.path", `%q is not a URL path (expected "/" followed by segments of letters, digits and "-._~", such as "/metrics")`, m.Path)
	}
	v.token("metrics.token", m.Token)
}

// isURLPath accepts "/seg" and "/seg/seg...", each segment made of RFC 3986
// unreserved characters: nothing a ServeMux pattern would read as a
// wildcard, and nothing it would clean or redirect ("//", ".", "..", a
// trailing "/").
func isURLPath(p string) bool {
	rest, ok := strings.CutPrefix(p, "/")
	if !ok {
		return false
	}
	for _, seg := range strings.Split(rest, "/") {
		if seg == "" || seg == "." || seg == ".." || strings.Trim(seg, unreserved) != "" {
			return false
		}
	}
	return true
}

func (v *validator) routes(routes []Route) {
	if len(routes) == 0 {
		v.addf("routes", `no routes, so no stream could be published (expected at least one route, e.g. "- path: \"{path...}\"")`)
		return
	}
	patterns := make([]pattern, len(routes))
	for i := range routes {
		r := &routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		p, err := parsePattern(r.Path)
		if err != nil {
			v.addf(path+".path", "%v", err)
		} else {
			patterns[i] = p
			v.unreachable(routes, patterns, i)
		}
		v.ingest(path+".ingest", r.Ingest)
		v.key(path+".publish_key", r.PublishKey)
		v.readAccess(path, r)
		if n := len(r.Passphrase); n > 0 && (n < minPassphrase || n > maxPassphrase) {
			v.addf(path+".passphrase", `is not %d-%d characters long (SRT's limit; expected such a passphrase, or "" for no encryption)`, minPassphrase, maxPassphrase)
		}
		v.bitrate(path+".audio.opus_bitrate", r.Audio.OpusBitrate, minOpusBitrate, maxOpusBitrate)
		v.bitrate(path+".audio.aac_bitrate", r.Audio.AACBitrate, minAACBitrate, maxAACBitrate)
		if g := r.Grace; g != nil && (*g < 0 || *g > maxGrace) {
			v.addf(path+".grace", "%s is out of range (expected 0s-5m)", g)
		}
		if (r.BFrames != "" || v.set[path+".bframes"]) && !slices.Contains(bframesPolicies, r.BFrames) {
			v.addf(path+".bframes", "%q is not a B-frame policy (expected reencode, passthrough or reject)", r.BFrames)
		}
		v.pull(path, r, patterns[i])
		for j := range r.Forward {
			v.forward(fmt.Sprintf("%s.forward[%d]", path, j), r.Forward, j)
		}
	}
}

// readAccess checks read_key, its deprecated alias whep.token, the read
// list and max_readers.
func (v *validator) readAccess(path string, r *Route) {
	if r.WHEP.Token != "" && r.ReadKey != r.WHEP.Token {
		v.addf(path+".whep.token", "differs from read_key (whep.token is read_key's deprecated name, which every read protocol uses; expected only read_key)")
	}
	keyPath := path + ".read_key"
	if r.WHEP.Token != "" && !v.set[keyPath] && r.ReadKey == r.WHEP.Token {
		keyPath = path + ".whep.token" // the alias is what the file says
	}
	if r.ReadKey != "" && !r.AllowsRead(ReadRTMP) && !r.AllowsRead(ReadSRT) {
		// Read over WHEP only: the key travels as a bearer token, which
		// may hold "+/=" as whep.token always could.
		v.token(keyPath, r.ReadKey)
	} else {
		v.key(keyPath, r.ReadKey)
	}
	if r.Read != nil && len(r.Read) == 0 {
		v.addf(path+".read", "empty, so nothing could read here (expected some of whep, rtmp or srt, or no read key to allow all)")
	}
	for i, p := range r.Read {
		switch {
		case !slices.Contains(readProtocols, p):
			v.addf(fmt.Sprintf("%s.read[%d]", path, i), "%q is not a read protocol (expected whep, rtmp or srt)", p)
		case slices.Contains(r.Read[:i], p):
			v.addf(fmt.Sprintf("%s.read[%d]", path, i), "%q is listed twice", p)
		}
	}
	if (r.MaxReaders != 0 || v.set[path+".max_readers"]) && (r.MaxReaders < 1 || r.MaxReaders > 1_000_000) {
		v.addf(path+".max_readers", "%d is out of range (expected 1-1000000 readers)", r.MaxReaders)
	}
}

// key checks a publish or read key.
func (v *validator) key(path, key string) {
	if key != "" && strings.Trim(key, unreserved) != "" {
		v.addf(path, `contains characters other than letters, digits and "-._~" (expected a key that needs no escaping in RTMP URLs and SRT stream IDs)`)
	}
}

func (v *validator) token(path, token string) {
	if token != "" && !isBearerToken(token) {
		v.addf(path, `is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`)
	}
}

// bitrate checks a bit/s value; 0 means the default unless it was written.
func (v *validator) bitrate(path string, b, lo, hi int) {
	if (b != 0 || v.set[path]) && (b < lo || b > hi) {
		v.addf(path, "%d is out of range (expected %d-%d bit/s)", b, lo, hi)
	}
}

// pull checks a route's pull settings; p is its parsed path, nil if invalid.
func (v *validator) pull(path string, r *Route, p pattern) {
	if r.Pull == "" {
		if r.PullToken != "" {
			v.addf(path+".pull_token", "set without pull (expected pull_token only with a whep+http:// or whep+https:// pull)")
		}
		if r.OnDemand {
			v.addf(path+".on_demand", "true without pull (on_demand only applies to routes that pull)")
		}
		return
	}
	if err := checkURL(r.Pull, pullSchemes); err != nil {
		v.addf(path+".pull", "%q %v", urlInMessage(r.Pull, pullSchemes), err)
	}
	if p != nil && slices.ContainsFunc(p, func(s segment) bool { return s.kind != literal }) {
		v.addf(path+".pull", "set on %q, whose path has variables (expected an exact path such as \"live/cam1\": a route pulls one stream)", r.Path)
	}
	if r.PullToken != "" {
		u, _ := rawurl.Split(r.Pull)
		if scheme := strings.ToLower(u.Scheme); scheme != "whep+http" && scheme != "whep+https" {
			v.addf(path+".pull_token", "set, but pull is not a whep+http:// or whep+https:// URL (expected pull_token only with WHEP pulls)")
		}
		v.token(path+".pull_token", r.PullToken)
	}
}

// forward checks list[i] of a route's forward targets.
func (v *validator) forward(path string, list []Forward, i int) {
	f := &list[i]
	var kinds []string
	for _, t := range []struct{ kind, url string }{{ForwardWHIP, f.WHIP}, {ForwardRTMP, f.RTMP}, {ForwardSRT, f.SRT}} {
		if t.url != "" {
			kinds = append(kinds, t.kind)
		}
	}
	switch len(kinds) {
	case 0:
		v.addf(path, "no target (expected exactly one of whip, rtmp or srt)")
		return
	case 1:
	default:
		list := strings.Join(kinds[:len(kinds)-1], ", ") + " and " + kinds[len(kinds)-1]
		v.addf(path, "has %s (expected exactly one of whip, rtmp or srt)", list)
		return
	}
	kind := kinds[0]
	schemes := map[string][]string{ForwardWHIP: whipSchemes, ForwardRTMP: rtmpSchemes, ForwardSRT: srtSchemes}[kind]
	if err := checkURL(f.URL(), schemes); err != nil {
		v.addf(path+"."+kind, "%q %v", urlInMessage(f.URL(), schemes), err)
	} else {
		for j := range i {
			if list[j].Kind() == kind && list[j].URL() == f.URL() {
				v.addf(path+"."+kind, "the same target as %s[%d] (expected each target once)", strings.TrimSuffix(path, fmt.Sprintf("[%d]", i)), j)
				break
			}
		}
	}
	if f.Token != "" {
		if kind != ForwardWHIP {
			v.addf(path+".token", "set on %s target (expected token only with whip: the bearer token of the WHIP endpoint)", withArticle(kind))
		} else {
			v.token(path+".token", f.Token)
		}
	}
	if f.Audio != "" || v.set[path+".audio"] {
		switch {
		case kind != ForwardSRT:
			v.addf(path+".audio", "set on %s target (expected audio only with srt: the codec SRT receivers get)", withArticle(kind))
		case !slices.Contains(forwardAudioCodecs, f.Audio):
			v.addf(path+".audio", "%q is not an audio codec for SRT targets (expected aac or opus)", f.Audio)
		}
	}
}

// unreachable reports routes[i] if an earlier route matches every path it
// matches: with first-match-wins it could never be chosen.
func (v *validator) unreachable(routes []Route, patterns []pattern, i int) {
	for j := range i {
		if patterns[j] == nil || !patterns[j].covers(patterns[i]) {
			continue
		}
		path := fmt.Sprintf("routes[%d].path", i)
		if patterns[i].covers(patterns[j]) {
			v.addf(path, "%q duplicates routes[%d].path %q", routes[i].Path, j, routes[j].Path)
		} else {
			v.addf(path, "%q is never used: routes[%d].path %q comes first and matches every path it does (expected more specific routes first)", routes[i].Path, j, routes[j].Path)
		}
		return
	}
}

func (v *validator) ingest(path string, list []string) {
	if list != nil && len(list) == 0 {
		v.addf(path, "empty, so nothing could publish here (expected some of rtmp, srt or whip, or no ingest key to allow all)")
	}
	for i, p := range list {
		switch {
		case !slices.Contains(ingestProtocols, p):
			v.addf(fmt.Sprintf("%s[%d]", path, i), "%q is not an ingest protocol (expected rtmp, srt or whip)", p)
		case slices.Contains(list[:i], p):
			v.addf(fmt.Sprintf("%s[%d]", path, i), "%q is listed twice", p)
		}
	}
}

// unreserved is RFC 3986's unreserved set: characters that pass through URLs,
// RTMP stream names and SRT stream IDs without escaping.
const unreserved = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"

// isBearerToken checks RFC 6750's b64token syntax.
func isBearerToken(s string) bool {
	body := strings.TrimRight(s, "=")
	return body != "" && strings.Trim(body, unreserved+"+/") == ""
}

// withArticle puts "a" or "an" before a forward kind, as it is read aloud:
// "a whip", "an rtmp", "an srt".
func withArticle(kind string) string {
	if kind == ForwardWHIP {
		return "a " + kind
	}
	return "an " + kind
}
