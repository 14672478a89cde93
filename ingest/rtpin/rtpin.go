// Package rtpin (RTP in) turns a receiving PeerConnection's tracks into a
// hub Publication: one H.264 video track (reassembled into access units,
// with keyframe requests to the sender) and one Opus audio track, declared
// together once both are ready or a wait has passed. WHIP publish and WHEP
// pull share it; each owns its PeerConnection and its negotiation.
package rtpin

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/ratelog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/webrtccodec"
)

const (
	// PLIInterval is the least time between two keyframe requests sent to
	// the sender: an encoder asked again before it has answered only sends
	// another large frame into a path that just lost packets.
	PLIInterval = 500 * time.Millisecond
	// maxPendingUnits bounds the units kept while the stream's tracks are
	// not declared yet (at most the track wait of audio and video: 3 s at
	// 50 + 30 units a second is 240).
	maxPendingUnits = 512
	// rtpBufSize is the read buffer of a track: pion's receive MTU.
	rtpBufSize = 1500
	// panicComponent names the Receiver's goroutines and callbacks at
	// the panic boundary (internal/panics).
	panicComponent = "rtp receive"
)

// Publication is what a Receiver asks of the hub; *media.Publication has
// it. The Receiver calls it with its mutex held, so the hub sees one
// writer however many tracks the peer sends.
type Publication interface {
	// SetTracks declares the tracks and makes the stream visible to
	// readers.
	SetTracks(tracks ...*media.Track) error
	// Write hands a unit of a declared track to the readers.
	Write(u *media.Unit)
}

// Config configures a Receiver.
type Config struct {
	// PC is the receiving PeerConnection; the Receiver sends keyframe
	// requests on it and closes it in Close.
	PC  *webrtc.PeerConnection
	Log *slog.Logger
	// TrackWait is how long after the first packet the stream waits for
	// the other expected track before it is declared without it.
	TrackWait time.Duration
	// Fail is called (with the Receiver's mutex held, so it must not call
	// back into it) when the tracks cannot be declared: the session cannot
	// go on.
	Fail func(error)
}

// Receiver is the receive side of one PeerConnection. Each received track
// has a goroutine (started by pion's OnTrack) that reads, reassembles and
// writes to the publication.
type Receiver struct {
	cfg Config
	wg  sync.WaitGroup // track and RTCP goroutines

	lastPacket atomic.Int64  // Unix ns of the last RTP packet (New's or ResetIdle's before one)
	lastPLI    atomic.Int64  // Unix ns of the last keyframe request
	videoSSRC  atomic.Uint32 // SSRC keyframe requests name
	stats      stats
	// jumps lets one line a track per interval report the sender's
	// timestamp jumps (media.SourceClock).
	jumps ratelog.Limiter

	// mu guards what follows and is held for every publication call, so
	// the hub sees a single writer.
	mu                       sync.Mutex
	pub                      Publication
	closing                  bool      // Close has begun: no new track goroutines, no writes
	expectVideo, expectAudio bool      // the negotiation accepted them
	origin                   time.Time // arrival of the first packet of any track
	timer                    *time.Timer
	timedOut                 bool           // TrackWait passed: declare with whatever is ready
	videoIn, audioIn         bool           // a track goroutine is running for them (one of each is used)
	video, audio             *media.Track   // ready tracks, declared or not
	declared                 []*media.Track // nil until the tracks are declared
	pending                  []*media.Unit  // units of ready tracks before the declaration
}

type stats struct {
	packets, bytes atomic.Uint64
	badPackets     atomic.Uint64 // not RTP
	lost           atomic.Uint64 // sequence numbers skipped (some may come late)
	late           atomic.Uint64 // arrived after their unit was written
	damaged        atomic.Uint64 // video units written without NAL units: packets lost or undecodable
	plis           atomic.Uint64
	dropped        atomic.Uint64 // units of tracks that are not declared, or beyond maxPendingUnits
	jumps          atomic.Uint64 // timestamp discontinuities (media.SourceClock)
}

