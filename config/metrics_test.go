package config

import (
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want Metrics
	}{
		{name: "left out", yaml: "", want: Metrics{Path: "/metrics"}},
		{name: "null values count as left out", yaml: "metrics:\n  enabled:\n  path: ~\n  token:\n", want: Metrics{Path: "/metrics"}},
		{name: "enabled only", yaml: "metrics: {enabled: true}\n", want: Metrics{Enabled: true, Path: "/metrics"}},
		{
			name: "every key",
			yaml: "metrics:\n  enabled: true\n  path: \"/internal/prom-1.0_x~\"\n  token: \"abc-DEF._~+/==\"\n",
			want: Metrics{Enabled: true, Path: "/internal/prom-1.0_x~", Token: "abc-DEF._~+/=="},
		},
		{name: "token while off", yaml: "metrics: {token: t0k}\n", want: Metrics{Path: "/metrics", Token: "t0k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse("c.yaml", []byte(tt.yaml+"routes: [{path: a}]\n"))
			if err != nil {
				t.Fatal(err)
			}
			if c.Metrics != tt.want {
				t.Errorf("Metrics = %#v, want %#v", c.Metrics, tt.want)
			}
		})
	}
}

func TestParseMetricsErrors(t *testing.T) {
	const notPath = `is not a URL path (expected "/" followed by segments of letters, digits and "-._~", such as "/metrics")`
	tests := []struct {
		name string
		yaml string
		want []string
	}{
		{
			name: "unknown key",
			yaml: "metrics:\n  enabled: true\n  bearer: abc\n",
			want: []string{`c.yaml:3: metrics.bearer: unknown key (expected one of enabled, path, token)`},
		},
		{
			name: "wrong types",
			yaml: "metrics:\n  enabled: maybe\n  path: [a]\n",
			want: []string{
				`c.yaml:2: metrics.enabled: expected true or false, got the string "maybe"`,
				`c.yaml:3: metrics.path: expected a string, got a sequence`,
			},
		},
		{
			name: "not a mapping",
			yaml: "metrics: true\n",
			want: []string{`c.yaml:1: metrics: expected a mapping, got the boolean true`},
		},
		{name: "explicit empty path", yaml: "metrics:\n  path: \"\"\n", want: []string{`c.yaml:2: metrics.path: "" ` + notPath}},
		{name: "relative path", yaml: "metrics:\n  path: metrics\n", want: []string{`c.yaml:2: metrics.path: "metrics" ` + notPath}},
		{name: "root", yaml: "metrics:\n  path: /\n", want: []string{`c.yaml:2: metrics.path: "/" ` + notPath}},
		{name: "trailing slash", yaml: "metrics:\n  path: /metrics/\n", want: []string{`c.yaml:2: metrics.path: "/metrics/" ` + notPath}},
		{name: "empty segment", yaml: "metrics:\n  path: //metrics\n", want: []string{`c.yaml:2: metrics.path: "//metrics" ` + notPath}},
		{name: "dot segment", yaml: "metrics:\n  path: /a/../metrics\n", want: []string{`c.yaml:2: metrics.path: "/a/../metrics" ` + notPath}},
		{name: "wildcard", yaml: "metrics:\n  path: \"/m/{x}\"\n", want: []string{`c.yaml:2: metrics.path: "/m/{x}" ` + notPath}},
		{name: "query", yaml: "metrics:\n  path: \"/metrics?x=1\"\n", want: []string{`c.yaml:2: metrics.path: "/metrics?x=1" ` + notPath}},
		{
			// The token is not printed, even when it is the bad value.
			name: "bad token",
			yaml: "metrics:\n  enabled: true\n  token: \"SECRET token\"\n",
			want: []string{`c.yaml:3: metrics.token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`},
		},
		{
			name: "token of only padding",
			yaml: "metrics:\n  token: \"==\"\n",
			want: []string{`c.yaml:2: metrics.token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml+"routes: [{path: a}]\n"))
			if err == nil {
				t.Fatalf("no error, want %q", tt.want)
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

// TestMetricsZero: a Config built in Go with no Metrics is valid, metrics
// off, served at the default path if turned on.
func TestMetricsZero(t *testing.T) {
	c := Default()
	c.Metrics = Metrics{}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate with zero Metrics: %v", err)
	}
	if p := c.Metrics.MetricsPath(); p != DefaultMetricsPath {
		t.Errorf("MetricsPath of zero Metrics = %q, want %q", p, DefaultMetricsPath)
	}
	if p := (Metrics{Path: "/m"}).MetricsPath(); p != "/m" {
		t.Errorf("MetricsPath = %q, want /m", p)
	}
	if d := Default().Metrics; d.Enabled || d.Token != "" || d.Path != DefaultMetricsPath {
		t.Errorf("Default().Metrics = %#v, want off at %s without a token", d, DefaultMetricsPath)
	}
}

func TestMetricsTokenNotPrinted(t *testing.T) {
	c, err := Parse("c.yaml", []byte("metrics: {enabled: true, token: s3cret-tok}\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "cfg", c, "metrics", c.Metrics)
	out := fmt.Sprintf("%v %v %+v", c, c.Metrics, c.Metrics) + logged.String()
	if strings.Contains(out, "s3cret-tok") {
		t.Errorf("token printed: %s", out)
	}
	if !strings.Contains(out, `metrics={enabled=true path="/metrics" token=<redacted>}`) {
		t.Errorf("metrics not described: %s", out)
	}
}
