package transcode

import (
	"bytes"
	"slices"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// Small stand-ins for NAL units; only the header byte matters to the
// normalizer.
var (
	testSPS    = []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9}
	testSPS2   = []byte{0x67, 0x64, 0x00, 0x28, 0xac}
	testPPS    = []byte{0x68, 0xce, 0x3c, 0x80}
	testPPS2   = []byte{0x68, 0xeb, 0xe3, 0xcb}
	testAUD    = []byte{0x09, 0xf0}
	testFiller = []byte{0x0c, 0xff, 0xff, 0x80}
	testSEI    = []byte{0x06, 0x05, 0x01, 0x80}
	testIDR    = []byte{0x65, 0x88, 0x84, 0x00, 0x33}
	testSlice  = []byte{0x41, 0x9a, 0x02, 0x04}
)

func TestH264Normalizer(t *testing.T) {
	cases := []struct {
		name    string
		sps     []byte // given to NewH264Normalizer
		pps     []byte
		au      [][]byte
		want    [][]byte
		wantIDR bool
	}{
		{
			name: "strips AUD and filler from a P frame",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{testAUD, testSlice, testFiller},
			want: [][]byte{testSlice},
		},
		{
			name: "strips parameter sets from a non-IDR unit",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{testAUD, testSPS, testPPS, testSEI, testSlice},
			want: [][]byte{testSEI, testSlice},
		},
		{
			name: "prepends known parameter sets to an IDR",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{testAUD, testSEI, testIDR},
			want: [][]byte{testSPS, testPPS, testSEI, testIDR}, wantIDR: true,
		},
		{
			name: "moves in-band parameter sets to the front",
			au:   [][]byte{testAUD, testSEI, testSPS, testFiller, testPPS, testIDR},
			want: [][]byte{testSPS, testPPS, testSEI, testIDR}, wantIDR: true,
		},
		{
			name: "in-band parameter sets replace the initial ones",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{testSPS2, testPPS2, testIDR},
			want: [][]byte{testSPS2, testPPS2, testIDR}, wantIDR: true,
		},
		{
			name: "IDR without known parameter sets is left alone",
			au:   [][]byte{testIDR},
			want: [][]byte{testIDR}, wantIDR: true,
		},
		{
			name: "IDR with only an SPS known is left alone",
			sps:  testSPS,
			au:   [][]byte{testIDR},
			want: [][]byte{testIDR}, wantIDR: true,
		},
		{
			name: "empty initial parameter sets count as unknown",
			sps:  []byte{}, pps: []byte{},
			au:   [][]byte{testIDR},
			want: [][]byte{testIDR}, wantIDR: true,
		},
		{
			name: "empty NAL units are dropped",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{{}, testSlice, nil},
			want: [][]byte{testSlice},
		},
		{
			name: "parameter sets only",
			au:   [][]byte{testAUD, testSPS, testPPS},
			want: nil,
		},
		{
			name: "delimiter and filler only",
			sps:  testSPS, pps: testPPS,
			au:   [][]byte{testAUD, testFiller},
			want: nil,
		},
		{name: "empty unit", want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			n := NewH264Normalizer(tc.sps, tc.pps)
			in := cloneNALUs(tc.au)
			got, idr := n.Normalize(in)
			if !equalNALUs(got, tc.want) || idr != tc.wantIDR {
				t.Errorf("Normalize(%v) = %v (%x), idr=%v; expected %v (%x), idr=%v",
					naluTypes(tc.au), naluTypes(got), got, idr, naluTypes(tc.want), tc.want, tc.wantIDR)
			}
			if tc.want == nil && got != nil {
				t.Errorf("Normalize returned %#v, expected nil", got)
			}
			if !equalNALUs(in, tc.au) {
				t.Errorf("Normalize modified its input: %x, was %x", in, tc.au)
			}
		})
	}
}