// New returns a Receiver for cfg. Register its OnTrack with the
// PeerConnection, and call Expect and SetPublication before any track can
// arrive (before the description that starts media is applied).
func New(cfg Config) *Receiver {
	r := &Receiver{cfg: cfg}
	r.lastPacket.Store(time.Now().UnixNano())
	return r
}

// SetPublication makes the receiver write to pub.
func (r *Receiver) SetPublication(pub Publication) {
	r.mu.Lock()
	r.pub = pub
	r.mu.Unlock()
}

// Expect says which tracks the negotiation accepted: the stream is
// declared once those are ready (or TrackWait after the first packet).
func (r *Receiver) Expect(video, audio bool) {
	r.mu.Lock()
	r.expectVideo, r.expectAudio = video, audio
	r.mu.Unlock()
}

// Expected returns what Expect was given.
func (r *Receiver) Expected() (video, audio bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.expectVideo, r.expectAudio
}

// ResetIdle counts the time without media from now on, as if a packet
// had just arrived.
func (r *Receiver) ResetIdle() { r.lastPacket.Store(time.Now().UnixNano()) }

// Idle returns how long before now the last RTP packet arrived (or New or
// ResetIdle was called, when later).
func (r *Receiver) Idle(now time.Time) time.Duration {
	return now.Sub(time.Unix(0, r.lastPacket.Load()))
}

// Close stops writing, closes the PeerConnection (which ends the track
// goroutines' reads) and returns once every goroutine of the Receiver has
// ended. It leaves the publication to the caller.
func (r *Receiver) Close() {
	r.mu.Lock()
	r.closing = true
	if r.timer != nil {
		r.timer.Stop()
	}
	r.mu.Unlock()
	_ = r.cfg.PC.Close()
	r.wg.Wait()
}

// Stats are a Receiver's counters.
type Stats struct {
	Packets, Bytes uint64
	BadPackets     uint64 // not RTP
	Lost           uint64 // video sequence numbers skipped (some may come late)
	Late           uint64 // arrived after their unit was written
	Damaged        uint64 // video units written without NAL units: packets lost or undecodable
	PLIs           uint64
	Dropped        uint64 // units of tracks that are not declared, or beyond the pending limit
	// TimestampJumps counts the sender's timestamp steps taken as
	// discontinuities (beyond media.MaxTimestampJump from real time).
	TimestampJumps uint64
}

// Stats returns the counters so far.
func (r *Receiver) Stats() Stats {
	st := &r.stats
	return Stats{
		Packets: st.packets.Load(), Bytes: st.bytes.Load(), BadPackets: st.badPackets.Load(),
		Lost: st.lost.Load(), Late: st.late.Load(), Damaged: st.damaged.Load(),
		PLIs: st.plis.Load(), Dropped: st.dropped.Load(), TimestampJumps: st.jumps.Load(),
	}
}

// LogAttrs returns the counters as slog key-value pairs, except Packets
// and Bytes, which the session's end line has (sessionlog.End).
func (s Stats) LogAttrs() []any {
	return []any{"lost_video_packets", s.Lost, "late_packets", s.Late,
		"damaged_units", s.Damaged, "plis", s.PLIs, "dropped_units", s.Dropped, "bad_packets", s.BadPackets,
		"timestamp_jumps", s.TimestampJumps}
}

