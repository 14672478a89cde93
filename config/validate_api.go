package config

import "fmt"

// minAPITokenLength is the shortest api.token accepted: the token opens
// every stream (private ones too), ends sessions and reloads the config,
// so it must not be guessable online; 16 characters of the bearer
// alphabet (64 symbols) are 96 bits.
const minAPITokenLength = 16

// api(c *Config) checks the admin API (api.token, listen.api).
func (v *validator) api(c *Config) {
	tok := c.API.Token
	if tok != "" {
		switch {
		case !isBearerToken(tok):
			v.addf("api.token", `is not a valid bearer token (expected letters, digits and "-._~+/", optionally ending in "=")`)
		case len(tok) < minAPITokenLength:
			v.addf("api.token", "is %d characters long (expected at least %d: it opens every stream and ends sessions)", len(tok), minAPITokenLength)
		}
		if other := sameSecret(c, tok); other != "" {
			v.addf("api.token", "equals %s (expected a token of its own: whoever holds that one must not get the admin API)", other)
		}
	}
	l := &c.Listen
	if l.API == "" {
		return
	}
	if tok == "" {
		v.addf("listen.api", "%q set, but api.token is empty: the API is off without it (expected api.token too, or no listen.api)", l.API)
	}
	host, port, ok := splitListen(l.API)
	if !ok {
		v.addf("listen.api", "%q is not a valid listen address (expected host:port with port 1-65535, such as \"127.0.0.1:9997\")", l.API)
		return
	}
	others := []struct{ path, addr string }{
		{"listen.http", l.HTTP}, {"listen.rtmp", l.RTMP}, {"listen.webrtc_tcp", l.WebRTCTCP}, {"listen.rtmps", l.RTMPS},
	}
	if c.TLS.Enabled() {
		others = append(others, struct{ path, addr string }{"listen.https", l.HTTPS})
	}
	for _, o := range others {
		h, p, ok := splitListen(o.addr)
		if ok && p == port && (h == host || isWildcard(h) || isWildcard(host)) {
			v.addf("listen.api", "%q collides with %s %q (both listen on TCP port %d; expected distinct ports)", l.API, o.path, o.addr, port)
		}
	}
}

// sameSecret names the other secret of c equal to tok ("metrics.token",
// "routes[2].read_key", ...), or "".
func sameSecret(c *Config, tok string) string {
	if c.Metrics.Token == tok {
		return "metrics.token"
	}
	for i := range c.Routes {
		r := &c.Routes[i]
		for _, k := range []struct{ key, secret string }{
			{"publish_key", r.PublishKey}, {"read_key", r.ReadKey}, {"whep.token", r.WHEP.Token}, {"pull_token", r.PullToken},
		} {
			if k.secret == tok {
				return fmt.Sprintf("routes[%d].%s", i, k.key)
			}
		}
		for j, f := range r.Forward {
			if f.Token == tok {
				return fmt.Sprintf("routes[%d].forward[%d].token", i, j)
			}
		}
	}
	for i, s := range c.WebRTC.ICEServers {
		if s.Credential == tok || s.Secret == tok {
			return fmt.Sprintf("webrtc.ice_servers[%d]", i)
		}
	}
	return ""
}
