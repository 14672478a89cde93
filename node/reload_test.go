package node

import (
	"log/slog"
	"slices"
	"testing"

	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// TestReloadNeedsRestart: a reload that changes keys only a restart
// applies (TLS files, a listener, log.format, a limit) keeps their running
// values, returns exactly those keys and says so in one warning, without
// their values; api.token and readers_per_stream apply at once.
func TestReloadNeedsRestart(t *testing.T) {
	var buf testkit.LogBuf
	log := slog.New(slog.NewTextHandler(&buf, nil))
	old := &config.Config{
		Listen: config.Listen{HTTP: ":8080", HTTPS: ":8443"},
		TLS:    config.TLS{CertFile: "/etc/bridge/old.pem", KeyFile: "/etc/bridge/old.key"},
		Log:    config.Log{Format: config.LogText},
		Routes: []config.Route{{Path: "{path...}"}},
	}
	n := New(old, Options{Registry: media.NewRegistry(nil), Log: log})
	// file is the edited config file as loaded, with token as api.token.
	file := func(token string) *config.Config {
		next := *old
		next.Listen.HTTPS = ":9443"
		next.TLS.CertFile, next.TLS.KeyFile = "/etc/bridge/new.pem", "/etc/bridge/new.key"
		next.Log.Format = config.LogJSON
		next.Limits.WebRTCSessions = 10
		next.Limits.ReadersPerStream = 7
		next.API.Token = token
		return &next
	}

	got := n.Reload(file("new-admin-token-0123456789"))
	want := []string{"listen.https", "tls.cert_file", "tls.key_file", "log.format", "limits.webrtc_sessions"}
	if !slices.Equal(got, want) {
		t.Errorf("restart needed for %q, want %q", got, want)
	}
	run := n.Config()
	if run.TLS.CertFile != "/etc/bridge/old.pem" || run.Listen.HTTPS != ":8443" || run.Log.FormatOrDefault() != config.LogText ||
		run.Limits.WebRTCSessions != old.Limits.WebRTCSessions {
		t.Errorf("running config took a restart-only value: tls %+v, listen %+v, log %+v, limits %+v", run.TLS, run.Listen, run.Log, run.Limits)
	}
	if run.API.Token != "new-admin-token-0123456789" || run.Limits.ReadersPerStream != 7 {
		t.Errorf("api.token %q, readers_per_stream %d: not applied", run.API.Token, run.Limits.ReadersPerStream)
	}
	if n := buf.Count("level=WARN", "need a restart", "tls.cert_file", "listen.https", "log.format", "limits.webrtc_sessions"); n != 1 {
		t.Errorf("%d warnings naming the keys, want 1; log:\n%s", n, buf.String())
	}
	if n := buf.Count("level=WARN"); n != 1 {
		t.Errorf("%d warnings, want 1; log:\n%s", n, buf.String())
	}
	if buf.Count("new.pem") != 0 {
		t.Errorf("a value is logged:\n%s", buf.String())
	}

	// The same file again: what runs already differs from it in those
	// keys, so it says so again; only live keys changed: nothing to say.
	if got := n.Reload(file("another-admin-token-0123")); !slices.Equal(got, want) {
		t.Errorf("second reload: restart needed for %q, want %q", got, want)
	}
	live := *n.Config()
	live.API.Token = "third-admin-token-01234567"
	if got := n.Reload(&live); len(got) != 0 {
		t.Errorf("a reload changing only api.token: restart needed for %q", got)
	}
}
