package config

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	c := Default()
	want := Listen{HTTP: ":8080", RTMP: ":1935", SRT: ":8890", WebRTCUDP: ":8189", HTTPS: ":8443"}
	if c.Listen != want {
		t.Errorf("Listen = %+v, want %+v", c.Listen, want)
	}
	if len(c.WebRTC.ICEServers)+len(c.WebRTC.NAT1To1)+len(c.WebRTC.Interfaces) != 0 {
		t.Errorf("WebRTC = %+v, want nothing set", c.WebRTC)
	}
	if len(c.Routes) != 1 {
		t.Fatalf("got %d routes, want 1", len(c.Routes))
	}
	r := c.Routes[0]
	if r.Path != "{path...}" || !reflect.DeepEqual(r.Ingest, []string{"rtmp", "srt", "whip"}) ||
		!r.WHEP.IsEnabled() || r.PublishKey != "" || r.WHEP.Token != "" {
		t.Errorf("route = %v", r)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	// Each call is a fresh copy.
	c.Routes[0].Path = "changed"
	if Default().Routes[0].Path != "{path...}" {
		t.Error("Default shares state between calls")
	}
}

// TestExampleFile keeps the documented example at the repository root valid.
func TestExampleFile(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.WebRTC.ICEServers) != 2 || c.WebRTC.ICEServers[1].Secret == "" || c.WebRTC.ICEServers[1].TTLOrDefault() != 24*time.Hour {
		t.Errorf("ICEServers = %v", c.WebRTC.ICEServers)
	}
	if len(c.Routes) != 3 {
		t.Fatalf("got %d routes, want 3", len(c.Routes))
	}
	r, ok := c.Match("private/studio")
	if !ok || r.Path != "private/{name}" || r.PublishKey == "" || r.ReadKey == "" || !r.Private() || !r.AllowsRead(ReadRTMP) || !r.WHEP.IsEnabled() {
		t.Errorf("Match(private/studio) = %v, %v", r, ok)
	}
	if r.AllowsIngest("srt") || !r.AllowsIngest("whip") {
		t.Errorf("private route ingest = %v", r.Ingest)
	}
	if _, ok := c.Match("other/x"); ok {
		t.Error("other/x matched a route")
	}
	if c.Listen.SRT != ":8890" {
		t.Errorf("Listen.SRT = %q", c.Listen.SRT)
	}
	if m := c.Metrics; m.Enabled || m.MetricsPath() != "/metrics" || m.Token == "" {
		t.Errorf("Metrics = %v, want off at /metrics with a token", m)
	}
	r, ok = c.Match("cams/lobby")
	if !ok || !strings.HasPrefix(r.Pull, "srt://") || !r.OnDemand || r.GraceDuration() != DefaultGrace ||
		r.OpusBitrate() != DefaultOpusBitrate || r.BFramesPolicy() != BFramesReencode {
		t.Fatalf("Match(cams/lobby) = %v, %v", r, ok)
	}
	var kinds []string
	for _, f := range r.Forward {
		kinds = append(kinds, f.Kind()+"/"+f.Audio)
	}
	if want := []string{"whip/", "rtmp/", "srt/aac"}; !reflect.DeepEqual(kinds, want) {
		t.Errorf("forward kinds/audio = %q, want %q", kinds, want)
	}
}

