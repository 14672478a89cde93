package rtc

import (
	"errors"
	"log/slog"
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
	for _, status := range []int{503, 429} {
		w = httptest.NewRecorder()
		WriteError(w, Errorf(status, "full"))
		if w.Code != status || w.Header().Get("Retry-After") != "10" {
			t.Errorf("%d: Retry-After %q, want 10", status, w.Header().Get("Retry-After"))
		}
	}
	w = httptest.NewRecorder()
	WriteError(w, &Error{Status: 429, Msg: "slow down", RetryAfter: 1500 * time.Millisecond})
	if w.Header().Get("Retry-After") != "2" {
		t.Errorf("Retry-After %q for 1.5 s, want 2 (rounded up)", w.Header().Get("Retry-After"))
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
	for _, c := range []struct{ path, accept, value, method string }{
		{"/whep/live/x", "Accept-Post", "application/sdp", "POST"},
		{"/whip/live/x", "Accept-Post", "application/sdp", "POST"},
		{"/sessions/abc", "Accept-Patch", "application/trickle-ice-sdpfrag", "PATCH"},
	} {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodOptions, c.path, nil)
		r.Header.Set("Origin", "https://elsewhere.example")
		r.Header.Set("Authorization", "Bearer wrong") // never checked
		h.ServeHTTP(w, r)
		hdr := w.Header()
		if w.Code != http.StatusOK || w.Body.Len() != 0 || hdr.Get("Access-Control-Allow-Origin") != "*" ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "Authorization") ||
			!strings.Contains(hdr.Get("Access-Control-Allow-Headers"), "If-Match") ||
			hdr.Get("Access-Control-Expose-Headers") != "Location, ETag, Link, Accept-Post, Accept-Patch, Access-Control-Allow-Methods" ||
			hdr.Get(c.accept) != c.value ||
			!strings.Contains(hdr.Get("Allow"), c.method) || !strings.Contains(hdr.Get("Access-Control-Allow-Methods"), c.method) {
			t.Errorf("OPTIONS %s: %d %v", c.path, w.Code, hdr)
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

// fakeSession records what the session table asks of it.
type fakeSession struct {
	closed  chan string
	etag    string
	ufrag   string
	trickle []*Sdpfrag
	restart []*Sdpfrag
	fail    error // returned by Trickle and RestartICE
}

func (f *fakeSession) Close(reason string)    { f.closed <- reason }
func (f *fakeSession) ETag() string           { return f.etag }
func (f *fakeSession) RemoteICEUfrag() string { return f.ufrag }
func (f *fakeSession) Trickle(frag *Sdpfrag) error {
	f.trickle = append(f.trickle, frag)
	return f.fail
}
func (f *fakeSession) RestartICE(frag *Sdpfrag) (string, string, error) {
	f.restart = append(f.restart, frag)
	if f.fail != nil {
		return "", "", f.fail
	}
	f.ufrag, f.etag = frag.ICEUfrag, `"restarted"`
	return "a=ice-ufrag:srv2\r\na=ice-pwd:srvpwd2srvpwd2srvpwd2srvpwd2\r\n", f.etag, nil
}

func TestSessions(t *testing.T) {
	tab := NewSessions(Limits{Sessions: 2}, nil)
	mux := http.NewServeMux()
	tab.Register(mux)
	id1, err := tab.Reserve(Claim{Peer: "192.0.2.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	if len(id1) != 32 {
		t.Errorf("id %q: want 128 random bits in hex", id1)
	}
	id2, _ := tab.Reserve(Claim{Peer: "192.0.2.2:5000"})
	var he *Error
	if _, err := tab.Reserve(Claim{Peer: "192.0.2.3:5000"}); !errors.As(err, &he) || he.Status != 503 || !strings.Contains(he.Msg, "session limit") {
		t.Fatalf("third Reserve: %v, want a 503 at the session limit", err)
	}
	s := &fakeSession{closed: make(chan string, 1)}
	tab.Set(id1, s)
	tab.Connected(id1)

	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest(http.MethodPut, SessionPathPrefix+id1, nil))
	if w.Code != http.StatusMethodNotAllowed || !strings.Contains(w.Header().Get("Allow"), "PATCH") {
		t.Errorf("PUT: %d, Allow %q", w.Code, w.Header().Get("Allow"))
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

// TestSessionPatch walks a PATCH through every status of servePatch, with
// a fake session.
func TestSessionPatch(t *testing.T) {
	tab := NewSessions(Limits{}, slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	tab.Register(mux)
	id, err := tab.Reserve(Claim{Peer: "192.0.2.1:5000"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSession{closed: make(chan string, 1), etag: `"e1"`, ufrag: "cli1"}
	tab.Set(id, s)
	tab.Connected(id)

	const (
		trickle = "a=ice-ufrag:cli1\r\na=ice-pwd:clientpwdclientpwd1234\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" +
			"a=candidate:1 1 udp 2122260223 192.0.2.1 61764 typ host\r\na=end-of-candidates\r\n"
		restart = "a=ice-ufrag:cli2\r\na=ice-pwd:clientpwdclientpwd5678\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n" +
			"a=candidate:1 1 udp 2122260223 192.0.2.1 61766 typ host\r\n"
		noPwd    = "a=ice-ufrag:cli2\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
		restart3 = "a=ice-ufrag:cli3\r\na=ice-pwd:clientpwdclientpwd9012\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\n"
	)
	cases := []struct {
		name, path, ctype, ifMatch, body string
		fail                             error
		status                           int
		etag                             string // want this ETag in the response ("" none)
		trickled, restarted              int
	}{
		{name: "unknown session", path: "0123", ctype: SdpfragType, body: trickle, status: 404},
		{name: "SDP answer to a session that answered the offer", ctype: "application/sdp", body: trickle, status: 422},
		{name: "another type", ctype: "text/plain", body: trickle, status: 415},
		{name: "no content type", body: trickle, status: 415},
		{name: "too large", ctype: SdpfragType, body: strings.Repeat("a=x\r\n", MaxSdpfragSize), status: 413},
		{name: "empty", ctype: SdpfragType, body: "", status: 400},
		{name: "stale If-Match", ctype: SdpfragType, ifMatch: `"e0"`, body: trickle, status: 412},
		{name: "stale If-Match beats a bad body", ctype: SdpfragType, ifMatch: `"e0"`, body: "junk", status: 412},
		{name: "weak If-Match", ctype: SdpfragType, ifMatch: `W/"e1"`, body: trickle, status: 412},
		{name: "malformed", ctype: SdpfragType, ifMatch: `"e1"`, body: "junk", status: 400},
		{name: "trickle", ctype: SdpfragType, ifMatch: `"e1"`, body: trickle, status: 204, trickled: 1},
		{name: "trickle with params in the content type", ctype: SdpfragType + "; charset=utf-8", ifMatch: `"e1"`, body: trickle, status: 204, trickled: 1},
		{name: "trickle without If-Match (whip-whep.js)", ctype: SdpfragType, body: trickle, status: 204, trickled: 1},
		{name: "trickle with If-Match *", ctype: SdpfragType, ifMatch: "*", body: trickle, status: 204, trickled: 1},
		{name: "trickle refused by the session", ctype: SdpfragType, body: trickle, fail: Errorf(http.StatusPreconditionFailed, "restarted meanwhile"), status: 412, trickled: 1},
		{name: "restart without If-Match", ctype: SdpfragType, body: restart, status: 428},
		{name: "restart without ice-pwd", ctype: SdpfragType, ifMatch: "*", body: noPwd, status: 400},
		{name: "restart failing", ctype: SdpfragType, ifMatch: "*", body: restart, fail: errors.New("pion says no"), status: 500, restarted: 1},
		{name: "restart", ctype: SdpfragType, ifMatch: "*", body: restart, status: 200, etag: `"restarted"`, restarted: 1},
		{name: "old ETag after the restart", ctype: SdpfragType, ifMatch: `"e1"`, body: restart, status: 412},
		{name: "restart with another tag", ctype: SdpfragType, ifMatch: `"e1*"`, body: restart3, status: 412},
		{name: `restart with If-Match "*" (RFC 9725's quoting)`, ctype: SdpfragType, ifMatch: `"*"`, body: restart3, status: 200, etag: `"restarted"`, restarted: 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s.trickle, s.restart, s.fail = nil, nil, c.fail
			path := id
			if c.path != "" {
				path = c.path
			}
			r := httptest.NewRequest(http.MethodPatch, SessionPathPrefix+path, strings.NewReader(c.body))
			if c.ctype != "" {
				r.Header.Set("Content-Type", c.ctype)
			}
			if c.ifMatch != "" {
				r.Header.Set("If-Match", c.ifMatch)
			}
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			if w.Code != c.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, c.status, w.Body)
			}
			if got := w.Header().Get("ETag"); got != c.etag {
				t.Errorf("ETag %q, want %q", got, c.etag)
			}
			if len(s.trickle) != c.trickled || len(s.restart) != c.restarted {
				t.Errorf("trickled %d restarted %d, want %d %d", len(s.trickle), len(s.restart), c.trickled, c.restarted)
			}
			switch c.status {
			case 204:
				if w.Body.Len() != 0 {
					t.Errorf("204 with a body: %q", w.Body)
				}
				if f := s.trickle[0]; f.ICEUfrag != "cli1" || len(f.Media) != 1 || len(f.Media[0].Candidates) != 1 {
					t.Errorf("session got %+v", f)
				}
			case 200:
				if ct := w.Header().Get("Content-Type"); ct != SdpfragType {
					t.Errorf("Content-Type %q", ct)
				}
				if f, err := ParseSdpfrag(w.Body.String()); err != nil || f.ICEUfrag != "srv2" {
					t.Errorf("restart answer %q: %+v %v", w.Body, f, err)
				}
				if !strings.Contains(c.body, "a=ice-ufrag:"+s.restart[0].ICEUfrag+"\r\n") || s.restart[0].ICEPwd == "" {
					t.Errorf("session got %+v", s.restart[0])
				}
			case 415:
				if w.Header().Get("Accept-Patch") != SdpfragType {
					t.Errorf("415 without Accept-Patch: %v", w.Header())
				}
			}
		})
	}
	select {
	case reason := <-s.closed:
		t.Fatalf("a PATCH closed the session (%s)", reason)
	default:
	}

	// GET and HEAD on the session: 204, with the entity-tag.
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(m, SessionPathPrefix+id, nil))
		if w.Code != http.StatusNoContent || w.Header().Get("ETag") != `"restarted"` || w.Body.Len() != 0 {
			t.Errorf("%s session: %d %v %q", m, w.Code, w.Header(), w.Body)
		}
	}
	// DELETE with a stale If-Match: 200 all the same.
	r := httptest.NewRequest(http.MethodDelete, SessionPathPrefix+id, nil)
	r.Header.Set("If-Match", `"stale"`)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Errorf("DELETE with a stale If-Match: %d", w.Code)
	}
	<-s.closed
}

func TestRegisterEndpoint(t *testing.T) {
	mux := http.NewServeMux()
	posted := false
	RegisterEndpoint(mux, "/whep/", func(w http.ResponseWriter, r *http.Request) {
		posted = r.PathValue("path") == "live/cam"
		w.WriteHeader(http.StatusCreated)
	})
	for _, c := range []struct {
		method string
		status int
	}{{http.MethodGet, 204}, {http.MethodHead, 204}, {http.MethodPost, 201}, {http.MethodPut, 405}, {http.MethodDelete, 405}} {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(c.method, "/whep/live/cam", nil))
		if w.Code != c.status || (c.status != 405 && w.Body.Len() != 0) {
			t.Errorf("%s: %d %q, want %d", c.method, w.Code, w.Body, c.status)
		}
		if c.status == 405 && !strings.Contains(w.Header().Get("Allow"), "POST") {
			t.Errorf("%s: Allow %q", c.method, w.Header().Get("Allow"))
		}
	}
	if !posted {
		t.Error("POST not routed with its path")
	}
}

