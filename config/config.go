// Package config loads, defaults and validates the bridge's YAML configuration.
//
// The life of a configuration is: decode strictly (unknown keys and wrong
// types are errors), apply defaults, then Validate. Parse does all three and
// every error it returns names the file, the line and the key path, e.g.
//
//	config.yaml:12: routes[1].ingest[0]: "rtsp" is not an ingest protocol (expected rtmp, srt or whip)
//
// Defaults come from the embedded default.yaml, read through the same decoder
// as user files, so the documented defaults and the real ones cannot drift.
package config

import (
	_ "embed"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/wishbridge/bridge/internal/rawurl"
)

//go:embed default.yaml
var defaultYAML []byte

// Ingest protocols a route may accept publishers from.
const (
	IngestRTMP = "rtmp"
	IngestSRT  = "srt"
	IngestWHIP = "whip"
)

// ingestProtocols lists every valid ingest protocol, in the order used in
// messages and in the default of Route.Ingest.
var ingestProtocols = []string{IngestRTMP, IngestSRT, IngestWHIP}

// Config is the whole bridge configuration.
type Config struct {
	Listen  Listen  `yaml:"listen"`
	WebRTC  WebRTC  `yaml:"webrtc"`
	Metrics Metrics `yaml:"metrics"`
	Limits  Limits  `yaml:"limits"`
	Routes  []Route `yaml:"routes"`

	// Operations (config/ops.go).
	TLS      TLS      `yaml:"tls"`
	HTTP     HTTP     `yaml:"http"`
	API      API      `yaml:"api"`
	Log      Log      `yaml:"log"`
	Shutdown Shutdown `yaml:"shutdown"`

	// Cluster joins other bridges through Redis (config/cluster.go).
	Cluster Cluster `yaml:"cluster"`
}

// Read protocols: how a route's streams may be read (Route.Read).
const (
	ReadWHEP = "whep"
	ReadRTMP = "rtmp"
	ReadSRT  = "srt"
)

// readProtocols lists every read protocol, in the order of messages and
// of the default of Route.Read.
var readProtocols = []string{ReadWHEP, ReadRTMP, ReadSRT}

// Limits bound what clients can make the bridge hold or send. Each is
// documented in config.yaml with its default; the defaults live in
// default.yaml like every other default. A field's zero value means its
// default (WithDefaults fills them), so hand-built Configs are safe; in a
// file, 0 is an error (there is no "unlimited").
type Limits struct {
	// WebRTCSessions bounds WHIP and WHEP sessions together.
	WebRTCSessions int `yaml:"webrtc_sessions"`
	// WebRTCSessionsPerAddress bounds them per client address (IPv6 per /64).
	WebRTCSessionsPerAddress int `yaml:"webrtc_sessions_per_address"`
	// WebRTCPending bounds sessions not yet connected (ICE and DTLS), in
	// total and per address; they are ended after WebRTCConnectTimeout.
	WebRTCPending           int           `yaml:"webrtc_pending"`
	WebRTCPendingPerAddress int           `yaml:"webrtc_pending_per_address"`
	WebRTCConnectTimeout    time.Duration `yaml:"webrtc_connect_timeout"`
	// ICECandidates bounds the remote candidates of one session, counted
	// across the offer, trickle PATCHes and ICE restarts together.
	ICECandidates int `yaml:"ice_candidates"`
	// PatchRate bounds PATCH requests per second per session.
	PatchRate int `yaml:"patch_rate"`
	// ICECheckRate bounds the connectivity-check packets per second the
	// bridge sends for one session that is not connected yet.
	ICECheckRate int `yaml:"ice_check_rate"`
	// ReadersPerStream bounds the readers of one stream across WHEP, RTMP
	// play and SRT read; Route.MaxReaders overrides it per route.
	ReadersPerStream int `yaml:"readers_per_stream"`
	// RTMPConnections and SRTConnections bound the connections of each
	// listener, in total and per client address.
	RTMPConnections           int `yaml:"rtmp_connections"`
	RTMPConnectionsPerAddress int `yaml:"rtmp_connections_per_address"`
	SRTConnections            int `yaml:"srt_connections"`
	SRTConnectionsPerAddress  int `yaml:"srt_connections_per_address"`
	// IngestBitrate bounds one RTMP or SRT publisher, in bit/s.
	IngestBitrate int `yaml:"ingest_bitrate"`
	// RetransmitPercent is the NACK resend budget of one viewer's track:
	// a token bucket refilled at this percentage of the track's bitrate.
	RetransmitPercent int `yaml:"retransmit_percent"`
	// VideoReencoders bounds the concurrent B-frame re-encoders of the
	// process; over it, a route falls back as "bframes: reject" would.
	VideoReencoders int `yaml:"video_reencoders"`
}