func TestParseDefaults(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want func(*Config) // adjusts Default() into the expected result
	}{
		{
			name: "routes only",
			yaml: "routes:\n  - path: a\n",
			want: func(c *Config) { c.Routes[0].Path = "a" },
		},
		{
			name: "partial listen keeps other defaults",
			yaml: "listen:\n  rtmp: \"127.0.0.1:1936\"\nroutes:\n  - path: \"{path...}\"\n",
			want: func(c *Config) { c.Listen.RTMP = "127.0.0.1:1936" },
		},
		{
			name: "null values count as left out",
			yaml: "listen:\n  http:\nwebrtc:\nroutes:\n  - path: \"{path...}\"\n    ingest:\n    whep:\n      enabled: ~\n",
			want: func(c *Config) {},
		},
		{
			name: "explicit values",
			yaml: "routes:\n  - path: \"{path...}\"\n    ingest: [srt]\n    whep: {enabled: false, token: abc}\n",
			want: func(c *Config) {
				f := false
				c.Routes[0].Ingest = []string{"srt"}
				c.Routes[0].WHEP = WHEP{Enabled: &f, Token: "abc"}
				c.Routes[0].ReadKey = "abc" // whep.token is read_key's old name
			},
		},
		{
			name: "aliases",
			yaml: "webrtc:\n  nat_1to1: &ips [203.0.113.7]\n  interfaces: *ips\nroutes:\n  - path: \"{path...}\"\n",
			want: func(c *Config) {
				c.WebRTC.NAT1To1 = []string{"203.0.113.7"}
				c.WebRTC.Interfaces = []string{"203.0.113.7"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("test.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			want := Default()
			tt.want(want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // every error line, in order
	}{
		{
			name: "empty file",
			yaml: "",
			want: []string{`c.yaml: routes: no routes, so no stream could be published (expected at least one route, e.g. "- path: \"{path...}\"")`},
		},
		{
			name: "empty routes",
			yaml: "# nothing\nroutes: []\n",
			want: []string{`c.yaml:2: routes: no routes, so no stream could be published (expected at least one route, e.g. "- path: \"{path...}\"")`},
		},
		{
			name: "bad ingest",
			yaml: "routes:\n  - path: a\n  - path: b\n    ingest:\n      - rtsp\n      - rtmp\n      - rtmp\n",
			want: []string{
				`c.yaml:5: routes[1].ingest[0]: "rtsp" is not an ingest protocol (expected rtmp, srt or whip)`,
				`c.yaml:7: routes[1].ingest[2]: "rtmp" is listed twice`,
			},
		},
		{
			name: "empty ingest",
			yaml: "routes:\n  - path: a\n    ingest: []\n",
			want: []string{`c.yaml:3: routes[0].ingest: empty, so nothing could publish here (expected some of rtmp, srt or whip, or no ingest key to allow all)`},
		},
		{
			name: "bad listen address",
			yaml: "listen:\n  rtmp: \":1935\"\n  http: \":99999\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:3: listen.http: ":99999" is not a valid listen address (expected host:port with port 1-65535)`},
		},
		{
			name: "listen addresses",
			yaml: "listen:\n  http: 8080\n  rtmp: \"host name:1\"\n  webrtc_udp: \":0\"\nroutes: [{path: a}]\n",
			want: []string{
				`c.yaml:2: listen.http: "8080" is not a valid listen address (expected host:port with port 1-65535)`,
				`c.yaml:3: listen.rtmp: "host name:1" is not a valid listen address (expected host:port with port 1-65535)`,
				`c.yaml:4: listen.webrtc_udp: ":0" is not a valid listen address (expected host:port with port 1-65535)`,
			},
		},
		{
			name: "colliding listen addresses",
			yaml: "listen:\n  http: \"127.0.0.1:1935\"\n  webrtc_udp: \":1935\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:1: listen.rtmp: ":1935" collides with listen.http "127.0.0.1:1935" (both listen on TCP port 1935; expected distinct ports)`},
		},
		{
			// ICE-TCP may share its port number with the UDP listeners,
			// not with the TCP ones.
			name: "webrtc_tcp",
			yaml: "listen:\n  http: \":8080\"\n  webrtc_udp: \":8189\"\n  webrtc_tcp: \":8080\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:4: listen.webrtc_tcp: ":8080" collides with listen.http ":8080" (both listen on TCP port 8080; expected distinct ports)`},
		},
		{
			name: "invalid webrtc_tcp",
			yaml: "listen:\n  webrtc_tcp: \"8189\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:2: listen.webrtc_tcp: "8189" is not a valid listen address (expected host:port with port 1-65535)`},
		},
		{
			name: "unknown key",
			yaml: "listen:\n  http: \":8080\"\nroutes:\n  - path: a\n\nwebrtc:\n  ice_server:\n    - urls: [\"stun:x\"]\n",
			want: []string{`c.yaml:7: webrtc.ice_server: unknown key (expected one of ice_servers, nat_1to1, interfaces)`},
		},
		{
			name: "unknown top-level key",
			yaml: "routs: []\n",
			want: []string{`c.yaml:1: routs: unknown key (expected one of listen, webrtc, metrics, limits, routes, tls, http, api, log, shutdown, cluster)`},
		},
		{
			name: "wrong type",
			yaml: "listen:\n  http: \":8080\"\n  webrtc_udp: \":8189\"\n  rtmp:\n    - \":1935\"\n",
			want: []string{`c.yaml:4: listen.rtmp: expected a string, got a sequence`},
		},
		{
			name: "more wrong types",
			yaml: "listen: [a]\nwebrtc:\n  nat_1to1: x\nroutes:\n  - path: {a: b}\n    whep:\n      enabled: maybe\n  - 7\n",
			want: []string{
				`c.yaml:1: listen: expected a mapping, got a sequence`,
				`c.yaml:3: webrtc.nat_1to1: expected a sequence, got the string "x"`,
				`c.yaml:5: routes[0].path: expected a string, got a mapping`,
				`c.yaml:7: routes[0].whep.enabled: expected true or false, got the string "maybe"`,
				`c.yaml:8: routes[1]: expected a mapping, got the number 7`,
			},
		},
		{
			name: "empty key",
			yaml: "listen:\n  \"\": x\n",
			want: []string{`c.yaml:2: listen."": unknown key (expected one of http, rtmp, srt, webrtc_udp, webrtc_tcp, https, rtmps, api)`},
		},
		{
			name: "top level not a mapping",
			yaml: "- a\n",
			want: []string{`c.yaml:1: expected a mapping, got a sequence`},
		},
		{
			name: "duplicate key",
			yaml: "routes: [{path: a}]\nlisten:\n  http: \":1\"\n  http: \":2\"\n",
			want: []string{`c.yaml:4: listen.http: set twice (first at line 3)`},
		},
		{
			name: "syntax error",
			yaml: "routes:\n  - path: a\n  bad\n",
			want: []string{`c.yaml:3: invalid YAML: could not find expected ':'`},
		},
		{
			name: "two documents",
			yaml: "routes: [{path: a}]\n---\nroutes: [{path: b}]\n",
			want: []string{`c.yaml:2: a second YAML document ("---") is not allowed (expected one document)`},
		},
		{
			name: "merge key in route",
			yaml: "routes:\n  - &r {path: a}\n  - <<: *r\n    ingest: [srt]\n",
			want: []string{`c.yaml:3: routes[1].<<: merge keys are not supported (expected the keys written out)`},
		},
		{
			name: "self-referencing alias",
			yaml: "webrtc:\n  ice_servers: &a [{urls: *a}]\n",
			want: []string{`c.yaml:2: webrtc.ice_servers[0].urls[0]: expected a string, got a mapping`},
		},

		{
			name: "route paths",
			yaml: "routes:\n" +
				"  - path: \"\"\n" +
				"  - path: /live\n" +
				"  - path: a//b\n" +
				"  - path: \"a/{x...}/b\"\n" +
				"  - path: \"a/x{y}\"\n" +
				"  - path: \"a/{x}/{x}\"\n" +
				"  - path: \"a/{1x}\"\n" +
				"  - path: \"a/../b\"\n" +
				"  - path: \"a b\"\n",
			want: []string{
				`c.yaml:2: routes[0].path: is empty (expected a stream path such as "live/{key}")`,
				`c.yaml:3: routes[1].path: "/live" starts or ends with "/" (expected e.g. "live/{key}")`,
				`c.yaml:4: routes[2].path: "a//b" has an empty segment (expected segments separated by a single "/")`,
				`c.yaml:5: routes[3].path: "a/{x...}/b": "{x...}" is not the last segment (a "{name...}" segment must come last)`,
				`c.yaml:6: routes[4].path: "a/x{y}": segment "x{y}" mixes text and braces (expected a whole segment "{name}" or "{name...}")`,
				`c.yaml:7: routes[5].path: "a/{x}/{x}" uses the variable name "x" twice (expected distinct names)`,
				`c.yaml:8: routes[6].path: "a/{1x}": segment "{1x}" has no valid variable name (expected "{name}" or "{name...}" with letters, digits and "_")`,
				`c.yaml:9: routes[7].path: "a/../b" has a ".." segment, which no stream path can contain`,
				`c.yaml:10: routes[8].path: "a b" contains a space, control character, "?" or "#", which no stream path can contain`,
			},
		},
		{
			name: "duplicate and shadowed routes",
			yaml: "routes:\n" +
				"  - path: \"live/{key}\"\n" +
				"  - path: \"live/{name}\"\n" +
				"  - path: \"live/cam1\"\n" +
				"  - path: \"live/{a}/{b}\"\n" +
				"  - path: \"{all...}\"\n" +
				"  - path: \"x/{rest...}\"\n",
			want: []string{
				`c.yaml:3: routes[1].path: "live/{name}" duplicates routes[0].path "live/{key}"`,
				`c.yaml:4: routes[2].path: "live/cam1" is never used: routes[0].path "live/{key}" comes first and matches every path it does (expected more specific routes first)`,
				`c.yaml:7: routes[5].path: "x/{rest...}" is never used: routes[4].path "{all...}" comes first and matches every path it does (expected more specific routes first)`,
			},
		},
		{
			name: "ice servers",
			yaml: "routes: [{path: a}]\nwebrtc:\n  ice_servers:\n" +
				"    - urls: []\n" +
				"    - urls:\n" +
				"        - \"http://stun.example.com\"\n" +
				"        - \"stun://stun.example.com\"\n" +
				"        - \"stun:stun.example.com:0\"\n" +
				"        - \"stun:stun.example.com?transport=udp\"\n" +
				"        - \"stun:\"\n" +
				"        - \"stun.example.com\"\n" +
				"    - urls: [\"turn:turn.example.com?transport=tcp\"]\n" +
				"      credential: \"hunter2\"\n",
			want: []string{
				`c.yaml:4: webrtc.ice_servers[0].urls: no URLs (expected at least one stun:, stuns:, turn: or turns: URL)`,
				`c.yaml:6: webrtc.ice_servers[1].urls[0]: "http://stun.example.com" has the scheme "http" (expected stun:, stuns:, turn: or turns:)`,
				`c.yaml:7: webrtc.ice_servers[1].urls[1]: "stun://stun.example.com" has "//" after the scheme (expected e.g. "stun:host.example.com:3478")`,
				`c.yaml:8: webrtc.ice_servers[1].urls[2]: "stun:stun.example.com:0" has an invalid port (expected 1-65535)`,
				`c.yaml:9: webrtc.ice_servers[1].urls[3]: "stun:stun.example.com?transport=udp" has an unexpected query (expected none, or "?transport=udp" or "?transport=tcp" on TURN URLs)`,
				`c.yaml:10: webrtc.ice_servers[1].urls[4]: "stun:" has no valid host (expected stun:host[:port])`,
				`c.yaml:11: webrtc.ice_servers[1].urls[5]: "stun.example.com" is not an ICE server URL (expected stun:, stuns:, turn: or turns: followed by host[:port])`,
				`c.yaml:12: webrtc.ice_servers[2].username: empty, but "turn:turn.example.com?transport=tcp" is a TURN URL (expected the TURN username, or secret)`,
			},
		},
		{
			name: "nat and interfaces",
			yaml: "routes: [{path: a}]\nwebrtc:\n  nat_1to1: [\"\", 0.0.0.0, 203.0.113.300, bad_host, 203.0.113.7, 203.0.113.7]\n  interfaces: [eth0, \"\", eth0]\n",
			want: []string{
				`c.yaml:3: webrtc.nat_1to1[0]: empty (expected a public IP address or hostname)`,
				`c.yaml:3: webrtc.nat_1to1[1]: "0.0.0.0" is not an address peers can reach (expected a public IP address or hostname)`,
				`c.yaml:3: webrtc.nat_1to1[2]: "203.0.113.300" is neither an IP address nor a hostname (expected a public IP address or hostname)`,
				`c.yaml:3: webrtc.nat_1to1[3]: "bad_host" is neither an IP address nor a hostname (expected a public IP address or hostname)`,
				`c.yaml:3: webrtc.nat_1to1[5]: "203.0.113.7" is listed twice`,
				`c.yaml:4: webrtc.interfaces[1]: empty (expected a network interface name such as "eth0")`,
				`c.yaml:4: webrtc.interfaces[2]: "eth0" is listed twice`,
			},
		},
		{
			name: "secrets are checked but never printed",
			yaml: "routes:\n  - path: a\n    publish_key: \"pa ss\"\n    whep:\n      token: \"to ken\"\n",
			want: []string{
				`c.yaml:3: routes[0].publish_key: contains characters other than letters, digits and "-._~" (expected a key that needs no escaping in RTMP URLs and SRT stream IDs)`,
				`c.yaml:5: routes[0].whep.token: contains characters other than letters, digits and "-._~" (expected a key that needs no escaping in RTMP URLs and SRT stream IDs)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error, got config %v", c)
			}
			if c != nil {
				t.Errorf("config %v returned with an error", c)
			}
			got := strings.Split(err.Error(), "\n")
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
			var ce *Error
			if !errors.As(err, &ce) || ce.File != "c.yaml" {
				t.Errorf("error %v is not an *Error for c.yaml", err)
			}
		})
	}
}

// TestAliasBomb checks that aliases cannot make a small file expensive: 1000
// aliased routes each pointing at a 1000-entry list would be 10^6 values.
func TestAliasBomb(t *testing.T) {
	yaml := "listen: {http: &r {path: a, ingest: [" + strings.Repeat("x, ", 999) + "x]}}\nroutes: [" +
		strings.Repeat("*r, ", 999) + "*r]\n"
	_, err := Parse("c.yaml", []byte(yaml))
	want := "document expands to more than 65536 values (too many aliases?)"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Count(err.Error(), "\n") > 10 {
		t.Errorf("err = %.500v, want a short error containing %q", err, want)
	}
}

func TestValidateIsPure(t *testing.T) {
	c := &Config{
		Listen: Listen{HTTP: ":8080", RTMP: ":8080", WebRTCUDP: ":8189"},
		WebRTC: WebRTC{
			ICEServers: []ICEServer{{URLs: []string{"turn:t.example.com"}}},
			NAT1To1:    []string{"media.example.com"},
		},
		Routes: []Route{{Path: "live/{key}"}, {Path: "live/{x}", Ingest: []string{"rtsp"}}},
	}
	before := fmt.Sprintf("%#v", *c)
	err := c.Validate()
	if err == nil {
		t.Fatal("want errors")
	}
	if after := fmt.Sprintf("%#v", *c); after != before {
		t.Errorf("Validate changed the config:\nbefore %s\nafter  %s", before, after)
	}
	// Errors from a Config built in Go carry paths but no file or line.
	if !strings.HasPrefix(err.Error(), `listen.rtmp: ":8080" collides with listen.http`) {
		t.Errorf("err = %v", err)
	}
	// Nil Ingest and WHEP.Enabled, zero bitrates, nil Grace, empty BFrames
	// and Forward.Audio are valid and mean the defaults.
	ok := Default()
	ok.Routes[0].Ingest, ok.Routes[0].WHEP.Enabled = nil, nil
	ok.Routes[0].Audio, ok.Routes[0].Grace, ok.Routes[0].BFrames = Audio{}, nil, ""
	ok.Routes[0].Forward = []Forward{{SRT: "srt://r.example:9000"}}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate with unset optional fields: %v", err)
	}
	r := &ok.Routes[0]
	if !r.AllowsIngest(IngestSRT) || !r.WHEP.IsEnabled() || r.OpusBitrate() != 128000 || r.AACBitrate() != 128000 ||
		r.GraceDuration() != 10*time.Second || r.BFramesPolicy() != "reencode" || r.Forward[0].AudioCodec() != "aac" {
		t.Errorf("unset optional fields do not mean the defaults: %v", r)
	}
}

func TestMatch(t *testing.T) {
	c := &Config{Routes: []Route{
		{Path: "live/{key}"},
		{Path: "live/{app}/{key}"},
		{Path: "exact/path"},
		{Path: "vod/{rest...}"},
		{Path: "{path...}"},
	}}
	tests := []struct {
		path string
		want string // matched route's Path; "" for no match
	}{
		{"live/test", "live/{key}"},
		{"live/a/b", "live/{app}/{key}"},
		{"live/a/b/c", "{path...}"},
		{"live", "{path...}"},
		{"exact/path", "exact/path"},
		{"exact/path/x", "{path...}"},
		{"vod/a", "vod/{rest...}"},
		{"vod/a/b/c", "vod/{rest...}"},
		{"vod", "{path...}"},
		{"anything/at/all", "{path...}"},
		{"x", "{path...}"},
		// Not stream paths: nothing matches.
		{"", ""},
		{"/live/test", ""},
		{"live/test/", ""},
		{"live//test", ""},
	}
	for _, tt := range tests {
		r, ok := c.Match(tt.path)
		got := ""
		if ok {
			got = r.Path
		}
		if got != tt.want {
			t.Errorf("Match(%q) = %q, want %q", tt.path, got, tt.want)
		}
	}
	// First match wins and the result points into c.Routes.
	c.Routes = append([]Route{{Path: "{all...}", PublishKey: "first"}}, c.Routes...)
	if r, _ := c.Match("live/test"); r != &c.Routes[0] {
		t.Errorf("Match(live/test) = %v, want the first route", r)
	}
	if _, ok := (&Config{}).Match("live/test"); ok {
		t.Error("a config without routes matched")
	}
}

func TestCovers(t *testing.T) {
	tests := []struct {
		p, q string
		want bool
	}{
		{"{a...}", "x", true},
		{"{a...}", "x/{b...}", true},
		{"x/{a...}", "x", false},
		{"x/{a}", "x/{b...}", false},
		{"x/{a...}", "x/{b}", true},
		{"{a}/{b}", "x/y", true},
		{"x/y", "{a}/{b}", false},
		{"x/y", "x/y", true},
		{"x/y", "x/z", false},
		{"x", "x/y", false},
	}
	for _, tt := range tests {
		p, err1 := parsePattern(tt.p)
		q, err2 := parsePattern(tt.q)
		if err := errors.Join(err1, err2); err != nil {
			t.Fatal(err)
		}
		if got := p.covers(q); got != tt.want {
			t.Errorf("%q covers %q = %v, want %v", tt.p, tt.q, got, tt.want)
		}
	}
}

func TestAllowsIngest(t *testing.T) {
	r := &Route{Ingest: []string{IngestRTMP}}
	if !r.AllowsIngest("rtmp") || r.AllowsIngest("srt") || r.AllowsIngest("whip") || r.AllowsIngest("") {
		t.Errorf("%v", r)
	}
	r = &Route{}
	for _, p := range []string{"rtmp", "srt", "whip"} {
		if !r.AllowsIngest(p) {
			t.Errorf("nil Ingest does not allow %s", p)
		}
	}
	if r.AllowsIngest("rtsp") {
		t.Error("nil Ingest allows rtsp")
	}
}

func TestSecretsNotPrinted(t *testing.T) {
	c, err := Load("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "cfg", *c)
	out := fmt.Sprintf("%v %+v %s %v %v", c, *c, c, c.Routes, c.WebRTC) + logged.String()
	secrets := []string{"change-me", "s3cret-publish-key", "s3cret-viewer-token", "s3cret-cam-passphrase",
		"s3cret-whip-token", "s3cret-stream-key", "s3cret-streamid-pass", "s3cret-srt-passphrase", "s3cret-metrics-token"}
	raw, err := os.ReadFile("../config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(raw), "s3cret"); n != len(secrets)-1 {
		t.Errorf("config.yaml has %d s3cret values; list them all here (got %d)", n, len(secrets)-1)
	}
	for _, secret := range secrets {
		if strings.Contains(out, secret) {
			t.Errorf("%q printed in %s", secret, out)
		}
	}
	if !strings.Contains(out, "<redacted>") || !strings.Contains(out, "private/{name}") ||
		!strings.Contains(out, "rtmps://a.rtmps.youtube.com/live2/<redacted>") {
		t.Errorf("unexpected output %s", out)
	}
}

func TestLoadMissingFile(t *testing.T) {
	_, err := Load("testdata/does-not-exist.yaml")
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("err = %v, want os.ErrNotExist", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"../config.yaml", "default.yaml"} {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("routes:\n  - &r {path: a}\n  - <<: *r\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("webrtc:\n  nat_1to1: &x [a, b]\n  interfaces: *x\nroutes: [{path: \"{p...}\"}]\n"))
	f.Add([]byte("routes:\n  - path: a/b\n    grace: 0s\n    bframes: reject\n    audio: {opus_bitrate: 6000, aac_bitrate: 0}\n" +
		"    pull: \"whep+https://u:p@h.example/whep/x?token=t\"\n    pull_token: abc\n    on_demand: true\n" +
		"    forward:\n      - {srt: \"srt://[::1]:9000?streamid=#!::r=a,s=pw\", audio: opus}\n      - {rtmp: \"rtmp://h/app/key\", whip: \"http://h\"}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("fuzz.yaml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c, err)
		}
		if c == nil {
			return
		}
		// Whatever Parse accepts must still validate and be usable.
		if err := c.Validate(); err != nil {
			t.Fatalf("parsed config fails Validate: %v", err)
		}
		for _, r := range c.Routes {
			// A path matching r: every variable segment becomes "v".
			segs := strings.Split(r.Path, "/")
			for i, s := range segs {
				if strings.HasPrefix(s, "{") {
					segs[i] = "v"
				}
			}
			if _, ok := c.Match(strings.Join(segs, "/")); !ok {
				t.Fatalf("no route matches %q, derived from %q", strings.Join(segs, "/"), r.Path)
			}
		}
	})
}

// TestWebRTCTCP: ICE-TCP is off unless set, and may use the port number of
// the UDP listener (the usual way to run it: one number to open).
func TestWebRTCTCP(t *testing.T) {
	c, err := Parse("c.yaml", []byte("listen:\n  webrtc_udp: \":8189\"\n  webrtc_tcp: \":8189\"\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen.WebRTCTCP != ":8189" {
		t.Errorf("listen.webrtc_tcp = %q, want \":8189\"", c.Listen.WebRTCTCP)
	}
}
