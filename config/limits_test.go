package config

import (
	"strings"
	"testing"
	"time"
)

func TestLimitsDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte("limits:\n  patch_rate: 9\nroutes:\n  - path: \"{path...}\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	l := c.Limits
	if l.PatchRate != 9 || l.ICECandidates != 20 || l.WebRTCConnectTimeout != 5*time.Second || l.IngestBitrate != 200_000_000 {
		t.Errorf("limits = %+v", l)
	}
	// A hand-built zero Limits gets the same defaults.
	if got := (Limits{PatchRate: 9}).WithDefaults(); got != l {
		t.Errorf("WithDefaults = %+v, want %+v", got, l)
	}
}

func TestLimitsAndReadErrors(t *testing.T) {
	for _, tt := range []struct{ yaml, want string }{
		{"limits:\n  webrtc_sessions: 0\n", `c.yaml:2: limits.webrtc_sessions: 0 is out of range (expected 1-1000000 sessions)`},
		{"limits:\n  retransmit_percent: 101\n", `limits.retransmit_percent: 101 is out of range`},
		{"limits:\n  webrtc_connect_timeout: 0s\n", `limits.webrtc_connect_timeout: 0s is out of range (expected 1s-1m)`},
		{"limits:\n  webrtc_pending_per_address: 600\n", `limits.webrtc_pending_per_address: 600 is more than webrtc_sessions_per_address 500`},
		{"limits:\n  nope: 1\n", `limits.nope: unknown key`},
		{"routes:\n  - path: a\n    read_key: k1\n    whep: {token: k2}\n", `c.yaml:4: routes[0].whep.token: differs from read_key`},
		{"routes:\n  - path: a\n    read: []\n", `routes[0].read: empty`},
		{"routes:\n  - path: a\n    read: [hls]\n", `routes[0].read[0]: "hls" is not a read protocol (expected whep, rtmp or srt)`},
		{"routes:\n  - path: a\n    read: [whep, whep]\n", `routes[0].read[1]: "whep" is listed twice`},
		{"routes:\n  - path: a\n    max_readers: 0\n", `routes[0].max_readers: 0 is out of range`},
		{"routes:\n  - path: \"a:b\"\n", `routes[0].path: invalid stream path: "a"... contains ':'`},
		{"webrtc:\n  ice_servers:\n    - urls: [\"turn:t.example\"]\n      secret: s\n      username: u\n      credential: c\n", `webrtc.ice_servers[0].secret: set together with username/credential`},
		{"webrtc:\n  ice_servers:\n    - urls: [\"stun:t.example\"]\n      secret: s\n", `webrtc.ice_servers[0].secret: set, but no URL is a turn: or turns: URL`},
		{"webrtc:\n  ice_servers:\n    - urls: [\"turn:t.example\"]\n      ttl: 1h\n", `webrtc.ice_servers[0].ttl: set without secret`},
		{"webrtc:\n  ice_servers:\n    - urls: [\"turn:t.example\"]\n      secret: s\n      ttl: 1s\n", `webrtc.ice_servers[0].ttl: 1s is out of range (expected 1m-168h)`},
	} {
		y := tt.yaml
		if !strings.Contains(y, "routes:") {
			y += "routes:\n  - path: \"{path...}\"\n"
		}
		_, err := Parse("c.yaml", []byte(y))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want an error containing %q", tt.yaml, err, tt.want)
		}
	}
}

func TestReadAccess(t *testing.T) {
	c, err := Parse("c.yaml", []byte("routes:\n  - path: a\n    whep: {token: \"t+/=\"}\n    read: [whep]\n  - path: b\n    read_key: k\n    read: [rtmp]\n  - path: c\n"))
	if err != nil {
		t.Fatal(err)
	}
	a, b, open := &c.Routes[0], &c.Routes[1], &c.Routes[2]
	if a.ReadKey != "t+/=" || !a.Private() || !a.AllowsRead(ReadWHEP) || a.AllowsRead(ReadRTMP) {
		t.Errorf("WHEP-only route with a bearer token as whep.token: %v", a)
	}
	if b.AllowsRead(ReadWHEP) || !b.AllowsRead(ReadRTMP) || b.AllowsRead(ReadSRT) || b.ReadCredential() != "k" {
		t.Errorf("RTMP-only route: %v", b)
	}
	if open.Private() || !open.AllowsRead(ReadSRT) {
		t.Errorf("open route: %v", open)
	}
	// A hand-built route with only the old whep.token is private too.
	hand := Route{Path: "x", WHEP: WHEP{Token: "tok"}}
	if !hand.Private() || hand.ReadCredential() != "tok" || !hand.AllowsRead(ReadRTMP) {
		t.Errorf("hand-built route %v", hand)
	}
	disabled := false
	if (&Route{WHEP: WHEP{Enabled: &disabled}}).AllowsRead(ReadWHEP) {
		t.Error("whep.enabled: false still allows WHEP reads")
	}
}