// WithDefaults returns l with every zero field set to its default (the
// values of the embedded default.yaml).
func (l Limits) WithDefaults() Limits {
	d := defaultLimits
	dst, def := reflect.ValueOf(&l).Elem(), reflect.ValueOf(d)
	for i := range dst.NumField() {
		if dst.Field(i).IsZero() {
			dst.Field(i).Set(def.Field(i))
		}
	}
	return l
}

// defaultLimits are the limits of the embedded default.yaml, read once.
var defaultLimits = Default().Limits

// Listen holds the addresses the bridge binds, each "host:port" with an
// optional host (":1935" binds every interface).
type Listen struct {
	// HTTP serves WHEP (and later WHIP) endpoints and the watch pages (TCP).
	HTTP string `yaml:"http"`
	// RTMP accepts RTMP publishers (TCP).
	RTMP string `yaml:"rtmp"`
	// SRT accepts SRT publishers and readers (UDP). It may share a port
	// number with the TCP listeners but not with WebRTCUDP.
	SRT string `yaml:"srt"`
	// WebRTCUDP is the one UDP port every WebRTC peer shares (ICE UDP mux),
	// so a firewall needs a single rule however many viewers there are.
	WebRTCUDP string `yaml:"webrtc_udp"`
	// WebRTCTCP, when set, is the one TCP port every WHIP/WHEP session
	// also offers a passive ICE-TCP candidate on (RFC 6544), for clients
	// whose firewall blocks UDP; "" (the default) means no ICE-TCP. It
	// must not collide with HTTP or RTMP.
	WebRTCTCP string `yaml:"webrtc_tcp"`
	// HTTPS serves everything HTTP serves, over TLS; used when TLS is
	// configured (default ":8443" then).
	HTTPS string `yaml:"https"`
	// RTMPS, when set, accepts RTMP publishers over TLS with the TLS
	// certificate; "" means off.
	RTMPS string `yaml:"rtmps"`
	// API, when set, serves the admin API and dashboard only on this
	// address (e.g. "127.0.0.1:9997"); "" serves them on the HTTP and
	// HTTPS listeners.
	API string `yaml:"api"`
}

// Metrics configures the Prometheus endpoint, served on the HTTP listener.
// The zero value is valid: metrics off, and DefaultMetricsPath when turned
// on; read the path through MetricsPath.
type Metrics struct {
	// Enabled serves the metrics. Off by default: they list every live
	// stream path and the process's resource use, which is for operators,
	// not for whoever can reach the player pages.
	Enabled bool `yaml:"enabled"`
	// Path is the URL path of the endpoint: "/" and one or more segments
	// of letters, digits and "-._~"; "" means DefaultMetricsPath.
	Path string `yaml:"path"`
	// Token, when set, must be sent by scrapers as "Authorization: Bearer
	// <token>" (Prometheus: authorization.credentials in the scrape config).
	Token string `yaml:"token"`
}

// DefaultMetricsPath is where the metrics are served unless Metrics.Path
// says otherwise.
const DefaultMetricsPath = "/metrics"

