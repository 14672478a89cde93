// Package ingest holds what every ingest adapter shares: the admission
// request an adapter hands to the policy supplied by cmd/config, and the
// errors that policy answers with. Adapters live in subpackages (rtmp, ...).
package ingest

import (
	"errors"
	"fmt"
)

// Request describes a publisher asking to publish, before anything is
// accepted. Adapters fill it from their wire format.
type Request struct {
	// Protocol is the ingest protocol: "rtmp", "srt", "whip".
	Protocol string
	// Path is the stream path, e.g. "live/test".
	Path string
	// Key is the publish credential the client presented ("" if none).
	Key string
	// Remote is the peer's address, for logs.
	Remote string
}

func (r Request) String() string {
	return fmt.Sprintf("%s publish %q from %s", r.Protocol, r.Path, r.Remote)
}

// Authorizer decides whether a publish may proceed: nil allows it; otherwise
// the error (wrapping ErrNoRoute, ErrProtocolNotAllowed or ErrBadKey) says
// why, and adapters turn it into their protocol's refusal. It must not log
// the key.
type Authorizer func(Request) error

// DenyAll is the Authorizer of an adapter configured with none: it refuses
// every publish ("no authorizer configured").
func DenyAll(Request) error {
	return errors.New("no authorizer configured")
}

// Reasons a publish is refused.
var (
	ErrNoRoute            = errors.New("no route matches the path")
	ErrProtocolNotAllowed = errors.New("protocol may not publish on this route")
	ErrBadKey             = errors.New("missing or wrong publish key")
)
