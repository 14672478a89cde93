package dashboard

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// TestOffWithoutToken: while api.token is unset every /dashboard URL is a
// 404 whatever the method, as the API's are; once set (a reload), the page
// and its files are served and other methods are refused.
func TestOffWithoutToken(t *testing.T) {
	var on atomic.Bool
	mux := http.NewServeMux()
	New(Config{Enabled: on.Load}).Register(mux)
	do := func(method, target string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		mux.ServeHTTP(w, httptest.NewRequest(method, target, nil))
		return w
	}
	for _, target := range []string{"/dashboard", "/dashboard/", "/dashboard/dashboard.js", "/dashboard/nothing"} {
		for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
			if w := do(method, target); w.Code != http.StatusNotFound {
				t.Errorf("api.token unset: %s %s = %d, want 404", method, target, w.Code)
			}
		}
	}

	on.Store(true)
	for target, wantType := range map[string]string{
		"/dashboard":               "text/html; charset=utf-8",
		"/dashboard/":              "text/html; charset=utf-8",
		"/dashboard/dashboard.js":  "text/javascript; charset=utf-8",
		"/dashboard/dashboard.css": "text/css; charset=utf-8",
	} {
		w := do(http.MethodGet, target)
		if w.Code != http.StatusOK || w.Header().Get("Content-Type") != wantType {
			t.Errorf("GET %s = %d %q, want 200 %q", target, w.Code, w.Header().Get("Content-Type"), wantType)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("GET %s: CSP %q does not forbid framing", target, csp)
		}
	}
	if body := do(http.MethodGet, "/dashboard").Body.String(); !strings.Contains(body, `src="/dashboard/dashboard.js"`) {
		t.Errorf("the page does not load its script: %.200s", body)
	}
	if w := do(http.MethodGet, "/dashboard/nothing"); w.Code != http.StatusNotFound {
		t.Errorf("GET /dashboard/nothing = %d, want 404", w.Code)
	}
	if w := do(http.MethodPost, "/dashboard"); w.Code != http.StatusMethodNotAllowed || w.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /dashboard = %d Allow %q, want 405 \"GET, HEAD\"", w.Code, w.Header().Get("Allow"))
	}
}