func TestH264NormalizerInBandChange(t *testing.T) {
	n := NewH264Normalizer(testSPS, testPPS)

	// A parameter-set-only unit (as some encoders send before a new IDR)
	// yields nothing but is remembered.
	if got, idr := n.Normalize([][]byte{testSPS2, testPPS2}); got != nil || idr {
		t.Fatalf("parameter sets only: got %x, idr=%v; expected nil", got, idr)
	}
	if sps, pps := n.Params(); !bytes.Equal(sps, testSPS2) || !bytes.Equal(pps, testPPS2) {
		t.Fatalf("Params() = %x, %x; expected %x, %x", sps, pps, testSPS2, testPPS2)
	}
	got, idr := n.Normalize([][]byte{testIDR})
	if want := [][]byte{testSPS2, testPPS2, testIDR}; !idr || !equalNALUs(got, want) {
		t.Fatalf("IDR after change: got %x, idr=%v; expected %x", got, idr, want)
	}

	// Only the SPS changes; the PPS stays.
	got, _ = n.Normalize([][]byte{testSPS, testIDR})
	if want := [][]byte{testSPS, testPPS2, testIDR}; !equalNALUs(got, want) {
		t.Fatalf("IDR after SPS change: got %x; expected %x", got, want)
	}

	// The parameter sets are copied: a publisher reusing its buffer does
	// not change them.
	buf := bytes.Clone(testSPS2)
	n.Normalize([][]byte{buf})
	buf[1] = 0xff
	if sps, _ := n.Params(); !bytes.Equal(sps, testSPS2) {
		t.Fatalf("SPS changed with the caller's buffer: %x", sps)
	}

	// SetParams, e.g. from a new FLV sequence header; nil keeps the PPS.
	n.SetParams(testSPS, nil)
	got, _ = n.Normalize([][]byte{testAUD, testIDR})
	if want := [][]byte{testSPS, testPPS2, testIDR}; !equalNALUs(got, want) {
		t.Fatalf("IDR after SetParams: got %x; expected %x", got, want)
	}
}

// TestH264NormalizerFixture runs the real stream through the normalizer:
// every IDR comes out as SPS, PPS, (SEI,) IDR and no other unit keeps a
// parameter set.
func TestH264NormalizerFixture(t *testing.T) {
	n := NewH264Normalizer(nil, nil)
	idrs := 0
	for i, au := range readFixtureAUs(t) {
		got, idr := n.Normalize(au)
		types := naluTypes(got)
		hasIDR := slices.Contains(naluTypes(au), h264.NALUTypeIDR)
		if idr != hasIDR {
			t.Fatalf("unit %d (%v): idr=%v", i, naluTypes(au), idr)
		}
		if !idr {
			if slices.Contains(types, h264.NALUTypeSPS) || slices.Contains(types, h264.NALUTypePPS) {
				t.Fatalf("unit %d: non-IDR keeps parameter sets: %v", i, types)
			}
			continue
		}
		idrs++
		if len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS ||
			types[len(types)-1] != h264.NALUTypeIDR ||
			slices.Contains(types[2:], h264.NALUTypeSPS) || slices.Contains(types[2:], h264.NALUTypePPS) {
			t.Fatalf("unit %d: IDR normalized to %v, expected SPS, PPS, ..., IDR", i, types)
		}
	}
	if idrs != fixtureIDRs {
		t.Fatalf("got %d IDRs, expected %d", idrs, fixtureIDRs)
	}
}

