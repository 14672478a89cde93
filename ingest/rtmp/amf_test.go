package rtmp

import (
	"bytes"
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/internal/rtmpwire"
)

// AMF0 type markers, for the tests that build AMF0 by hand.
const (
	amf0Number      = rtmpwire.AMF0Number
	amf0Boolean     = rtmpwire.AMF0Boolean
	amf0String      = rtmpwire.AMF0String
	amf0Object      = rtmpwire.AMF0Object
	amf0Null        = rtmpwire.AMF0Null
	amf0Undefined   = rtmpwire.AMF0Undefined
	amf0ECMAArray   = rtmpwire.AMF0ECMAArray
	amf0ObjectEnd   = rtmpwire.AMF0ObjectEnd
	amf0StrictArray = rtmpwire.AMF0StrictArray
	amf0Date        = rtmpwire.AMF0Date
	amf0LongString  = rtmpwire.AMF0LongString
)

// amfEnc builds AMF0 by hand.
type amfEnc struct{ bytes.Buffer }

func (e *amfEnc) str(s string) *amfEnc {
	e.WriteByte(amf0String)
	e.key(s)
	return e
}

func (e *amfEnc) key(s string) *amfEnc {
	_ = binary.Write(&e.Buffer, binary.BigEndian, uint16(len(s)))
	e.WriteString(s)
	return e
}

func (e *amfEnc) num(v float64) *amfEnc {
	e.WriteByte(amf0Number)
	_ = binary.Write(&e.Buffer, binary.BigEndian, math.Float64bits(v))
	return e
}

func (e *amfEnc) raw(b ...byte) *amfEnc { e.Write(b); return e }

func (e *amfEnc) end() *amfEnc { return e.raw(0, 0, amf0ObjectEnd) }

func TestParseMetadataFixture(t *testing.T) {
	for _, tag := range readFLV(t, "h264-aac.flv") {
		if tag.Type != 18 {
			continue
		}
		m, err := parseMetadata(tag.Data)
		if err != nil {
			t.Fatal(err)
		}
		if !m.HasVideo || !m.HasAudio || !m.AudioAAC || m.VideoCodec != "7" || m.AudioCodec != "10" {
			t.Fatalf("got %+v", m)
		}
		return
	}
	t.Fatal("no script data tag in the fixture")
}

func TestParseMetadata(t *testing.T) {
	// OBS-style: FourCC strings, an object, nested values to skip.
	e := (&amfEnc{}).str("onMetaData").raw(amf0Object)
	e.key("width").num(1280)
	e.key("videocodecid").str("avc1")
	e.key("audiocodecid").str("mp4a")
	e.key("encoder").str("obs-output module")
	e.key("trackinfo").raw(amf0StrictArray, 0, 0, 0, 2)
	e.raw(amf0Object).key("a").raw(amf0Boolean, 1).key("d").raw(amf0Date, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0).end()
	e.raw(amf0Null)
	e.key("long").raw(amf0LongString, 0, 0, 0, 1, 'x')
	e.key("u").raw(amf0Undefined)
	e.key("ecma").raw(amf0ECMAArray, 0, 0, 0, 1).key("k").num(1).end()
	e.end()
	m, err := parseMetadata(e.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !m.HasVideo || m.VideoCodec != "avc1" || !m.HasAudio || !m.AudioAAC {
		t.Fatalf("got %+v", m)
	}

	// Video only; MP3 audio.
	e = (&amfEnc{}).str("onMetaData").raw(amf0ECMAArray, 0, 0, 0, 1)
	e.key("videocodecid").num(7).end()
	if m, err := parseMetadata(e.Bytes()); err != nil || !m.HasVideo || m.HasAudio {
		t.Fatalf("video only: %v %+v", err, m)
	}
	e = (&amfEnc{}).str("onMetaData").raw(amf0ECMAArray, 0, 0, 0, 1)
	e.key("audiocodecid").num(2).end()
	if m, err := parseMetadata(e.Bytes()); err != nil || !m.HasAudio || m.AudioAAC || m.AudioCodec != "2" {
		t.Fatalf("MP3: %v %+v", err, m)
	}

	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, "truncated"},
		{"other name", (&amfEnc{}).str("onCuePoint").raw(amf0Null).Bytes(), "expected onMetaData"},
		{"truncated string", []byte{amf0String, 0, 10, 'o', 'n'}, "truncated"},
		{"no object end", (&amfEnc{}).str("onMetaData").raw(amf0Object).key("a").num(1).Bytes(), "truncated"},
		{"bad end marker", (&amfEnc{}).str("onMetaData").raw(amf0Object, 0, 0, 5).Bytes(), "object end"},
		{"unknown marker", (&amfEnc{}).str("onMetaData").raw(amf0Object).key("a").raw(0x11).end().Bytes(), "0x11"},
		{"huge strict array", (&amfEnc{}).str("onMetaData").raw(amf0Object).key("a").raw(amf0StrictArray, 0xff, 0xff, 0xff, 0xff, amf0Null).end().Bytes(), "truncated"},
		{"deep nesting", deepMetadata(100000), "nest deeper than 8"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseMetadata(tc.in); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func deepMetadata(depth int) []byte {
	e := (&amfEnc{}).str("onMetaData")
	for range depth {
		e.raw(amf0Object).key("a")
	}
	return e.Bytes()
}
