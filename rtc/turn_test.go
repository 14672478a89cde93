package rtc

import (
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/config"
)

func TestTURNCredentials(t *testing.T) {
	// The credential was computed with OpenSSL, independently of Go:
	//	printf '%s' '1700086400:0123abcd' | openssl dgst -sha1 -hmac 'north-wind' -binary | base64
	user, cred := TURNCredentials("north-wind", "0123abcd", time.Unix(1700086400, 0))
	if user != "1700086400:0123abcd" || cred != "Mg0PNOws1a8A+M6pk2xtFgWqOD4=" {
		t.Errorf("TURNCredentials = %q, %q; want 1700086400:0123abcd, Mg0PNOws1a8A+M6pk2xtFgWqOD4=", user, cred)
	}
}

// TestDefaultTURNTTL: rtc's default for a zero TTL is the configuration's.
func TestDefaultTURNTTL(t *testing.T) {
	if DefaultTURNTTL != config.DefaultTURNTTL {
		t.Errorf("rtc.DefaultTURNTTL = %s, config.DefaultTURNTTL = %s", DefaultTURNTTL, config.DefaultTURNTTL)
	}
}

// servers is a configuration with a STUN server, a TURN server with static
// credentials (and a STUN URL of its own) and one with a shared secret.
var servers = ICEServers{
	{URLs: []string{"stun:stun.example.com"}},
	{URLs: []string{"TURN:static.example.com?transport=udp", "stun:static.example.com"}, Username: "bridge-user", Credential: "static-pass"},
	{URLs: []string{"turn:rest.example.com", "turns:rest.example.com:5349"}, Secret: "north-wind", TTL: time.Hour},
}

func TestICEServersClient(t *testing.T) {
	now := time.Unix(1700000000, 0)
	const session = "0123abcd" + "ffffffffffffffffffffffff"
	got := servers.Client(session, now)
	user, cred := TURNCredentials("north-wind", "0123abcd", now.Add(time.Hour))
	want := []webrtc.ICEServer{
		{URLs: []string{"stun:stun.example.com"}},
		{URLs: []string{"stun:static.example.com"}},
		{URLs: []string{"turn:rest.example.com", "turns:rest.example.com:5349"}, Username: user, Credential: cred},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Client =\n%v\nwant\n%v", got, want)
	}
	if !strings.HasPrefix(user, "1700003600:") {
		t.Errorf("derived username %q does not expire at now + ttl", user)
	}
	links := strings.Join(LinkHeaders(got), "\n")
	for _, secret := range []string{"static.example.com?", "bridge-user", "static-pass", "north-wind", session} {
		if strings.Contains(links, secret) {
			t.Errorf("Link headers hold %q:\n%s", secret, links)
		}
	}
}

func TestICEServersBridge(t *testing.T) {
	now := time.Unix(1700000000, 0)
	got := servers.Bridge(now)
	user, cred := TURNCredentials("north-wind", "bridge", now.Add(time.Hour))
	want := []webrtc.ICEServer{
		{URLs: []string{"stun:stun.example.com"}},
		{URLs: []string{"TURN:static.example.com?transport=udp", "stun:static.example.com"}, Username: "bridge-user", Credential: "static-pass"},
		{URLs: []string{"turn:rest.example.com", "turns:rest.example.com:5349"}, Username: user, Credential: cred},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Bridge =\n%v\nwant\n%v", got, want)
	}
	// No TTL: a day.
	def := ICEServers{{URLs: []string{"turn:t"}, Secret: "s"}}.Bridge(now)
	if !strings.HasPrefix(def[0].Username, fmt.Sprint(now.Add(24*time.Hour).Unix())+":") {
		t.Errorf("username with the default TTL = %q, want expiry a day after now", def[0].Username)
	}
}

func TestICEServerStringRedacts(t *testing.T) {
	var b strings.Builder
	slog.New(slog.NewTextHandler(&b, nil)).Info("servers", "static", servers[1], "secret", servers[2])
	fmt.Fprint(&b, servers)
	for _, secret := range []string{"static-pass", "north-wind"} {
		if strings.Contains(b.String(), secret) {
			t.Errorf("%q printed: %s", secret, b.String())
		}
	}
}

// TestWriteAnswerLinks: the Link headers of an answer carry the servers
// Client returns and nothing else.
func TestWriteAnswerLinks(t *testing.T) {
	w := httptest.NewRecorder()
	WriteAnswer(w, "http://h/sessions/x", `"e"`, "v=0\r\n", servers.Client("0123abcd", time.Unix(1700000000, 0)))
	links := w.Result().Header.Values("Link")
	if len(links) != 4 {
		t.Fatalf("Link headers = %q, want the 2 STUN URLs and the 2 URLs of the secret's TURN server", links)
	}
	for _, l := range links {
		if strings.Contains(l, "static") && strings.Contains(l, "credential") {
			t.Errorf("static credentials in %q", l)
		}
	}
}
