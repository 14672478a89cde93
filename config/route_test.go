package config

import (
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseRouteDefaults(t *testing.T) {
	c, err := Parse("c.yaml", []byte("routes:\n"+
		"  - path: a\n"+
		"    forward:\n"+
		"      - whip: \"https://w.example/whip/x\"\n"+
		"      - srt: \"srt://r.example:9000\"\n"+
		"      - rtmp: \"rtmp://r.example/app/key\"\n"+
		"  - path: b\n"+ // null values count as left out
		"    audio: {opus_bitrate: ~, aac_bitrate: ~}\n"+
		"    grace:\n"+
		"    bframes:\n"+
		"    forward: [{srt: \"srt://r.example:9000\", audio: ~}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		if r.Audio != (Audio{OpusBitrate: 128000, AACBitrate: 128000}) || r.Grace == nil || *r.Grace != 10*time.Second ||
			r.BFrames != BFramesReencode || r.Pull != "" || r.OnDemand || r.Passphrase != "" || r.ReadKey != "" {
			t.Errorf("routes[%d] = %v, want the defaults filled in", i, r)
		}
	}
	want := []Forward{{WHIP: "https://w.example/whip/x"}, {SRT: "srt://r.example:9000", Audio: AudioAAC}, {RTMP: "rtmp://r.example/app/key"}}
	if got := c.Routes[0].Forward; !reflect.DeepEqual(got, want) {
		t.Errorf("forward = %v, want %v", got, want)
	}
	if f := c.Routes[1].Forward[0]; f.Audio != AudioAAC {
		t.Errorf("null forward audio = %q, want aac", f.Audio)
	}
	if c.Listen.SRT != ":8890" {
		t.Errorf("Listen.SRT = %q, want the default", c.Listen.SRT)
	}
}

func TestParseRouteValues(t *testing.T) {
	c, err := Parse("c.yaml", []byte("listen:\n  srt: \"127.0.0.1:1935\"\n"+ // same number as the RTMP (TCP) port
		"routes:\n"+
		"  - path: cams/lobby\n"+
		"    passphrase: \"0123456789\"\n"+
		"    read_key: r-K.e~y\n"+
		"    audio: {opus_bitrate: 6000, aac_bitrate: 320000}\n"+
		"    grace: 0s\n"+
		"    bframes: reject\n"+
		"    pull: \"whep+https://h.example/whep/lobby\"\n"+
		"    pull_token: \"abc+/=\"\n"+
		"    on_demand: true\n"+
		"    forward:\n"+
		"      - {whip: \"http://[2001:db8::1]:8080/whip/x\", token: t0k}\n"+
		"      - {srt: \"SRT://r.example:9000?passphrase=0123456789\", audio: opus}\n"+
		"      - {rtmp: \"rtmps://r.example:443/app/inst/key\"}\n"+
		"  - path: b\n"+
		"    grace: 5m\n"+
		"    bframes: passthrough\n"+
		"    pull: \"rtmp://src.example/live/src\"\n"+
		"  - path: c\n"+
		"    grace: 0\n"+ // the one number that needs no unit
		"    pull: \"srt://src.example:9000?streamid=#!::r=c,m=request\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	r := &c.Routes[0]
	if r.Passphrase != "0123456789" || r.ReadKey != "r-K.e~y" || r.OpusBitrate() != 6000 || r.AACBitrate() != 320000 ||
		r.GraceDuration() != 0 || r.BFramesPolicy() != BFramesReject || !r.OnDemand || r.PullToken != "abc+/=" {
		t.Errorf("routes[0] = %#v", r)
	}
	f := r.Forward
	if f[0].Kind() != ForwardWHIP || f[0].URL() != "http://[2001:db8::1]:8080/whip/x" || f[0].Token != "t0k" ||
		f[1].Kind() != ForwardSRT || f[1].AudioCodec() != AudioOpus || f[2].Kind() != ForwardRTMP {
		t.Errorf("forward = %#v", f)
	}
	if g := c.Routes[1].GraceDuration(); g != 5*time.Minute || c.Routes[1].BFramesPolicy() != BFramesPassthrough {
		t.Errorf("routes[1] = %v", &c.Routes[1])
	}
	if g := c.Routes[2].GraceDuration(); g != 0 {
		t.Errorf("grace: 0 = %v, want 0", g)
	}
}

func TestRouteAccessorsZero(t *testing.T) {
	var r Route
	if r.OpusBitrate() != DefaultOpusBitrate || r.AACBitrate() != DefaultAACBitrate || r.GraceDuration() != DefaultGrace ||
		r.BFramesPolicy() != BFramesReencode {
		t.Errorf("zero Route: %v", r)
	}
	zero := time.Duration(0)
	r.Grace = &zero
	if r.GraceDuration() != 0 {
		t.Errorf("explicit zero grace = %v, want 0", r.GraceDuration())
	}
	var f Forward
	if f.Kind() != "" || f.URL() != "" || f.AudioCodec() != AudioAAC {
		t.Errorf("zero Forward: kind %q url %q audio %q", f.Kind(), f.URL(), f.AudioCodec())
	}
	f = Forward{RTMP: "rtmp://h/a/k", SRT: "srt://h:1"} // invalid, but Kind is still defined
	if f.Kind() != ForwardRTMP || f.URL() != "rtmp://h/a/k" {
		t.Errorf("Kind %q URL %q", f.Kind(), f.URL())
	}
}

func TestParseRouteErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "srt listener",
			yaml: "listen:\n  srt: \":8189\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:1: listen.webrtc_udp: ":8189" collides with listen.srt ":8189" (both listen on UDP port 8189; expected distinct ports)`},
		},
		{
			name: "bad srt listener",
			yaml: "listen:\n  srt: 8890\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:2: listen.srt: "8890" is not a valid listen address (expected host:port with port 1-65535)`},
		},
		{
			name: "wrong types",
			yaml: "routes:\n  - path: a\n    audio: {opus_bitrate: 128k, aac_bitrate: 1.5}\n    grace: 10\n  - path: b\n    grace: [1s]\n    on_demand: maybe\n    forward: {whip: x}\n",
			want: []string{
				`c.yaml:3: routes[0].audio.opus_bitrate: expected a whole number, got the string "128k"`,
				`c.yaml:3: routes[0].audio.aac_bitrate: expected a whole number, got the number 1.5`,
				`c.yaml:4: routes[0].grace: expected a duration such as "10s" or "1m30s", got the number 10`,
				`c.yaml:6: routes[1].grace: expected a duration such as "10s" or "1m30s", got a sequence`,
				`c.yaml:7: routes[1].on_demand: expected true or false, got the string "maybe"`,
				`c.yaml:8: routes[1].forward: expected a sequence, got a mapping`,
			},
		},
		{
			name: "unknown forward key",
			yaml: "routes:\n  - path: a\n    forward:\n      - whep: \"https://x/\"\n",
			want: []string{`c.yaml:4: routes[0].forward[0].whep: unknown key (expected one of whip, rtmp, srt, token, audio)`},
		},
		{
			name: "ranges and values",
			yaml: "routes:\n" +
				"  - path: a\n" +
				"    audio:\n" +
				"      opus_bitrate: 5999\n" +
				"      aac_bitrate: 320001\n" +
				"    grace: 5m1s\n" +
				"    bframes: drop\n" +
				"  - path: b\n" +
				"    audio: {opus_bitrate: 0, aac_bitrate: 0}\n" +
				"    grace: -1s\n" +
				"    bframes: \"\"\n",
			want: []string{
				`c.yaml:4: routes[0].audio.opus_bitrate: 5999 is out of range (expected 6000-510000 bit/s)`,
				`c.yaml:5: routes[0].audio.aac_bitrate: 320001 is out of range (expected 32000-320000 bit/s)`,
				`c.yaml:6: routes[0].grace: 5m1s is out of range (expected 0s-5m)`,
				`c.yaml:7: routes[0].bframes: "drop" is not a B-frame policy (expected reencode, passthrough or reject)`,
				`c.yaml:9: routes[1].audio.opus_bitrate: 0 is out of range (expected 6000-510000 bit/s)`,
				`c.yaml:9: routes[1].audio.aac_bitrate: 0 is out of range (expected 32000-320000 bit/s)`,
				`c.yaml:10: routes[1].grace: -1s is out of range (expected 0s-5m)`,
				`c.yaml:11: routes[1].bframes: "" is not a B-frame policy (expected reencode, passthrough or reject)`,
			},
		},
		{
			name: "keys and passphrases",
			yaml: "routes:\n" +
				"  - path: a\n" +
				"    read_key: \"re ad\"\n" +
				"    passphrase: \"short-pp1\"\n" +
				"  - path: b\n" +
				"    passphrase: \"" + strings.Repeat("p", 80) + "\"\n",
			want: []string{
				`c.yaml:3: routes[0].read_key: contains characters other than letters, digits and "-._~" (expected a key that needs no escaping in RTMP URLs and SRT stream IDs)`,
				`c.yaml:4: routes[0].passphrase: is not 10-79 characters long (SRT's limit; expected such a passphrase, or "" for no encryption)`,
				`c.yaml:6: routes[1].passphrase: is not 10-79 characters long (SRT's limit; expected such a passphrase, or "" for no encryption)`,
			},
		},
		{
			name: "pull",
			yaml: "routes:\n" +
				"  - path: \"live/{key}\"\n" +
				"    pull: \"rtmp://src.example/live/src\"\n" +
				"  - path: b\n" +
				"    pull: \"http://src.example/whep/b\"\n" +
				"    pull_token: \"t0k\"\n" +
				"  - path: c\n" +
				"    pull: \"srt://src.example?streamid=read:c\"\n" +
				"    pull_token: \"bad token\"\n" +
				"  - path: d\n" +
				"    pull_token: \"t0k\"\n" +
				"    on_demand: true\n" +
				"  - path: e\n" +
				"    on_demand: false\n" +
				"    pull: \"whep+https://src.example/whep/e\"\n" +
				"    pull_token: \"bad token\"\n",
			want: []string{
				`c.yaml:3: routes[0].pull: set on "live/{key}", whose path has variables (expected an exact path such as "live/cam1": a route pulls one stream)`,
				`c.yaml:5: routes[1].pull: "http://src.example/whep/<redacted>" is not an srt://, rtmp://, rtmps://, whep+http:// or whep+https:// URL`,
				`c.yaml:6: routes[1].pull_token: set, but pull is not a whep+http:// or whep+https:// URL (expected pull_token only with WHEP pulls)`,
				`c.yaml:8: routes[2].pull: "srt://src.example?streamid=read:c" has no port (expected srt://host:port; SRT has no default port)`,
				`c.yaml:9: routes[2].pull_token: set, but pull is not a whep+http:// or whep+https:// URL (expected pull_token only with WHEP pulls)`,
				`c.yaml:9: routes[2].pull_token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`,
				`c.yaml:11: routes[3].pull_token: set without pull (expected pull_token only with a whep+http:// or whep+https:// pull)`,
				`c.yaml:12: routes[3].on_demand: true without pull (on_demand only applies to routes that pull)`,
				`c.yaml:16: routes[4].pull_token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`,
			},
		},
		{
			name: "forward targets",
			yaml: "routes:\n" +
				"  - path: a\n" +
				"    forward:\n" +
				"      - {}\n" +
				"      - rtmp: \"http://x\"\n" +
				"      - whip: \"https://w.example/whip\"\n" +
				"        rtmp: \"rtmp://r.example/app/key\"\n" +
				"      - rtmp: \"rtmp://r.example/app/key\"\n" +
				"        token: t0k\n" +
				"        audio: aac\n" +
				"      - whip: \"https://w.example/whip/2\"\n" +
				"        token: \"bad token\"\n" +
				"        audio: opus\n" +
				"      - srt: \"srt://r.example:9000\"\n" +
				"        audio: mp3\n" +
				"        token: t0k\n" +
				"      - srt: \"srt://r.example:9000\"\n" +
				"        audio: \"\"\n" +
				"      - {whip: \"http://h\", rtmp: \"rtmp://h/a/k\", srt: \"srt://h:1\"}\n",
			want: []string{
				`c.yaml:4: routes[0].forward[0]: no target (expected exactly one of whip, rtmp or srt)`,
				`c.yaml:5: routes[0].forward[1].rtmp: "http://x" is not an rtmp:// or rtmps:// URL`,
				`c.yaml:6: routes[0].forward[2]: has whip and rtmp (expected exactly one of whip, rtmp or srt)`,
				`c.yaml:9: routes[0].forward[3].token: set on an rtmp target (expected token only with whip: the bearer token of the WHIP endpoint)`,
				`c.yaml:10: routes[0].forward[3].audio: set on an rtmp target (expected audio only with srt: the codec SRT receivers get)`,
				`c.yaml:12: routes[0].forward[4].token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`,
				`c.yaml:13: routes[0].forward[4].audio: set on a whip target (expected audio only with srt: the codec SRT receivers get)`,
				`c.yaml:16: routes[0].forward[5].token: set on an srt target (expected token only with whip: the bearer token of the WHIP endpoint)`,
				`c.yaml:15: routes[0].forward[5].audio: "mp3" is not an audio codec for SRT targets (expected aac or opus)`,
				`c.yaml:17: routes[0].forward[6].srt: the same target as routes[0].forward[5] (expected each target once)`,
				`c.yaml:18: routes[0].forward[6].audio: "" is not an audio codec for SRT targets (expected aac or opus)`,
				`c.yaml:19: routes[0].forward[7]: has whip, rtmp and srt (expected exactly one of whip, rtmp or srt)`,
			},
		},
		{
			name: "forward URLs",
			yaml: "routes:\n" +
				"  - path: a\n" +
				"    forward:\n" +
				"      - rtmp: \"rtmp://r.example/live2\"\n" +
				"      - rtmp: \"rtmp://r.example:0/app/key\"\n" +
				"      - rtmp: \"rmtp://r.example/app/typo-KEY\"\n" +
				"      - rtmp: \"just-a-stream-KEY\"\n" +
				"      - rtmp: \"rtmp:///app/key\"\n" +
				"      - rtmp: \"rtmp://bad_host/app/key\"\n" +
				"      - rtmp: \"rtmp://::1/app/key\"\n" +
				"      - srt: \"srt://r.example:9000?passphrase=short&streamid=publish:x\"\n" +
				"      - srt: \"srt://r.example:/x\"\n" +
				"      - whip: \"whep+https://w.example/whip\"\n" +
				"      - whip: \"https://w.example/wh ip\"\n" +
				"      - whip: \"https://w.example/whip/%zz\"\n" +
				"      - whip: \"https://u:pa55@w.example/whip?token=t0k\"\n", // valid
			want: []string{
				`c.yaml:4: routes[0].forward[0].rtmp: "rtmp://r.example/<redacted>" has no application and stream name (expected rtmp://host[:port]/app/stream)`,
				`c.yaml:5: routes[0].forward[1].rtmp: "rtmp://r.example:0/app/<redacted>" has an invalid port (expected 1-65535)`,
				`c.yaml:6: routes[0].forward[2].rtmp: "rmtp://r.example/app/<redacted>" is not an rtmp:// or rtmps:// URL`,
				`c.yaml:7: routes[0].forward[3].rtmp: "<redacted>" is not an rtmp:// or rtmps:// URL`,
				`c.yaml:8: routes[0].forward[4].rtmp: "rtmp:///app/<redacted>" has no host (expected rtmp://host[:port]...)`,
				`c.yaml:9: routes[0].forward[5].rtmp: "rtmp://bad_host/app/<redacted>" has an invalid host (expected a hostname, an IPv4 address or an IPv6 address in [])`,
				`c.yaml:10: routes[0].forward[6].rtmp: "rtmp://::1/app/<redacted>" has an invalid host (expected a hostname, an IPv4 address or an IPv6 address in [])`,
				`c.yaml:11: routes[0].forward[7].srt: "srt://r.example:9000?passphrase=<redacted>&streamid=publish:x" has a passphrase that is not 10-79 characters long (SRT's limit)`,
				`c.yaml:12: routes[0].forward[8].srt: "srt://r.example:/x" has an invalid port (expected 1-65535)`,
				`c.yaml:13: routes[0].forward[9].whip: "whep+https://w.example/<redacted>" is not an http:// or https:// URL`,
				`c.yaml:14: routes[0].forward[10].whip: "https://w.example/wh ip" contains a space or control character (expected them percent-encoded)`,
				`c.yaml:15: routes[0].forward[11].whip: "https://w.example/whip/%zz" is not a valid URL (expected e.g. https://host.example/whep/path with special characters percent-encoded)`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatalf("no error, got config %v", c)
			}
			if got := strings.Split(err.Error(), "\n"); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestValidateExplicitZero: in Go a zero value means "the default"; written
// out in a file it is an error (see Parse).
func TestValidateExplicitZero(t *testing.T) {
	c := Default()
	c.Routes = []Route{{Path: "a", Audio: Audio{}, BFrames: "", Forward: []Forward{{SRT: "srt://h.example:1", Audio: ""}}}}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	if _, err := Parse("c.yaml", []byte("routes:\n  - path: a\n    forward: [{srt: \"srt://h.example:1\", audio: \"\"}]\n")); err == nil {
		t.Error(`Parse accepted audio: ""`)
	}
}

// TestSecretsNotInErrors: invalid values next to secrets, and invalid
// secrets, never print the secrets.
func TestSecretsNotInErrors(t *testing.T) {
	yaml := "routes:\n" +
		"  - path: \"live/{k}\"\n" +
		"    publish_key: \"SECRET 1\"\n" +
		"    read_key: \"SECRET 2\"\n" +
		"    passphrase: \"SECRET3\"\n" +
		"    pull: \"rtmp://u:SECRET4@h/app/SECRET5?key=SECRET6\"\n" +
		"    pull_token: \"SECRET 7\"\n" +
		"    forward:\n" +
		"      - rtmp: \"rtmp://h/SECRET8\"\n" +
		"        token: \"SECRET 9\"\n" +
		"      - srt: \"srt://h?streamid=#!::r=x,u=SECRET10,s=SECRET11&passphrase=SECRET12\"\n" +
		"      - whip: \"ftp://h/x?token=SECRET13\"\n" +
		"        token: \"SECRET 14\"\n" +
		"      - rtmp: \"SECRET15\"\n" +
		"      - rtmp: \"rmtp://h/app/SECRET16\"\n" +
		"    whep: {token: \"SECRET 17\"}\n"
	_, err := Parse("c.yaml", []byte(yaml))
	if err == nil {
		t.Fatal("no error")
	}
	if n := strings.Count(err.Error(), "\n") + 1; n < 12 {
		t.Errorf("only %d errors:\n%v", n, err)
	}
	if strings.Contains(err.Error(), "SECRET") {
		t.Errorf("a secret is printed:\n%v", err)
	}
}

func TestRouteStringAndLogValue(t *testing.T) {
	grace := time.Duration(0)
	r := Route{
		Path: "cams/lobby", PublishKey: "SECRET1", ReadKey: "SECRET2", Passphrase: "SECRET3-long",
		WHEP: WHEP{Token: "SECRET4"}, Grace: &grace, BFrames: BFramesReject,
		Pull: "srt://h:9000?streamid=#!::r=x,s=SECRET5&passphrase=SECRET6", PullToken: "SECRET7", OnDemand: true,
		Forward: []Forward{
			{WHIP: "https://u:SECRET8@h/whip", Token: "SECRET9"},
			{RTMP: "rtmp://h/app/SECRET10"},
			{SRT: "srt://h:1?passphrase=SECRET11", Audio: AudioOpus},
		},
	}
	c := Default()
	c.Routes = append(c.Routes, r)
	var logged strings.Builder
	for _, h := range []slog.Handler{slog.NewJSONHandler(&logged, nil), slog.NewTextHandler(&logged, nil)} {
		slog.New(h).Info("x", "route", r, "routep", &r, "forward", r.Forward[0], "whep", r.WHEP, "cfg", c)
	}
	out := fmt.Sprintf("%v %+v %s %v", r, r, &r, r.Forward) + logged.String()
	if strings.Contains(out, "SECRET") {
		t.Errorf("a secret is printed: %s", out)
	}
	want := `{path="cams/lobby" ingest=[] publish_key=<redacted> read_key=<redacted> read=[] passphrase=<redacted> whep={enabled=true token=<redacted>} ` +
		`audio={opus_bitrate=128000 aac_bitrate=128000} grace=0s bframes=reject ` +
		`pull="srt://h:9000?streamid=#!::r=x,s=<redacted>&passphrase=<redacted>" pull_token=<redacted> on_demand=true ` +
		`forward=[{whip="https://u:<redacted>@h/whip" token=<redacted>} {rtmp="rtmp://h/app/<redacted>"} {srt="srt://h:1?passphrase=<redacted>" audio=opus}]}`
	if got := r.String(); got != want {
		t.Errorf("String:\n got %s\nwant %s", got, want)
	}
	if got := (Route{Path: "a"}).String(); strings.Contains(got, "pull") || strings.Contains(got, "forward") {
		t.Errorf("String of a route without pull or forward = %s", got)
	}
	if !strings.Contains(c.String(), `srt=":8890"`) {
		t.Errorf("Config.String = %s", c)
	}
}
