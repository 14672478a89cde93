package config

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Environment expansion: any scalar value of a config file (not a key) may
// hold "${NAME}", replaced by the environment variable NAME when the file
// is read, so secrets (tokens, keys, TURN secrets) need not be written in
// it. "$$" stands for a literal "$"; any other "$" is kept as written. A
// variable that is not set is an error naming it and the key; one set to
// "" expands to "" (a plain scalar that becomes empty is null, i.e. the
// key keeps its default). The expanded value is never printed: messages
// about such a key show the text as written.
//
// A plain (unquoted) scalar is typed after expansion, so "port: ${N}" with
// N=8080 is a number; a quoted one stays a string.

// expansion is a scalar value as written and as expanded.
type expansion struct {
	written, value string
}

// mask replaces the expanded value in msg, as Validate and the decoder
// quote values, with the text written.
func (x expansion) mask(msg string) string {
	if x.value == "" {
		return msg
	}
	return strings.ReplaceAll(msg, strconv.Quote(x.value), strconv.Quote(x.written))
}

// expand returns n with its value expanded (a copy; n is shared by the
// aliases that refer to it), or false after recording why it cannot be.
func (d *decoder) expand(n *yaml.Node, path string) (*yaml.Node, bool) {
	value, err := expandEnv(n.Value, os.LookupEnv)
	if err != nil {
		d.failf(n, path, "%v", err)
		return nil, false
	}
	d.expanded[path] = expansion{written: n.Value, value: value}
	x := *n
	x.Value = value
	const written = yaml.TaggedStyle | yaml.SingleQuotedStyle | yaml.DoubleQuotedStyle | yaml.LiteralStyle | yaml.FoldedStyle
	if x.Style&written == 0 {
		x.Tag = "" // a plain scalar: resolve its type from the new value
	}
	return &x, true
}

// maskSince masks the expanded value of path in the errors recorded from
// index i on. Only quoted values are masked: describe's unquoted form
// ("the number 5") is not a secret's (a secret is a string).
func (d *decoder) maskSince(i int, path string) {
	x := d.expanded[path]
	for _, err := range d.errs[i:] {
		if ce, ok := err.(*Error); ok {
			ce.Msg = x.mask(ce.Msg)
		}
	}
}

// expandEnv replaces "${NAME}" in s by lookup(NAME) and "$$" by "$".
func expandEnv(s string, lookup func(string) (string, bool)) (string, error) {
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 || i == len(s)-1 {
			b.WriteString(s)
			return b.String(), nil
		}
		b.WriteString(s[:i])
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			s = s[i+2:]
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return "", errors.New(`"${" has no closing "}" (expected ${NAME}; write $$ for a literal "$")`)
			}
			name := s[i+2 : i+2+end]
			if !isEnvName(name) {
				return "", fmt.Errorf(`${%s}: %q is not an environment variable name (expected letters, digits and "_", not starting with a digit; write $$ for a literal "$")`, name, name)
			}
			val, ok := lookup(name)
			if !ok {
				return "", fmt.Errorf("${%s}: environment variable %s is not set (export it to the bridge's environment, or write $$ for a literal \"$\")", name, name)
			}
			b.WriteString(val)
			s = s[i+2+end+1:]
		default:
			b.WriteByte('$')
			s = s[i+1:]
		}
	}
}

// isEnvName accepts POSIX shell variable names.
func isEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, c := range []byte(s) {
		if c != '_' && (c < 'A' || c > 'Z') && (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}