// MetricsPath is Path, or DefaultMetricsPath when it is "".
func (m Metrics) MetricsPath() string {
	if m.Path == "" {
		return DefaultMetricsPath
	}
	return m.Path
}

// String describes the metrics settings without the token.
func (m Metrics) String() string {
	return fmt.Sprintf("{enabled=%t path=%q token=%s}", m.Enabled, m.MetricsPath(), redact(m.Token))
}

// LogValue makes slog print the redacted String form.
func (m Metrics) LogValue() slog.Value { return slog.StringValue(m.String()) }

// WebRTC configures ICE for every PeerConnection the bridge makes.
type WebRTC struct {
	// ICEServers are used by the bridge's own agents; STUN servers, and
	// TURN servers with a Secret (per-session derived credentials), are
	// also handed to admitted WHIP/WHEP clients in Link headers. Static
	// TURN credentials never are.
	ICEServers []ICEServer `yaml:"ice_servers"`
	// NAT1To1 are public IPs or hostnames advertised as host candidates when
	// the bridge sits behind a 1:1 NAT. Hostnames are kept as written; the
	// caller resolves them, so Validate stays pure and offline.
	NAT1To1 []string `yaml:"nat_1to1"`
	// Interfaces restricts candidate gathering to these network interfaces;
	// empty means all.
	Interfaces []string `yaml:"interfaces"`
}

// ICEServer is one STUN or TURN server, as in the W3C RTCIceServer.
type ICEServer struct {
	// URLs use the stun:, stuns:, turn: or turns: scheme.
	URLs []string `yaml:"urls"`
	// Username and Credential are static TURN credentials: the bridge
	// uses them itself and never hands them to clients. TURN URLs need
	// them or Secret.
	Username   string `yaml:"username"`
	Credential string `yaml:"credential"`
	// Secret is the TURN server's shared secret (coturn's
	// static-auth-secret, use-auth-secret): the bridge derives
	// time-limited credentials from it per session (the TURN REST scheme)
	// for its own agents and for the clients it admits. Not with Username
	// or Credential.
	Secret string `yaml:"secret"`
	// TTL is how long derived credentials stay valid; only with Secret.
	// Default DefaultTURNTTL.
	TTL time.Duration `yaml:"ttl"`
}

// DefaultTURNTTL is ICEServer.TTL when not set: long enough for a viewer
// that reconnects through a long session, short enough that a leaked
// credential soon stops working.
const DefaultTURNTTL = 24 * time.Hour

// TTLOrDefault is TTL, or DefaultTURNTTL when it is 0.
func (s ICEServer) TTLOrDefault() time.Duration {
	if s.TTL == 0 {
		return DefaultTURNTTL
	}
	return s.TTL
}

// String describes the server without its credential, so an ICEServer can be
// logged (also when nested in a Config) without leaking the TURN secret.
func (s ICEServer) String() string {
	if s.Secret != "" {
		return fmt.Sprintf("{urls=%v secret=%s ttl=%s}", s.URLs, redact(s.Secret), s.TTLOrDefault())
	}
	return fmt.Sprintf("{urls=%v username=%q credential=%s}", s.URLs, s.Username, redact(s.Credential))
}

// LogValue makes slog print the redacted String form.
func (s ICEServer) LogValue() slog.Value { return slog.StringValue(s.String()) }

