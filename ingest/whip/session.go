package whip

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

const (
	// gatherTimeout bounds ICE gathering; with the UDP mux it takes
	// milliseconds, STUN servers can make it longer.
	gatherTimeout = 5 * time.Second
	// pliInterval is the least time between two keyframe requests sent to
	// the publisher: an encoder asked again before it has answered only
	// sends another large frame into a path that just lost packets.
	pliInterval = 500 * time.Millisecond
	// maxPendingUnits bounds the units kept while the stream's tracks are
	// not declared yet (at most trackWait of audio and video: 3 s at 50 +
	// 30 units a second is 240).
	maxPendingUnits = 512
	// rtpBufSize is the read buffer of a track: pion's receive MTU.
	rtpBufSize = 1500
)

// session is one publisher: a PeerConnection whose tracks are written to
// one hub stream. Each received track has a goroutine (started by pion's
// OnTrack) that reads, reassembles and writes; run ends the session. The
// embedded ICESession makes it an rtc.Session (entity-tag, trickle ICE, ICE
// restart).
type session struct {
	*rtc.ICESession
	h       *Handler
	id      string
	log     *slog.Logger
	pc      *webrtc.PeerConnection
	pub     *publisher
	started time.Time

	// expectVideo and expectAudio say which tracks the answer accepted;
	// the stream is declared once those are ready (or after trackWait).
	expectVideo, expectAudio bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when run has cleaned up
	wg     sync.WaitGroup

	lastPacket atomic.Int64  // Unix ns of the last RTP packet (the session's start before one)
	lastPLI    atomic.Int64  // Unix ns of the last keyframe request
	videoSSRC  atomic.Uint32 // SSRC keyframe requests name
	stats      sessionStats

	// mu guards what follows and is held for every publisher call, so
	// the hub sees a single writer.
	mu       sync.Mutex
	closing  bool      // run is cleaning up: no new track goroutines, no writes
	origin   time.Time // arrival of the first packet of any track
	timer    *time.Timer
	timedOut bool // trackWait passed: declare with whatever is ready
	videoIn  bool // a video track goroutine is running (one is used)
	audioIn  bool
	video    *media.Track // ready tracks, declared or not
	audio    *media.Track
	declared []*media.Track // nil until the tracks are declared
	pending  []*media.Unit  // units of ready tracks before the declaration
}

type sessionStats struct {
	packets, bytes atomic.Uint64
	badPackets     atomic.Uint64 // not RTP
	lost           atomic.Uint64 // sequence numbers skipped (some may come late)
	late           atomic.Uint64 // arrived after their unit was written
	damaged        atomic.Uint64 // video units written without NAL units: packets lost or undecodable
	plis           atomic.Uint64
	dropped        atomic.Uint64 // units of tracks that are not declared, or beyond maxPendingUnits
}

// startSession answers the offer with a PeerConnection whose answer
// accepts only H.264 (packetization-mode 1) and Opus, with every ICE
// candidate gathered. The session does nothing until start.
func startSession(h *Handler, pub *publisher, off *offer, rawOffer, id string, log *slog.Logger) (*session, string, error) {
	pc, err := h.cfg.Engine.NewPeerConnection()
	if err != nil {
		return nil, "", fmt.Errorf("new peer connection: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = pc.Close()
		}
	}()
	s := &session{h: h, id: id, log: log, pc: pc, pub: pub, started: time.Now(), done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	s.lastPacket.Store(s.started.UnixNano())
	pc.OnTrack(s.onTrack)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.log.Info("publisher connected")
		case webrtc.PeerConnectionStateFailed:
			s.cancel(errors.New("connection failed (ICE or DTLS)"))
		case webrtc.PeerConnectionStateClosed:
			s.cancel(errors.New("connection closed"))
		}
	})

	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: rawOffer}); err != nil {
		return nil, "", rtc.Errorf(http.StatusBadRequest, "SDP offer rejected: %v", err)
	}
	if err := s.selectCodecs(off); err != nil {
		return nil, "", err
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return nil, "", rtc.Errorf(http.StatusBadRequest, "cannot answer the offer: %v", err)
	}
	if err := pc.SetLocalDescription(answer); err != nil {
		return nil, "", fmt.Errorf("set local description: %w", err)
	}
	select {
	case <-gathered:
	case <-time.After(gatherTimeout):
		return nil, "", fmt.Errorf("ICE gathering did not complete in %v", gatherTimeout)
	}
	if s.ICESession, err = h.cfg.Engine.NewICESession(pc, log); err != nil {
		return nil, "", err
	}
	ok = true
	return s, s.Answer(), nil
}

