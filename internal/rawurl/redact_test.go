package rawurl

import (
	"slices"
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"not a url", "<redacted>"},
		{"live_1234_SECRET", "<redacted>"},
		{"https://live.example/whip/abc", "https://live.example/whip/abc"},
		{"https://user:SECRET@live.example/whip", "https://user:<redacted>@live.example/whip"},
		{"https://user@live.example/whip", "https://user@live.example/whip"},
		{"https://user:pa/SECRET@live.example/whip", "https://user:<redacted>@live.example/whip"},
		{"whep+https://h/whep/x?token=SECRET&a=b", "whep+https://h/whep/x?token=<redacted>&a=b"},
		{"rtmp://a.rtmp.youtube.com/live2/SECRET", "rtmp://a.rtmp.youtube.com/live2/<redacted>"},
		{"RTMPS://h:443/app/SECRET/", "RTMPS://h:443/app/<redacted>/"},
		{"rtmp://h/app/SECRET?key=SECRET2&x=1", "rtmp://h/app/<redacted>?key=<redacted>&x=1"},
		{"rtmp://h", "rtmp://h"},
		{"rtmp://h/", "rtmp://h/"},
		{"srt://h:9000?streamid=read:cam1&passphrase=SECRET", "srt://h:9000?streamid=read:cam1&passphrase=<redacted>"},
		{"srt://h:9000?PassPhrase=SECRET&Key=SECRET2&s=SECRET3", "srt://h:9000?PassPhrase=<redacted>&Key=<redacted>&s=<redacted>"},
		{"srt://h:9000?pass%70hrase=SECRET", "srt://h:9000?pass%70hrase=<redacted>"},
		{"srt://h:9000?passphrase", "srt://h:9000?passphrase"},
		{"srt://h:9000?streamid=#!::r=live/x,m=publish,u=USER,s=SECRET&latency=200",
			"srt://h:9000?streamid=#!::r=live/x,m=publish,u=<redacted>,s=<redacted>&latency=200"},
		{"srt://h:9000?streamid=%23%21%3A%3Ar%3Dx%2Cs%3DSECRET", "srt://h:9000?streamid=#!::r=x,s=<redacted>"},
		{"srt://h:9000?streamid=%23%21%3A%3Ar%3Dx", "srt://h:9000?streamid=%23%21%3A%3Ar%3Dx"},
		{"srt://h:9000?streamid=publish:live/x?key=SECRET", "srt://h:9000?streamid=publish:live/x?key=<redacted>"},
		{"http://h/p?password=SECRET&secret=SECRET2&access_token=SECRET3&auth=SECRET4",
			"http://h/p?password=<redacted>&secret=<redacted>&access_token=<redacted>&auth=<redacted>"},
	}
	for _, tt := range tests {
		got := Redact(tt.in)
		if got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
		}
		if strings.Contains(got, "SECRET") || strings.Contains(got, "USER") {
			t.Errorf("Redact(%q) = %q shows a secret", tt.in, got)
		}
	}
}

func FuzzRedact(f *testing.F) {
	for _, s := range []string{
		"rtmp://a.rtmp.youtube.com/live2/KEY",
		"srt://h:9000?streamid=#!::r=live/x,m=publish,u=U,s=S&passphrase=PPPPPPPPPP",
		"srt://h:9000?streamid=%23%21%3A%3Ar%3Dx%2Cs%3DS",
		"whep+https://u:p@h/whep/x?token=T",
		"srt://h:1?streamid=publish:x?key=K&key=K2",
		"not a url",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := Redact(raw)
		if got != raw && !strings.Contains(got, "<redacted>") {
			t.Fatalf("Redact(%q) = %q: changed without redacting", raw, got)
		}
		u, ok := Split(raw)
		if !ok {
			if raw != "" && got != "<redacted>" {
				t.Fatalf("Redact(%q) = %q, want it hidden whole", raw, got)
			}
			return
		}
		if _, pw, ok := strings.Cut(u.Userinfo, ":"); ok && pw != "" && !strings.Contains(got, ":<redacted>@") {
			t.Fatalf("Redact(%q) = %q shows the password", raw, got)
		}
		g, _ := Split(got)
		shown := strings.Split(g.Query, "&")
		for p := range strings.SplitSeq(u.Query, "&") {
			k, v, _ := strings.Cut(p, "=")
			secret := v != "" && v != "<redacted>" && slices.Contains(secretParams, strings.ToLower(unescape(k)))
			if secret && slices.Contains(shown, p) {
				t.Fatalf("Redact(%q) = %q shows %q", raw, got, p)
			}
		}
	})
}