// OnTrack runs one received track until the PeerConnection closes; give it
// to the PeerConnection's OnTrack, which calls it on a goroutine of its
// own.
func (r *Receiver) OnTrack(tr *webrtc.TrackRemote, rc *webrtc.RTPReceiver) {
	defer panics.Recover(panicComponent, r.cfg.Log, r.endSession)
	codec := tr.Codec()
	kind := ""
	r.mu.Lock()
	if r.closing {
		r.mu.Unlock()
		return
	}
	switch {
	case tr.Kind() == webrtc.RTPCodecTypeVideo && webrtccodec.AcceptableCodec(codec) && !r.videoIn:
		r.videoIn, kind = true, "video"
	case tr.Kind() == webrtc.RTPCodecTypeAudio && webrtccodec.AcceptableCodec(codec) && !r.audioIn:
		r.audioIn, kind = true, "audio"
	}
	r.wg.Add(2)
	r.mu.Unlock()
	defer r.wg.Done()
	go func() {
		defer r.wg.Done()
		defer panics.Recover(panicComponent, r.cfg.Log, r.endSession)
		drainRTCP(rc)
	}()
	log := r.cfg.Log.With("track", tr.Kind().String(), "codec", codec.MimeType, "ssrc", uint32(tr.SSRC()))
	// The middle of the session's story: at DEBUG (the start line says
	// which tracks are expected, the end line what they carried).
	switch kind {
	case "video":
		log.Debug("receiving track", "fmtp", codec.SDPFmtpLine)
		r.receiveVideo(tr)
	case "audio":
		log.Debug("receiving track")
		r.receiveAudio(tr)
	default:
		log.Warn("track ignored: one H264 video and one Opus audio track are used")
		buf := make([]byte, rtpBufSize)
		for {
			if _, _, err := tr.Read(buf); err != nil {
				return
			}
		}
	}
}

// endSession ends the session after a panic in one of the Receiver's
// goroutines: closing the PeerConnection ends the other track's reads and
// tells the session (its connection state) that the publisher is gone.
func (r *Receiver) endSession() { _ = r.cfg.PC.Close() }

// drainRTCP reads the RTCP of a receiver, so that the interceptors see the
// sender's reports (receiver reports carry LSR/DLSR from them, which the
// sender needs for its RTT); it ends when the PeerConnection closes.
func drainRTCP(rc *webrtc.RTPReceiver) {
	buf := make([]byte, rtpBufSize)
	for {
		if _, _, err := rc.Read(buf); err != nil {
			return
		}
	}
}

// errBadPacket is returned by readPacket for a datagram that is not RTP.
var errBadPacket = errors.New("not an RTP packet")

// readPacket reads the next packet of tr into a packet of its own: the
// payload copied out of buf, header extensions and padding stripped (the
// extension IDs are the sender's; readers negotiate their own).
func (r *Receiver) readPacket(tr remoteTrack, buf []byte) (*rtp.Packet, error) {
	n, _, err := tr.Read(buf)
	if err != nil {
		return nil, err
	}
	var in rtp.Packet
	if err := in.Unmarshal(buf[:n]); err != nil {
		r.stats.badPackets.Add(1)
		return nil, errBadPacket
	}
	r.lastPacket.Store(time.Now().UnixNano())
	r.stats.packets.Add(1)
	r.stats.bytes.Add(uint64(n))
	return &rtp.Packet{
		Header: rtp.Header{
			Version:        2,
			Marker:         in.Marker,
			PayloadType:    in.PayloadType,
			SequenceNumber: in.SequenceNumber,
			Timestamp:      in.Timestamp,
			SSRC:           in.SSRC,
			CSRC:           slices.Clone(in.CSRC),
		},
		Payload: bytes.Clone(in.Payload),
	}, nil
}

// videoIn is the state of the received video track.
type videoIn struct {
	asm   transcode.H264Assembler
	norm  *transcode.H264Normalizer
	clock media.SourceClock
	track *media.Track // nil until the first decodable IDR
	// needKey is set until a decodable IDR arrives, at the start and after
	// every damaged unit: until then units carry only their RTP packets, so
	// readers that decode never get a frame whose references are missing.
	needKey bool
}