// selectCodecs restricts the answer to what the hub can carry: on the
// video section chosen by checkOffer, the offered H.264 formats in
// packetization-mode 1 and their RTX formats (so lost packets are
// retransmitted; pion hands repaired packets to the track's reader); on the
// audio one, Opus. Every other section (VP8-only video, a second video,
// ...) is answered inactive.
func (s *session) selectCodecs(off *offer) error {
	for _, t := range s.pc.GetTransceivers() {
		want := false
		switch t.Kind() {
		case webrtc.RTPCodecTypeVideo:
			want = off.hasVideo && !s.expectVideo && t.Mid() == off.videoMid
		case webrtc.RTPCodecTypeAudio:
			want = off.hasAudio && !s.expectAudio && t.Mid() == off.audioMid
		}
		if want && t.Receiver() != nil {
			keep := keepCodecs(t.Receiver().GetParameters().Codecs)
			if len(keep) > 0 && t.SetCodecPreferences(keep) == nil {
				if t.Kind() == webrtc.RTPCodecTypeVideo {
					s.expectVideo = true
				} else {
					s.expectAudio = true
				}
				continue
			}
		}
		if err := t.Stop(); err != nil {
			return fmt.Errorf("stop unused transceiver %s (mid %q): %w", t.Kind(), t.Mid(), err)
		}
	}
	if !s.expectVideo && !s.expectAudio {
		return rtc.Errorf(http.StatusBadRequest, "none of the offered H264 or Opus formats can be negotiated")
	}
	return nil
}

// keepCodecs returns the acceptable codecs of a negotiated list and the RTX
// formats that repair them.
func keepCodecs(codecs []webrtc.RTPCodecParameters) []webrtc.RTPCodecParameters {
	var keep []webrtc.RTPCodecParameters
	for _, c := range codecs {
		if acceptableCodec(c) {
			keep = append(keep, c)
		}
	}
	n := len(keep)
	for _, c := range codecs {
		if !strings.EqualFold(c.MimeType, webrtc.MimeTypeRTX) {
			continue
		}
		apt := fmtpParam(c.SDPFmtpLine, "apt")
		if slices.ContainsFunc(keep[:n], func(k webrtc.RTPCodecParameters) bool { return fmt.Sprint(k.PayloadType) == apt }) {
			keep = append(keep, c)
		}
	}
	return keep
}

// start runs the session. Call it once the session is in the sessions
// table, so that its removal at the end cannot come first.
func (s *session) start() {
	s.pub.onKeyframeRequest(s.requestKeyframe)
	go s.run()
}

// Close ends the session and waits until it has released everything: the
// PeerConnection, its goroutines, the stream and its sessions table entry.
func (s *session) Close(reason string) {
	s.cancel(errors.New(reason))
	<-s.done
}

// run waits for the end of the session and cleans up.
func (s *session) run() {
	defer close(s.done)
	reason := s.wait()
	s.cancel(errors.New(reason)) // a no-op unless it ended by itself (idle)
	s.mu.Lock()
	s.closing = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	_ = s.pc.Close() // ends the track goroutines' reads
	s.wg.Wait()
	s.pub.close()
	s.h.cfg.Sessions.Remove(s.id)
	st := &s.stats
	s.log.Info("publish ended", "reason", reason,
		"duration", time.Since(s.started).Round(time.Millisecond).String(),
		"packets", st.packets.Load(), "bytes", st.bytes.Load(), "lost_video_packets", st.lost.Load(), "late_packets", st.late.Load(),
		"damaged_units", st.damaged.Load(), "plis", st.plis.Load(), "dropped_units", st.dropped.Load(),
		"bad_packets", st.badPackets.Load())
}

// wait returns why the session ends: a cancellation (DELETE, shutdown,
// connection failed or closed) or no media for idleTimeout (which also
// covers a peer that never connects).
func (s *session) wait() string {
	tick := time.NewTicker(max(s.h.idleTimeout/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return context.Cause(s.ctx).Error()
		case now := <-tick.C:
			if idle := now.Sub(time.Unix(0, s.lastPacket.Load())); idle >= s.h.idleTimeout {
				return fmt.Sprintf("no media for %v", idle.Round(time.Second))
			}
		}
	}
}