// TestAVCCAnnexBRoundTrip converts real access units between the two
// framings with mediacommon and back.
func TestAVCCAnnexBRoundTrip(t *testing.T) {
	aus := readFixtureAUs(t)
	for _, i := range []int{0, 1, 30, fixtureFrames - 1} {
		au := aus[i]

		avcc, err := h264.AVCC(au).Marshal()
		if err != nil {
			t.Fatalf("unit %d: AVCC marshal: %v", i, err)
		}
		var fromAVCC h264.AVCC
		if err := fromAVCC.Unmarshal(avcc); err != nil {
			t.Fatalf("unit %d: AVCC unmarshal: %v", i, err)
		}
		if !equalNALUs(fromAVCC, au) {
			t.Fatalf("unit %d: AVCC round trip changed the NAL units: %v -> %v", i, naluTypes(au), naluTypes(fromAVCC))
		}

		// AVCC -> Annex-B -> NAL units -> AVCC gives back the same bytes.
		annexb, err := h264.AnnexB(fromAVCC).Marshal()
		if err != nil {
			t.Fatalf("unit %d: Annex-B marshal: %v", i, err)
		}
		var fromAnnexB h264.AnnexB
		if err := fromAnnexB.Unmarshal(annexb); err != nil {
			t.Fatalf("unit %d: Annex-B unmarshal: %v", i, err)
		}
		if !equalNALUs(fromAnnexB, au) {
			t.Fatalf("unit %d: Annex-B round trip changed the NAL units: %v -> %v", i, naluTypes(au), naluTypes(fromAnnexB))
		}
		again, err := h264.AVCC(fromAnnexB).Marshal()
		if err != nil {
			t.Fatalf("unit %d: AVCC marshal: %v", i, err)
		}
		if !bytes.Equal(again, avcc) {
			t.Fatalf("unit %d: AVCC -> Annex-B -> AVCC changed the bytes", i)
		}
		if len(avcc) != len(annexb) { // both frame each NAL unit with 4 bytes
			t.Fatalf("unit %d: AVCC is %d bytes, Annex-B %d", i, len(avcc), len(annexb))
		}
	}
	if got := naluTypes(aus[0]); !slices.Equal(got, []h264.NALUType{h264.NALUTypeSEI, h264.NALUTypeSPS, h264.NALUTypePPS, h264.NALUTypeIDR}) {
		t.Fatalf("first unit of the fixture is %v, expected SEI, SPS, PPS, IDR", got)
	}
}

func FuzzNormalize(f *testing.F) {
	f.Add(encodeNALUs(testAUD, testSPS, testPPS, testIDR), []byte(nil), []byte(nil))
	f.Add(encodeNALUs(testSlice, testFiller), testSPS, testPPS)
	f.Add(encodeNALUs(testSPS2, testPPS2), testSPS, testPPS)
	f.Add(encodeNALUs(nil, testSEI, testIDR, testIDR), testSPS, []byte(nil))
	for _, i := range []int{0, 1} {
		au := readFixtureAUs(f)[i]
		f.Add(encodeNALUs(au...), []byte(nil), []byte(nil))
	}

	f.Fuzz(func(t *testing.T, data, sps, pps []byte) {
		au := decodeNALUs(data)
		in := cloneNALUs(au)
		n := NewH264Normalizer(sps, pps)

		// What the unit should come out as, computed the slow way.
		wantSPS, wantPPS := sps, pps
		var rest [][]byte
		wantIDR := false
		for _, nalu := range au {
			if len(nalu) == 0 {
				continue
			}
			switch h264.NALUType(nalu[0] & 0x1f) {
			case h264.NALUTypeSPS:
				wantSPS = nalu
			case h264.NALUTypePPS:
				wantPPS = nalu
			case h264.NALUTypeAccessUnitDelimiter, h264.NALUTypeFillerData:
			case h264.NALUTypeIDR:
				wantIDR = true
				rest = append(rest, nalu)
			default:
				rest = append(rest, nalu)
			}
		}
		want := rest
		if wantIDR && len(wantSPS) > 0 && len(wantPPS) > 0 {
			want = append([][]byte{wantSPS, wantPPS}, rest...)
		}

		got, idr := n.Normalize(au)
		if len(rest) == 0 {
			if got != nil || idr {
				t.Fatalf("got %v, idr=%v; expected nil", naluTypes(got), idr)
			}
		} else if !equalNALUs(got, want) || idr != wantIDR {
			t.Fatalf("got %v, idr=%v; expected %v, idr=%v", naluTypes(got), idr, naluTypes(want), wantIDR)
		}
		for _, nalu := range got {
			if len(nalu) == 0 {
				t.Fatalf("output has an empty NAL unit: %v", naluTypes(got))
			}
		}
		if !equalNALUs(au, in) {
			t.Fatal("Normalize modified its input")
		}
		if s, p := n.Params(); (len(wantSPS) > 0 && !bytes.Equal(s, wantSPS)) || (len(wantPPS) > 0 && !bytes.Equal(p, wantPPS)) {
			t.Fatalf("Params() = %x, %x; expected %x, %x", s, p, wantSPS, wantPPS)
		}
	})
}
