package metrics

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/internal/panics"
)

// TestPanicsServed: a panic the boundary recovered shows at the next scrape
// as bridge_panics_total of its component.
func TestPanicsServed(t *testing.T) {
	m := newMetrics(t, Sources{})
	const component = "metrics test"
	log := slog.New(slog.DiscardHandler)
	for range 2 {
		panics.Do(component, log, func() { panic("boom") })
	}
	body := scrape(t, m.Handler())
	if want := `bridge_panics_total{component="metrics test"} 2`; !strings.Contains(body, want) {
		t.Errorf("scrape has no %q:\n%s", want, body)
	}
}