// onTrack runs one received track until the PeerConnection closes. pion
// calls it on a goroutine of its own.
func (s *session) onTrack(tr *webrtc.TrackRemote, rc *webrtc.RTPReceiver) {
	codec := tr.Codec()
	kind := ""
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return
	}
	switch {
	case tr.Kind() == webrtc.RTPCodecTypeVideo && acceptableCodec(codec) && !s.videoIn:
		s.videoIn, kind = true, "video"
	case tr.Kind() == webrtc.RTPCodecTypeAudio && acceptableCodec(codec) && !s.audioIn:
		s.audioIn, kind = true, "audio"
	}
	s.wg.Add(2)
	s.mu.Unlock()
	defer s.wg.Done()
	go func() {
		defer s.wg.Done()
		drainRTCP(rc)
	}()
	log := s.log.With("track", tr.Kind().String(), "codec", codec.MimeType, "ssrc", uint32(tr.SSRC()))
	switch kind {
	case "video":
		log.Info("receiving track", "fmtp", codec.SDPFmtpLine)
		s.receiveVideo(tr)
	case "audio":
		log.Info("receiving track")
		s.receiveAudio(tr)
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

// drainRTCP reads the RTCP of a receiver, so that the interceptors see the
// publisher's sender reports (receiver reports carry LSR/DLSR from them,
// which the publisher needs for its RTT); it ends when the PeerConnection
// closes.
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
// extension IDs are the publisher's; viewers negotiate their own).
func (s *session) readPacket(tr *webrtc.TrackRemote, buf []byte) (*rtp.Packet, error) {
	n, _, err := tr.Read(buf)
	if err != nil {
		return nil, err
	}
	var in rtp.Packet
	if err := in.Unmarshal(buf[:n]); err != nil {
		s.stats.badPackets.Add(1)
		return nil, errBadPacket
	}
	s.lastPacket.Store(time.Now().UnixNano())
	s.stats.packets.Add(1)
	s.stats.bytes.Add(uint64(n))
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
	clock transcode.MediaClock
	track *media.Track // nil until the first decodable IDR
	// needKey is set until a decodable IDR arrives, at the start and after
	// every damaged unit: until then units carry only their RTP packets, so
	// readers that decode never get a frame whose references are missing.
	needKey bool
}

func (s *session) receiveVideo(tr *webrtc.TrackRemote) {
	s.videoSSRC.Store(uint32(tr.SSRC()))
	v := &videoIn{
		norm:    transcode.NewH264Normalizer(spropParameterSets(tr.Codec().SDPFmtpLine)),
		clock:   transcode.MediaClock{Rate: 90000},
		needKey: true,
	}
	defer func() {
		s.stats.late.Add(v.asm.Late())
		s.stats.lost.Add(v.asm.LostPackets())
	}()
	buf := make([]byte, rtpBufSize)
	for first := true; ; {
		p, err := s.readPacket(tr, buf)
		if errors.Is(err, errBadPacket) {
			continue
		} else if err != nil {
			return
		}
		if first {
			v.clock.Start(p.Timestamp, s.sinceOrigin(time.Now()))
			first = false
		}
		v.asm.Push(p, func(au *transcode.RTPAccessUnit) { s.videoUnit(v, au) })
	}
}

// videoUnit writes one reassembled video access unit: always its RTP
// packets (WebRTC viewers get them as they came, and recover from a loss
// themselves), and its NAL units when it is whole and decodable.
func (s *session) videoUnit(v *videoIn, au *transcode.RTPAccessUnit) {
	pts := v.clock.PTS(au.Timestamp)
	u := &media.Unit{PTS: pts, DTS: pts, RTP: au.Packets}
	if au.Err != nil {
		s.stats.damaged.Add(1)
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
		s.requestKeyframe()
	}
	if v.track == nil {
		if !u.Key {
			return // nothing to declare the track with yet
		}
		sps, pps := v.norm.Params()
		v.track = &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
		s.trackReady(v.track)
	}
	u.Track = v.track
	ts := transcode.RTPTimestamp(v.track, pts)
	for _, p := range u.RTP {
		p.Timestamp = ts
	}
	s.deliver(u)
}

func (s *session) receiveAudio(tr *webrtc.TrackRemote) {
	channels := int(tr.Codec().Channels)
	if channels == 0 {
		channels = 2 // RFC 7587: the rtpmap of Opus always says 2
	}
	clock := transcode.MediaClock{Rate: 48000}
	var track *media.Track
	var next uint16
	var late uint64
	defer func() { s.stats.late.Add(late) }()
	buf := make([]byte, rtpBufSize)
	for {
		p, err := s.readPacket(tr, buf)
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
			clock.Start(p.Timestamp, s.sinceOrigin(time.Now()))
			track = &media.Track{Codec: media.Opus{Channels: channels}}
			s.trackReady(track)
		}
		pts := clock.PTS(p.Timestamp)
		p.Timestamp = transcode.RTPTimestamp(track, pts)
		s.deliver(&media.Unit{Track: track, PTS: pts, DTS: pts, Key: true, Data: p.Payload, RTP: []*rtp.Packet{p}})
	}
}

