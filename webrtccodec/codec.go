// Package webrtccodec is the one table from hub codecs to WebRTC: for each
// hub codec, the RTP capability and fmtp a WebRTC peer gets, the processor
// that makes its packets (with the B-frame policy for H.264), and which
// offered or negotiated formats the hub accepts from a publisher. WHEP
// egress, WHIP forwards, WHIP ingest and the RTP receive path all use it, so
// a codec is added here, once. A hub codec the table lacks is refused here
// (ErrNoCodec), not skipped by a silent default elsewhere.
//
// It imports transcode (the processors) and rtc; rtc imports neither it
// nor transcode.
package webrtccodec

import (
	"errors"
	"fmt"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// ErrNoCodec is returned (wrapped) by Plan for a track whose hub codec has
// no WebRTC entry in the table (H.265 today).
var ErrNoCodec = errors.New("no WebRTC codec for the hub codec")

// ErrCannotTranscode is returned (wrapped) by Plan for an AAC track when
// this build cannot transcode it to Opus (built without cgo/FFmpeg).
var ErrCannotTranscode = errors.New("this build cannot transcode AAC to Opus (built without cgo/FFmpeg)")

// opusFmtp is what every Opus track is offered or answered with: 10 ms
// packets at least, in-band FEC (what browsers offer).
const opusFmtp = "minptime=10;useinbandfec=1"

// entry is one hub codec in the table.
type entry struct {
	kind webrtc.RTPCodecType
	mime string
	// plan picks the processor (and for video the SPS sent) for track t.
	plan func(st *media.Stream, t *media.Track, o Options) (Send, error)
}

// entryFor is the table: the one switch over hub codecs on the WebRTC
// side. A codec missing here is refused with ErrNoCodec.
func entryFor(c media.Codec) (entry, error) {
	switch c.(type) {
	case media.H264:
		return entry{webrtc.RTPCodecTypeVideo, webrtc.MimeTypeH264, planH264}, nil
	case media.Opus:
		return entry{webrtc.RTPCodecTypeAudio, webrtc.MimeTypeOpus, planOpus}, nil
	case media.AAC:
		return entry{webrtc.RTPCodecTypeAudio, webrtc.MimeTypeOpus, planAAC}, nil
	}
	return entry{}, fmt.Errorf("%w: %s (WebRTC carries H264 and Opus; AAC is transcoded to Opus)", ErrNoCodec, c.Name())
}

// Send is how one hub track is sent to a WebRTC peer: as which RTP codec,
// with which hub processor making its packets.
type Send struct {
	// Kind is video or audio.
	Kind webrtc.RTPCodecType
	// Processor names the hub processor (Stream.AddProcessor's name) and
	// NewProcessor makes it for the track the hub gives it (a new
	// publisher's track with the same ID, never a kept one).
	Processor    Processor
	NewProcessor func(*media.Track) media.Processor
	// BFrames says what was done about the source's B-frames (H.264);
	// its zero value: the source has none.
	BFrames BFramesDecision

	mime string
	// sps is the H.264 SPS whose profile the sent video has: the
	// source's, or Constrained Baseline when re-encoded.
	sps []byte
}

// Capability is what an offerer (a WHIP forward) offers for the track:
// for H.264 the profile and level of the video sent, packetization-mode 1.
func (s Send) Capability() webrtc.RTPCodecCapability {
	if s.Kind == webrtc.RTPCodecTypeVideo {
		return s.capability(h264Fmtp(s.sps))
	}
	return s.capability(opusFmtp)
}

// Answer is what an answerer (a WHEP viewer's session) answers for the
// track given the codecs of the offer's section of its kind: the offered
// H.264 format that fits the video sent best (ChooseH264), or Opus. The
// error is a 400 saying what the offer lacks.
func (s Send) Answer(offered []Offered) (webrtc.RTPCodecCapability, error) {
	if s.Kind == webrtc.RTPCodecTypeVideo {
		fmtp, err := ChooseH264(offered, s.sps)
		if err != nil {
			return webrtc.RTPCodecCapability{}, err
		}
		return s.capability(fmtp), nil
	}
	if !HasOpus(offered) {
		return webrtc.RTPCodecCapability{}, fmt.Errorf("offer cannot receive Opus audio (offered %s)", describe(offered))
	}
	return s.capability(opusFmtp), nil
}

func (s Send) capability(fmtp string) webrtc.RTPCodecCapability {
	if s.Kind == webrtc.RTPCodecTypeVideo {
		return webrtc.RTPCodecCapability{MimeType: s.mime, ClockRate: 90000, SDPFmtpLine: fmtp, RTCPFeedback: rtc.VideoFeedback}
	}
	return webrtc.RTPCodecCapability{MimeType: s.mime, ClockRate: 48000, Channels: 2, SDPFmtpLine: fmtp}
}

// KindOf returns whether track t goes as WebRTC video or audio, or
// ErrNoCodec.
func KindOf(t *media.Track) (webrtc.RTPCodecType, error) {
	e, err := entryFor(t.Codec)
	return e.kind, err
}

// Plan decides how track t of st is sent to a WebRTC peer under o: the
// codec, the processor and, for H.264 with B-frames, the route's policy
// (see BFramePolicy). Errors: ErrNoCodec and ErrCannotTranscode (wrapped;
// the caller skips the track), a 406 (rtc.Error) when the policy or a full
// re-encoder cap refuses the stream.
func Plan(st *media.Stream, t *media.Track, o Options) (Send, error) {
	e, err := entryFor(t.Codec)
	if err != nil {
		return Send{}, err
	}
	s, err := e.plan(st, t, o)
	s.Kind, s.mime = e.kind, e.mime
	return s, err
}

func planOpus(_ *media.Stream, _ *media.Track, o Options) (Send, error) {
	return Send{Processor: PacketizeRTP, NewProcessor: o.constructor(PacketizeRTP)}, nil
}

func planAAC(_ *media.Stream, _ *media.Track, o Options) (Send, error) {
	if !transcode.CanTranscodeAudio() {
		return Send{}, ErrCannotTranscode
	}
	return Send{Processor: AACToOpus, NewProcessor: o.constructor(AACToOpus)}, nil
}

func describe(codecs []Offered) string {
	var s []string
	for _, c := range codecs {
		s = append(s, c.Name)
	}
	return fmt.Sprint(s)
}
