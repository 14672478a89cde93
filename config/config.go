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
	"slices"
	"strings"
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
	Listen Listen  `yaml:"listen"`
	WebRTC WebRTC  `yaml:"webrtc"`
	Routes []Route `yaml:"routes"`
}

// Listen holds the addresses the bridge binds, each "host:port" with an
// optional host (":1935" binds every interface).
type Listen struct {
	// HTTP serves WHEP (and later WHIP) endpoints and the watch pages (TCP).
	HTTP string `yaml:"http"`
	// RTMP accepts RTMP publishers (TCP).
	RTMP string `yaml:"rtmp"`
	// WebRTCUDP is the one UDP port every WebRTC peer shares (ICE UDP mux),
	// so a firewall needs a single rule however many viewers there are.
	WebRTCUDP string `yaml:"webrtc_udp"`
}

// WebRTC configures ICE for every PeerConnection the bridge makes.
type WebRTC struct {
	// ICEServers are used by the bridge and handed to WHIP/WHEP clients in
	// Link headers.
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
	// Username and Credential are required for TURN URLs.
	Username   string `yaml:"username"`
	Credential string `yaml:"credential"`
}

// String describes the server without its credential, so an ICEServer can be
// logged (also when nested in a Config) without leaking the TURN secret.
func (s ICEServer) String() string {
	return fmt.Sprintf("{urls=%v username=%q credential=%s}", s.URLs, s.Username, redact(s.Credential))
}

// Route says who may publish to a set of stream paths and how they are served.
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
	WHEP       WHEP   `yaml:"whep"`
}

// AllowsIngest reports whether publishers using protocol may publish on r.
// A nil Ingest list allows every protocol.
func (r *Route) AllowsIngest(protocol string) bool {
	list := r.Ingest
	if list == nil {
		list = ingestProtocols
	}
	return slices.Contains(list, protocol)
}

// String describes the route without its publish key or WHEP token.
func (r Route) String() string {
	return fmt.Sprintf("{path=%q ingest=%v publish_key=%s whep=%v}", r.Path, r.Ingest, redact(r.PublishKey), r.WHEP)
}

// WHEP configures playback of a route's streams over WHEP.
type WHEP struct {
	// Enabled is a pointer so that "not set" (nil, meaning enabled) differs
	// from an explicit false; use IsEnabled to read it.
	Enabled *bool `yaml:"enabled"`
	// Token, when set, must be sent by viewers as "Authorization: Bearer <token>".
	Token string `yaml:"token"`
}

// IsEnabled reports whether WHEP playback is on; it defaults to true.
func (w WHEP) IsEnabled() bool { return w.Enabled == nil || *w.Enabled }

// String describes the WHEP settings without the token.
func (w WHEP) String() string {
	return fmt.Sprintf("{enabled=%t token=%s}", w.IsEnabled(), redact(w.Token))
}

// String describes the configuration on one line with every secret redacted.
func (c *Config) String() string {
	return fmt.Sprintf("listen={http=%q rtmp=%q webrtc_udp=%q} webrtc={ice_servers=%v nat_1to1=%q interfaces=%q} routes=%v",
		c.Listen.HTTP, c.Listen.RTMP, c.Listen.WebRTCUDP,
		c.WebRTC.ICEServers, c.WebRTC.NAT1To1, c.WebRTC.Interfaces, c.Routes)
}

// LogValue makes slog print the redacted String form, also with handlers
// (like JSON) that would otherwise marshal every field, secrets included.
func (c *Config) LogValue() slog.Value { return slog.StringValue(c.String()) }

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return "<redacted>"
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
// (HTTP), :1935 (RTMP) and :8189 (WebRTC UDP), no ICE servers, and a single
// route "{path...}" open to every ingest protocol with WHEP enabled and no
// keys or tokens. Each call returns a fresh copy the caller may modify.
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
// Defaults: keys missing under listen and webrtc keep the values of
// Default(); routes are never defaulted, so a file without routes fails
// validation (nothing could be published). Within a route, a missing ingest
// list means every protocol and a missing whep.enabled means true. A key
// present with an empty (null) value counts as missing.
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
	applyDefaults(base)
	if err := base.Validate(); err != nil {
		return nil, d.locate(err)
	}
	return base, nil
}

// applyDefaults fills per-route values that were left out, so callers see the
// effective settings when they inspect or log a parsed Config.
func applyDefaults(c *Config) {
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Ingest == nil {
			r.Ingest = append([]string(nil), ingestProtocols...)
		}
		if r.WHEP.Enabled == nil {
			enabled := true
			r.WHEP.Enabled = &enabled
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
