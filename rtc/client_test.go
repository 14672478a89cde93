package rtc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

func TestParseLinkICEServers(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []webrtc.ICEServer
	}{
		{nil, nil},
		{[]string{`<stun:stun.example.net>; rel="ice-server"`}, []webrtc.ICEServer{{URLs: []string{"stun:stun.example.net"}}}},
		{ // RFC 9725 section 4.6's example, two links in one header
			[]string{`<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="myPassword"; credential-type="password"`},
			[]webrtc.ICEServer{
				{URLs: []string{"stun:stun.example.net"}},
				{URLs: []string{"turn:turn.example.net?transport=udp"}, Username: "user", Credential: "myPassword"},
			},
		},
		{ // unquoted values, odd spacing and case, escapes, commas in quotes
			[]string{`<turns:t.example.net:443?transport=tcp>;REL=ice-server;Username=u;credential="p\"a,s;s"`},
			[]webrtc.ICEServer{{URLs: []string{"turns:t.example.net:443?transport=tcp"}, Username: "u", Credential: `p"a,s;s`}},
		},
		{ // other rels, other schemes, other credential types are skipped
			[]string{
				`</style.css>; rel=stylesheet, <http://x/>; rel="ice-server"`,
				`<turn:o.example.net>; rel="ice-server"; username="u"; credential="c"; credential-type="oauth"`,
				`<stun:a.example.net>; rel="preload ice-server"`,
			},
			[]webrtc.ICEServer{{URLs: []string{"stun:a.example.net"}}},
		},
		{ // malformed: what comes before the error is kept
			[]string{`<stun:a.example.net>; rel="ice-server", garbage <stun:b>; rel="ice-server"`, `<stun:c`, `<stun:d>; rel="ice-server`},
			[]webrtc.ICEServer{{URLs: []string{"stun:a.example.net"}}},
		},
	} {
		if got := parseLinkICEServers(tc.in); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseLinkICEServers(%q) = %+v, expected %+v", tc.in, got, tc.want)
		}
	}
}

func FuzzParseLinks(f *testing.F) {
	f.Add(`<stun:stun.example.net>; rel="ice-server", <turn:turn.example.net?transport=udp>; rel="ice-server"; username="user"; credential="myPassword"; credential-type="password"`)
	f.Add(`<a>;b="\`)
	f.Add(`<a>;;;=,,<b>`)
	f.Fuzz(func(t *testing.T, v string) {
		for _, l := range parseLinks(v) {
			if l.target == "" || strings.ContainsRune(l.target, '>') {
				t.Fatalf("link target %q", l.target)
			}
		}
		_ = parseLinkICEServers([]string{v})
	})
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"5":                             5 * time.Second,
		" 120 ":                         2 * time.Minute,
		"99999999":                      maxRetryAfter,
		"-1":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:35 GMT": 30 * time.Second,
		"Fri, 02 Jan 2026 03:00:00 GMT": 0,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, expected %v", in, got, want)
		}
	}
}

func TestSendsToken(t *testing.T) {
	c, err := NewClient(nil, "https://whip.example.com/whip/x", "tok")
	if err != nil {
		t.Fatal(err)
	}
	for raw, want := range map[string]bool{
		"https://whip.example.com/sessions/1":       true,
		"https://WHIP.example.com:8443/x":           true,
		"https://node3.whip.example.com/whip/x":     true,
		"http://whip.example.com/whip/x":            false, // downgrade
		"https://example.com/whip/x":                false,
		"https://evilwhip.example.com/whip/x":       false,
		"https://whip.example.com.evil.net/whip/x":  false,
		"https://other.example.org/whip/x?whip.com": false,
	} {
		u, _ := url.Parse(raw)
		if got := c.sendsToken(u); got != want {
			t.Errorf("sendsToken(%s) = %t, expected %t", raw, got, want)
		}
	}
	c.token = ""
	if c.sendsToken(c.endpoint) {
		t.Errorf("an empty token is sent")
	}
}

func TestNewClientErrorsHideSecrets(t *testing.T) {
	for _, raw := range []string{"ftp://host/x?token=SECRET", "http://user:SECRET@[::1/x", "http:///x?token=SECRET"} {
		_, err := NewClient(nil, raw, "")
		if err == nil {
			t.Errorf("%q accepted", raw)
			continue
		}
		if strings.Contains(err.Error(), "SECRET") {
			t.Errorf("error for %q shows the secret: %v", raw, err)
		}
	}
}

// TestPostAnswer: the answer's Location (relative, after a redirect), ETag,
// Accept-Patch and Link headers are read; the token is sent.
func TestPostAnswer(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /whip/a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "../b/c") // relative to /whip/a
		w.WriteHeader(http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("POST /b/c", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok" || r.Header.Get("Content-Type") != "application/sdp" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/sdp")
		h.Set("Location", "s/123")
		h.Set("ETag", `"xyz"`)
		h.Set("Accept-Patch", "application/trickle-ice-sdpfrag")
		h.Add("Link", `<stun:stun.example.net>; rel="ice-server"`)
		h.Add("Link", `<turn:turn.example.net>; rel="ice-server"; username="u"; credential="c"`)
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write([]byte("v=0\r\n"))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	c, err := NewClient(nil, srv.URL+"/whip/a", "tok")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	answer, rs, err := c.Post(context.Background(), "v=0\r\n")
	if err != nil {
		t.Fatal(err)
	}
	if answer != "v=0\r\n" || rs.URL.String() != srv.URL+"/b/s/123" || rs.ETag != `"xyz"` || !rs.Trickle {
		t.Errorf("answer %q, session %+v (url %s)", answer, rs, rs.URL)
	}
	if got := c.LastICEServers(); len(got) != 2 || got[1].Username != "u" {
		t.Errorf("ICE servers %+v", got)
	}
}

// TestPostRedirectLimit: a redirect loop ends after maxRedirects.
func TestPostRedirectLimit(t *testing.T) {
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n++
		w.Header().Set("Location", r.URL.Path)
		w.WriteHeader(http.StatusPermanentRedirect)
	}))
	defer srv.Close()
	c, _ := NewClient(srv.Client(), srv.URL+"/loop", "")
	_, _, err := c.Post(context.Background(), "v=0\r\n")
	if err == nil || !strings.Contains(err.Error(), "redirects") || n != maxRedirects+1 {
		t.Errorf("after %d requests: %v", n, err)
	}
}

// TestRefusal: a refusal says the status, the start of the body (without
// the token, should the server quote it) and the Retry-After.
func TestRefusal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte("busy; your token secret-xyz is fine\n" + strings.Repeat("x", 2*maxErrorBody)))
	}))
	defer srv.Close()
	c, _ := NewClient(nil, srv.URL+"/whip/a?token=in-url", "secret-xyz")
	defer c.Close()
	_, _, err := c.Post(context.Background(), "v=0\r\n")
	if err == nil {
		t.Fatal("no error")
	}
	msg := err.Error()
	if strings.Contains(msg, "secret-xyz") || strings.Contains(msg, "in-url") {
		t.Errorf("error shows a secret: %s", msg)
	}
	if !strings.Contains(msg, "503 Service Unavailable: busy; your token <redacted> is fine") || RetryAfter(err) != 7*time.Second {
		t.Errorf("error %q, Retry-After %v", msg, RetryAfter(err))
	}
	if len(msg) > maxErrorBody+200 {
		t.Errorf("error of %d bytes", len(msg))
	}
}
