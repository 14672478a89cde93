package transcode

import (
	"bytes"
	"testing"
)

// Small stand-ins for H.265 NAL units; only the two header bytes matter to
// the normalizer (type << 1, then layer 0 and temporal id 1).
var (
	test265VPS    = []byte{0x40, 0x01, 0x0c, 0x01}
	test265SPS    = []byte{0x42, 0x01, 0x01, 0x01}
	test265SPS2   = []byte{0x42, 0x01, 0x01, 0x02}
	test265PPS    = []byte{0x44, 0x01, 0xc1, 0x72}
	test265AUD    = []byte{0x46, 0x01, 0x50}
	test265Filler = []byte{0x4c, 0x01, 0xff, 0x80}
	test265SEI    = []byte{0x4e, 0x01, 0x05, 0x80}
	test265IDR    = []byte{0x26, 0x01, 0xaf, 0x09} // IDR_W_RADL
	test265CRA    = []byte{0x2a, 0x01, 0xaf, 0x09}
	test265Trail  = []byte{0x02, 0x01, 0xd0, 0x09} // TRAIL_R
)

func TestH265Normalizer(t *testing.T) {
	known := [][]byte{test265VPS, test265SPS, test265PPS} // fed first, in a unit of their own
	cases := []struct {
		name     string
		before   [][]byte // normalized first (its output is not checked)
		au       [][]byte
		want     [][]byte
		wantIRAP bool
	}{
		{
			name:   "strips AUD and filler from a P frame",
			before: known,
			au:     [][]byte{test265AUD, test265Trail, test265Filler},
			want:   [][]byte{test265Trail},
		},
		{
			name:   "strips parameter sets from a non-IRAP unit",
			before: known,
			au:     [][]byte{test265AUD, test265VPS, test265SPS, test265PPS, test265SEI, test265Trail},
			want:   [][]byte{test265SEI, test265Trail},
		},
		{
			name:   "prepends known parameter sets to an IDR",
			before: known,
			au:     [][]byte{test265AUD, test265SEI, test265IDR},
			want:   [][]byte{test265VPS, test265SPS, test265PPS, test265SEI, test265IDR}, wantIRAP: true,
		},
		{
			name:   "a CRA is an IRAP",
			before: known,
			au:     [][]byte{test265CRA},
			want:   [][]byte{test265VPS, test265SPS, test265PPS, test265CRA}, wantIRAP: true,
		},
		{
			name: "moves in-band parameter sets to the front",
			au:   [][]byte{test265AUD, test265SEI, test265VPS, test265SPS, test265Filler, test265PPS, test265IDR},
			want: [][]byte{test265VPS, test265SPS, test265PPS, test265SEI, test265IDR}, wantIRAP: true,
		},
		{
			name:   "in-band parameter sets replace the earlier ones",
			before: known,
			au:     [][]byte{test265SPS2, test265IDR},
			want:   [][]byte{test265VPS, test265SPS2, test265PPS, test265IDR}, wantIRAP: true,
		},
		{
			name: "IRAP without known parameter sets is left alone",
			au:   [][]byte{test265IDR},
			want: [][]byte{test265IDR}, wantIRAP: true,
		},
		{
			name:   "IRAP with the PPS missing is left alone",
			before: [][]byte{test265VPS, test265SPS},
			au:     [][]byte{test265IDR},
			want:   [][]byte{test265IDR}, wantIRAP: true,
		},
		{
			name:   "NAL units shorter than their header are dropped",
			before: known,
			au:     [][]byte{{}, {0x02}, test265Trail, nil},
			want:   [][]byte{test265Trail},
		},
		{
			name: "parameter sets only",
			au:   [][]byte{test265AUD, test265VPS, test265SPS, test265PPS},
			want: nil,
		},
		{
			name:   "delimiter and filler only",
			before: known,
			au:     [][]byte{test265AUD, test265Filler},
			want:   nil,
		},
		{name: "empty unit", want: nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var n H265Normalizer
			n.Normalize(cloneNALUs(tc.before))
			in := cloneNALUs(tc.au)
			got, irap := n.Normalize(in)
			if !equalNALUs(got, tc.want) || irap != tc.wantIRAP {
				t.Errorf("Normalize(%x) = %x, irap=%v; expected %x, irap=%v", tc.au, got, irap, tc.want, tc.wantIRAP)
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

// TestH265NormalizerParams: the parameter sets are remembered across units
// and copied, so a publisher reusing its buffer does not change them.
func TestH265NormalizerParams(t *testing.T) {
	var n H265Normalizer
	if vps, sps, pps := n.Params(); vps != nil || sps != nil || pps != nil {
		t.Fatalf("zero value Params() = %x, %x, %x; expected nil", vps, sps, pps)
	}
	buf := bytes.Clone(test265SPS)
	if got, irap := n.Normalize([][]byte{test265VPS, buf, test265PPS}); got != nil || irap {
		t.Fatalf("parameter sets only: got %x, irap=%v; expected nil", got, irap)
	}
	buf[2] = 0xff
	if vps, sps, pps := n.Params(); !bytes.Equal(vps, test265VPS) || !bytes.Equal(sps, test265SPS) || !bytes.Equal(pps, test265PPS) {
		t.Fatalf("Params() = %x, %x, %x; expected %x, %x, %x", vps, sps, pps, test265VPS, test265SPS, test265PPS)
	}
}
