package config

import (
	"strings"
	"testing"
)

func TestAPISettings(t *testing.T) {
	if d := Default(); d.API.Token != "" || d.Listen.API != "" {
		t.Errorf("default api = %+v, listen.api %q; want off", d.API, d.Listen.API)
	}
	c, err := Parse("c.yaml", []byte("api:\n  token: abcdefghijklmnop1234\nlisten:\n  api: \"127.0.0.1:9997\"\nroutes: [{path: a}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.API.Token != "abcdefghijklmnop1234" || c.Listen.API != "127.0.0.1:9997" {
		t.Errorf("api = %+v, listen.api %q", c.API, c.Listen.API)
	}
	if s := c.String(); strings.Contains(s, "abcdefghijklmnop1234") {
		t.Errorf("String() shows the api token: %s", s)
	}
}

func TestAPIErrors(t *testing.T) {
	tests := []struct{ name, yaml, want string }{
		{"short", "api: {token: short}\nroutes: [{path: a}]\n",
			`c.yaml:1: api.token: is 5 characters long (expected at least 16: it opens every stream and ends sessions)`},
		{"syntax", "api: {token: \"abcdefghijklmnop qrs\"}\nroutes: [{path: a}]\n",
			`c.yaml:1: api.token: is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`},
		{"same as metrics", "api: {token: abcdefghijklmnop1234}\nmetrics: {token: abcdefghijklmnop1234}\nroutes: [{path: a}]\n",
			`c.yaml:1: api.token: equals metrics.token (expected a token of its own: whoever holds that one must not get the admin API)`},
		{"same as a read key", "api: {token: abcdefghijklmnop1234}\nroutes:\n  - path: a\n  - path: b\n    read_key: abcdefghijklmnop1234\n",
			`c.yaml:1: api.token: equals routes[1].read_key (expected a token of its own: whoever holds that one must not get the admin API)`},
		{"listen without token", "listen: {api: \"127.0.0.1:9997\"}\nroutes: [{path: a}]\n",
			`c.yaml:1: listen.api: "127.0.0.1:9997" set, but api.token is empty: the API is off without it (expected api.token too, or no listen.api)`},
		{"bad address", "api: {token: abcdefghijklmnop1234}\nlisten: {api: \"localhost\"}\nroutes: [{path: a}]\n",
			`c.yaml:2: listen.api: "localhost" is not a valid listen address (expected host:port with port 1-65535, such as "127.0.0.1:9997")`},
		{"collides", "api: {token: abcdefghijklmnop1234}\nlisten: {api: \"127.0.0.1:8080\"}\nroutes: [{path: a}]\n",
			`c.yaml:2: listen.api: "127.0.0.1:8080" collides with listen.http ":8080" (both listen on TCP port 8080; expected distinct ports)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("c.yaml", []byte(tt.yaml))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got  %v\nwant %s", err, tt.want)
			}
		})
	}
}