// Route says who may publish to a set of stream paths and how they are served.
//
// Every field's zero value is valid and means its default, so hand-built
// Routes behave like parsed ones; read the fields that have defaults through
// their accessors (AllowsIngest, OpusBitrate, AACBitrate, GraceDuration,
// BFramesPolicy, WHEP.IsEnabled, Forward.AudioCodec). Parse fills the
// defaults in, so a parsed Config shows the effective values.
type Route struct {
	// Path is an exact stream path or a pattern. Segments are separated by
	// "/"; a segment "{name}" matches any one segment and a final
	// "{name...}" matches one or more remaining segments. Routes are tried in
	// order and the first match wins.
	Path string `yaml:"path"`
	// Ingest lists the protocols that may publish here (rtmp, srt, whip).
	// Parse fills a missing list with all of them; AllowsIngest treats a nil
	// list the same way, so hand-built Routes behave like parsed ones.
	Ingest []string `yaml:"ingest"`
	// PublishKey, when set, must be presented by publishers (for RTMP as
	// the stream name's query: "name?key=SECRET").
	PublishKey string `yaml:"publish_key"`
	// ReadKey, when set, must be presented by every reader: WHEP viewers
	// as "Authorization: Bearer KEY", RTMP play as the stream name's query
	// "name?key=KEY", SRT readers in the streamid. Same characters as
	// PublishKey. WHEP.Token is a deprecated alias that Parse copies here.
	ReadKey string `yaml:"read_key"`
	// Read lists the protocols that may read here (whep, rtmp, srt).
	// Parse fills a missing list with all of them; AllowsRead treats a nil
	// list the same way. WHEP also needs WHEP.Enabled.
	Read []string `yaml:"read"`
	// MaxReaders, when not 0, replaces Limits.ReadersPerStream for this
	// route's streams.
	MaxReaders int `yaml:"max_readers"`
	// Passphrase, when set, is the SRT AES passphrase that SRT publishers
	// and readers of this route must use: 10-79 characters, SRT's rule.
	// "" means no encryption.
	Passphrase string `yaml:"passphrase"`
	WHEP       WHEP   `yaml:"whep"`
	// Audio sets the bitrates of the audio the bridge transcodes.
	Audio Audio `yaml:"audio"`
	// Grace is how long readers stay connected for a publisher that went
	// away to come back, 0s-5m. It is a pointer so that "not set" (nil,
	// meaning DefaultGrace) differs from an explicit 0s (no grace: readers
	// are ended as soon as the publisher leaves); use GraceDuration to read it.
	Grace *time.Duration `yaml:"grace"`
	// BFrames says what WebRTC readers get from an H.264 source with
	// B-frames: BFramesReencode, BFramesPassthrough or BFramesReject.
	// "" means BFramesReencode; use BFramesPolicy to read it.
	BFrames string `yaml:"bframes"`
	// Pull, when set, is a URL the bridge pulls this route's stream from
	// instead of waiting for a publisher. Its scheme is srt, rtmp, rtmps,
	// whep+http or whep+https (for whep+, the URL without "whep+" is the
	// WHEP endpoint). Only routes with an exact path (no variables) can pull.
	Pull string `yaml:"pull"`
	// PullToken is the bearer token sent to a whep+http(s) Pull endpoint.
	PullToken string `yaml:"pull_token"`
	// OnDemand makes the bridge pull only while the stream has readers;
	// false pulls as long as the route is loaded. Only with Pull.
	OnDemand bool `yaml:"on_demand"`
	// Forward lists remote targets this route's streams are pushed to.
	Forward []Forward `yaml:"forward"`
}

// B-frame policies (Route.BFrames).
const (
	// BFramesReencode re-encodes the video without B-frames for WebRTC
	// readers; RTMP and SRT readers get the original. The default.
	BFramesReencode = "reencode"
	// BFramesPassthrough sends the video as it is.
	BFramesPassthrough = "passthrough"
	// BFramesReject refuses WebRTC readers of a stream with B-frames.
	BFramesReject = "reject"
)

var bframesPolicies = []string{BFramesReencode, BFramesPassthrough, BFramesReject}

// Defaults for Route fields whose zero value means "not set".
const (
	DefaultOpusBitrate = 128000           // Audio.OpusBitrate, bit/s
	DefaultAACBitrate  = 128000           // Audio.AACBitrate, bit/s
	DefaultGrace       = 10 * time.Second // Route.Grace
)

