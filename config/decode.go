package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// maxNodes bounds how many YAML nodes one document may expand to through
// aliases. Real configurations have a few hundred; the bound stops alias bombs
// (each alias repeating a list of aliases) from taking exponential time.
const maxNodes = 1 << 16

// decoder walks a yaml.Node tree into Go values itself instead of using
// yaml.v3's struct decoding. That is what gives every error a line and a key
// path, makes unknown keys and wrong types errors with our own wording, and
// records where each key path sits so Validate's errors (which only know
// paths) can be given a line afterwards.
//
// It is driven by the yaml struct tags, so adding a field to a config type is
// enough for it to be decoded.
type decoder struct {
	file   string
	lines  map[string]int  // key path -> line of its key or sequence item
	set    map[string]bool // key paths written with a value (not null)
	budget int             // nodes left to visit, see maxNodes
	errs   []error
	// expanded maps the key paths whose value came from the environment
	// (env.go) to their text as written, so that messages about them
	// show "${NAME}" and never the secret it expanded to.
	expanded map[string]expansion
}

func newDecoder(file string) *decoder {
	return &decoder{
		file:     file,
		lines:    map[string]int{},
		set:      map[string]bool{},
		budget:   maxNodes,
		expanded: map[string]expansion{},
	}
}

// decodeDocument decodes data on top of out. An empty document (or one with
// only comments) leaves out as it is.
func (d *decoder) decodeDocument(data []byte, out *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil
		}
		return d.syntaxError(err)
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		return &Error{File: d.file, Line: next.Line, Msg: `a second YAML document ("---") is not allowed (expected one document)`}
	case !errors.Is(err, io.EOF):
		return d.syntaxError(err)
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	d.value(root, "", reflect.ValueOf(out).Elem())
	return errors.Join(d.errs...)
}

