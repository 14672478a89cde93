package rtmpwire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// AMF0 (Adobe, AMF0 specification 2006): the values of RTMP commands and
// data messages. Encoding takes Go values; decoding gives them back, with
// nesting bounded by MaxAMFDepth and every length checked against what is
// left of the message before anything is allocated.

// AMF0 type markers (AMF0 specification 2.1).
const (
	AMF0Number      = 0x00
	AMF0Boolean     = 0x01
	AMF0String      = 0x02
	AMF0Object      = 0x03
	AMF0Null        = 0x05
	AMF0Undefined   = 0x06
	AMF0Reference   = 0x07
	AMF0ECMAArray   = 0x08
	AMF0ObjectEnd   = 0x09
	AMF0StrictArray = 0x0a
	AMF0Date        = 0x0b
	AMF0LongString  = 0x0c
)

// KV is one property of an AMF0 object or ECMA array, kept in order (the
// order is what a server sees; some care, e.g. about "app" coming first).
type KV struct {
	Key   string
	Value any
}

// Object encodes as an AMF0 anonymous object.
type Object []KV

// ECMAArray encodes as an AMF0 ECMA array (what onMetaData carries).
type ECMAArray []KV

// AppendAMF0 appends the AMF0 encoding of each value to b. Supported: nil
// (null), bool, string, float64, int, uint32, Object and ECMAArray; any
// other type is a programming error and panics.
func AppendAMF0(b []byte, values ...any) []byte {
	for _, v := range values {
		switch v := v.(type) {
		case nil:
			b = append(b, AMF0Null)
		case bool:
			x := byte(0)
			if v {
				x = 1
			}
			b = append(b, AMF0Boolean, x)
		case string:
			if len(v) > math.MaxUint16 {
				b = append(b, AMF0LongString)
				b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			} else {
				b = append(b, AMF0String)
				b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
			}
			b = append(b, v...)
		case float64:
			b = append(b, AMF0Number)
			b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
		case int:
			b = AppendAMF0(b, float64(v))
		case uint32:
			b = AppendAMF0(b, float64(v))
		case Object:
			b = append(b, AMF0Object)
			b = appendProps(b, v)
		case ECMAArray:
			b = append(b, AMF0ECMAArray)
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = appendProps(b, v)
		default:
			panic(fmt.Sprintf("rtmpwire.AppendAMF0: unsupported type %T", v))
		}
	}
	return b
}

func appendProps(b []byte, props []KV) []byte {
	for _, p := range props {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.Key)))
		b = append(b, p.Key...)
		b = AppendAMF0(b, p.Value)
	}
	return append(b, 0, 0, AMF0ObjectEnd)
}

// ErrAMFTruncated is returned when a value runs past the end of its
// message.
var ErrAMFTruncated = errors.New("AMF0 value is truncated")

// DecodeAMF0 decodes every AMF0 value in b. Objects and ECMA arrays become
// map[string]any, strict arrays []any, numbers and dates (milliseconds)
// float64, strings string, booleans bool, null, undefined and references
// nil. On an error it returns the values decoded before it.
func DecodeAMF0(b []byte) ([]any, error) {
	r := amfReader{b: b}
	var out []any
	for r.pos < len(r.b) {
		v, err := r.value(0)
		if err != nil {
			return out, err
		}
		out = append(out, v)
	}
	return out, nil
}

type amfReader struct {
	b   []byte
	pos int
}

func (r *amfReader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.pos < n {
		return nil, ErrAMFTruncated
	}
	p := r.b[r.pos : r.pos+n]
	r.pos += n
	return p, nil
}

// str reads a string with a length field of lenSize bytes; the length is
// checked against the message before the string is copied.
func (r *amfReader) str(lenSize int) (string, error) {
	p, err := r.take(lenSize)
	if err != nil {
		return "", err
	}
	var n uint64
	for _, c := range p {
		n = n<<8 | uint64(c)
	}
	if n > uint64(len(r.b)-r.pos) {
		return "", ErrAMFTruncated
	}
	s, _ := r.take(int(n))
	return string(s), nil
}