// Limits checked by Validate.
const (
	minOpusBitrate = 6000   // libopus's minimum
	maxOpusBitrate = 510000 // libopus's maximum
	minAACBitrate  = 32000  // below this AAC-LC stereo is unusable
	maxAACBitrate  = 320000 // AAC-LC stereo gains nothing above this
	maxGrace       = 5 * time.Minute
	minPassphrase  = 10 // SRT's passphrase length limits (SRTO_PASSPHRASE)
	maxPassphrase  = 79
)

// AllowsIngest reports whether publishers using protocol may publish on r.
// A nil Ingest list allows every protocol.
func (r *Route) AllowsIngest(protocol string) bool {
	list := r.Ingest
	if list == nil {
		list = ingestProtocols
	}
	return slices.Contains(list, protocol)
}

// AllowsRead reports whether readers using protocol (ReadWHEP, ReadRTMP,
// ReadSRT) may read r's streams. A nil Read list allows every protocol;
// WHEP also needs WHEP.IsEnabled.
func (r *Route) AllowsRead(protocol string) bool {
	list := r.Read
	if list == nil {
		list = readProtocols
	}
	if protocol == ReadWHEP && !r.WHEP.IsEnabled() {
		return false
	}
	return slices.Contains(list, protocol)
}

// ReadCredential is the key every reader must present: ReadKey, or for a
// hand-built Route that only sets the deprecated WHEP.Token, that token
// (Parse copies it into ReadKey). "" means anyone may read.
func (r *Route) ReadCredential() string {
	if r.ReadKey == "" {
		return r.WHEP.Token
	}
	return r.ReadKey
}

// Private reports whether reading r's streams needs a credential: such
// streams are never listed to the public (index page, unauthenticated
// metrics).
func (r *Route) Private() bool { return r.ReadCredential() != "" }

// OpusBitrate is the bitrate in bit/s of Opus made from AAC; 0 in Audio
// means DefaultOpusBitrate.
func (r *Route) OpusBitrate() int {
	if r.Audio.OpusBitrate == 0 {
		return DefaultOpusBitrate
	}
	return r.Audio.OpusBitrate
}

// AACBitrate is the bitrate in bit/s of AAC made from Opus; 0 in Audio
// means DefaultAACBitrate.
func (r *Route) AACBitrate() int {
	if r.Audio.AACBitrate == 0 {
		return DefaultAACBitrate
	}
	return r.Audio.AACBitrate
}

// GraceDuration is how long readers wait for a publisher to come back: a nil
// Grace means DefaultGrace, an explicit 0 means no grace.
func (r *Route) GraceDuration() time.Duration {
	if r.Grace == nil {
		return DefaultGrace
	}
	return *r.Grace
}

// BFramesPolicy is one of the BFrames constants; "" means BFramesReencode.
func (r *Route) BFramesPolicy() string {
	if r.BFrames == "" {
		return BFramesReencode
	}
	return r.BFrames
}

// String describes the route with every secret redacted: keys, passphrase,
// tokens, and the secrets inside URLs (see rawurl.Redact). Values with defaults
// are shown as effective. Pull settings and forward targets are shown only
// when set.
func (r Route) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "{path=%q ingest=%v publish_key=%s read_key=%s read=%v passphrase=%s whep=%v audio={opus_bitrate=%d aac_bitrate=%d} grace=%s bframes=%s",
		r.Path, r.Ingest, redact(r.PublishKey), redact(r.ReadKey), r.Read, redact(r.Passphrase), r.WHEP,
		r.OpusBitrate(), r.AACBitrate(), r.GraceDuration(), r.BFramesPolicy())
	if r.Pull != "" || r.PullToken != "" || r.OnDemand {
		fmt.Fprintf(&b, " pull=%q pull_token=%s on_demand=%t", rawurl.Redact(r.Pull), redact(r.PullToken), r.OnDemand)
	}
	if r.MaxReaders != 0 {
		fmt.Fprintf(&b, " max_readers=%d", r.MaxReaders)
	}
	if len(r.Forward) > 0 {
		fmt.Fprintf(&b, " forward=%v", r.Forward)
	}
	b.WriteString("}")
	return b.String()
}

