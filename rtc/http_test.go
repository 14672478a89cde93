package rtc

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
)

func TestReadSDP(t *testing.T) {
	cases := []struct {
		name, ctype, body string
		status            int
		msg               string
	}{
		{"ok", "application/sdp", "v=0\r\n", 0, ""},
		{"ok with params", "application/sdp; charset=utf-8", "v=0\r\n", 0, ""},
		{"json", "application/json", "{}", 415, "got application/json"},
		{"none", "", "v=0", 415, "got none"},
		{"empty", "application/sdp", "", 400, "empty"},
		{"too large", "application/sdp", strings.Repeat("a", MaxSDPSize+1), 413, "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/whep/x", strings.NewReader(c.body))
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			got, err := ReadSDP(httptest.NewRecorder(), r)
			if c.status == 0 {
				if err != nil || got != c.body {
					t.Fatalf("got %q, %v", got, err)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) || he.Status != c.status || !strings.Contains(he.Msg, c.msg) {
				t.Fatalf("got %v, want %d containing %q", err, c.status, c.msg)
			}
		})
	}
}

func TestWriteError(t *testing.T) {
	w := httptest.NewRecorder()
	WriteError(w, Errorf(http.StatusUnauthorized, "wrong bearer token"))
	if w.Code != 401 || w.Header().Get("WWW-Authenticate") == "" || !strings.Contains(w.Body.String(), "wrong bearer token") {
		t.Errorf("401: %d %v %q", w.Code, w.Header(), w.Body)
	}
	w = httptest.NewRecorder()
	WriteError(w, errors.New("secret internals"))
	if w.Code != 500 || strings.Contains(w.Body.String(), "secret") {
		t.Errorf("plain error leaked or wrong status: %d %q", w.Code, w.Body)
	}
}

func TestBearerToken(t *testing.T) {
	for hdr, want := range map[string]string{"Bearer abc": "abc", "bearer  abc ": "abc", "Basic abc": "", "": "", "Bearer": ""} {
		r := httptest.NewRequest(http.MethodPost, "/", nil)
		r.Header.Set("Authorization", hdr)
		if got := BearerToken(r); got != want {
			t.Errorf("%q: got %q, want %q", hdr, got, want)
		}
	}
}

func TestCORSPreflight(t *testing.T) {
	reached := false
	h := CORS(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { reached = true }))
	for path, accept := range map[string]string{"/whep/live/x": "Accept-Post", "/sessions/abc": "Accept-Patch"} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodOptions, path, nil)
		r.Header.Set("Origin", "https://elsewhere.example")
		h.ServeHTTP(w, r)
		if w.Code != http.StatusNoContent || w.Header().Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(w.Header().Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(w.Header().Get("Access-Control-Expose-Headers"), "Location") ||
			w.Header().Get(accept) == "" {
			t.Errorf("OPTIONS %s: %d %v", path, w.Code, w.Header())
		}
	}
	if reached {
		t.Error("preflight reached the handler (it must not need auth)")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/whep/x", nil))
	if !reached || w.Header().Get("Access-Control-Allow-Origin") != "*" {
		t.Error("POST not passed through with CORS headers")
	}
}

func TestLinkHeaders(t *testing.T) {
	got := LinkHeaders([]webrtc.ICEServer{
		{URLs: []string{"stun:stun.example:3478"}},
		{URLs: []string{"turn:turn.example?transport=udp"}, Username: "u", Credential: "p"},
	})
	want := []string{
		`<stun:stun.example:3478>; rel="ice-server"`,
		`<turn:turn.example?transport=udp>; rel="ice-server"; username="u"; credential="p"; credential-type="password"`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got %q, want %q", got, want)
	}
}

type fakeSession struct{ closed chan string }

func (f *fakeSession) Close(reason string) { f.closed <- reason }

func TestSessions(t *testing.T) {
	tab := NewSessions(2, nil)
	mux := http.NewServeMux()
	tab.Register(mux)
	id1, err := tab.Reserve()
	if err != nil {
		t.Fatal(err)
	}
	if len(id1) != 32 {
		t.Errorf("id %q: want 128 random bits in hex", id1)
	}
	id2, _ := tab.Reserve()
	if _, err := tab.Reserve(); !errors.Is(err, ErrFull) {
		t.Fatalf("third Reserve: %v, want ErrFull", err)
	}
	s := &fakeSession{closed: make(chan string, 1)}
	tab.Set(id1, s)

	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodPatch, SessionPathPrefix+id1, nil))
	if w.Code != http.StatusMethodNotAllowed {
		t.Errorf("PATCH: %d", w.Code)
	}
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodDelete, SessionPathPrefix+id1, nil))
	if w.Code != http.StatusOK {
		t.Errorf("DELETE: %d", w.Code)
	}
	select {
	case <-s.closed:
	case <-time.After(time.Second):
		t.Fatal("DELETE did not close the session")
	}
	// A reserved but unset id is not a session yet.
	w = httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodDelete, SessionPathPrefix+id2, nil))
	if w.Code != http.StatusNotFound {
		t.Errorf("DELETE reserved id: %d, want 404", w.Code)
	}
	tab.Remove(id1)
	tab.Remove(id2)
	if tab.Len() != 0 {
		t.Errorf("Len = %d after Remove", tab.Len())
	}
	r := httptest.NewRequest(http.MethodPost, "/whep/x", nil)
	r.Host = "bridge.example:8080"
	if got := Location(r, "abc"); got != "http://bridge.example:8080/sessions/abc" {
		t.Errorf("Location = %q", got)
	}
}

func TestSenderReporter(t *testing.T) {
	var r SenderReporter
	r.SSRC = 42
	now := time.Unix(1700000000, 500_000_000)
	if r.Report(now) != nil {
		t.Fatal("report before any packet")
	}
	r.OnPacket(90000, now.Add(-time.Second), 100)
	r.OnPacket(93000, now.Add(-time.Second+time.Second/30), 50)
	sr := r.Report(now)
	if sr == nil || sr.SSRC != 42 || sr.RTPTime != 93000 || sr.PacketCount != 2 || sr.OctetCount != 150 {
		t.Fatalf("report %+v", sr)
	}
	// NTP time is the media-clock time of the last packet, not now.
	wantNTP := ntpTime(now.Add(-time.Second + time.Second/30))
	if sr.NTPTime != wantNTP {
		t.Errorf("NTP %x, want %x", sr.NTPTime, wantNTP)
	}
	if secs := sr.NTPTime >> 32; secs != 1700000000-1+2208988800 {
		t.Errorf("NTP seconds %d", secs)
	}
	if r.Report(now.Add(SenderReportInterval/2)) != nil {
		t.Error("second report within the interval")
	}
	if r.Report(now.Add(SenderReportInterval)) == nil {
		t.Error("no report after the interval")
	}
}
