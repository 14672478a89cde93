package rtmpwire

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestAMFRoundTrip(t *testing.T) {
	b := AppendAMF0(nil, "onStatus", 0.0, nil, true, Object{
		{"level", "error"},
		{"code", "NetStream.Publish.BadName"},
		{"n", 3},
		{"nested", ECMAArray{{"x", uint32(7)}}},
	}, string(bytes.Repeat([]byte("l"), 70000)))
	vals, err := DecodeAMF0(b)
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"onStatus", 0.0, nil, true, map[string]any{
		"level": "error", "code": "NetStream.Publish.BadName", "n": 3.0, "nested": map[string]any{"x": 7.0},
	}, string(bytes.Repeat([]byte("l"), 70000))}
	if !reflect.DeepEqual(vals, want) {
		t.Errorf("decoded %v", vals[:5])
	}
	// Nesting beyond the limit is an error, not a stack overflow.
	deep := []byte{}
	for range 10000 {
		deep = append(deep, AMF0Object, 0, 1, 'a')
	}
	if _, err := DecodeAMF0(deep); err == nil || !strings.Contains(err.Error(), "nest deeper than 8") {
		t.Errorf("deeply nested value: %v", err)
	}
}

func TestAMFCommandRoundTrip(t *testing.T) {
	b := AppendAMF0(nil, "onStatus", 0.0, nil, Object{{"level", "error"}, {"code", "NetStream.Play.StreamNotFound"}, {"description", "no such stream"}, {"n", 3}, {"ok", true}})
	cmd, err := ParseCommand(TypeCommandAMF0, b)
	if err != nil {
		t.Fatal(err)
	}
	st := cmd.Status()
	if cmd.Name != "onStatus" || st.Level != "error" || st.Code != "NetStream.Play.StreamNotFound" || st.Description != "no such stream" {
		t.Errorf("got %+v", cmd)
	}
	if got := cmd.Describe(); got != `NetStream.Play.StreamNotFound ("no such stream")` {
		t.Errorf("describe: %s", got)
	}
	// AMF3 commands: a 0 byte, then AMF0.
	if cmd, err := ParseCommand(TypeCommandAMF3, append([]byte{0}, b...)); err != nil || cmd.Name != "onStatus" {
		t.Errorf("AMF3 command: %+v %v", cmd, err)
	}
	// The key a server quotes back is hidden; control characters and
	// length are bounded.
	b = AppendAMF0(nil, "_error", 1.0, nil, Object{{"code", "NetStream.Publish.BadName"}, {"description", "publish \"live/KEY?t=1\"\n refused" + strings.Repeat("x", 300)}})
	cmd, _ = ParseCommand(TypeCommandAMF0, b)
	got := cmd.Describe("KEY?t=1", "KEY")
	if strings.Contains(got, "KEY") || strings.Contains(got, "\n") || len(got) > 300 || !strings.HasPrefix(got, `NetStream.Publish.BadName ("publish "live/<redacted>"  refused`) {
		t.Errorf("describe: %s", got)
	}
	if got := (Command{Name: "_error"}).Describe(); got != "no reason given" {
		t.Errorf("describe without a status: %s", got)
	}
}

func FuzzAMF0Decode(f *testing.F) {
	f.Add(AppendAMF0(nil, "_result", 1.0, nil, Object{{"code", "x"}, {"a", ECMAArray{{"b", true}}}}))
	f.Add(AppendAMF0(nil, "onMetaData", ECMAArray{{"videocodecid", 7.0}, {"audiocodecid", "mp4a"}}))
	f.Add([]byte{AMF0StrictArray, 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		vals, err := DecodeAMF0(b)
		if err == nil {
			// What decodes encodes again and decodes to the same values
			// (for the types AppendAMF0 takes).
			var re []byte
			for _, v := range vals {
				if !encodable(v) {
					return
				}
				re = AppendAMF0(re, encoding(v))
			}
			again, err := DecodeAMF0(re)
			if err != nil || !reflect.DeepEqual(again, vals) {
				t.Fatalf("re-encoded %v as %x: %v, %v", vals, re, again, err)
			}
		}
		if cmd, err := ParseCommand(TypeCommandAMF0, b); err == nil {
			_ = cmd.Describe("k")
		}
	})
}

// encodable reports whether v decodes from what AppendAMF0 writes: no
// NaN (not equal to itself), no strict arrays.
func encodable(v any) bool {
	switch v := v.(type) {
	case float64:
		return v == v
	case map[string]any:
		for _, x := range v {
			if !encodable(x) {
				return false
			}
		}
		return true
	case []any:
		return false
	default:
		return true
	}
}

// encoding converts a decoded value to what AppendAMF0 takes.
func encoding(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	o := Object{}
	for k, x := range m {
		o = append(o, KV{k, encoding(x)})
	}
	return o
}
