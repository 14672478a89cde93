package av

import (
	"strings"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// bitWriter writes an H.264 RBSP: fixed-width fields and exp-Golomb codes.
type bitWriter struct {
	b []byte
	n int // bits written
}

func (w *bitWriter) u(bits int, v uint64) {
	for i := bits - 1; i >= 0; i-- {
		if w.n%8 == 0 {
			w.b = append(w.b, 0)
		}
		if v>>uint(i)&1 != 0 {
			w.b[len(w.b)-1] |= 0x80 >> uint(w.n%8)
		}
		w.n++
	}
}

func (w *bitWriter) ue(v uint64) {
	v++
	n := 0
	for x := v; x > 1; x >>= 1 {
		n++
	}
	w.u(n, 0)
	w.u(n+1, v)
}

// nalu ends the RBSP (stop bit), adds emulation prevention and the header.
func (w *bitWriter) nalu(header byte) []byte {
	w.u(1, 1)
	out := []byte{header}
	zeros := 0
	for _, c := range w.b {
		if zeros >= 2 && c <= 3 {
			out = append(out, 3)
			zeros = 0
		}
		out = append(out, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	return out
}

// spsOf returns a Baseline SPS for a coded picture of mbW x mbH
// macroblocks, cropped by crop luma pixels on the right (0: none; an even
// number). With truncatedVUI its VUI ends right after
// bitstream_restriction_flag: libavcodec takes that (x264 once wrote
// such SPSes), mediacommon does not.
func spsOf(mbW, mbH, crop int, truncatedVUI bool) []byte {
	var w bitWriter
	w.u(8, 66) // profile_idc: Baseline
	w.u(8, 0)  // constraint flags
	w.u(8, 51) // level_idc
	w.ue(0)    // seq_parameter_set_id
	w.ue(0)    // log2_max_frame_num_minus4
	w.ue(2)    // pic_order_cnt_type
	w.ue(16)   // max_num_ref_frames
	w.u(1, 0)  // gaps_in_frame_num_value_allowed_flag
	w.ue(uint64(mbW - 1))
	w.ue(uint64(mbH - 1))
	w.u(1, 1) // frame_mbs_only_flag
	w.u(1, 1) // direct_8x8_inference_flag
	if crop > 0 {
		w.u(1, 1)
		w.ue(0)
		w.ue(uint64(crop / 2)) // in chroma units for 4:2:0
		w.ue(0)
		w.ue(0)
	} else {
		w.u(1, 0)
	}
	if truncatedVUI {
		w.u(1, 1)
		w.u(8, 0) // aspect ratio .. pic_struct_present_flag
		w.u(1, 1) // bitstream_restriction_flag, then nothing
	} else {
		w.u(1, 0) // vui_parameters_present_flag
	}
	return w.nalu(0x67)
}

// ppsOf returns a CAVLC PPS for spsOf.
func ppsOf() []byte {
	var p bitWriter
	p.ue(0)   // pic_parameter_set_id
	p.ue(0)   // seq_parameter_set_id
	p.u(1, 0) // entropy_coding_mode_flag: CAVLC
	p.u(1, 0) // bottom_field_pic_order_in_frame_present_flag
	p.ue(0)   // num_slice_groups_minus1
	p.ue(0)   // num_ref_idx_l0_default_active_minus1
	p.ue(0)   // num_ref_idx_l1_default_active_minus1
	p.u(1, 0) // weighted_pred_flag
	p.u(2, 0) // weighted_bipred_idc
	p.ue(0)   // pic_init_qp_minus26 (se 0)
	p.ue(0)   // pic_init_qs_minus26
	p.ue(0)   // chroma_qp_index_offset
	p.u(1, 1) // deblocking_filter_control_present_flag
	p.u(1, 0) // constrained_intra_pred_flag
	p.u(1, 0) // redundant_pic_cnt_present_flag
	return p.nalu(0x68)
}

// iSliceOf returns a reference I slice for spsOf and ppsOf, frame number
// n of a GOP (0: the IDR), whose header is valid and whose data is not:
// enough for a decoder to set the picture up, and keep it as a reference
// (up to spsOf's 16).
func iSliceOf(n int) []byte {
	var s bitWriter
	s.ue(0)              // first_mb_in_slice
	s.ue(7)              // slice_type: I (all slices)
	s.ue(0)              // pic_parameter_set_id
	s.u(4, uint64(n%16)) // frame_num
	if n == 0 {
		s.ue(0)   // idr_pic_id
		s.u(1, 0) // no_output_of_prior_pics_flag
		s.u(1, 0) // long_term_reference_flag
	} else {
		s.u(1, 0) // adaptive_ref_pic_marking_mode_flag: sliding window
	}
	s.ue(0) // slice_qp_delta (se 0)
	s.ue(1) // disable_deblocking_filter_idc
	for range 64 {
		s.ue(0) // mb_type I_NxN, then whatever the decoder makes of it
	}
	if n == 0 {
		return s.nalu(0x65)
	}
	return s.nalu(0x61) // nal_ref_idc 3, non-IDR slice
}

func TestSPSOf(t *testing.T) {
	for _, tc := range []struct{ mbW, mbH, crop, w, h int }{
		{40, 23, 0, 640, 368},
		{40, 23, 8, 632, 368},
		{1024, 512, 16000, 384, 8192},
	} {
		var s h264.SPS
		if err := s.Unmarshal(spsOf(tc.mbW, tc.mbH, tc.crop, false)); err != nil {
			t.Fatal(err)
		}
		if s.Width() != tc.w || s.Height() != tc.h {
			t.Errorf("spsOf(%d, %d, %d): %dx%d, expected %dx%d", tc.mbW, tc.mbH, tc.crop, s.Width(), s.Height(), tc.w, tc.h)
		}
	}
}

// TestVideoDecoderPictureLimit: a publisher's SPS may declare any picture
// size libavcodec takes (about 16384x16384), and the decoder's memory and
// CPU follow that size, not the bitrate: 20 access units of a few hundred
// bytes declaring 16000x8000 held 4 GB and 34 s of CPU. A coded picture
// over MaxVideoPixels is refused now, also when the SPS crops it to a
// small visible size (libavcodec's max_pixels looks at that one only),
// and also when the SPS is one only libavcodec can parse.
func TestVideoDecoderPictureLimit(t *testing.T) {
	needVideo(t)
	pps, idr := ppsOf(), iSliceOf(0)
	decode := func(d *VideoDecoder, sps []byte) ([]VideoFrame, error) {
		frames, err := d.Decode([][]byte{sps, pps, idr}, 0, 0)
		more, _ := d.Flush()
		return append(frames, more...), err
	}
	d, err := NewVideoDecoder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	for _, tc := range []struct {
		name      string
		sps       []byte
		wantErr   string // "" accepted; else in the error
		wantWidth int
	}{
		{"4096x2304, at the limit", spsOf(256, 144, 0, false), "", 4096},
		{"4112x2304", spsOf(257, 144, 0, false), "coded picture of 4112x2304", 0},
		{"16000x8000 cropped to 16x8000", spsOf(1000, 500, 15984, false), "coded picture of 16000x8000", 0},
		{"16000x8000 cropped, SPS only libavcodec parses", spsOf(1000, 500, 15984, true), "decode h264", 0},
		{"640x368 after the refusals", spsOf(40, 23, 0, true), "", 640},
	} {
		t.Run(tc.name, func(t *testing.T) {
			frames, err := decode(d, tc.sps)
			defer releaseAll(frames)
			if tc.wantErr == "" {
				if err != nil || len(frames) == 0 || frames[0].Width != tc.wantWidth {
					t.Fatalf("got %d frames (%v), err %v; expected pictures %d wide", len(frames), frames, err, tc.wantWidth)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || len(frames) > 0 {
				t.Fatalf("got %d frames, err %v; expected no picture and an error with %q", len(frames), err, tc.wantErr)
			}
		})
	}
	if _, err := NewVideoDecoder(spsOf(257, 144, 0, false), pps); err == nil || !strings.Contains(err.Error(), "4112x2304") {
		t.Errorf("NewVideoDecoder with a 4112x2304 SPS: err %v, expected the size refused", err)
	}
}

func TestVideoEncoderPictureLimit(t *testing.T) {
	needVideo(t)
	e, err := NewVideoEncoder(4112, 2304, 30, 0)
	if err == nil {
		e.Close()
		t.Fatal("NewVideoEncoder(4112, 2304) opened libx264; expected the size refused")
	}
	if !strings.Contains(err.Error(), "4112x2304") {
		t.Errorf("error %q does not name the size", err)
	}
}