func TestWriteAnswer(t *testing.T) {
	w := httptest.NewRecorder()
	WriteAnswer(w, "http://h/sessions/x", `"e"`, "v=0\r\n", []webrtc.ICEServer{{URLs: []string{"stun:s"}}})
	h := w.Header()
	if w.Code != 201 || h.Get("Location") != "http://h/sessions/x" || h.Get("ETag") != `"e"` || h.Get("Content-Type") != "application/sdp" ||
		h.Get("Accept-Patch") != SdpfragType || h.Get("Link") != `<stun:s>; rel="ice-server"` || w.Body.String() != "v=0\r\n" {
		t.Errorf("%d %v %q", w.Code, h, w.Body)
	}
}

// TestRealPatchRequests replays the PATCH requests logged from real clients
// (Chromium with whip-whep.js, GStreamer's simple-whip-client) against a
// session of the ICE session they were for: each is a trickle, answered
// 204, If-Match or not.
func TestRealPatchRequests(t *testing.T) {
	for name, p := range realPatches(t) {
		t.Run(name, func(t *testing.T) {
			f, err := ParseSdpfrag(p.Body)
			if err != nil {
				t.Fatal(err)
			}
			tab := NewSessions(Limits{}, slog.New(slog.DiscardHandler))
			mux := http.NewServeMux()
			tab.Register(mux)
			id, _ := tab.Reserve(Claim{Peer: "192.0.2.1:5000"})
			defer tab.Remove(id)
			etag := p.IfMatch
			if etag == "" {
				etag = `"unsent"`
			}
			s := &fakeSession{etag: etag, ufrag: f.ICEUfrag}
			tab.Set(id, s)
			r := httptest.NewRequest(http.MethodPatch, SessionPathPrefix+id, strings.NewReader(p.Body))
			r.Header.Set("Content-Type", p.CT)
			if p.IfMatch != "" {
				r.Header.Set("If-Match", p.IfMatch)
			}
			w := httptest.NewRecorder()
			mux.ServeHTTP(w, r)
			if w.Code != http.StatusNoContent || len(s.trickle) != 1 || len(s.restart) != 0 {
				t.Errorf("%d %q: trickled %d restarted %d", w.Code, w.Body, len(s.trickle), len(s.restart))
			}
		})
	}
}
