package srt

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/wishbridge/bridge/internal/streampath"
)

// Mode is what a caller asks to do with a stream.
type Mode uint8

// Modes a streamid can ask for.
const (
	// ModePublish: the caller sends the stream.
	ModePublish Mode = iota + 1
	// ModeRead: the caller wants to receive the stream ("read:" prefix,
	// m=request in the access-control syntax).
	ModeRead
)

func (m Mode) String() string {
	switch m {
	case ModePublish:
		return "publish"
	case ModeRead:
		return "read"
	default:
		return fmt.Sprintf("Mode(%d)", uint8(m))
	}
}

// StreamID is a parsed SRT streamid.
type StreamID struct {
	Mode Mode
	// Path is the stream path, e.g. "live/test".
	Path string
	// User is the u= value of the access-control syntax ("" otherwise). It
	// is informational: authorization uses Key only.
	User string
	// Key is the publish credential: s= in the access-control syntax, the
	// key= query parameter otherwise ("" if none).
	Key string
}

// String describes the streamid for logs: mode and path, never the key.
func (s StreamID) String() string { return s.Mode.String() + ":" + s.Path }

// Errors ParseStreamID wraps; the server maps them to reject reasons.
var (
	// ErrInvalidStreamID: the streamid cannot be parsed (REJX_BAD_REQUEST).
	ErrInvalidStreamID = errors.New("invalid streamid")
	// ErrUnsupportedMode: the streamid asks for a mode other than publish
	// or read (REJX_BAD_MODE).
	ErrUnsupportedMode = errors.New("unsupported streamid mode")
)

// maxStreamIDLength bounds a whole streamid: SRT's own limit
// (SRTO_STREAMID). The path inside it is bounded by streampath.MaxLength.
const maxStreamIDLength = 512

// aclPrefix starts the SRT access-control syntax.
const aclPrefix = "#!::"

// ParseStreamID parses a streamid exactly as the caller sent it: no
// %-decoding (ffmpeg sends the value raw) and no trimming. Three forms are
// accepted:
//
//	#!::r=PATH[,m=MODE][,u=USER][,s=KEY][,...]  SRT access-control syntax
//	publish:PATH[?key=KEY]                      explicit mode prefix
//	read:PATH[?key=KEY]
//	PATH[?key=KEY]                              no prefix: publish
//
// In the access-control syntax the pairs are separated by "," and may come
// in any order; r (the resource) is required, m is "publish" or "request"
// (read) and defaults to "request" as the SRT access-control spec says,
// s is the key, u the user; other keys (h, t, custom ones) are ignored; a
// key given twice is an error. In the other forms the query after the first
// "?" is split on "&" and only key= is used (ffmpeg cannot send "&" inside a
// streamid, so in practice it holds key= alone); a second key= is an error.
// The mode prefix is matched case-insensitively; the mode values too.
//
// Leading and trailing "/" are trimmed from the path, which must then pass
// streampath.Check, the rule every protocol shares (1 to 256 bytes, no
// space or control character, none of `:?#,%\`, no empty, "." or ".."
// segment). The whole streamid is at most 512 bytes.
//
// Errors wrap ErrInvalidStreamID or ErrUnsupportedMode and never quote the
// key.
func ParseStreamID(s string) (StreamID, error) {
	if s == "" {
		return StreamID{}, fmt.Errorf("%w: empty (the caller set no streamid)", ErrInvalidStreamID)
	}
	if len(s) > maxStreamIDLength {
		return StreamID{}, fmt.Errorf("%w: %d bytes, maximum is %d", ErrInvalidStreamID, len(s), maxStreamIDLength)
	}
	if !utf8.ValidString(s) {
		return StreamID{}, fmt.Errorf("%w: not valid UTF-8", ErrInvalidStreamID)
	}
	if rest, ok := strings.CutPrefix(s, aclPrefix); ok {
		return parseACL(rest)
	}
	return parsePrefixed(s)
}

// parseACL parses the pairs after "#!::".
func parseACL(s string) (StreamID, error) {
	var id StreamID
	var seen [4]bool // r, m, u, s
	mode := ""
	for pair := range strings.SplitSeq(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok || k == "" {
			return StreamID{}, fmt.Errorf("%w: access-control item %d bytes long is not key=value", ErrInvalidStreamID, len(pair))
		}
		var i int
		switch k {
		case "r":
			i, id.Path = 0, v
		case "m":
			i, mode = 1, v
		case "u":
			i, id.User = 2, v
		case "s":
			i, id.Key = 3, v
		default:
			continue // h, t and custom keys: not ours
		}
		if seen[i] {
			return StreamID{}, fmt.Errorf("%w: access-control key %q given twice", ErrInvalidStreamID, k)
		}
		seen[i] = true
	}
	if !seen[0] {
		return StreamID{}, fmt.Errorf("%w: access-control syntax without r= (the stream path)", ErrInvalidStreamID)
	}
	switch {
	case !seen[1], strings.EqualFold(mode, "request"):
		id.Mode = ModeRead
	case strings.EqualFold(mode, "publish"):
		id.Mode = ModePublish
	default:
		return StreamID{}, fmt.Errorf("%w: m=%q (want publish or request)", ErrUnsupportedMode, clip(mode))
	}
	if strings.ContainsFunc(id.User, unicode.IsControl) {
		return StreamID{}, fmt.Errorf("%w: u= contains a control character", ErrInvalidStreamID)
	}
	path, err := cleanPath(id.Path)
	if err != nil {
		return StreamID{}, err
	}
	id.Path = path
	return id, nil
}

// parsePrefixed parses "[MODE:]PATH[?QUERY]".
func parsePrefixed(s string) (StreamID, error) {
	id := StreamID{Mode: ModePublish}
	s, query, hasQuery := strings.Cut(s, "?")
	if prefix, rest, ok := strings.Cut(s, ":"); ok {
		switch {
		case strings.EqualFold(prefix, "publish"):
			id.Mode = ModePublish
		case strings.EqualFold(prefix, "read"):
			id.Mode = ModeRead
		default:
			return StreamID{}, fmt.Errorf("%w: prefix %q (want publish: or read:)", ErrUnsupportedMode, clip(prefix))
		}
		s = rest
	}
	path, err := cleanPath(s)
	if err != nil {
		return StreamID{}, err
	}
	id.Path = path
	if hasQuery {
		seenKey := false
		for param := range strings.SplitSeq(query, "&") {
			name, value, _ := strings.Cut(param, "=")
			if name != "key" {
				continue
			}
			if seenKey {
				return StreamID{}, fmt.Errorf("%w: key= given twice", ErrInvalidStreamID)
			}
			seenKey = true
			id.Key = value
		}
	}
	return id, nil
}

// cleanPath trims slashes and validates a stream path by the one path
// rule (streampath.Check). Its errors quote the path only up to the bad
// character: what follows may be a credential in a form this parser does
// not know ("publish:path:user:pass").
func cleanPath(p string) (string, error) {
	p = strings.Trim(p, "/")
	if err := streampath.Check(p); err != nil {
		return "", fmt.Errorf("%w: %w", ErrInvalidStreamID, err)
	}
	return p, nil
}

// clip bounds a peer-supplied string quoted in an error.
func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}
