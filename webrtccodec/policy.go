package webrtccodec

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// BFramePolicy says what WebRTC peers get from an H.264 source with
// B-frames, which WebRTC decoders cannot reorder. The values are the
// route's `bframes` setting (config.BFramesReencode, ...); the zero value
// means BFramesReencode.
type BFramePolicy string

// B-frame policies.
const (
	// BFramesReencode re-encodes the video without B-frames (once per
	// track, shared by every WebRTC peer), within the process's re-encoder
	// cap; over it, peers are refused as with BFramesReject.
	BFramesReencode BFramePolicy = "reencode"
	// BFramesPassthrough sends the video as it is; some players stutter.
	BFramesPassthrough BFramePolicy = "passthrough"
	// BFramesReject refuses WebRTC peers of a stream with B-frames.
	BFramesReject BFramePolicy = "reject"
)

// Processor names a hub processor that makes a track's RTP packets for
// WebRTC peers: the name under which Stream.AddProcessor shares it between
// the peers of one track.
type Processor string

// Processors.
const (
	// PacketizeRTP packetizes H.264 and Opus as they are
	// (transcode.NewRTPPacketizer); an RTP source's packets pass through.
	PacketizeRTP Processor = "rtp"
	// AACToOpus transcodes AAC to Opus (transcode.NewAACToOpus).
	AACToOpus Processor = "opus"
	// ReencodeH264 re-encodes H.264 without B-frames
	// (transcode.H264Reencoder, on a transcode.ReencodeSlots slot).
	ReencodeH264 Processor = "rtp-reencode"
)

// constructors maps each Processor to what makes it for track id of st:
// the constructor to give Stream.AddProcessor. The only one that can fail
// is ReencodeH264, when every re-encoder slot is taken.
var constructors = map[Processor]func(o Options, st *media.Stream, id int) (func(*media.Track) media.Processor, error){
	PacketizeRTP: func(o Options, _ *media.Stream, _ int) (func(*media.Track) media.Processor, error) {
		mtu := o.mtu()
		return func(t *media.Track) media.Processor { return transcode.NewRTPPacketizer(t, mtu) }, nil
	},
	AACToOpus: func(o Options, _ *media.Stream, _ int) (func(*media.Track) media.Processor, error) {
		bitrate := o.OpusBitrate
		return func(t *media.Track) media.Processor { return transcode.NewAACToOpus(t, bitrate) }, nil
	},
	ReencodeH264: func(o Options, st *media.Stream, id int) (func(*media.Track) media.Processor, error) {
		if o.Reencoders == nil {
			return nil, fmt.Errorf("stream %q: track %d: %w (no re-encoder slots given)", st.Path(), id, transcode.ErrReencodersBusy)
		}
		return o.Reencoders.Reserve(st, id, o.mtu())
	},
}

// Options is what a WebRTC sender (a WHEP viewer's session, a WHIP
// forward) applies to the stream it sends.
type Options struct {
	// BFrames is the route's B-frame policy; "" means BFramesReencode.
	BFrames BFramePolicy
	// OpusBitrate is the bitrate (bit/s) of Opus made from AAC; 0 means
	// transcode.DefaultOpusBitrate.
	OpusBitrate int
	// Reencoders caps the re-encoders of the process (share one); nil
	// refuses re-encoding as if every slot were taken.
	Reencoders *transcode.ReencodeSlots
	// MTU bounds the RTP packets made; 0 means rtc.MaxRTPSize.
	MTU int
	// Log and Refusals, if set, log a peer refused for want of a
	// re-encoder, one line per stream per interval.
	Log      *slog.Logger
	Refusals *ratelog.Limiter
}

func (o Options) mtu() int {
	if o.MTU > 0 {
		return o.MTU
	}
	return rtc.MaxRTPSize
}