func (r *Receiver) receiveVideo(tr remoteTrack) {
	r.videoSSRC.Store(uint32(tr.SSRC()))
	v := &videoIn{
		norm:    transcode.NewH264Normalizer(spropParameterSets(tr.Codec().SDPFmtpLine)),
		clock:   media.SourceClock{Rate: 90000},
		needKey: true,
	}
	defer func() {
		r.stats.late.Add(v.asm.Late())
		r.stats.lost.Add(v.asm.LostPackets())
	}()
	buf := make([]byte, rtpBufSize)
	for first := true; ; {
		p, err := r.readPacket(tr, buf)
		if errors.Is(err, errBadPacket) {
			continue
		} else if err != nil {
			return
		}
		if first {
			now := time.Now()
			v.clock.Start(uint64(p.Timestamp), r.sinceOrigin(now), now)
			first = false
		}
		v.asm.Push(p, func(au *transcode.RTPAccessUnit) { r.videoUnit(v, au) })
	}
}

// videoUnit writes one reassembled video access unit: always its RTP
// packets (WebRTC readers get them as they came, and recover from a loss
// themselves), and its NAL units when it is whole and decodable.
func (r *Receiver) videoUnit(v *videoIn, au *transcode.RTPAccessUnit) {
	pts := r.streamTime(&v.clock, au.Timestamp, "video")
	u := &media.Unit{PTS: pts, DTS: pts, RTP: au.Packets}
	if au.Err != nil {
		r.stats.damaged.Add(1)
		v.needKey = true
	} else if nalus, idr := v.norm.Normalize(au.NALUs); nalus != nil {
		// An IDR is decodable once the parameter sets are known: the
		// normalizer then puts them in front.
		key := idr && h264.NALUType(nalus[0][0]&0x1f) == h264.NALUTypeSPS
		if key || !v.needKey {
			u.NALUs, u.Key = nalus, key
			v.needKey = false
		}
	}
	if v.needKey {
		r.RequestKeyframe()
	}
	if v.track == nil {
		if !u.Key {
			return // nothing to declare the track with yet
		}
		sps, pps := v.norm.Params()
		v.track = &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
		r.trackReady(v.track)
	}
	u.Track = v.track
	ts := media.RTPTimestamp(v.track, pts)
	for _, p := range u.RTP {
		p.Timestamp = ts
	}
	r.deliver(u)
}

func (r *Receiver) receiveAudio(tr remoteTrack) {
	channels := int(tr.Codec().Channels)
	if channels == 0 {
		channels = 2 // RFC 7587: the rtpmap of Opus always says 2
	}
	clock := media.SourceClock{Rate: 48000}
	var track *media.Track
	var next uint16
	var late uint64
	defer func() { r.stats.late.Add(late) }()
	buf := make([]byte, rtpBufSize)
	for {
		p, err := r.readPacket(tr, buf)
		if errors.Is(err, errBadPacket) {
			continue
		} else if err != nil {
			return
		}
		if track != nil && int16(p.SequenceNumber-next) < 0 {
			late++ // out of order: writing it would take the stream time back
			continue
		}
		next = p.SequenceNumber + 1
		if len(p.Payload) == 0 {
			continue // padding
		}
		if track == nil {
			now := time.Now()
			clock.Start(uint64(p.Timestamp), r.sinceOrigin(now), now)
			track = &media.Track{Codec: media.Opus{Channels: channels}}
			r.trackReady(track)
		}
		pts := r.streamTime(&clock, p.Timestamp, "audio")
		p.Timestamp = media.RTPTimestamp(track, pts)
		r.deliver(&media.Unit{Track: track, PTS: pts, DTS: pts, Key: true, Data: p.Payload, RTP: []*rtp.Packet{p}})
	}
}

// streamTime returns the stream time of a track's RTP timestamp ts,
// which arrived now. A jump of the sender's clock is re-anchored by the
// clock (media.SourceClock), counted and logged at most once per track
// per ratelog interval.
func (r *Receiver) streamTime(c *media.SourceClock, ts uint32, track string) time.Duration {
	pts, jumped := c.Time(uint64(ts), time.Now())
	if jumped {
		r.stats.jumps.Add(1)
		if ok, n := r.jumps.Allow(track); ok {
			r.cfg.Log.Warn("RTP timestamp jump: the stream clock continues from its last time", "track", track,
				"rtp_timestamp", ts, "max_jump", media.MaxTimestampJump, "suppressed", n)
		}
	}
	return pts
}