// sinceOrigin returns how long after the session's first packet now is,
// making now that first packet if there was none, and starts the wait for
// the other tracks.
func (s *session) sinceOrigin(now time.Time) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.origin.IsZero() {
		s.origin = now
		if !s.closing {
			s.timer = time.AfterFunc(s.h.trackWait, s.trackWaitOver)
		}
	}
	return now.Sub(s.origin)
}

// trackReady records that t can be declared, and declares the stream's
// tracks if every expected one is ready or the wait is over.
func (s *session) trackReady(t *media.Track) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return
	}
	if s.declared != nil {
		s.log.Warn("track ready too late: the stream was declared without it", "codec", t.Codec.Name())
		return
	}
	if t.IsVideo() {
		s.video = t
	} else {
		s.audio = t
	}
	if s.timedOut || (!s.expectVideo || s.video != nil) && (!s.expectAudio || s.audio != nil) {
		s.declareLocked()
	}
}

// trackWaitOver declares the tracks that are ready when trackWait has
// passed since the first packet; if none is, the first one to get ready is
// declared alone.
func (s *session) trackWaitOver() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing || s.declared != nil {
		return
	}
	s.timedOut = true
	if s.video != nil || s.audio != nil {
		s.declareLocked()
	}
}

// declareLocked declares the ready tracks (video first) and writes the
// units kept until then.
func (s *session) declareLocked() {
	var tracks []*media.Track
	for _, t := range []*media.Track{s.video, s.audio} {
		if t != nil {
			tracks = append(tracks, t)
		}
	}
	if err := s.pub.setTracks(tracks...); err != nil {
		s.log.Error("cannot declare the stream's tracks", "err", err)
		s.cancel(fmt.Errorf("declare tracks: %w", err))
		return
	}
	s.declared = tracks
	if s.expectVideo && s.video == nil {
		s.log.Warn("publishing without video: no decodable H264 keyframe arrived in time", "waited", s.h.trackWait)
	}
	if s.expectAudio && s.audio == nil {
		s.log.Warn("publishing without audio: no Opus packet arrived in time", "waited", s.h.trackWait)
	}
	for _, u := range s.pending {
		s.pub.write(u)
	}
	s.pending = nil
}

// deliver writes u to the stream, or keeps it until the tracks are
// declared.
func (s *session) deliver(u *media.Unit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closing:
	case s.declared == nil:
		if len(s.pending) < maxPendingUnits {
			s.pending = append(s.pending, u)
		} else {
			s.stats.dropped.Add(1)
		}
	case slices.Contains(s.declared, u.Track):
		s.pub.write(u)
	default:
		s.stats.dropped.Add(1)
	}
}

// requestKeyframe asks the publisher for a keyframe (RTCP PLI), at most
// once per pliInterval, for the video's reassembly or for the hub's
// readers. Safe from any goroutine; it does not block.
func (s *session) requestKeyframe() {
	now := time.Now().UnixNano()
	last := s.lastPLI.Load()
	if now-last < int64(pliInterval) || !s.lastPLI.CompareAndSwap(last, now) {
		return
	}
	ssrc := s.videoSSRC.Load()
	if ssrc == 0 {
		return
	}
	if err := s.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}}); err != nil {
		s.log.Debug("keyframe request failed", "err", err)
		return
	}
	s.stats.plis.Add(1)
}
