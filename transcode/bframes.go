package transcode

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/bits"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/media"
)

// BFrameDetector tells whether an H.264 track has B-frames that reorder
// pictures, the thing WebRTC receivers cannot play: their RTP timestamps
// would go back and forth, and browsers render such streams with stutter
// or not at all. It is fed the track's units in write (decoding) order and
// decides from the first of these signals it sees:
//
//  1. Timestamps: a unit whose PTS is earlier than the PTS of the unit
//     before it (by less than reorderMaxStep: a bigger jump back is a
//     discontinuity, not reordering). This covers FLV (composition time
//     offsets), MPEG-TS (PTS != DTS) and RTP sources alike, since the hub's
//     PTS of an RTP unit is its RTP timestamp and only DTS is missing. A
//     constant PTS-DTS offset with PTS increasing is not reordering and
//     needs nothing done.
//  2. The SPS: a VUI with bitstream_restriction and max_num_reorder_frames
//     > 0 declares reordering (x264, the encoder of OBS and ffmpeg, always
//     writes it), and a decoder delays its output by that many frames
//     anyway. Known at the first IDR, before any B-frame arrives.
//  3. Slice types: a B slice while the SPS allows reordering
//     (pic_order_cnt_type 0 or 1). With pic_order_cnt_type 2 output order
//     is decoding order, so B slices there do not reorder and are ignored;
//     max_num_reorder_frames == 0 likewise rules reordering out.
//
// Once true, HasBFrames stays true for the detector's life. The detector
// is also a media.Processor (it never changes units), so it can run on a
// stream through Stream.AddProcessor; see DetectBFrames. Observe and
// Process must be called from one goroutine; HasBFrames and Reason are
// safe from any.
type BFrameDetector struct {
	has    atomic.Bool
	reason atomic.Pointer[string]

	started bool
	lastPTS time.Duration
	sps     []byte // the last SPS looked at
	// spsReorder is what the current SPS says of reordering: -1 it rules
	// it out, 0 it does not say, 1 it declares it.
	spsReorder int
}

// reorderMaxStep is the largest backward PTS step taken for reordering: a
// B-pyramid reorders a few frames; a larger step back is a timestamp
// discontinuity.
const reorderMaxStep = time.Second

// NewBFrameDetector returns a detector for track t, which starts from the
// SPS declared with the track (if any).
func NewBFrameDetector(t *media.Track) *BFrameDetector {
	d := &BFrameDetector{}
	if c, ok := t.Codec.(media.H264); ok && len(c.SPS) > 0 {
		d.checkSPS(c.SPS)
	}
	return d
}

// HasBFrames reports whether reordering B-frames were seen.
func (d *BFrameDetector) HasBFrames() bool { return d.has.Load() }

// Reason says what showed the B-frames (for logs), or "" if none were
// seen.
func (d *BFrameDetector) Reason() string {
	if r := d.reason.Load(); r != nil {
		return *r
	}
	return ""
}

// Process implements media.Processor: it observes u and leaves it as it is.
func (d *BFrameDetector) Process(u *media.Unit) error {
	d.Observe(u)
	return nil
}

// Observe looks at one unit and reports whether the track has B-frames so
// far.
func (d *BFrameDetector) Observe(u *media.Unit) bool {
	if d.has.Load() {
		return true
	}
	if d.started && u.PTS < d.lastPTS && d.lastPTS-u.PTS < reorderMaxStep {
		d.found(fmt.Sprintf("timestamps reorder: PTS %v after %v (DTS %v)", u.PTS, d.lastPTS, u.DTS))
		return true
	}
	d.started, d.lastPTS = true, u.PTS
	for _, n := range u.NALUs {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if d.checkSPS(n) {
				return true
			}
		case h264.NALUTypeNonIDR:
			// A B slice is never an IDR slice; one slice per picture
			// tells its type well enough.
			if d.spsReorder >= 0 && SliceType(n) == SliceB {
				d.found("B slices (pic_order_cnt_type allows reordering)")
				return true
			}
			return false
		case h264.NALUTypeIDR:
			return false
		}
	}
	return false
}

// checkSPS updates what the SPS says, and reports whether it declares
// reordering.
func (d *BFrameDetector) checkSPS(nalu []byte) bool {
	if string(nalu) == string(d.sps) {
		return d.spsReorder > 0
	}
	d.sps = append(d.sps[:0], nalu...)
	d.spsReorder = 0
	var s h264.SPS
	if err := s.Unmarshal(nalu); err != nil {
		return false
	}
	if s.PicOrderCntType == 2 {
		d.spsReorder = -1
		return false
	}
	if s.VUI != nil && s.VUI.BitstreamRestriction != nil {
		n := s.VUI.BitstreamRestriction.MaxNumReorderFrames
		if n == 0 {
			d.spsReorder = -1
			return false
		}
		d.spsReorder = 1
		d.found(fmt.Sprintf("SPS declares max_num_reorder_frames=%d", n))
		return true
	}
	return false
}

func (d *BFrameDetector) found(reason string) {
	d.reason.Store(&reason)
	d.has.Store(true)
}

// H.264 slice types (slice_type % 5, ITU-T H.264 table 7-6).
const (
	SliceP  = 0
	SliceB  = 1
	SliceI  = 2
	SliceSP = 3
	SliceSI = 4
)

// SliceType returns the type (SliceP, SliceB, ...) of a coded slice NAL
// unit (types 1 and 5) from its header, or -1 for another NAL unit or a
// header that cannot be read.
func SliceType(nalu []byte) int {
	if len(nalu) < 2 {
		return -1
	}
	if typ := h264.NALUType(nalu[0] & 0x1f); typ != h264.NALUTypeNonIDR && typ != h264.NALUTypeIDR {
		return -1
	}
	// first_mb_in_slice and slice_type are two exp-Golomb codes of at most
	// 32 bits each; 16 bytes hold them even with emulation prevention.
	hdr := h264.EmulationPreventionRemove(nalu[1:min(len(nalu), 17)])
	pos := 0
	if _, err := bits.ReadGolombUnsigned(hdr, &pos); err != nil {
		return -1
	}
	st, err := bits.ReadGolombUnsigned(hdr, &pos)
	if err != nil || st > 9 {
		return -1
	}
	return int(st % 5)
}

var detectSeq atomic.Uint64

// DetectBFrames runs a BFrameDetector over what stream s has of track now:
// the track's declared SPS and the GOP cached for instant joins (from the
// last IDR on, with its SPS). It is meant for the moment a WebRTC viewer
// connects, to choose between passing the video through and re-encoding
// it; it costs a slice header parse per cached unit. A source whose SPS
// declares nothing and whose cached GOP has no B-frame yet (e.g. the cache
// holds just the IDR) reads as having none.
func DetectBFrames(s *media.Stream, track int) (has bool, reason string) {
	tracks := s.Tracks()
	if track < 0 || track >= len(tracks) {
		return false, ""
	}
	d := NewBFrameDetector(tracks[track])
	// A processor of its own, run once over the cache (AddProcessor's
	// backfill) and removed at once.
	name := fmt.Sprintf("bframe-detect-%d", detectSeq.Add(1))
	h, err := s.AddProcessor(tracks[track], name, func(*media.Track) media.Processor { return d })
	h.Release()
	if err != nil { // the stream was republished meanwhile: nothing seen
		return false, ""
	}
	return d.HasBFrames(), d.Reason()
}
