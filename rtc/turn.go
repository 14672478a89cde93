package rtc

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/pion/webrtc/v4"
)

// ICEServer is one configured STUN or TURN server (config.ICEServer says
// what each field means to an operator).
type ICEServer struct {
	// URLs use the stun:, stuns:, turn: or turns: scheme.
	URLs []string
	// Username and Credential are static TURN credentials: only the
	// bridge's own agents use them, never a client.
	Username, Credential string
	// Secret is the TURN server's shared secret (the TURN REST scheme,
	// coturn's use-auth-secret and static-auth-secret): credentials valid
	// for TTL are derived from it for each PeerConnection and each
	// admitted client.
	Secret string
	// TTL is how long derived credentials stay valid; 0 means
	// DefaultTURNTTL.
	TTL time.Duration
}

// DefaultTURNTTL is ICEServer.TTL when not set: config.DefaultTURNTTL,
// repeated here (a test checks they agree) so rtc need not import the
// configuration: long enough for a viewer that reconnects through a long
// session, short enough that a leaked credential soon stops working.
const DefaultTURNTTL = 24 * time.Hour

// String describes s without its credential or secret.
func (s ICEServer) String() string {
	switch {
	case s.Secret != "":
		return fmt.Sprintf("{urls=%v secret=(redacted) ttl=%s}", s.URLs, s.ttl())
	case s.Username != "":
		return fmt.Sprintf("{urls=%v username=%q credential=(redacted)}", s.URLs, s.Username)
	}
	return fmt.Sprintf("{urls=%v}", s.URLs)
}

// LogValue makes slog print the redacted String form.
func (s ICEServer) LogValue() slog.Value { return slog.StringValue(s.String()) }

func (s ICEServer) ttl() time.Duration {
	if s.TTL <= 0 {
		return DefaultTURNTTL
	}
	return s.TTL
}

// derived returns s for user with credentials derived from its Secret,
// valid until now + TTL.
func (s ICEServer) derived(user string, now time.Time) webrtc.ICEServer {
	name, cred := TURNCredentials(s.Secret, user, now.Add(s.ttl()))
	return webrtc.ICEServer{URLs: s.URLs, Username: name, Credential: cred}
}

// ICEServers are the configured STUN and TURN servers, made once from the
// configuration. Each PeerConnection the bridge makes and each answer it
// sends gets its own list from them, with fresh derived credentials.
type ICEServers []ICEServer

// bridgeUser is the user part of the credentials the bridge derives for
// its own agents: the TURN server's log tells them from clients'.
const bridgeUser = "bridge"

// Bridge returns the servers for one of the bridge's own agents: every
// server, with its static credentials or with credentials derived from
// its secret, valid until now + its TTL. (An agent that outlives them can
// no longer refresh a TURN allocation; the default TTL is a day.)
func (l ICEServers) Bridge(now time.Time) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(l))
	for _, s := range l {
		if s.Secret != "" {
			out = append(out, s.derived(bridgeUser, now))
			continue
		}
		srv := webrtc.ICEServer{URLs: s.URLs}
		if s.Username != "" {
			srv.Username, srv.Credential = s.Username, s.Credential
		}
		out = append(out, srv)
	}
	return out
}

// Client returns the servers to advertise to a client the route has
// admitted (the Link headers of its answer, RFC 9725 section 4.6): STUN
// servers, and TURN servers with a secret, with credentials derived for
// session valid until now + TTL. The TURN URLs of servers with static
// credentials are left out: handed to clients, those credentials would
// let anyone relay anything through the TURN server for as long as they
// stay unchanged (an open relay).
//
// session is the session's id; only its log name (LogID, logged under
// "session") goes into the username, which crosses the
// network in the clear and which the TURN server logs: the whole id is the
// secret of the session's URL.
func (l ICEServers) Client(session string, now time.Time) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, s := range l {
		if s.Secret != "" {
			out = append(out, s.derived(LogID(session), now))
			continue
		}
		var stun []string
		for _, u := range s.URLs {
			if !isTURNURL(u) {
				stun = append(stun, u)
			}
		}
		if len(stun) > 0 {
			out = append(out, webrtc.ICEServer{URLs: stun})
		}
	}
	return out
}

// isTURNURL reports whether u is a turn: or turns: URL (RFC 7065; the
// scheme is case-insensitive).
func isTURNURL(u string) bool {
	scheme, _, _ := strings.Cut(u, ":")
	scheme = strings.ToLower(scheme)
	return scheme == "turn" || scheme == "turns"
}

// TURNCredentials derives time-limited TURN credentials from a TURN
// server's shared secret, as the TURN REST scheme (draft-uberti-behave-
// turn-rest-00 section 2.2) and coturn's use-auth-secret define them: the
// username is "<expiry as Unix seconds>:<user>" and the credential is
// base64(HMAC-SHA1(secret, username)). The TURN server recomputes the
// credential from the username and refuses it once expiry has passed.
func TURNCredentials(secret, user string, expiry time.Time) (username, credential string) {
	username = strconv.FormatInt(expiry.Unix(), 10) + ":" + user
	mac := hmac.New(sha1.New, []byte(secret))
	mac.Write([]byte(username))
	return username, base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// ICEServers returns the servers to advertise in the Link headers of the
// answer to session id: see ICEServers.Client. Call it only for a client
// the route has admitted.
func (e *Engine) ICEServers(session string) []webrtc.ICEServer {
	return e.iceServers.Client(session, time.Now())
}

// agentConfig is the configuration of a new PeerConnection of the bridge's
// own: see ICEServers.Bridge.
func (e *Engine) agentConfig() webrtc.Configuration {
	return webrtc.Configuration{ICEServers: e.iceServers.Bridge(time.Now())}
}
