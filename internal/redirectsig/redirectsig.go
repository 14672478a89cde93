// Package redirectsig signs and checks the cluster_redirect parameter a
// node adds to the URL it sends a WHIP or WHEP client to (a 307 to the
// node that owns the stream, or to a less loaded one). The node the client
// arrives at accepts the parameter in place of the client's bearer token
// (browsers drop Authorization on a cross-origin redirect, so the token
// cannot follow), and never redirects such a request again.
//
// The value is "<expiry>.<mac>": the expiry in Unix seconds and
// HMAC-SHA256, keyed with the cluster token, over a domain label, the
// action, the target node, the stream path and the expiry, in base64url.
// Only a holder of the cluster token can make one; it admits one action on
// one path at one node for at most MaxTTL. Within that window it can be
// used again (a client that retries its POST), never after.
package redirectsig

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// TTL is how long a signed redirect is valid from when it is made: the
// client follows a 307 at once (milliseconds); 10 s covers a slow client
// and a loaded node without leaving a leaked URL useful for long.
const TTL = 10 * time.Second

// MaxSkew is how far ahead of the checking node's clock an expiry may lie
// beyond TTL: nodes' clocks differ (NTP keeps them within milliseconds;
// 2 s allows for a node that just started syncing).
const MaxSkew = 2 * time.Second

// maxValue bounds a value Verify parses: a real one is 11 digits, a dot
// and 43 characters of MAC; anything much longer is not ours.
const maxValue = 64

// Action is what a signed redirect admits: the client's request at the
// node it is sent to.
type Action string

// The actions a redirect may admit.
const (
	Read    Action = "read"    // a WHEP viewer
	Publish Action = "publish" // a WHIP publisher
)

// label separates these MACs from any other use of the cluster token.
const label = "bridge cluster_redirect v1"

// Reasons Verify refuses a value. Callers branch on them only to word the
// refusal; every one is a refusal.
var (
	ErrMalformed = errors.New("cluster_redirect is malformed")
	ErrExpired   = errors.New("cluster_redirect has expired")
	ErrInvalid   = errors.New("cluster_redirect does not match (another path, node or action, or a different cluster token)")
)

// Sign returns the value of the cluster_redirect parameter
// (access.RedirectParam) that admits action on path at node until
// expires, keyed with the cluster token.
func Sign(token string, action Action, node, path string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return exp + "." + base64.RawURLEncoding.EncodeToString(mac(token, action, node, path, exp))
}

// Verify checks value, the cluster_redirect parameter of a request for
// action on path arriving at node (this node), at time now: nil when it
// was signed with token for exactly these and has not expired. The MAC is
// compared in constant time.
func Verify(token, value string, action Action, node, path string, now time.Time) error {
	if len(value) > maxValue {
		return fmt.Errorf("%w (%d bytes, expected at most %d)", ErrMalformed, len(value), maxValue)
	}
	exp, sig, ok := strings.Cut(value, ".")
	if !ok {
		return fmt.Errorf("%w (expected <expiry>.<signature>)", ErrMalformed)
	}
	secs, err := strconv.ParseInt(exp, 10, 64)
	if err != nil || secs <= 0 {
		return fmt.Errorf("%w (the expiry is not a positive number of seconds)", ErrMalformed)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("%w (the signature is not base64url)", ErrMalformed)
	}
	// The MAC first: an expiry is only believed once it is known to be
	// ours.
	if !hmac.Equal(got, mac(token, action, node, path, exp)) {
		return ErrInvalid
	}
	expires := time.Unix(secs, 0)
	switch {
	case !now.Before(expires):
		return fmt.Errorf("%w (%s ago; it is valid for %v: ask the first node again)", ErrExpired, now.Sub(expires).Truncate(time.Second), TTL)
	case expires.Sub(now) > TTL+MaxSkew:
		// Signed by a node whose clock is far ahead: refuse rather than
		// admit for longer than TTL.
		return fmt.Errorf("%w (its expiry is %s ahead, more than %v: the nodes' clocks differ)", ErrInvalid, expires.Sub(now).Truncate(time.Second), TTL+MaxSkew)
	}
	return nil
}

// mac is the HMAC of one redirect. The fields are joined with NUL, which
// none of them can hold (stream paths, node names and the expiry exclude
// it), so no two distinct field sets share a message.
func mac(token string, action Action, node, path, exp string) []byte {
	h := hmac.New(sha256.New, []byte(token))
	for _, f := range []string{label, string(action), node, path, exp} {
		h.Write([]byte(f))
		h.Write([]byte{0})
	}
	return h.Sum(nil)
}
