package health

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

// get serves one request through a mux with c mounted and decodes the
// JSON body.
func get(t *testing.T, c *Checker, path string) (int, Report) {
	t.Helper()
	mux := http.NewServeMux()
	c.Mount(mux)
	w := httptest.NewRecorder()
	mux.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s: Content-Type %q, want application/json", path, ct)
	}
	var rep Report
	if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil {
		t.Fatalf("%s: body %q: %v", path, w.Body.String(), err)
	}
	return w.Code, rep
}

func TestZeroValueIsReady(t *testing.T) {
	var c Checker
	if code, _ := get(t, &c, "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d, want 200", code)
	}
	code, rep := get(t, &c, "/readyz")
	if code != http.StatusOK || !rep.Ready || rep.Reason != "" {
		t.Fatalf("/readyz: %d %+v, want 200 ready", code, rep)
	}
}

func TestFailingCheck(t *testing.T) {
	var c Checker
	var failing atomic.Bool
	failing.Store(true)
	c.Register("acme", func() error {
		if failing.Load() {
			return errors.New(`no certificate for "bridge.example.com" yet`)
		}
		return nil
	})
	c.Register("disk", func() error { return nil })
	code, rep := get(t, &c, "/readyz")
	if code != http.StatusServiceUnavailable || rep.Ready {
		t.Fatalf("/readyz with a failing check: %d %+v, want 503", code, rep)
	}
	if !strings.Contains(rep.Reason, `acme: no certificate for "bridge.example.com" yet`) {
		t.Errorf("reason %q does not name the failing check and its error", rep.Reason)
	}
	if len(rep.Checks) != 2 || rep.Checks[0] != (Result{Name: "acme", Error: `no certificate for "bridge.example.com" yet`}) ||
		rep.Checks[1] != (Result{Name: "disk", OK: true}) {
		t.Errorf("checks %+v, want acme failing then disk ok", rep.Checks)
	}
	if code, _ := get(t, &c, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz with a failing check: %d, want 200 (alive)", code)
	}
	failing.Store(false)
	if code, rep := get(t, &c, "/readyz"); code != http.StatusOK || !rep.Ready {
		t.Errorf("/readyz once the check passes: %d %+v, want 200", code, rep)
	}
}

func TestDrain(t *testing.T) {
	var c Checker
	c.Register("ok", func() error { return nil })
	c.Drain("shutting down: SIGTERM")
	c.Drain("second call")
	code, rep := get(t, &c, "/readyz")
	if code != http.StatusServiceUnavailable || rep.Reason != "shutting down: SIGTERM" {
		t.Fatalf("/readyz while draining: %d %+v, want 503 with the first reason", code, rep)
	}
	if code, _ := get(t, &c, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
}

func TestHangingCheck(t *testing.T) {
	var c Checker
	release := make(chan struct{})
	defer close(release)
	var calls atomic.Int32
	c.Register("stuck", func() error { calls.Add(1); <-release; return nil })
	for range 2 {
		code, rep := get(t, &c, "/readyz")
		if code != http.StatusServiceUnavailable || !strings.Contains(rep.Reason, "stuck: did not answer within 2s") {
			t.Fatalf("/readyz with a hanging check: %d %+v", code, rep)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("hanging check called %d times, want 1 (one run in flight at most)", n)
	}
}

func TestPanickingCheck(t *testing.T) {
	var c Checker
	c.Register("bad", func() error { panic("boom") })
	code, rep := get(t, &c, "/readyz")
	if code != http.StatusServiceUnavailable || !strings.Contains(rep.Reason, `check "bad" panicked`) {
		t.Fatalf("/readyz with a panicking check: %d %+v", code, rep)
	}
}
