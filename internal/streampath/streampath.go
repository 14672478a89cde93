// Package streampath holds the one rule for stream path names, shared by
// every protocol that names a stream (RTMP app/name, SRT streamid, the
// WHIP/WHEP URL path) and by the config's route patterns, so a path one
// protocol accepts is a path every other protocol can name too.
package streampath

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxLength bounds a path in bytes: real paths are an app and a key of a
// few dozen bytes; 256 leaves room for long generated keys and keeps logs
// and metric labels bounded.
const MaxLength = 256

// ErrInvalid is wrapped by every error of Check.
var ErrInvalid = errors.New("invalid stream path")

// forbidden are the characters a path may not hold: they separate a path
// from what follows it in some protocol (":" in SRT streamids and URLs,
// "?" and "#" in URLs, "," in SRT's access-control syntax), "%" would be
// decoded by one protocol and not another, "\" is a separator on some
// systems and in some players.
const forbidden = `:?#,%\`

// Check reports whether p is a valid stream path: 1 to MaxLength bytes of
// UTF-8, no control or space character, none of `:?#,%\`, and no empty,
// "." or ".." segment between its "/" separators (so no leading, trailing
// or doubled "/"). Errors wrap ErrInvalid and say what is wrong; they
// quote the path only up to the offending character (what follows may be
// a credential in a form the caller did not parse) and at most 32 bytes.
func Check(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty", ErrInvalid)
	}
	if len(p) > MaxLength {
		return fmt.Errorf("%w: %d bytes, maximum is %d", ErrInvalid, len(p), MaxLength)
	}
	for i, r := range p {
		switch {
		case r == utf8.RuneError:
			return fmt.Errorf("%w: %q... is not valid UTF-8", ErrInvalid, clip(p[:i]))
		case unicode.IsControl(r), unicode.IsSpace(r):
			return fmt.Errorf("%w: %q... contains a space or control character", ErrInvalid, clip(p[:i]))
		case strings.ContainsRune(forbidden, r):
			return fmt.Errorf("%w: %q... contains %q (none of %s may appear)", ErrInvalid, clip(p[:i]), r, forbidden)
		}
	}
	for seg := range strings.SplitSeq(p, "/") {
		if seg == "" || seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q has an empty, \".\" or \"..\" segment", ErrInvalid, clip(p))
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
