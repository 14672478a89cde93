package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// A small AMF0 codec (AMF0 specification, Adobe 2006) for the commands the
// push client sends and the replies it reads. The decoder is bounded in
// depth: a reply comes from a remote server we do not control.

// AMF0 type markers.
const (
	amf0Number      = 0x00
	amf0Boolean     = 0x01
	amf0String      = 0x02
	amf0Object      = 0x03
	amf0Null        = 0x05
	amf0Undefined   = 0x06
	amf0Reference   = 0x07
	amf0ECMAArray   = 0x08
	amf0ObjectEnd   = 0x09
	amf0StrictArray = 0x0a
	amf0Date        = 0x0b
	amf0LongString  = 0x0c
)

// maxAMFDepth bounds nesting in decoded values: real servers nest once
// (the info object of onStatus, sometimes a "data" object inside it).
const maxAMFDepth = 8

// amfKV is one property of an AMF0 object or ECMA array, kept in order (the
// order is what a server sees; some care, e.g. about "app" coming first).
type amfKV struct {
	Key   string
	Value any
}

// amfObject encodes as an AMF0 anonymous object.
type amfObject []amfKV

// amfECMAArray encodes as an AMF0 ECMA array (what onMetaData carries).
type amfECMAArray []amfKV

// amfAppend appends the AMF0 encoding of each value to b. Supported: nil
// (null), bool, string, float64, int, uint32, amfObject and amfECMAArray.
func amfAppend(b []byte, values ...any) []byte {
	for _, v := range values {
		switch v := v.(type) {
		case nil:
			b = append(b, amf0Null)
		case bool:
			x := byte(0)
			if v {
				x = 1
			}
			b = append(b, amf0Boolean, x)
		case string:
			if len(v) > math.MaxUint16 {
				b = append(b, amf0LongString)
				b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			} else {
				b = append(b, amf0String)
				b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
			}
			b = append(b, v...)
		case float64:
			b = append(b, amf0Number)
			b = binary.BigEndian.AppendUint64(b, math.Float64bits(v))
		case int:
			b = amfAppend(b, float64(v))
		case uint32:
			b = amfAppend(b, float64(v))
		case amfObject:
			b = append(b, amf0Object)
			b = amfAppendProps(b, v)
		case amfECMAArray:
			b = append(b, amf0ECMAArray)
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = amfAppendProps(b, v)
		default:
			panic(fmt.Sprintf("amfAppend: unsupported type %T", v)) // a programming error: every caller is in this package
		}
	}
	return b
}

func amfAppendProps(b []byte, props []amfKV) []byte {
	for _, p := range props {
		b = binary.BigEndian.AppendUint16(b, uint16(len(p.Key)))
		b = append(b, p.Key...)
		b = amfAppend(b, p.Value)
	}
	return append(b, 0, 0, amf0ObjectEnd)
}

// amfDecodeAll decodes every AMF0 value in b. Objects and ECMA arrays
// become map[string]any, strict arrays []any, numbers and dates float64,
// null and undefined nil.
func amfDecodeAll(b []byte) ([]any, error) {
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

var errAMFShort = errors.New("AMF0 value is truncated")

func (r *amfReader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.pos < n {
		return nil, errAMFShort
	}
	p := r.b[r.pos : r.pos+n]
	r.pos += n
	return p, nil
}

func (r *amfReader) str(lenSize int) (string, error) {
	p, err := r.take(lenSize)
	if err != nil {
		return "", err
	}
	n := 0
	for _, c := range p {
		n = n<<8 | int(c)
	}
	s, err := r.take(n)
	return string(s), err
}

func (r *amfReader) value(depth int) (any, error) {
	if depth > maxAMFDepth {
		return nil, fmt.Errorf("AMF0 value nested deeper than %d", maxAMFDepth)
	}
	m, err := r.take(1)
	if err != nil {
		return nil, err
	}
	switch m[0] {
	case amf0Number:
		p, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	case amf0Boolean:
		p, err := r.take(1)
		if err != nil {
			return nil, err
		}
		return p[0] != 0, nil
	case amf0String:
		return r.str(2)
	case amf0LongString:
		return r.str(4)
	case amf0Null, amf0Undefined:
		return nil, nil
	case amf0Reference:
		_, err := r.take(2)
		return nil, err
	case amf0Object:
		return r.props(depth)
	case amf0ECMAArray:
		if _, err := r.take(4); err != nil { // the count is a hint; the end marker ends it
			return nil, err
		}
		return r.props(depth)
	case amf0StrictArray:
		p, err := r.take(4)
		if err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(p)
		if int64(n) > int64(len(r.b)-r.pos) { // every value takes a byte at least
			return nil, errAMFShort
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
	case amf0Date:
		p, err := r.take(10) // float64 ms, int16 time zone
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(p)), nil
	default:
		return nil, fmt.Errorf("AMF0 type marker 0x%02x is not supported", m[0])
	}
}

func (r *amfReader) props(depth int) (map[string]any, error) {
	out := map[string]any{}
	for {
		key, err := r.str(2)
		if err != nil {
			return nil, err
		}
		if key == "" && r.pos < len(r.b) && r.b[r.pos] == amf0ObjectEnd {
			r.pos++
			return out, nil
		}
		v, err := r.value(depth + 1)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
}
