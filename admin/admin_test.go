package admin

import (
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/media"
)

const token = "test-admin-token-0123456789"

func newTestHandler(tok string) *Handler {
	return New(Config{Token: func() string { return tok }, Registry: media.NewRegistry(slog.New(slog.DiscardHandler)),
		Log: slog.New(slog.DiscardHandler)})
}

func call(h http.Handler, method, target, auth string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(method, target, nil)
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// TestOpenAPICoversRoutes: every route the API serves is in the embedded
// OpenAPI document, with its method, and the document lists nothing the
// API does not serve.
func TestOpenAPICoversRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.OpenAPI != "3.1.0" {
		t.Errorf("openapi = %q, want 3.1.0", doc.OpenAPI)
	}
	wildcard := regexp.MustCompile(`\{(\w+)(\.\.\.)?\}`)
	served := map[string]bool{}
	for _, r := range routes {
		p := wildcard.ReplaceAllString(r.pattern, "{$1}")
		key := strings.ToLower(r.method) + " " + p
		served[key] = true
		if _, ok := doc.Paths[p][strings.ToLower(r.method)]; !ok {
			t.Errorf("%s %s%s is served but not in openapi.json", r.method, strings.TrimSuffix(Prefix, "/"), r.pattern)
		}
	}
	for p, ops := range doc.Paths {
		for m := range ops {
			if !served[m+" "+p] {
				t.Errorf("openapi.json lists %s %s, which the API does not serve", strings.ToUpper(m), p)
			}
		}
	}
	// And each is reachable through the handler with the token.
	h := newTestHandler(token)
	if w := call(h, "GET", "/api/v1/openapi.json", "Bearer "+token); w.Code != 200 || !json.Valid(w.Body.Bytes()) {
		t.Errorf("GET openapi.json: %d", w.Code)
	}
}

// TestOpenAPICoversFields: every field the API's types put in their JSON is
// a property of their schema in openapi.json, and every property is a
// field: a client generated from the document sees what the API sends.
func TestOpenAPICoversFields(t *testing.T) {
	var doc struct {
		Components struct {
			Schemas map[string]struct {
				Properties map[string]json.RawMessage `json:"properties"`
			} `json:"schemas"`
		} `json:"components"`
	}
	if err := json.Unmarshal(openAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	for name, v := range map[string]any{"Session": Session{}, "Stream": Stream{}, "Publisher": Publisher{}, "Track": Track{}} {
		schema, ok := doc.Components.Schemas[name]
		if !ok {
			t.Errorf("openapi.json has no schema %s", name)
			continue
		}
		fields := map[string]bool{}
		typ := reflect.TypeOf(v)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = true
			if _, ok := schema.Properties[tag]; !ok {
				t.Errorf("%s.%s is sent as %q but is not a property of the %s schema", name, typ.Field(i).Name, tag, name)
			}
		}
		for p := range schema.Properties {
			if !fields[p] {
				t.Errorf("the %s schema has %q, which %s does not send", name, p, name)
			}
		}
	}
}

func TestAuth(t *testing.T) {
	h := newTestHandler(token)
	tests := []struct {
		name, target, auth string
		status             int
		errPart            string
	}{
		{"no token", "/api/v1/streams", "", 401, "needs a bearer token"},
		{"wrong token", "/api/v1/streams", "Bearer wrong-token-wrong-token", 401, "wrong bearer token"},
		{"basic", "/api/v1/streams", "Basic " + token, 401, "needs a bearer token"},
		{"query token", "/api/v1/streams?token=" + token, "", 400, "a token in the URL is refused"},
		{"query access_token", "/api/v1/streams?access_token=" + token, "Bearer " + token, 400, "a token in the URL is refused"},
		{"good", "/api/v1/streams", "Bearer " + token, 200, ""},
		{"unknown call", "/api/v1/nothing", "Bearer " + token, 404, "no such API call"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := call(h, "GET", tt.target, tt.auth)
			if w.Code != tt.status {
				t.Fatalf("status %d, want %d (%s)", w.Code, tt.status, w.Body)
			}
			if ct := w.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
			var body map[string]any
			if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
				t.Fatalf("body %q: %v", w.Body, err)
			}
			if tt.errPart != "" && !strings.Contains(body["error"].(string), tt.errPart) {
				t.Errorf("error %q does not say %q", body["error"], tt.errPart)
			}
			if tt.status == 401 && w.Header().Get("WWW-Authenticate") != `Bearer realm="bridge"` {
				t.Errorf("WWW-Authenticate %q", w.Header().Get("WWW-Authenticate"))
			}
			if strings.Contains(w.Body.String(), token) {
				t.Errorf("the answer echoes the token: %s", w.Body)
			}
		})
	}
}

// TestOff: without api.token every URL of the API is a 404, whatever is
// sent.
func TestOff(t *testing.T) {
	h := newTestHandler("")
	for _, target := range []string{"/api/v1/streams", "/api/v1/openapi.json", "/api/v1/streams?token=x"} {
		if w := call(h, "GET", target, "Bearer anything-at-all-here"); w.Code != 404 {
			t.Errorf("GET %s without api.token: %d, want 404", target, w.Code)
		}
	}
}

// TestDescribeTrack covers every codec of the hub (describeTrack panics
// on one it does not know).
func TestDescribeTrack(t *testing.T) {
	// A 1280x720 30 fps H.264 SPS (Baseline, from ffmpeg/libx264).
	sps := []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x01, 0x40, 0x16, 0xec, 0x04, 0x40, 0x00, 0x00, 0x03, 0x00, 0x40, 0x00, 0x00, 0x0f, 0x03, 0xc6, 0x0c, 0xa8}
	got := describeTrack(&media.Track{Codec: media.H264{SPS: sps}})
	if got.Kind != "video" || got.Codec != "H264" || got.Width != 1280 || got.Height != 720 || got.FPS != 30 {
		t.Errorf("H264: %+v, want video 1280x720 at 30 fps", got)
	}
	if got := describeTrack(&media.Track{Codec: media.H265{}}); got.Kind != "video" || got.Codec != "H265" || got.Width != 0 {
		t.Errorf("H265 without SPS: %+v", got)
	}
	if got := describeTrack(&media.Track{Codec: media.AAC{SampleRate: 48000, Channels: 2}}); got != (Track{Kind: "audio", Codec: "AAC", SampleRate: 48000, Channels: 2}) {
		t.Errorf("AAC: %+v", got)
	}
	if got := describeTrack(&media.Track{Codec: media.Opus{Channels: 2}}); got != (Track{Kind: "audio", Codec: "Opus", SampleRate: 48000, Channels: 2}) {
		t.Errorf("Opus: %+v", got)
	}
}
