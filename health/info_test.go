package health

import (
	"errors"
	"net/http"
	"testing"
)

// TestInformationalCheck: a failing informational check is reported in
// /readyz's body, marked informational with its error, and /readyz stays
// 200; a failing ordinary check next to it still fails readiness.
func TestInformationalCheck(t *testing.T) {
	var c Checker
	c.RegisterInfo("cluster", func() error { return errors.New("degraded: redis unreachable") })
	code, rep := get(t, &c, "/readyz")
	if code != http.StatusOK || !rep.Ready || rep.Reason != "" {
		t.Fatalf("/readyz with a failing informational check: %d %+v, want 200 ready", code, rep)
	}
	if len(rep.Checks) != 1 || rep.Checks[0] != (Result{Name: "cluster", Error: "degraded: redis unreachable", Informational: true}) {
		t.Errorf("checks %+v, want cluster reported degraded, informational", rep.Checks)
	}
	c.Register("acme", func() error { return errors.New("no certificate yet") })
	if code, rep := get(t, &c, "/readyz"); code != http.StatusServiceUnavailable || rep.Reason != "failing checks: acme: no certificate yet" {
		t.Errorf("/readyz with a failing ordinary check too: %d %+v, want 503 naming acme only", code, rep)
	}
}