// LogValue makes slog print the redacted String form, also with handlers
// (like JSON) that would otherwise marshal every field, secrets included.
func (r Route) LogValue() slog.Value { return slog.StringValue(r.String()) }

// Audio sets the bitrates of transcoded audio. Zero means the default.
type Audio struct {
	// OpusBitrate (bit/s, 6000-510000) of Opus made from AAC, for WebRTC
	// readers and WHIP targets. Default DefaultOpusBitrate.
	OpusBitrate int `yaml:"opus_bitrate"`
	// AACBitrate (bit/s, 32000-320000) of AAC made from Opus, for RTMP and
	// SRT readers and targets. Default DefaultAACBitrate.
	AACBitrate int `yaml:"aac_bitrate"`
}

// Pull source kinds (Route.PullKind).
const (
	PullSRT  = "srt"
	PullRTMP = "rtmp"
	PullWHEP = "whep"
)

// PullKind is the protocol of the route's Pull source (PullSRT, PullRTMP
// or PullWHEP, from its scheme), or "" if it pulls nothing or its scheme is
// none of pullSchemes (which Validate reports).
func (r *Route) PullKind() string {
	scheme, _, _ := strings.Cut(strings.ToLower(r.Pull), "://")
	switch scheme {
	case "srt":
		return PullSRT
	case "rtmp", "rtmps":
		return PullRTMP
	case "whep+http", "whep+https":
		return PullWHEP
	}
	return ""
}

// Forward target kinds (Forward.Kind).
const (
	ForwardWHIP = "whip"
	ForwardRTMP = "rtmp"
	ForwardSRT  = "srt"
)

// Audio codecs an SRT forward target can be sent (Forward.Audio).
const (
	// AudioAAC transcodes Opus to AAC, what SRT receivers expect. The default.
	AudioAAC = "aac"
	// AudioOpus sends Opus in MPEG-TS as it is.
	AudioOpus = "opus"
)

var forwardAudioCodecs = []string{AudioAAC, AudioOpus}

// Forward is one remote target a route's streams are pushed to. Exactly one
// of WHIP, RTMP and SRT is set.
type Forward struct {
	// WHIP is a WHIP endpoint, http:// or https://.
	WHIP string `yaml:"whip"`
	// RTMP is an rtmp:// or rtmps:// URL ending in the app and stream
	// (key): "rtmp://a.rtmp.youtube.com/live2/STREAMKEY".
	RTMP string `yaml:"rtmp"`
	// SRT is an srt://host:port URL, the bridge being the caller; its query
	// carries the SRT options (streamid, passphrase, ...).
	SRT string `yaml:"srt"`
	// Token is the bearer token for a WHIP target. Only with WHIP.
	Token string `yaml:"token"`
	// Audio is AudioAAC or AudioOpus, for an SRT target only; "" means
	// AudioAAC. Use AudioCodec to read it.
	Audio string `yaml:"audio"`
}

// Kind is ForwardWHIP, ForwardRTMP or ForwardSRT: the first of WHIP, RTMP
// and SRT that is set, or "" if none is (which Validate reports).
func (f Forward) Kind() string {
	switch {
	case f.WHIP != "":
		return ForwardWHIP
	case f.RTMP != "":
		return ForwardRTMP
	case f.SRT != "":
		return ForwardSRT
	}
	return ""
}

// URL is the target URL of Kind. It may hold secrets: log rawurl.Redact(f.URL()).
func (f Forward) URL() string {
	switch f.Kind() {
	case ForwardWHIP:
		return f.WHIP
	case ForwardRTMP:
		return f.RTMP
	case ForwardSRT:
		return f.SRT
	}
	return ""
}