// sinceOrigin returns how long after the first packet of any track now
// is, making now that first packet if there was none, and starts the wait
// for the other tracks.
func (r *Receiver) sinceOrigin(now time.Time) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.origin.IsZero() {
		r.origin = now
		if !r.closing {
			r.timer = time.AfterFunc(r.cfg.TrackWait, r.trackWaitOver)
		}
	}
	return now.Sub(r.origin)
}

// trackReady records that t can be declared, and declares the stream's
// tracks if every expected one is ready or the wait is over.
func (r *Receiver) trackReady(t *media.Track) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing {
		return
	}
	if r.declared != nil {
		r.cfg.Log.Warn("track ready too late: the stream was declared without it", "codec", t.Codec.Name())
		return
	}
	if t.IsVideo() {
		r.video = t
	} else {
		r.audio = t
	}
	if r.timedOut || (!r.expectVideo || r.video != nil) && (!r.expectAudio || r.audio != nil) {
		r.declareLocked()
	}
}

// trackWaitOver declares the tracks that are ready when TrackWait has
// passed since the first packet; if none is, the first one to get ready is
// declared alone.
func (r *Receiver) trackWaitOver() {
	defer panics.Recover(panicComponent, r.cfg.Log, r.endSession)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closing || r.declared != nil {
		return
	}
	r.timedOut = true
	if r.video != nil || r.audio != nil {
		r.declareLocked()
	}
}

// declareLocked declares the ready tracks (video first) and writes the
// units kept until then.
func (r *Receiver) declareLocked() {
	var tracks []*media.Track
	for _, t := range []*media.Track{r.video, r.audio} {
		if t != nil {
			tracks = append(tracks, t)
		}
	}
	if err := r.pub.SetTracks(tracks...); err != nil {
		r.cfg.Log.Error("cannot declare the stream's tracks", "err", err)
		r.cfg.Fail(fmt.Errorf("declare tracks: %w", err))
		return
	}
	r.declared = tracks
	if r.expectVideo && r.video == nil {
		r.cfg.Log.Warn("publishing without video: no decodable H264 keyframe arrived in time", "waited", r.cfg.TrackWait)
	}
	if r.expectAudio && r.audio == nil {
		r.cfg.Log.Warn("publishing without audio: no Opus packet arrived in time", "waited", r.cfg.TrackWait)
	}
	for _, u := range r.pending {
		r.pub.Write(u)
	}
	r.pending = nil
}

// deliver writes u to the stream, or keeps it until the tracks are
// declared.
func (r *Receiver) deliver(u *media.Unit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.closing:
	case r.declared == nil:
		if len(r.pending) < maxPendingUnits {
			r.pending = append(r.pending, u)
		} else {
			r.stats.dropped.Add(1)
		}
	case slices.Contains(r.declared, u.Track):
		r.pub.Write(u)
	default:
		r.stats.dropped.Add(1)
	}
}

// RequestKeyframe asks the sender for a keyframe (RTCP PLI), at most once
// per PLIInterval, for the video's reassembly or for the hub's readers.
// Safe from any goroutine; it does not block on the network.
func (r *Receiver) RequestKeyframe() {
	now := time.Now().UnixNano()
	last := r.lastPLI.Load()
	if now-last < int64(PLIInterval) || !r.lastPLI.CompareAndSwap(last, now) {
		return
	}
	ssrc := r.videoSSRC.Load()
	if ssrc == 0 {
		return
	}
	if err := r.cfg.PC.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		r.cfg.Log.Debug("keyframe request failed", "err", err)
		return
	}
	r.stats.plis.Add(1)
}
