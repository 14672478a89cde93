package rtmp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// metadata is what the bridge takes from a publisher's onMetaData: which
// elementary streams it announces. Anything else is ignored.
type metadata struct {
	// HasVideo and HasAudio are true when videocodecid / audiocodecid is
	// present.
	HasVideo, HasAudio bool
	// VideoCodec and AudioCodec are the announced codec ids as sent (a
	// number such as "7" or a FourCC such as "avc1"), for logs.
	VideoCodec, AudioCodec string
	// AudioAAC is true when audiocodecid announces AAC (10 or "mp4a").
	AudioAAC bool
}

// maxAMFDepth bounds nesting in metadata: real encoders nest at most once
// or twice, and a recursive parser must not let a peer choose its depth.
const maxAMFDepth = 8

// AMF0 type markers (AMF0 specification 2.1).
const (
	amf0Number      = 0x00
	amf0Boolean     = 0x01
	amf0String      = 0x02
	amf0Object      = 0x03
	amf0Null        = 0x05
	amf0Undefined   = 0x06
	amf0ECMAArray   = 0x08
	amf0ObjectEnd   = 0x09
	amf0StrictArray = 0x0a
	amf0Date        = 0x0b
	amf0LongString  = 0x0c
)

// parseMetadata parses the payload of an @setDataFrame data message as
// handed over by go-rtmp: the AMF0 string "onMetaData" followed by an ECMA
// array (or object) of properties. It is a small hand-written AMF0 reader
// with a depth limit, so untrusted metadata cannot recurse without bound.
func parseMetadata(b []byte) (metadata, error) {
	r := amfReader{b: b}
	name, err := r.value(0, nil)
	if err != nil {
		return metadata{}, fmt.Errorf("metadata name: %w", err)
	}
	if s, ok := name.(string); !ok || s != "onMetaData" {
		return metadata{}, fmt.Errorf("data frame is %v, expected onMetaData", name)
	}
	var m metadata
	if _, err := r.value(0, func(key string, v any) {
		switch key {
		case "videocodecid":
			m.HasVideo = true
			m.VideoCodec = amfString(v)
		case "audiocodecid":
			m.HasAudio = true
			m.AudioCodec = amfString(v)
			m.AudioAAC = m.AudioCodec == "10" || m.AudioCodec == "mp4a"
		}
	}); err != nil {
		return metadata{}, fmt.Errorf("onMetaData: %w", err)
	}
	return m, nil
}

// amfString formats a scalar AMF value for comparison and logs.
func amfString(v any) string {
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

type amfReader struct {
	b   []byte
	pos int
}

var errAMFTruncated = errors.New("AMF0 value is truncated")

func (r *amfReader) take(n int) ([]byte, error) {
	if n < 0 || len(r.b)-r.pos < n {
		return nil, errAMFTruncated
	}
	out := r.b[r.pos : r.pos+n]
	r.pos += n
	return out, nil
}

// value reads one AMF0 value. Scalars are returned (float64, bool, string,
// nil); objects and arrays return nil, and when onProp is set the
// properties of a top-level object or ECMA array are reported to it.
func (r *amfReader) value(depth int, onProp func(string, any)) (any, error) {
	if depth > maxAMFDepth {
		return nil, fmt.Errorf("AMF0 values nest deeper than %d", maxAMFDepth)
	}
	m, err := r.take(1)
	if err != nil {
		return nil, err
	}
	switch m[0] {
	case amf0Number:
		b, err := r.take(8)
		if err != nil {
			return nil, err
		}
		return math.Float64frombits(binary.BigEndian.Uint64(b)), nil
	case amf0Boolean:
		b, err := r.take(1)
		if err != nil {
			return nil, err
		}
		return b[0] != 0, nil
	case amf0String:
		return r.str(2)
	case amf0LongString:
		return r.str(4)
	case amf0Null, amf0Undefined:
		return nil, nil
	case amf0Date:
		if _, err := r.take(10); err != nil {
			return nil, err
		}
		return nil, nil
	case amf0ECMAArray:
		if _, err := r.take(4); err != nil { // approximate count, not trusted
			return nil, err
		}
		return nil, r.props(depth, onProp)
	case amf0Object:
		return nil, r.props(depth, onProp)
	case amf0StrictArray:
		b, err := r.take(4)
		if err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint32(b)
		for i := uint32(0); i < n; i++ {
			if _, err := r.value(depth+1, nil); err != nil {
				return nil, err
			}
		}
		return nil, nil
	default:
		return nil, fmt.Errorf("AMF0 type marker 0x%02x at byte %d is not supported", m[0], r.pos-1)
	}
}

func (r *amfReader) str(lenBytes int) (string, error) {
	b, err := r.take(lenBytes)
	if err != nil {
		return "", err
	}
	var n uint64
	for _, c := range b {
		n = n<<8 | uint64(c)
	}
	if n > uint64(len(r.b)-r.pos) {
		return "", errAMFTruncated
	}
	s, _ := r.take(int(n))
	return string(s), nil
}

// props reads the key/value pairs of an object or ECMA array up to the
// empty key and object-end marker.
func (r *amfReader) props(depth int, onProp func(string, any)) error {
	for {
		key, err := r.str(2)
		if err != nil {
			return err
		}
		if key == "" {
			end, err := r.take(1)
			if err != nil {
				return err
			}
			if end[0] != amf0ObjectEnd {
				return fmt.Errorf("AMF0 object has an empty key followed by marker 0x%02x, expected object end", end[0])
			}
			return nil
		}
		v, err := r.value(depth+1, nil)
		if err != nil {
			return fmt.Errorf("property %q: %w", key, err)
		}
		if onProp != nil {
			onProp(key, v)
		}
	}
}