// AudioCodec is the audio codec sent to an SRT target: Audio, or AudioAAC
// when it is "". It is meaningless for other kinds.
func (f Forward) AudioCodec() string {
	if f.Audio == "" {
		return AudioAAC
	}
	return f.Audio
}

// String describes the target with its URL redacted (see rawurl.Redact) and
// without its token.
func (f Forward) String() string {
	var parts []string
	for _, t := range []struct{ key, url string }{{ForwardWHIP, f.WHIP}, {ForwardRTMP, f.RTMP}, {ForwardSRT, f.SRT}} {
		if t.url != "" {
			parts = append(parts, fmt.Sprintf("%s=%q", t.key, rawurl.Redact(t.url)))
		}
	}
	if f.Token != "" {
		parts = append(parts, "token="+redact(f.Token))
	}
	if f.Kind() == ForwardSRT || f.Audio != "" {
		parts = append(parts, "audio="+f.AudioCodec())
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// LogValue makes slog print the redacted String form.
func (f Forward) LogValue() slog.Value { return slog.StringValue(f.String()) }

// WHEP configures playback of a route's streams over WHEP.
type WHEP struct {
	// Enabled is a pointer so that "not set" (nil, meaning enabled) differs
	// from an explicit false; use IsEnabled to read it.
	Enabled *bool `yaml:"enabled"`
	// Token is the deprecated name of Route.ReadKey: Parse copies it there
	// (both set and different is an error). Read Route.ReadKey instead.
	Token string `yaml:"token"`
}

// IsEnabled reports whether WHEP playback is on; it defaults to true.
func (w WHEP) IsEnabled() bool { return w.Enabled == nil || *w.Enabled }

// String describes the WHEP settings without the token.
func (w WHEP) String() string {
	return fmt.Sprintf("{enabled=%t token=%s}", w.IsEnabled(), redact(w.Token))
}

// LogValue makes slog print the redacted String form.
func (w WHEP) LogValue() slog.Value { return slog.StringValue(w.String()) }

// String describes the configuration on one line with every secret redacted.
func (c *Config) String() string {
	return fmt.Sprintf("listen={http=%q rtmp=%q srt=%q webrtc_udp=%q webrtc_tcp=%q https=%q rtmps=%q api=%q} webrtc={ice_servers=%v nat_1to1=%q interfaces=%q} metrics=%v limits=%+v tls=%+v http=%+v api=%v log=%+v shutdown=%+v cluster=%v routes=%v",
		c.Listen.HTTP, c.Listen.RTMP, c.Listen.SRT, c.Listen.WebRTCUDP, c.Listen.WebRTCTCP, c.Listen.HTTPS, c.Listen.RTMPS, c.Listen.API,
		c.WebRTC.ICEServers, c.WebRTC.NAT1To1, c.WebRTC.Interfaces, c.Metrics, c.Limits, c.TLS, c.HTTP, c.API, c.Log, c.Shutdown, c.Cluster, c.Routes)
}

// LogValue makes slog print the redacted String form, also with handlers
// (like JSON) that would otherwise marshal every field, secrets included.
func (c *Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return rawurl.Redacted
}

// Match returns the first route whose Path matches path, a stream path
// without leading or trailing "/" (e.g. "live/cam1"). The returned pointer
// points into c.Routes.
func (c *Config) Match(path string) (*Route, bool) {
	for i := range c.Routes {
		if p, err := parsePattern(c.Routes[i].Path); err == nil && p.match(path) {
			return &c.Routes[i], true
		}
	}
	return nil, false
}

// Default returns the embedded default configuration: listeners on :8080
// (HTTP), :1935 (RTMP), :8890 (SRT) and :8189 (WebRTC UDP), no ICE servers,
// metrics off (path DefaultMetricsPath, no token), and a single route "{path...}" open to every ingest protocol with WHEP
// enabled, no keys, passphrase or tokens, no pull or forward targets, and the
// route defaults below (see Parse). Each call returns a fresh copy the caller may modify.
func Default() *Config {
	c, err := parse("default.yaml", defaultYAML, &Config{})
	if err != nil {
		// The embedded file is part of the binary and covered by tests.
		panic("config: embedded default.yaml is invalid: " + err.Error())
	}
	return c
}

// Load reads filename and parses it with Parse.
func Load(filename string) (*Config, error) {
	data, err := os.ReadFile(filename)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(filename, data)
}

// Parse decodes data strictly, applies defaults and validates the result.
// filename is only used in error messages.
//
// Defaults: keys missing under listen, webrtc and metrics keep the values
// of Default(); routes are never defaulted, so a file without routes fails
// validation (nothing could be published). Within a route, a missing key
// gets its default: ingest every protocol, whep.enabled true,
// audio.opus_bitrate DefaultOpusBitrate, audio.aac_bitrate
// DefaultAACBitrate, grace DefaultGrace, bframes BFramesReencode, and
// forward[].audio AudioAAC on srt targets. A key present with an empty
// (null) value counts as missing. A key written with the zero value that
// stands for "not set" in Go (opus_bitrate: 0, bframes: "") is an error, not
// the default: the writer asked for a value that is out of range.
// "grace: 0s" is valid and means no grace.
//
// The returned error joins every problem found (errors.Join); each one is an
// *Error. Decoding problems are reported without validating, since a value
// that did not decode would only cause follow-up noise.
func Parse(filename string, data []byte) (*Config, error) {
	base := Default()
	base.Routes = nil
	return parse(filename, data, base)
}

// parse decodes data on top of base, applies route defaults and validates.
func parse(filename string, data []byte, base *Config) (*Config, error) {
	d := newDecoder(filename)
	if err := d.decodeDocument(data, base); err != nil {
		return nil, err
	}
	applyDefaults(base, d.set)
	v := validator{set: d.set}
	if err := v.config(base); err != nil {
		return nil, d.locate(err)
	}
	return base, nil
}

// applyDefaults fills per-route values that were left out, so callers see the
// effective settings when they inspect or log a parsed Config. set holds the
// key paths written with a value; a zero value written explicitly is left for
// validation to report.
func applyDefaults(c *Config, set map[string]bool) {
	for i := range c.Routes {
		r := &c.Routes[i]
		path := fmt.Sprintf("routes[%d]", i)
		if r.Ingest == nil {
			r.Ingest = append([]string(nil), ingestProtocols...)
		}
		if r.Read == nil {
			r.Read = append([]string(nil), readProtocols...)
		}
		if r.ReadKey == "" && r.WHEP.Token != "" {
			// whep.token is read_key's old name; both set and different
			// is reported by validation.
			r.ReadKey = r.WHEP.Token
		}
		if r.WHEP.Enabled == nil {
			enabled := true
			r.WHEP.Enabled = &enabled
		}
		if !set[path+".audio.opus_bitrate"] {
			r.Audio.OpusBitrate = DefaultOpusBitrate
		}
		if !set[path+".audio.aac_bitrate"] {
			r.Audio.AACBitrate = DefaultAACBitrate
		}
		if r.Grace == nil {
			grace := DefaultGrace
			r.Grace = &grace
		}
		if !set[path+".bframes"] {
			r.BFrames = BFramesReencode
		}
		for j := range r.Forward {
			f := &r.Forward[j]
			if f.Kind() == ForwardSRT && !set[fmt.Sprintf("%s.forward[%d].audio", path, j)] {
				f.Audio = AudioAAC
			}
		}
	}
}

// Error is one problem in a configuration.
type Error struct {
	File string // file name as given to Parse; "" for a Config built in Go
	Line int    // 1-based; 0 when unknown
	Path string // key path such as "routes[1].ingest[0]"; "" for the whole document
	Msg  string // what is wrong and what was expected
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}