func (r *amfReader) value(depth int) (any, error) {
	if depth > MaxAMFDepth {
		return nil, fmt.Errorf("AMF0 values nest deeper than %d", MaxAMFDepth)
	}
	m, err := r.take(1)
	if err != nil {
		return nil, err
	}
	switch m[0] {
	case AMF0Number:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	case AMF0Boolean:
		p, err := r.take(1)
		if err != nil {
			return nil, err
		}
		return p[0] != 0, nil
	case AMF0String:
		return r.str(2)
	case AMF0LongString:
		return r.str(4)
	case AMF0Null, AMF0Undefined:
		return nil, nil
	case AMF0Reference:
		_, err := r.take(2)
		return nil, err
	case AMF0Object:
		return r.props(depth)
	case AMF0ECMAArray:
		if _, err := r.take(4); err != nil { // the count is a hint; the end marker ends it
			return nil, err
		}
		return r.props(depth)
	case AMF0StrictArray:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(p)
		if int64(n) > int64(len(r.b)-r.pos) { // every value takes a byte at least
			return nil, ErrAMFTruncated
		}
		out := make([]any, 0, n)
		for range n {
			v, err := r.value(depth + 1)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case AMF0Date:
		p, err := r.take(10) // float64 ms, int16 time zone
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	default:
		return nil, fmt.Errorf("AMF0 type marker 0x%02x at byte %d is not supported", m[0], r.pos-1)
	}
}

// props reads the properties of an object or ECMA array up to the empty
// key and object-end marker (AMF0 specification 2.5: an empty key is only
// the end).
func (r *amfReader) props(depth int) (map[string]any, error) {
	out := map[string]any{}
	for {
		key, err := r.str(2)
		if err != nil {
			return nil, err
		}
		if key == "" {
			end, err := r.take(1)
			if err != nil {
				return nil, err
			}
			if end[0] != AMF0ObjectEnd {
				return nil, fmt.Errorf("AMF0 object has an empty key followed by marker 0x%02x, expected object end", end[0])
			}
			return out, nil
		}
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, fmt.Errorf("property %q: %w", key, err)
		}
		out[key] = v
	}
}

// FormatAMF0 formats a scalar AMF0 value for comparison and logs: whole
// numbers without a fraction ("7"), strings as they are.
func FormatAMF0(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1e15 {
			return strconv.FormatInt(int64(v), 10)
		}
		return strconv.FormatFloat(v, 'g', -1, 64)
	case bool:
		return strconv.FormatBool(v)
	default:
		return fmt.Sprint(v)
	}
}

// Command is a decoded command message (AMF0, or AMF3 with AMF0 values).
type Command struct {
	Name string
	Txn  float64
	Args []any // the values after the transaction id
}

// ParseCommand decodes a command message's payload of type typeID
// (TypeCommandAMF0 or TypeCommandAMF3, whose payload starts with a 0 byte
// and goes on in AMF0).
func ParseCommand(typeID uint8, p []byte) (Command, error) {
	if typeID == TypeCommandAMF3 && len(p) > 0 {
		p = p[1:]
	}
	vals, err := DecodeAMF0(p)
	if err != nil && len(vals) < 2 {
		// Past the name and transaction id, what decoded is kept: some
		// servers end a status with a value this decoder does not take
		// (an AMF3 object), and the name and code are what matter.
		return Command{}, fmt.Errorf("undecodable command: %w", err)
	}
	var cmd Command
	if len(vals) == 0 {
		return cmd, errors.New("empty command")
	}
	var ok bool
	if cmd.Name, ok = vals[0].(string); !ok {
		return cmd, fmt.Errorf("command name is %v, expected a string", vals[0])
	}
	if len(vals) > 1 {
		cmd.Txn, _ = vals[1].(float64)
		cmd.Args = vals[2:]
	}
	return cmd, nil
}

// Status is the info object of an onStatus command or an _error result.
type Status struct{ Level, Code, Description string }

// Status returns the first object argument's level, code and description.
func (c Command) Status() Status {
	for _, a := range c.Args {
		if m, ok := a.(map[string]any); ok {
			s := func(k string) string { v, _ := m[k].(string); return v }
			return Status{s("level"), s("code"), s("description")}
		}
	}
	return Status{}
}

// maxDescribed bounds the server's description in Describe.
const maxDescribed = 200

// Describe renders the command's status for errors and logs: `code
// ("description")`, the description bounded in length, control
// characters replaced and each of secrets (a stream key a server likes to
// quote back: "publish \"KEY\" refused") shown as <redacted>.
func (c Command) Describe(secrets ...string) string {
	st := c.Status()
	desc := st.Description
	if len(desc) > maxDescribed {
		desc = desc[:maxDescribed] + "..."
	}
	var out string
	switch {
	case st.Code != "" && desc != "":
		out = st.Code + ` ("` + desc + `")`
	case st.Code != "":
		out = st.Code
	case desc != "":
		out = `"` + desc + `"`
	default:
		return "no reason given"
	}
	for _, s := range secrets {
		if s != "" {
			out = strings.ReplaceAll(out, s, "<redacted>")
		}
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, out)
}
