package transcode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

// Re-encoder bitrate policy (see H264Reencoder).
const (
	// reencodeMeasureWindow is how much of the source (by DTS) is measured
	// to pick the bitrate.
	reencodeMeasureWindow = 2 * time.Second
	// The bitrate is the source's times reencodeBitrateNum/Den: Constrained
	// Baseline (CAVLC, no B-frames, no 8x8 transform) needs about a quarter
	// more bits than High with B-frames for the same picture.
	reencodeBitrateNum = 5
	reencodeBitrateDen = 4
	minReencodeBitrate = 100_000
	maxReencodeBitrate = 20_000_000
	// defaultReencodeFPS is the frame rate assumed when the SPS has no
	// timing information.
	defaultReencodeFPS = 30
)

// CanReencodeVideo reports whether this build can re-encode H.264 (FFmpeg
// with libx264 linked in; false when built without cgo).
func CanReencodeVideo() bool { return av.VideoAvailable() }

// H264Reencoder is the processor that re-encodes an H.264 track for WebRTC
// readers: it decodes every unit (libavcodec) and encodes the pictures with
// libx264 as Constrained Baseline without B-frames, at the source's
// resolution (following it when it changes) and frame rate, with
// zero-latency tuning, and puts the RTP packets of the re-encoded frames in
// u.RTP, packetized like NewRTPPacketizer does (RFC 6184 mode 1, payload
// type 96, SPS and PPS in one STAP-A in front of every IDR). One per track,
// shared by every WebRTC reader through Stream.AddProcessor; it runs on the
// publisher's goroutine. u.NALUs, u.Key and the timestamps are left alone:
// RTMP and SRT readers of the same stream get the original.
//
// Timing: the decoder hands pictures out in presentation order, holding
// back as many as the stream reorders (two for x264's B-pyramid), so the
// frames a unit carries are those that became ready with it: usually one,
// none for the first units of the stream, occasionally more. Each frame's
// RTP timestamp is its own PTS on the stream clock at 90 kHz, which may
// differ from the carrying unit's (a reader mapping packets to wall clock
// uses u.PTS plus the difference). A unit with no frame ready gets an empty
// non-nil u.RTP, so a packetizer running after it does not fill in the
// B-frame original.
//
// Keyframes: the first frame that comes out while (or after) an input IDR
// is processed is encoded as an IDR, so the re-encoded IDRs sit in the
// units the hub's GOP cache starts from: a viewer joining from the cache,
// or replaying it after a keyframe request, starts with an IDR. Besides,
// libx264 makes one at least every 2 s, and RequestKeyframe forces one
// (at most one per media.KeyframeRequestInterval): it is a
// media.KeyframeRequester, so a reader asks through the
// media.ProcessorHandle it holds.
//
// Bitrate: DefaultVideoBitrate until the first 2 s of the source are
// measured, then 5/4 of the source's (see reencodeBitrateNum).
//
// Backfill: the hub runs a new processor over the GOP it has cached while
// holding the stream's write lock (see media.Stream.AddProcessor), and
// the publisher waits. Re-encoding a whole cached GOP there held it for
// the decode and the encode of every frame (280 ms for a 4 s GOP of
// 640x360 on a loaded core, several seconds at 1080p), at each first
// viewer's arrival. So units that reached the hub before the re-encoder
// was made (Unit.Arrived) are only decoded, since what follows refers to
// their pictures, and carry no packets; the first frame encoded after them
// is an IDR. A viewer joining then starts at the first live frame rather
// than at the cached keyframe, and later joiners start at that IDR.
type H264Reencoder struct {
	track *media.Track
	pk    h264Packetizer
	fps   float64

	dec *av.VideoDecoder
	enc *av.VideoEncoder // made at the first picture, at its size

	bitrate    int
	measured   bool
	mStarted   bool
	mStart     time.Duration
	mBytes     int64
	keyPending bool // an input IDR arrived: the next frame encoded is an IDR
	lastIDR    time.Time
	lastPTS    int64
	encoded    bool
	closed     bool

	keyRequest atomic.Bool
	now        func() time.Time
	made       time.Time // units that arrived before are the hub's cache: decoded, not encoded
	release    func()    // gives its ReencodeSlots slot back; nil without one
}

// NewH264Reencoder returns the "rtp-reencode" processor for H.264 track t,
// to be registered with
//
//	stream.AddProcessor(t, "rtp-reencode", func(t *media.Track) media.Processor {
//		return transcode.NewH264Reencoder(t, mtu)
//	})
//
// mtu bounds the RTP packets as for NewRTPPacketizer. When this build
// cannot re-encode (no cgo, or FFmpeg without libx264), the track is not
// H.264, mtu is out of range or the decoder cannot be opened, the
// processor fails every unit with the reason (the hub counts and logs it)
// and readers get no video. Otherwise it is an *H264Reencoder.
func NewH264Reencoder(t *media.Track, mtu int) media.Processor {
	p, err := newH264Reencoder(t, mtu)
	if err != nil {
		return errProcessor{err}
	}
	return p
}

