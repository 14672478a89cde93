package av

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// Video: H.264 decoding (libavcodec's decoder) and H.264 encoding (libx264
// through libavcodec), for re-encoding a stream WebRTC cannot play as it is
// (B-frames) into Constrained Baseline without B-frames.
//
// # Timestamps
//
// Every video timestamp in this package is on a 90 kHz clock (RTP's clock
// for video): Decode's pts and dts, VideoFrame.PTS and VideoPacket.PTS.
//
// # Memory
//
// A decoded picture stays in C memory (FFmpeg's reference-counted frame
// buffers); a VideoFrame is only a handle to it, so handing a frame from
// the decoder to the encoder copies no pixels. The caller owns every
// VideoFrame it gets and must Release it (a garbage-collector cleanup frees
// a forgotten one, but only at the collector's pace: several megabytes a
// second of video should not wait for it). VideoPacket NAL units are Go
// memory owned by the caller.

// VideoFrame is one decoded picture, in presentation order. It is a handle
// to a picture in C memory; copies of a VideoFrame share the picture, which
// Release frees once for all of them. Not safe for concurrent use.
type VideoFrame struct {
	// PTS is the presentation time on the 90 kHz clock: the pts given to
	// Decode with the access unit the picture came from.
	PTS int64
	// Width and Height are the picture's visible size in pixels.
	Width, Height int
	// Key reports that the picture was coded as a keyframe (an IDR).
	Key bool

	pic *picture // nil once released
}

// Released reports whether the frame has no picture any more (it was
// released, or is the zero value).
func (f *VideoFrame) Released() bool { return f.pic == nil || f.pic.released() }

// VideoPacket is one encoded H.264 access unit.
type VideoPacket struct {
	// NALUs are the access unit's NAL units without start codes, in one
	// buffer the caller owns. A keyframe starts with SPS and PPS.
	NALUs [][]byte
	// PTS is the presentation time on the 90 kHz clock: the PTS of the
	// frame it encodes. There are no B-frames, so the decoding time is the
	// same.
	PTS int64
	// Key marks an IDR access unit (with SPS and PPS in front).
	Key bool
}

// DefaultVideoBitrate is the encoder's bitrate when NewVideoEncoder is given
// none.
const DefaultVideoBitrate = 2_000_000

// Video encoder limits (see NewVideoEncoder).
const (
	// keyintSeconds is the longest time between two IDRs the encoder makes
	// on its own.
	keyintSeconds = 2
	// maxVideoDimension bounds width and height (x264 and level 6.2 allow
	// 8192x4320 at most; a larger picture is a corrupt stream).
	maxVideoDimension = 8192
)

// MaxVideoPixels bounds the coded picture size (width x height) the
// decoder and the encoder accept: 4096x2304, the largest frame of H.264
// level 5.1/5.2 (MaxFS 36864 macroblocks), which holds 4K UHD (3840x2160)
// and DCI 4K (4096x2160), what encoders publish live. At the cap a picture
// is 14 MiB. The size is the publisher's to declare in its SPS, and memory
// and CPU follow it, not the bitrate: libavcodec alone accepts up to about
// 16384x16384, and 20 access units of a few hundred bytes declaring
// 16000x8000 (cropped to 16x8000, which libavcodec's own max_pixels does
// not see) held 4 GB and 34 s of CPU in the decoder; 8192x8192 pictures
// took 860 MB and 1.4 s per frame in the decoder and libx264 together.
const MaxVideoPixels = 4096 * 2304

// checkSPSSize refuses an SPS NAL unit (any other NAL unit passes) that
// declares a coded picture over MaxVideoPixels, with the size, before
// libavcodec sees it. The coded size is what memory follows: cropping in
// the SPS makes the visible size as small as 16 pixels wide, which is all
// libavcodec's max_pixels looks at. An SPS mediacommon cannot parse passes
// here; the decoder refuses it inside libavcodec (bvdec_get_format).
func checkSPSSize(nalu []byte) error {
	if len(nalu) == 0 || h264.NALUType(nalu[0]&0x1f) != h264.NALUTypeSPS {
		return nil
	}
	var sps h264.SPS
	if sps.Unmarshal(nalu) != nil {
		return nil
	}
	w := 16 * (int64(sps.PicWidthInMbsMinus1) + 1)
	h := 16 * (int64(sps.PicHeightInMapUnitsMinus1) + 1)
	if !sps.FrameMbsOnlyFlag {
		h *= 2 // map units are field macroblock pairs
	}
	if w*h > MaxVideoPixels {
		return fmt.Errorf("av: h264 decoder: the SPS declares a coded picture of %dx%d, larger than %d pixels (4096x2304, H.264 level 5.1)",
			w, h, MaxVideoPixels)
	}
	return nil
}

var errFrameReleased = errors.New("av: video frame was released")

var startCode = []byte{0, 0, 1}

// splitAnnexB returns the NAL units of an Annex-B byte stream as slices of
// b (start codes and trailing zero bytes removed, empty units dropped).
func splitAnnexB(b []byte) [][]byte {
	var out [][]byte
	start := -1
	for i := 0; ; {
		j := bytes.Index(b[i:], startCode)
		if j < 0 {
			break
		}
		j += i
		if start >= 0 {
			out = appendNALU(out, b[start:j])
		}
		i = j + len(startCode)
		start = i
	}
	if start >= 0 {
		out = appendNALU(out, b[start:])
	}
	return out
}

func appendNALU(out [][]byte, n []byte) [][]byte {
	end := len(n)
	for end > 0 && n[end-1] == 0 {
		end--
	}
	if end == 0 {
		return out
	}
	return append(out, n[:end:end])
}

// fpsRational turns a frame rate into a fraction FFmpeg takes: exact for
// the NTSC rates (30000/1001 etc.), milli-frames otherwise. Out-of-range or
// unknown rates become 30 fps.
func fpsRational(fps float64) (num, den int) {
	if !(fps >= 1 && fps <= 1000) { // also NaN
		return 30, 1
	}
	for _, n := range []int{24000, 30000, 48000, 60000, 120000} {
		if d := fps - float64(n)/1001; d > -0.005 && d < 0.005 {
			return n, 1001
		}
	}
	if r := int(fps + 0.5); float64(r)-fps > -0.005 && float64(r)-fps < 0.005 {
		return r, 1
	}
	return int(fps*1000 + 0.5), 1000
}