// constructor returns p's constructor for a processor that cannot fail.
func (o Options) constructor(p Processor) func(*media.Track) media.Processor {
	c, err := constructors[p](o, nil, 0)
	if err != nil {
		panic(fmt.Sprintf("webrtccodec: processor %q cannot fail, but did: %v", p, err))
	}
	return c
}

// BFramesDecision is what Plan did about an H.264 source's B-frames.
type BFramesDecision struct {
	// Reason says why the source has B-frames ("" when it has none).
	Reason string
	// Policy is the policy applied: BFramesReencode or
	// BFramesPassthrough (a rejection is Plan's error).
	Policy BFramePolicy
	// CannotReencode is set when BFramesReencode was asked for but this
	// build cannot re-encode (no cgo, or FFmpeg without libx264): the
	// video is passed through.
	CannotReencode bool
}

// Log writes the decision's line, if the source has B-frames.
func (d BFramesDecision) Log(log *slog.Logger) {
	switch {
	case d.Reason == "":
	case d.CannotReencode:
		log.Warn("B-frames passed through: this build cannot re-encode video (needs cgo with FFmpeg and libx264)", "reason", d.Reason)
	case d.Policy == BFramesPassthrough:
		log.Info("B-frames passed through as the route asks; some players will stutter", "reason", d.Reason)
	default:
		log.Info("B-frames: video re-encoded to Constrained Baseline for WebRTC peers", "reason", d.Reason)
	}
}

// reencodedSPS is the SPS prefix of the re-encoder's video: Constrained
// Baseline (42c0), level 3.1.
var reencodedSPS = []byte{0x67, 0x42, 0xc0, 0x1f}

// planH264 applies the B-frame policy to an H.264 track: a source without
// B-frames is packetized as it is; one with B-frames is re-encoded
// (ReencodeH264), passed through or refused, as o.BFrames says.
func planH264(st *media.Stream, t *media.Track, o Options) (Send, error) {
	sps := t.Codec.(media.H264).SPS
	rtp := Send{Processor: PacketizeRTP, NewProcessor: o.constructor(PacketizeRTP), sps: sps}
	has, why := transcode.DetectBFrames(st, t.ID)
	if !has {
		return rtp, nil
	}
	rtp.BFrames = BFramesDecision{Reason: why, Policy: BFramesPassthrough}
	switch o.BFrames {
	case "", BFramesReencode:
	case BFramesPassthrough:
		return rtp, nil
	case BFramesReject:
		return Send{}, rtc.Errorf(http.StatusNotAcceptable,
			"stream %q has B-frames (%s), which WebRTC players cannot show: set the publisher's encoder to bframes=0 (OBS x264 options: bframes=0; ffmpeg: -bf 0)", st.Path(), why)
	default:
		return Send{}, fmt.Errorf("stream %q: B-frame policy %q is not one of reencode, passthrough, reject", st.Path(), o.BFrames)
	}
	if !transcode.CanReencodeVideo() {
		rtp.BFrames.CannotReencode = true
		return rtp, nil
	}
	newProc, err := constructors[ReencodeH264](o, st, t.ID)
	if err != nil {
		if o.Log != nil && o.Refusals != nil {
			if ok, n := o.Refusals.Allow(st.Path()); ok {
				o.Log.Warn("peer refused: the stream has B-frames and every video re-encoder is in use (limits.video_reencoders)",
					"reason", why, "err", err, "suppressed", n)
			}
		}
		return Send{}, rtc.Errorf(http.StatusNotAcceptable,
			"stream %q has B-frames (%s), which WebRTC players cannot show, and this server re-encodes no more streams now: "+
				"set the publisher's encoder to bframes=0 (OBS x264 options: bframes=0; ffmpeg: -bf 0)", st.Path(), why)
	}
	return Send{Processor: ReencodeH264, NewProcessor: newProc, sps: reencodedSPS,
		BFrames: BFramesDecision{Reason: why, Policy: BFramesReencode}}, nil
}
