package config

import (
	"fmt"
	"slices"
	"strings"

	"github.com/wishbridge/bridge/internal/streampath"
)

// pattern is a parsed Route.Path.
type pattern []segment

type segment struct {
	kind segmentKind
	text string // the literal, or the variable name
}

type segmentKind uint8

const (
	literal  segmentKind = iota // matches itself
	variable                    // "{name}": any one segment
	rest                        // "{name...}", last only: one or more segments
)

// parsePattern checks a route path's syntax. Its errors start with the
// quoted path and say what was expected.
func parsePattern(s string) (pattern, error) {
	if s == "" {
		return nil, fmt.Errorf(`is empty (expected a stream path such as "live/{key}")`)
	}
	if strings.HasPrefix(s, "/") || strings.HasSuffix(s, "/") {
		return nil, fmt.Errorf(`%q starts or ends with "/" (expected e.g. "live/{key}")`, s)
	}
	parts := strings.Split(s, "/")
	p := make(pattern, 0, len(parts))
	names := map[string]bool{}
	for i, part := range parts {
		switch {
		case part == "":
			return nil, fmt.Errorf(`%q has an empty segment (expected segments separated by a single "/")`, s)
		case part == "." || part == "..":
			return nil, fmt.Errorf(`%q has a %q segment, which no stream path can contain`, s, part)
		case strings.ContainsFunc(part, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '?' || r == '#' }):
			return nil, fmt.Errorf(`%q contains a space, control character, "?" or "#", which no stream path can contain`, s)
		case !strings.ContainsAny(part, "{}"):
			p = append(p, segment{kind: literal, text: part})
			continue
		}
		name, ok := strings.CutPrefix(part, "{")
		name, ok2 := strings.CutSuffix(name, "}")
		if !ok || !ok2 {
			return nil, fmt.Errorf(`%q: segment %q mixes text and braces (expected a whole segment "{name}" or "{name...}")`, s, part)
		}
		kind := variable
		if n, ok := strings.CutSuffix(name, "..."); ok {
			name, kind = n, rest
		}
		if !isIdentifier(name) {
			return nil, fmt.Errorf(`%q: segment %q has no valid variable name (expected "{name}" or "{name...}" with letters, digits and "_")`, s, part)
		}
		if kind == rest && i != len(parts)-1 {
			return nil, fmt.Errorf(`%q: %q is not the last segment (a "{name...}" segment must come last)`, s, part)
		}
		if names[name] {
			return nil, fmt.Errorf(`%q uses the variable name %q twice (expected distinct names)`, s, name)
		}
		names[name] = true
		p = append(p, segment{kind: kind, text: name})
	}
	// What the segments above allow must also be a path every protocol
	// can name (length, ":", ",", "%", ...).
	if err := streampath.Check(s); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	return p, nil
}

func isIdentifier(s string) bool {
	if s == "" || (s[0] >= '0' && s[0] <= '9') {
		return false
	}
	for _, c := range []byte(s) {
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// match reports whether path (no leading or trailing "/") matches p. Empty
// segments never match, so "live//x" or "/live/x" match no pattern.
func (p pattern) match(path string) bool {
	parts := strings.Split(path, "/")
	for i, seg := range p {
		if i >= len(parts) {
			return false
		}
		if seg.kind == rest {
			return !slices.Contains(parts[i:], "")
		}
		if parts[i] == "" || (seg.kind == literal && parts[i] != seg.text) {
			return false
		}
	}
	return len(parts) == len(p)
}

// covers reports whether p matches every path q matches, which makes a
// route with q after a route with p unreachable.
func (p pattern) covers(q pattern) bool {
	for i, s := range p {
		if i >= len(q) {
			return false // p needs more segments than q has
		}
		t := q[i]
		switch s.kind {
		case rest:
			return true // q has at least one segment left, all of which p takes
		case variable:
			if t.kind == rest {
				return false // q also matches longer paths
			}
		case literal:
			if t.kind != literal || t.text != s.text {
				return false
			}
		}
	}
	return len(q) == len(p)
}
