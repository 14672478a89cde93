package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/wishbridge/bridge/internal/testkit"
)

// flvFileTag is one tag of an FLV file.
type flvFileTag struct {
	Type byte // 8 audio, 9 video, 18 script data
	TS   uint32
	Data []byte
}

// readFLV reads an FLV file (header, then tags with their back pointers).
func readFLV(t testing.TB, name string) []flvFileTag {
	t.Helper()
	b, err := os.ReadFile(testkit.Fixture(name))
	if err != nil {
		t.Fatalf("fixture: %v (expected the repo at /work/main beside /work/shared)", err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		t.Fatalf("%s is not an FLV file", name)
	}
	pos := int(binary.BigEndian.Uint32(b[5:9])) + 4
	var tags []flvFileTag
	for pos+11 <= len(b) {
		typ := b[pos] & 0x1f
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := uint32(b[pos+7])<<24 | uint32(b[pos+4])<<16 | uint32(b[pos+5])<<8 | uint32(b[pos+6])
		pos += 11
		if pos+size+4 > len(b) {
			t.Fatalf("%s: truncated tag at byte %d", name, pos)
		}
		tags = append(tags, flvFileTag{Type: typ, TS: ts, Data: b[pos : pos+size]})
		pos += size + 4
	}
	return tags
}

// Hand-built tags.

func avcConfigRecord(lengthSize int, sps, pps []byte) []byte {
	b := []byte{1, sps[1], sps[2], sps[3], 0xfc | byte(lengthSize-1), 0xe0 | 1}
	b = binary.BigEndian.AppendUint16(b, uint16(len(sps)))
	b = append(b, sps...)
	b = append(b, 1)
	b = binary.BigEndian.AppendUint16(b, uint16(len(pps)))
	return append(b, pps...)
}

func avcSeqHeaderTag(lengthSize int, sps, pps []byte) []byte {
	return append([]byte{0x17, 0, 0, 0, 0}, avcConfigRecord(lengthSize, sps, pps)...)
}

func avcNALUTag(key bool, cts int32, lengthSize int, nalus ...[]byte) []byte {
	ft := byte(0x27)
	if key {
		ft = 0x17
	}
	b := []byte{ft, 1, byte(cts >> 16), byte(cts >> 8), byte(cts)}
	for _, n := range nalus {
		for i := lengthSize - 1; i >= 0; i-- {
			b = append(b, byte(len(n)>>(8*i)))
		}
		b = append(b, n...)
	}
	return b
}

func aacSeqHeaderTag(asc []byte) []byte { return append([]byte{0xaf, 0}, asc...) }
func aacRawTag(frame []byte) []byte     { return append([]byte{0xaf, 1}, frame...) }

var (
	// Constrained Baseline 640x360, from h264-aac.flv.
	testSPS = []byte{0x67, 0x42, 0xc0, 0x1f, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0xc0, 0x44, 0x00, 0x00, 0x03, 0x00, 0x04, 0x00, 0x00, 0x03, 0x00, 0xf0, 0x3c, 0x60, 0xca, 0x80}
	testPPS = []byte{0x68, 0xce, 0x3c, 0x80}
	testIDR = []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	testP   = []byte{0x41, 0x9a, 0x02, 0x03}
	testSEI = []byte{0x06, 0x05, 0x01, 0x80}
	testAUD = []byte{0x09, 0xf0}
	// AAC-LC 48 kHz stereo.
	testASC = []byte{0x11, 0x90}
)

func TestParseVideoTagFixture(t *testing.T) {
	for _, file := range []string{"h264-aac.flv", "h264-bframes-aac.flv"} {
		t.Run(file, func(t *testing.T) {
			var cfg *avcConfig
			frames, keys, nonZeroCTS := 0, 0, 0
			for _, tag := range readFLV(t, file) {
				if tag.Type != 9 {
					continue
				}
				v, err := parseVideoTag(tag.Data)
				if err != nil {
					t.Fatalf("tag at %d ms: %v", tag.TS, err)
				}
				switch v.PacketType {
				case avcPacketSequenceHeader:
					c, err := parseAVCConfig(v.Data)
					if err != nil {
						t.Fatalf("sequence header: %v", err)
					}
					cfg = &c
				case avcPacketNALU:
					if cfg == nil {
						t.Fatal("NAL units before the sequence header")
					}
					nalus, err := splitNALUs(v.Data, cfg.LengthSize)
					if err != nil {
						t.Fatalf("tag at %d ms: %v", tag.TS, err)
					}
					if len(nalus) == 0 {
						t.Fatalf("tag at %d ms has no NAL units", tag.TS)
					}
					frames++
					if v.FrameType == frameTypeKey {
						keys++
						idr := false
						for _, n := range nalus {
							idr = idr || h264.NALUType(n[0]&0x1f) == h264.NALUTypeIDR
						}
						if !idr {
							t.Errorf("keyframe tag at %d ms has no IDR", tag.TS)
						}
					}
					if v.CompositionTime != 0 {
						nonZeroCTS++
					}
				}
			}
			if cfg == nil {
				t.Fatal("no sequence header")
			}
			var sps h264.SPS
			if err := sps.Unmarshal(cfg.SPS); err != nil {
				t.Fatalf("SPS: %v", err)
			}
			if sps.Width() != 640 || sps.Height() != 360 || cfg.LengthSize != 4 || len(cfg.PPS) == 0 {
				t.Errorf("config: %dx%d, length size %d, PPS %d bytes", sps.Width(), sps.Height(), cfg.LengthSize, len(cfg.PPS))
			}
			if frames != 300 || keys != 10 {
				t.Errorf("%d frames, %d keyframes; want 300, 10", frames, keys)
			}
			bframes := strings.Contains(file, "bframes")
			if bframes != (nonZeroCTS > 0) {
				t.Errorf("%d frames with a composition time", nonZeroCTS)
			}
		})
	}
}

func TestParseAudioTagFixture(t *testing.T) {
	var cfg *aacConfig
	frames := 0
	for _, tag := range readFLV(t, "h264-aac.flv") {
		if tag.Type != 8 {
			continue
		}
		a, err := parseAudioTag(tag.Data)
		if err != nil {
			t.Fatalf("tag at %d ms: %v", tag.TS, err)
		}
		if a.SoundFormat != soundFormatAAC {
			t.Fatalf("sound format %d", a.SoundFormat)
		}
		if a.PacketType == aacPacketSequenceHeader {
			c, err := parseAACConfig(a.Data)
			if err != nil {
				t.Fatal(err)
			}
			cfg = &c
			continue
		}
		if len(a.Data) == 0 {
			t.Fatalf("empty frame at %d ms", tag.TS)
		}
		frames++
	}
	if cfg == nil || cfg.SampleRate != 48000 || cfg.Channels != 2 {
		t.Fatalf("AAC config %+v, want 48000 Hz stereo", cfg)
	}
	if frames < 460 || frames > 480 {
		t.Errorf("%d AAC frames in 10 s", frames)
	}
}

func TestParseVideoTag(t *testing.T) {
	for _, tc := range []struct {
		name    string
		in      []byte
		want    videoTag
		wantErr string
	}{
		{name: "sequence header", in: avcSeqHeaderTag(4, testSPS, testPPS), want: videoTag{FrameType: 1, PacketType: 0, Data: avcConfigRecord(4, testSPS, testPPS)}},
		{name: "keyframe", in: avcNALUTag(true, 0, 4, testIDR), want: videoTag{FrameType: 1, PacketType: 1, Data: []byte{0, 0, 0, 5, 0x65, 0x88, 0x84, 0x00, 0x33}}},
		{name: "composition time", in: avcNALUTag(false, 67, 4, testP), want: videoTag{FrameType: 2, PacketType: 1, CompositionTime: 67, Data: []byte{0, 0, 0, 4, 0x41, 0x9a, 0x02, 0x03}}},
		{name: "negative composition time", in: avcNALUTag(false, -33, 4, testP), want: videoTag{FrameType: 2, PacketType: 1, CompositionTime: -33, Data: []byte{0, 0, 0, 4, 0x41, 0x9a, 0x02, 0x03}}},
		{name: "most negative composition time", in: []byte{0x27, 1, 0x80, 0, 0}, want: videoTag{FrameType: 2, PacketType: 1, CompositionTime: -1 << 23, Data: []byte{}}},
		{name: "largest composition time", in: []byte{0x27, 1, 0x7f, 0xff, 0xff}, want: videoTag{FrameType: 2, PacketType: 1, CompositionTime: 1<<23 - 1, Data: []byte{}}},
		{name: "end of sequence", in: []byte{0x17, 2, 0, 0, 0}, want: videoTag{FrameType: 1, PacketType: 2, Data: []byte{}}},
		{name: "command frame", in: []byte{0x57, 0}, want: videoTag{FrameType: 5}},
		{name: "empty", in: nil, wantErr: "empty"},
		{name: "truncated header", in: []byte{0x17, 1, 0, 0}, wantErr: "shorter than its 5-byte header"},
		{name: "bad packet type", in: []byte{0x17, 3, 0, 0, 0}, wantErr: "AVCPacketType 3"},
		{name: "bad frame type", in: []byte{0x77, 1, 0, 0, 0}, wantErr: "frame type 7"},
		{name: "VP6", in: []byte{0x14, 0, 0}, wantErr: "On2 VP6 (FLV codec id 4) is not supported"},
		{name: "HEVC id 12", in: []byte{0x1c, 0, 0, 0, 0}, wantErr: "H.265"},
		{name: "enhanced RTMP", in: []byte{0x90, 'h', 'v', 'c', '1', 1}, wantErr: `enhanced RTMP video (FourCC "hvc1")`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseVideoTag(tc.in)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.FrameType != tc.want.FrameType || got.PacketType != tc.want.PacketType || got.CompositionTime != tc.want.CompositionTime || !bytes.Equal(got.Data, tc.want.Data) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := parseVideoTag([]byte{0x1c, 0, 0, 0, 0}); !errors.Is(err, errUnsupportedCodec) {
		t.Errorf("HEVC error %v does not wrap errUnsupportedCodec", err)
	}
}

func TestParseAVCConfig(t *testing.T) {
	good := avcConfigRecord(4, testSPS, testPPS)
	c, err := parseAVCConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.SPS, testSPS) || !bytes.Equal(c.PPS, testPPS) || c.LengthSize != 4 || c.Profile != 0x42 || c.Level != 0x1f {
		t.Fatalf("got %+v", c)
	}
	for ls := 1; ls <= 4; ls++ {
		c, err := parseAVCConfig(avcConfigRecord(ls, testSPS, testPPS))
		if err != nil || c.LengthSize != ls {
			t.Errorf("length size %d: %v, %d", ls, err, c.LengthSize)
		}
	}
	// Two SPS and two PPS: the first of each is kept. High-profile
	// extension bytes after the PPS are ignored.
	two := []byte{1, 0x64, 0, 0x1f, 0xff, 0xe2}
	for _, s := range [][]byte{testSPS, {0x67, 1}} {
		two = binary.BigEndian.AppendUint16(two, uint16(len(s)))
		two = append(two, s...)
	}
	two = append(two, 2)
	for _, p := range [][]byte{testPPS, {0x68, 2}} {
		two = binary.BigEndian.AppendUint16(two, uint16(len(p)))
		two = append(two, p...)
	}
	two = append(two, 0xfd, 0xf8, 0xf8, 0)
	if c, err := parseAVCConfig(two); err != nil || !bytes.Equal(c.SPS, testSPS) || !bytes.Equal(c.PPS, testPPS) {
		t.Errorf("two parameter sets: %v %+v", err, c)
	}

	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, "minimum is 7"},
		{"version", append([]byte{2}, good[1:]...), "version is 2"},
		{"no SPS", []byte{1, 0x42, 0, 0x1f, 0xff, 0xe0, 1, 0, 1, 0x68}, "no SPS"},
		{"no PPS", append(append([]byte{}, good[:8+len(testSPS)]...), 0), "no PPS"},
		{"SPS length past end", []byte{1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 40, 0x67}, "SPS 0 is 40 bytes but only 1 remain"},
		{"empty SPS", []byte{1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 0, 1}, "SPS 0 is empty"},
		{"SPS not type 7", []byte{1, 0x42, 0, 0x1f, 0xff, 0xe1, 0, 1, 0x68, 1, 0, 1, 0x68}, "NAL unit type 8, expected 7"},
		{"PPS not type 8", append(append([]byte{}, good[:8+len(testSPS)]...), 1, 0, 1, 0x65), "NAL unit type 5, expected 8"},
		{"truncated before PPS count", good[:8+len(testSPS)], "before the PPS count"},
		{"truncated PPS", good[:len(good)-1], "PPS 0 is 4 bytes but only 3 remain"},
		{"truncated PPS length", good[:8+len(testSPS)+2], "truncated at the length of PPS 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseAVCConfig(tc.in); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
	// Every truncation of a good record is an error.
	for i := range good {
		if _, err := parseAVCConfig(good[:i]); err == nil {
			t.Errorf("truncated to %d bytes: no error", i)
		}
	}
}

func TestSplitNALUs(t *testing.T) {
	for ls := 1; ls <= 4; ls++ {
		tag := avcNALUTag(true, 0, ls, testAUD, testSEI, testIDR)
		nalus, err := splitNALUs(tag[5:], ls)
		if err != nil {
			t.Fatalf("length size %d: %v", ls, err)
		}
		if len(nalus) != 3 || !bytes.Equal(nalus[0], testAUD) || !bytes.Equal(nalus[1], testSEI) || !bytes.Equal(nalus[2], testIDR) {
			t.Fatalf("length size %d: got %x", ls, nalus)
		}
		// Every truncation is an error.
		body := tag[5:]
		for i := 1; i < len(body); i++ {
			if _, err := splitNALUs(body[:i], ls); err == nil && !cutsAtNALUBoundary(body, i, ls) {
				t.Errorf("length size %d, truncated to %d bytes: no error", ls, i)
			}
		}
	}
	// Zero-length NAL units are skipped; an empty body has none.
	if n, err := splitNALUs([]byte{0, 0, 0, 0, 0, 0, 0, 1, 0x41}, 4); err != nil || len(n) != 1 {
		t.Errorf("zero-length NALU: %v %x", err, n)
	}
	if n, err := splitNALUs(nil, 4); err != nil || len(n) != 0 {
		t.Errorf("empty: %v %x", err, n)
	}
	if _, err := splitNALUs([]byte{1, 0x41}, 5); err == nil {
		t.Error("length size 5: no error")
	}
	// Limits: NAL unit count and access unit size.
	var many []byte
	for range h264.MaxNALUsPerAccessUnit + 1 {
		many = append(many, 0, 0, 0, 1, 0x41)
	}
	if _, err := splitNALUs(many, 4); err == nil || !strings.Contains(err.Error(), "NALU count (51) exceeds maximum allowed (50)") {
		t.Errorf("too many NALUs: %v", err)
	}
	big := make([]byte, 4+h264.MaxAccessUnitSize+1)
	binary.BigEndian.PutUint32(big, uint32(h264.MaxAccessUnitSize+1))
	if _, err := splitNALUs(big, 4); err == nil || !strings.Contains(err.Error(), "too big") {
		t.Errorf("too big: %v", err)
	}
}

// cutsAtNALUBoundary reports whether body[:i] ends exactly after a NAL unit.
func cutsAtNALUBoundary(body []byte, i, ls int) bool {
	pos := 0
	for pos < i {
		n := 0
		for _, c := range body[pos : pos+ls] {
			n = n<<8 | int(c)
		}
		pos += ls + n
	}
	return pos == i
}

func TestParseAudioTag(t *testing.T) {
	a, err := parseAudioTag(aacSeqHeaderTag(testASC))
	if err != nil || a.SoundFormat != 10 || a.PacketType != 0 || !bytes.Equal(a.Data, testASC) {
		t.Fatalf("sequence header: %v %+v", err, a)
	}
	a, err = parseAudioTag(aacRawTag([]byte{1, 2, 3}))
	if err != nil || a.PacketType != 1 || !bytes.Equal(a.Data, []byte{1, 2, 3}) {
		t.Fatalf("raw: %v %+v", err, a)
	}
	a, err = parseAudioTag([]byte{0x2f, 0xff, 0xfb})
	if err != nil || a.SoundFormat != 2 || soundFormatName(a.SoundFormat) != "MP3" {
		t.Fatalf("MP3: %v %+v", err, a)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"empty", nil, "empty"},
		{"AAC without packet type", []byte{0xaf}, "shorter than its 2-byte header"},
		{"bad packet type", []byte{0xaf, 2, 0}, "AACPacketType 2"},
		{"frame too big", aacRawTag(make([]byte, 5*1024+1)), "too big"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseAudioTag(tc.in); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseAACConfig(t *testing.T) {
	c, err := parseAACConfig(testASC)
	if err != nil || c.SampleRate != 48000 || c.Channels != 2 {
		t.Fatalf("%v %+v", err, c)
	}
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"truncated", testASC[:1]},
		{"object type 0", []byte{0x01, 0x90}},
		{"channel config 0 (PCE)", []byte{0x11, 0x80}},
		{"bad sample rate index", []byte{0x16, 0x90}},
	} {
		if _, err := parseAACConfig(tc.in); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}

// fixtureTags returns the fixture's first tag bodies of one type as fuzz
// seeds, cut to 512 bytes (large seeds slow the fuzzer down).
func fixtureTags(f *testing.F, typ byte, max int) [][]byte {
	var out [][]byte
	for _, tag := range readFLV(f, "h264-bframes-aac.flv") {
		if tag.Type == typ && len(out) < max {
			out = append(out, tag.Data[:min(len(tag.Data), 512)])
		}
	}
	return out
}

func FuzzVideoTag(f *testing.F) {
	for _, b := range fixtureTags(f, 9, 4) {
		f.Add(b)
	}
	f.Add(avcNALUTag(false, -33, 2, testP, testSEI))
	f.Add([]byte{0x90, 'a', 'v', '0', '1'})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := parseVideoTag(b)
		if err != nil {
			return
		}
		if v.CompositionTime < -1<<23 || v.CompositionTime >= 1<<23 {
			t.Fatalf("composition time %d out of SI24 range", v.CompositionTime)
		}
		switch v.PacketType {
		case avcPacketSequenceHeader:
			_, _ = parseAVCConfig(v.Data)
		case avcPacketNALU:
			for ls := 1; ls <= 4; ls++ {
				nalus, err := splitNALUs(v.Data, ls)
				if err != nil {
					continue
				}
				size := 0
				for _, n := range nalus {
					if len(n) == 0 {
						t.Fatal("empty NAL unit")
					}
					size += len(n)
				}
				if size > len(v.Data) || len(nalus) > h264.MaxNALUsPerAccessUnit {
					t.Fatalf("%d NAL units, %d bytes from %d", len(nalus), size, len(v.Data))
				}
			}
		}
	})
}

func FuzzAVCConfig(f *testing.F) {
	for _, b := range fixtureTags(f, 9, 1) {
		f.Add(b[5:])
	}
	f.Add(avcConfigRecord(2, testSPS, testPPS))
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := parseAVCConfig(b)
		if err != nil {
			return
		}
		if len(c.SPS) == 0 || len(c.PPS) == 0 || c.LengthSize < 1 || c.LengthSize > 4 {
			t.Fatalf("accepted %+v", c)
		}
		if c.SPS[0]&0x1f != 7 || c.PPS[0]&0x1f != 8 {
			t.Fatalf("parameter set types %d, %d", c.SPS[0]&0x1f, c.PPS[0]&0x1f)
		}
	})
}

func FuzzAudioTag(f *testing.F) {
	for _, b := range fixtureTags(f, 8, 3) {
		f.Add(b)
	}
	f.Add([]byte{0x2f, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAudioTag(b)
		if err != nil {
			return
		}
		if a.SoundFormat == soundFormatAAC && a.PacketType == aacPacketSequenceHeader {
			if c, err := parseAACConfig(a.Data); err == nil && (c.SampleRate <= 0 || c.Channels <= 0) {
				t.Fatalf("accepted %+v", c)
			}
		}
	})
}