// yamlLineRE matches yaml.v3's "yaml: line N: message" syntax errors.
var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func (d *decoder) syntaxError(err error) error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &Error{File: d.file, Line: line, Msg: "invalid YAML: " + m[2]}
	}
	return &Error{File: d.file, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// failf records an error at path, on the line where path was written or, for
// a path not recorded yet (the document root), on n's line.
func (d *decoder) failf(n *yaml.Node, path, format string, args ...any) {
	line := d.lines[path]
	if line == 0 {
		line = n.Line
	}
	d.errs = append(d.errs, &Error{File: d.file, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// value decodes n into v. A null leaves v unchanged, so a key written with
// no value keeps its default.
func (d *decoder) value(n *yaml.Node, path string, v reflect.Value) {
	d.budget--
	if d.budget < 0 {
		if d.budget == -1 {
			d.failf(n, path, "document expands to more than %d values (too many aliases?)", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		// Anchors may refer to themselves ("a: &a [*a]"), but the walk
		// follows the Go types, which are not recursive, so it always ends.
		d.value(n.Alias, path, v)
		return
	}
	if n.Kind == yaml.ScalarNode && strings.Contains(n.Value, "$") {
		x, ok := d.expand(n, path)
		if !ok {
			return
		}
		// Errors about the value name what was written, not the secret.
		defer d.maskSince(len(d.errs), path)
		n = x
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	d.set[path] = true
	// Pointers are allocated here rather than by recursing, so that a
	// scalar is expanded once: an expanded value may hold a "$".
	for v.Kind() == reflect.Pointer {
		p := reflect.New(v.Type().Elem())
		v.Set(p)
		v = p.Elem()
	}
	if v.Type() == durationType {
		// yaml.v3 would take a bare number of nanoseconds; a unit is
		// required instead, so "grace: 10" is an error, not 10ns. "0" is
		// the one number time.ParseDuration accepts without a unit.
		t, err := time.ParseDuration(n.Value)
		if n.Kind != yaml.ScalarNode || err != nil {
			d.failf(n, path, `expected a duration such as "10s" or "1m30s", got %s`, describe(n))
			return
		}
		v.SetInt(int64(t))
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.mapping(n, path, v)
	case reflect.Slice:
		d.sequence(n, path, v)
	case reflect.String:
		// Any scalar is taken as written: "rtmp: 1935" becomes "1935", which
		// Validate then rejects with a message about listen addresses.
		if n.Kind != yaml.ScalarNode {
			d.failf(n, path, "expected a string, got %s", describe(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		var b bool
		if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
			d.failf(n, path, "expected true or false, got %s", describe(n))
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		// Only integers: yaml.v3 would truncate "1.5" to 1.
		var i int64
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil || v.OverflowInt(i) {
			d.failf(n, path, "expected a whole number, got %s", describe(n))
			return
		}
		v.SetInt(i)
	default:
		// Anything else: let yaml.v3 convert the scalar.
		if n.Kind != yaml.ScalarNode || n.Decode(v.Addr().Interface()) != nil {
			d.failf(n, path, "expected a %s, got %s", v.Type(), describe(n))
		}
	}
}

func (d *decoder) mapping(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.MappingNode {
		d.failf(n, path, "expected a mapping, got %s", describe(n))
		return
	}
	fields := yamlFields(v.Type())
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.failf(k, path, "expected a plain key, got %s", describe(k))
			continue
		}
		kp := k.Value
		if kp == "" {
			kp = `""`
		}
		if path != "" {
			kp = path + "." + kp
		}
		if k.ShortTag() == "!!merge" {
			d.errs = append(d.errs, &Error{File: d.file, Line: k.Line, Path: kp, Msg: "merge keys are not supported (expected the keys written out)"})
			continue
		}
		if first, dup := seen[k.Value]; dup {
			d.errs = append(d.errs, &Error{File: d.file, Line: k.Line, Path: kp, Msg: fmt.Sprintf("set twice (first at line %d)", first)})
			continue
		}
		seen[k.Value] = k.Line
		idx, ok := fields[k.Value]
		if !ok {
			d.errs = append(d.errs, &Error{File: d.file, Line: k.Line, Path: kp, Msg: fmt.Sprintf("unknown key (expected one of %s)", fieldNames(v.Type()))})
			continue
		}
		d.lines[kp] = k.Line
		d.value(val, kp, v.Field(idx))
	}
}

func (d *decoder) sequence(n *yaml.Node, path string, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		d.failf(n, path, "expected a sequence, got %s", describe(n))
		return
	}
	// A sequence replaces the value it decodes into (no appending to
	// defaults), and an empty one stays non-nil: "ingest: []" is not the
	// same as leaving ingest out.
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		ip := fmt.Sprintf("%s[%d]", path, i)
		d.lines[ip] = item.Line
		d.value(item, ip, s.Index(i))
	}
	v.Set(s)
}

var durationType = reflect.TypeFor[time.Duration]()

// yamlFields maps a struct's yaml key names to field indexes.
func yamlFields(t reflect.Type) map[string]int {
	m := map[string]int{}
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			m[name] = i
		}
	}
	return m
}

// fieldNames lists a struct's yaml keys in declaration order, for messages.
func fieldNames(t reflect.Type) string {
	var names []string
	for i := range t.NumField() {
		if name := yamlName(t.Field(i)); name != "" {
			names = append(names, name)
		}
	}
	return strings.Join(names, ", ")
}

func yamlName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" || !f.IsExported() {
		return ""
	}
	return name
}

// describe names a node's kind for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.AliasNode:
		if n.Alias != nil && n.Alias.Kind != yaml.AliasNode {
			return describe(n.Alias)
		}
		return "an alias"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "null"
		default:
			return fmt.Sprintf("%q (%s)", n.Value, n.ShortTag())
		}
	}
	return "nothing"
}

// locate gives Validate's errors, which only carry a key path, the file name
// and the line of that path (or of its nearest parent written in the file:
// a missing key is reported where its parent is).
func (d *decoder) locate(err error) error {
	list := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		var ce *Error
		if !errors.As(e, &ce) {
			out = append(out, e)
			continue
		}
		located := *ce
		located.File = d.file
		located.Line = d.line(ce.Path)
		if x, ok := d.expanded[ce.Path]; ok {
			located.Msg = x.mask(located.Msg)
		}
		out = append(out, &located)
	}
	return errors.Join(out...)
}

func (d *decoder) line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		path = path[:max(strings.LastIndexByte(path, '.'), strings.LastIndexByte(path, '['), 0)]
	}
	return 0
}
