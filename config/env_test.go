package config

import (
	"strings"
	"testing"
	"time"
)

// TestEnvExpansion: "${NAME}" in a value takes the environment's NAME, in
// strings (whole or in part), numbers and durations; "$$" is a "$"; a lone
// "$" stays; a quoted value stays a string.
func TestEnvExpansion(t *testing.T) {
	t.Setenv("BRIDGE_TEST_TOKEN", "s3cr3t-token")
	t.Setenv("BRIDGE_TEST_TURN", "turn-secret")
	t.Setenv("BRIDGE_TEST_HOST", "127.0.0.1")
	t.Setenv("BRIDGE_TEST_RATE", "7")
	t.Setenv("BRIDGE_TEST_WAIT", "3s")
	t.Setenv("BRIDGE_TEST_EMPTY", "")
	yaml := `listen:
  http: ${BRIDGE_TEST_HOST}:8080
limits:
  patch_rate: ${BRIDGE_TEST_RATE}
  webrtc_connect_timeout: ${BRIDGE_TEST_WAIT}
  ice_check_rate: ${BRIDGE_TEST_EMPTY}
webrtc:
  ice_servers:
    - urls: ["turn:turn.example.com"]
      username: "u$$er$"
      credential: "pa$$${BRIDGE_TEST_TURN}"
metrics:
  token: "${BRIDGE_TEST_TOKEN}"
routes:
  - path: a
    whep: {token: &tok "${BRIDGE_TEST_TOKEN}"}
    publish_key: ${BRIDGE_TEST_RATE}
  - path: b
    whep: {token: *tok}
`
	c, err := Parse("c.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	ice := c.WebRTC.ICEServers[0]
	for _, check := range []struct {
		key       string
		got, want any
	}{
		{"listen.http", c.Listen.HTTP, "127.0.0.1:8080"},
		{"limits.patch_rate", c.Limits.PatchRate, 7},
		{"limits.webrtc_connect_timeout", c.Limits.WebRTCConnectTimeout, 3 * time.Second},
		{"limits.ice_check_rate (empty: the default)", c.Limits.ICECheckRate, Default().Limits.ICECheckRate},
		{"username ($$ and a lone $)", ice.Username, "u$er$"},
		{"credential", ice.Credential, "pa$turn-secret"},
		{"metrics.token", c.Metrics.Token, "s3cr3t-token"},
		{"routes[0].whep.token", c.Routes[0].ReadKey, "s3cr3t-token"},
		{"routes[0].publish_key (a number as a string)", c.Routes[0].PublishKey, "7"},
		{"routes[1].whep.token (alias)", c.Routes[1].ReadKey, "s3cr3t-token"},
	} {
		if check.got != check.want {
			t.Errorf("%s = %v, want %v", check.key, check.got, check.want)
		}
	}
}

// TestEnvExpansionErrors: a missing variable or a malformed reference is
// an error at its line naming the variable and the key, and an expanded
// value is never printed, even where the value is wrong.
func TestEnvExpansionErrors(t *testing.T) {
	const secret = "hunter2-not-printed"
	t.Setenv("BRIDGE_TEST_SECRET", secret)
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{
			name: "missing variable",
			yaml: "routes:\n  - path: a\n    whep:\n      token: ${BRIDGE_TEST_UNSET}\n",
			want: []string{`c.yaml:4: routes[0].whep.token: ${BRIDGE_TEST_UNSET}: environment variable BRIDGE_TEST_UNSET is not set (export it to the bridge's environment, or write $$ for a literal "$")`},
		},
		{
			name: "no closing brace",
			yaml: "routes:\n  - path: a\n    publish_key: \"${BRIDGE_TEST_SECRET\"\n",
			want: []string{`c.yaml:3: routes[0].publish_key: "${" has no closing "}" (expected ${NAME}; write $$ for a literal "$")`},
		},
		{
			name: "bad name",
			yaml: "metrics:\n  token: ${1ABC}\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:2: metrics.token: ${1ABC}: "1ABC" is not an environment variable name (expected letters, digits and "_", not starting with a digit; write $$ for a literal "$")`},
		},
		{
			name: "invalid expanded value (validation)",
			yaml: "listen:\n  http: ${BRIDGE_TEST_SECRET}\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:2: listen.http: "${BRIDGE_TEST_SECRET}" is not a valid listen address (expected host:port with port 1-65535)`},
		},
		{
			name: "invalid expanded value (type)",
			yaml: "limits:\n  patch_rate: \"${BRIDGE_TEST_SECRET}\"\nroutes: [{path: a}]\n",
			want: []string{`c.yaml:2: limits.patch_rate: expected a whole number, got the string "${BRIDGE_TEST_SECRET}"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the expanded secret is printed: %v", err)
			}
		})
	}
}