func newH264Reencoder(t *media.Track, mtu int) (*H264Reencoder, error) {
	c, ok := t.Codec.(media.H264)
	if !ok {
		return nil, fmt.Errorf("h264 re-encode: %s is not H264", t)
	}
	if mtu < MinRTPMTU || mtu > MaxRTPMTU {
		return nil, fmt.Errorf("h264 re-encode: %s: mtu %d is out of range [%d, %d]", t, mtu, MinRTPMTU, MaxRTPMTU)
	}
	if !av.VideoAvailable() {
		if !av.Available() {
			return nil, fmt.Errorf("h264 re-encode: %s: this build has no FFmpeg (built without cgo); "+
				"set the publisher's encoder to bframes=0 or the route to bframes: passthrough", t)
		}
		return nil, fmt.Errorf("h264 re-encode: %s: FFmpeg has no libx264 encoder (or no H.264 decoder); "+
			"install an FFmpeg with libx264, set the publisher's encoder to bframes=0 or the route to bframes: passthrough", t)
	}
	dec, err := av.NewVideoDecoder(c.SPS, c.PPS)
	if err != nil {
		return nil, fmt.Errorf("h264 re-encode: %s: %w", t, err)
	}
	fps := float64(defaultReencodeFPS)
	var sps h264.SPS
	if len(c.SPS) > 0 && sps.Unmarshal(c.SPS) == nil {
		if f := sps.FPS(); f >= 1 && f <= 240 {
			fps = f
		}
	}
	p := &H264Reencoder{
		track: t,
		pk: h264Packetizer{rtpState{
			track:  t,
			budget: mtu - rtpHeaderSize,
			pt:     PayloadTypeH264,
			seq:    uint16(rand.N(1 << 15)),
			ssrc:   rand.Uint32(),
		}},
		fps:     fps,
		dec:     dec,
		bitrate: av.DefaultVideoBitrate,
		now:     time.Now,
		made:    time.Now(),
	}
	return p, nil
}

var _ media.KeyframeRequester = (*H264Reencoder)(nil)

// RequestKeyframe makes an upcoming frame an IDR: the next one, or, if an
// IDR went out less than media.KeyframeRequestInterval ago, the first one
// after that interval. Safe for concurrent use (e.g. from a viewer's RTCP
// goroutine on PLI or FIR).
func (p *H264Reencoder) RequestKeyframe() { p.keyRequest.Store(true) }

// Bitrate returns the encoder's target bitrate in bit/s.
func (p *H264Reencoder) Bitrate() int { return p.bitrate }

// Process implements media.Processor.
func (p *H264Reencoder) Process(u *media.Unit) error {
	if p.closed {
		return errors.New("h264 re-encode: closed")
	}
	p.measure(u)
	cached := !u.Arrived.IsZero() && !u.Arrived.After(p.made) // see Backfill
	if u.Key || cached {
		p.keyPending = true
	}
	frames, err := p.dec.Decode(u.NALUs, media.ClockTicks(u.PTS, 90000), media.ClockTicks(u.DTS, 90000))
	out := []*rtp.Packet{}
	for i := range frames {
		if !cached {
			if encErr := p.encode(&frames[i], &out); encErr != nil && err == nil {
				err = encErr
			}
		}
		frames[i].Release()
	}
	u.RTP = out
	if err != nil {
		return fmt.Errorf("h264 re-encode: %s: unit at %v: %w", p.track, u.PTS.Round(time.Millisecond), err)
	}
	return nil
}

func (p *H264Reencoder) encode(f *av.VideoFrame, out *[]*rtp.Packet) error {
	if p.encoded && f.PTS <= p.lastPTS {
		return fmt.Errorf("decoded picture at %v does not follow the previous one at %v; dropped",
			media.TicksDuration(f.PTS, 90000), media.TicksDuration(p.lastPTS, 90000))
	}
	if p.enc == nil {
		enc, err := av.NewVideoEncoder(f.Width, f.Height, p.fps, p.bitrate)
		if err != nil {
			return err
		}
		p.enc = enc
	}
	now := p.now()
	switch {
	case p.keyPending:
		p.enc.ForceKeyframe()
	case p.keyRequest.Load() && now.Sub(p.lastIDR) >= media.KeyframeRequestInterval:
		p.enc.ForceKeyframe()
	}
	pkts, err := p.enc.Encode(*f)
	if err != nil {
		return err
	}
	p.keyPending = false
	p.encoded, p.lastPTS = true, f.PTS
	for _, vp := range pkts {
		if vp.Key {
			p.lastIDR = now
			p.keyRequest.Store(false)
		}
		tmp := media.Unit{Track: p.track, PTS: media.TicksDuration(vp.PTS, 90000), NALUs: vp.NALUs}
		if err := p.pk.Process(&tmp); err != nil {
			return err
		}
		*out = append(*out, tmp.RTP...)
	}
	return nil
}

// measure sums the source's bytes over its first reencodeMeasureWindow (by
// PTS: RTP sources have no DTS) and then sets the bitrate from them.
func (p *H264Reencoder) measure(u *media.Unit) {
	if p.measured {
		return
	}
	if !p.mStarted {
		p.mStarted, p.mStart = true, u.PTS
	}
	if el := u.PTS - p.mStart; el >= reencodeMeasureWindow {
		p.measured = true
		rate := float64(p.mBytes) * 8 / el.Seconds() * reencodeBitrateNum / reencodeBitrateDen
		p.bitrate = int(min(max(rate, minReencodeBitrate), maxReencodeBitrate))
		if p.enc != nil {
			p.enc.SetBitrate(p.bitrate)
		}
		return
	}
	for _, n := range u.NALUs {
		p.mBytes += int64(len(n))
	}
}

// Close releases the codecs. The hub calls it when the last reader leaves.
func (p *H264Reencoder) Close() {
	if p.closed {
		return
	}
	p.closed = true
	p.dec.Close()
	if p.enc != nil {
		p.enc.Close()
	}
	if p.release != nil {
		p.release()
	}
}
