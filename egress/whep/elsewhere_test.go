package whep

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// TestRefusals: how a viewer's POST is answered for each refusal of the
// access contract, by Authorize or by Locate: 307 with Location for a
// stream another node serves, 401 for a key, 404 for no route or no
// stream.
func TestRefusals(t *testing.T) {
	const other = "https://node2.example/whep/"
	authorize := func(r access.Request) error {
		switch {
		case r.Action != access.Read || r.Protocol != access.WHEP:
			t.Errorf("Authorize got %v", r)
		case strings.HasPrefix(r.Path, "moved/"):
			return &access.Elsewhere{Location: other + r.Path}
		case strings.HasPrefix(r.Path, "key/") && r.Credential != "k":
			return access.BadKey(access.Read)
		case strings.HasPrefix(r.Path, "noroute/"):
			return access.ErrNoRoute
		}
		return nil
	}
	locate := func(_ context.Context, path string) (*media.Stream, error) {
		if strings.HasPrefix(path, "relayed/") {
			return nil, &access.Elsewhere{Location: other + path}
		}
		return nil, access.ErrNoStream
	}
	mux := http.NewServeMux()
	NewHandler(Config{Registry: media.NewRegistry(nil), Authorize: testkit.Authorizer(authorize), Locate: locate}).Register(mux)
	srv := httptest.NewServer(mux)
	defer srv.Close()
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, tc := range []struct {
		path, token string
		status      int
		location    string
	}{
		{"moved/cam", "", http.StatusTemporaryRedirect, other + "moved/cam"},
		{"relayed/cam", "", http.StatusTemporaryRedirect, other + "relayed/cam"},
		{"key/cam", "", http.StatusUnauthorized, ""},
		{"key/cam", "wrong", http.StatusUnauthorized, ""},
		{"noroute/cam", "", http.StatusNotFound, ""},
		{"live/none", "", http.StatusNotFound, ""},
	} {
		req, err := http.NewRequest(http.MethodPost, srv.URL+"/whep/"+tc.path, strings.NewReader("v=0\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/sdp")
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status || resp.Header.Get("Location") != tc.location {
			t.Errorf("%s (token %q): %s, Location %q; want %d, %q", tc.path, tc.token, resp.Status, resp.Header.Get("Location"), tc.status, tc.location)
		}
	}
}
