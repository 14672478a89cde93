package whep

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/sdp/v3"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// session is one WHEP session: a PeerConnection whose received tracks are
// published at the puller's path. Each received track has a goroutine
// (started by pion's OnTrack) that reads, reassembles and writes.
type session struct {
	p   *Puller
	log *slog.Logger
	pc  *webrtc.PeerConnection
	pub *media.Publication // set once the server has answered; guarded by mu until then

	ctx       context.Context
	cancel    context.CancelCauseFunc
	connected chan struct{}
	connOnce  sync.Once
	wg        sync.WaitGroup // track and RTCP goroutines

	videoMid, audioMid string // of our transceivers, once the offer is made

	lastPacket atomic.Int64  // Unix ns of the last RTP packet (the connection's before one)
	lastPLI    atomic.Int64  // Unix ns of the last keyframe request
	videoSSRC  atomic.Uint32 // SSRC keyframe requests name
	stats      sessionStats

	// mu guards what follows and is held for every publication call, so
	// the hub sees one writer.
	mu                       sync.Mutex
	closing                  bool // no new track goroutines, no writes
	expectVideo, expectAudio bool // the answer sends them
	videoIn, audioIn         bool // a track goroutine is running for them
	origin                   time.Time
	timer                    *time.Timer
	timedOut                 bool
	video, audio             *media.Track
	declared                 []*media.Track
	pending                  []*media.Unit
}

type sessionStats struct {
	packets, bytes atomic.Uint64
	badPackets     atomic.Uint64
	lost           atomic.Uint64
	late           atomic.Uint64
	damaged        atomic.Uint64
	plis           atomic.Uint64
	dropped        atomic.Uint64
}

// pull makes one WHEP session and publishes what it receives until it
// fails or ctx ends. It returns how long media flowed. Every failure after
// the POST, and the end, DELETE the remote session.
func (p *Puller) pull(ctx context.Context) (time.Duration, error) {
	s, err := newSession(ctx, p)
	if err != nil {
		return 0, err
	}
	var remote *rtc.RemoteSession
	defer func() {
		// DELETE first: the server then ends the session as asked, rather
		// than after seeing our PeerConnection close.
		defer s.close()
		if remote == nil {
			return
		}
		if err := p.client.Delete(context.WithoutCancel(ctx), remote); err != nil {
			p.log.Warn("cannot end the remote session", "err", err)
		}
	}()
	offer, err := s.offer()
	if err != nil {
		return 0, err
	}
	pctx, cancel := context.WithTimeout(ctx, rtc.PostTimeout)
	answer, remote, err := p.client.Post(pctx, offer)
	cancel()
	if err != nil {
		return 0, err
	}
	if remote.URL == nil {
		p.log.Warn("the server answered without a Location: its session cannot be ended with DELETE")
	}
	p.log.Debug("remote session created", "etag", remote.ETag, "accepts_patch", remote.Trickle, "ice_servers", len(p.client.LastICEServers()))
	// The path is claimed once the server has answered, so that while it
	// is unreachable the stream's readers just wait (the grace period)
	// rather than see a publisher come and go at every attempt.
	pub, err := p.cfg.Registry.Publish(p.cfg.Path, "whep pull "+p.client.Redacted())
	if err != nil {
		return 0, err
	}
	s.setPublication(pub)
	if err := s.accept(answer); err != nil {
		return 0, err
	}
	t := time.NewTimer(p.connectTimeout)
	defer t.Stop()
	select {
	case <-s.connected:
	case <-s.ctx.Done():
		return 0, context.Cause(s.ctx)
	case <-t.C:
		return 0, fmt.Errorf("ICE/DTLS did not complete within %v", p.connectTimeout)
	}
	s.log.Info("whep pull connected", "video", s.expectVideo, "audio", s.expectAudio)
	if p.onConnected != nil {
		p.onConnected()
	}
	return s.wait()
}

func newSession(ctx context.Context, p *Puller) (*session, error) {
	pc, err := p.cfg.Engine.NewPeerConnection()
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	s := &session{p: p, log: p.log, pc: pc, connected: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	if extra := p.client.LastICEServers(); len(extra) > 0 {
		c := pc.GetConfiguration()
		c.ICEServers = append(slices.Clone(c.ICEServers), extra...)
		if err := pc.SetConfiguration(c); err != nil {
			p.log.Warn("the ICE servers the server advertised are not used", "err", err)
		}
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		tr, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
		if err == nil {
			// Offer only what the hub can carry, so the server cannot
			// pick VP8 or AV1.
			err = tr.SetCodecPreferences(keepCodecs(tr.Receiver().GetParameters().Codecs))
		}
		if err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("add %s transceiver: %w", kind, err)
		}
	}
	pc.OnTrack(s.onTrack)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() {
				s.lastPacket.Store(time.Now().UnixNano())
				close(s.connected)
			})
		case webrtc.PeerConnectionStateFailed:
			s.cancel(errors.New("connection failed (ICE or DTLS)"))
		case webrtc.PeerConnectionStateClosed:
			s.cancel(errors.New("connection closed"))
		}
	})
	return s, nil
}

// setPublication makes the session publish at pub. Call it before the
// answer is applied: no track runs before that.
func (s *session) setPublication(pub *media.Publication) {
	s.mu.Lock()
	s.pub = pub
	s.mu.Unlock()
	pub.OnKeyframeRequest(func(int) { s.requestKeyframe() })
}

// offer makes the offer and waits for every candidate to be in it.
func (s *session) offer() (string, error) {
	gathered := webrtc.GatheringCompletePromise(s.pc)
	o, err := s.pc.CreateOffer(nil)
	if err != nil {
		return "", fmt.Errorf("create offer: %w", err)
	}
	if err := s.pc.SetLocalDescription(o); err != nil {
		return "", fmt.Errorf("set local description: %w", err)
	}
	t := time.NewTimer(gatherTimeout)
	defer t.Stop()
	select {
	case <-gathered:
	case <-t.C:
		// A STUN or TURN server that does not answer (one the endpoint
		// advertised may be unreachable from here) must not stop us:
		// offer the candidates gathered so far.
		s.log.Warn("ICE gathering incomplete: offering the candidates gathered so far", "waited", gatherTimeout.String())
	case <-s.ctx.Done():
		return "", context.Cause(s.ctx)
	}
	for _, tr := range s.pc.GetTransceivers() {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			s.videoMid = tr.Mid()
		} else {
			s.audioMid = tr.Mid()
		}
	}
	return s.pc.LocalDescription().SDP, nil
}

// accept applies the answer and notes which tracks it will send.
func (s *session) accept(answer string) error {
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("the server's answer cannot be used: %w", err)
	}
	sending, err := sendingMids(answer)
	if err != nil {
		return fmt.Errorf("the server's answer cannot be used: %w", err)
	}
	s.mu.Lock()
	s.expectVideo, s.expectAudio = sending[s.videoMid], sending[s.audioMid]
	s.mu.Unlock()
	if !s.expectVideo && !s.expectAudio {
		return errors.New("the server's answer sends neither H264 video nor Opus audio")
	}
	return nil
}

// sendingMids returns the mids of the answer's media sections that send:
// not rejected (port 0) and sendonly or sendrecv (the default).
func sendingMids(answer string) (map[string]bool, error) {
	var sd sdp.SessionDescription
	if err := sd.UnmarshalString(answer); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, md := range sd.MediaDescriptions {
		mid, _ := md.Attribute("mid")
		if md.MediaName.Port.Value == 0 {
			continue
		}
		dir := "sendrecv"
		for _, d := range []string{"sendonly", "recvonly", "inactive", "sendrecv"} {
			if _, ok := md.Attribute(d); ok {
				dir = d
			}
		}
		if dir == "sendonly" || dir == "sendrecv" {
			out[mid] = true
		}
	}
	return out, nil
}

// wait returns how long media flowed and why the session ends: a
// cancellation (ctx, connection failed or closed) or no media for
// idleTimeout.
func (s *session) wait() (time.Duration, error) {
	started := time.Now()
	tick := time.NewTicker(max(s.p.idleTimeout/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return time.Since(started), context.Cause(s.ctx)
		case now := <-tick.C:
			if idle := now.Sub(time.Unix(0, s.lastPacket.Load())); idle >= s.p.idleTimeout {
				return time.Since(started), fmt.Errorf("no media for %v", idle.Round(time.Millisecond))
			}
		}
	}
}

// close ends the PeerConnection, waits for the track goroutines and
// leaves the stream.
func (s *session) close() {
	s.mu.Lock()
	s.closing = true
	if s.timer != nil {
		s.timer.Stop()
	}
	s.mu.Unlock()
	s.cancel(errors.New("session closed"))
	_ = s.pc.Close() // ends the track goroutines' reads
	s.wg.Wait()
	if s.pub != nil {
		s.pub.Close()
	}
	st := &s.stats
	s.log.Debug("whep pull session stats",
		"packets", st.packets.Load(), "bytes", st.bytes.Load(), "lost_video_packets", st.lost.Load(), "late_packets", st.late.Load(),
		"damaged_units", st.damaged.Load(), "plis", st.plis.Load(), "dropped_units", st.dropped.Load(), "bad_packets", st.badPackets.Load())
}

// onTrack runs one received track until the PeerConnection closes.
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
	log := s.log.With("track", tr.Kind().String(), "codec", codec.MimeType)
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

// drainRTCP reads a receiver's RTCP, so the interceptors see the server's
// sender reports; it ends when the PeerConnection closes.
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
// extension IDs are the server's; our readers negotiate their own).
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
	// every damaged unit: until then units carry only their RTP packets.
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

// videoUnit writes one reassembled access unit: always its RTP packets,
// and its NAL units when it is whole and decodable.
func (s *session) videoUnit(v *videoIn, au *transcode.RTPAccessUnit) {
	pts := v.clock.PTS(au.Timestamp)
	u := &media.Unit{PTS: pts, DTS: pts, RTP: au.Packets}
	if au.Err != nil {
		s.stats.damaged.Add(1)
		v.needKey = true
	} else if nalus, idr := v.norm.Normalize(au.NALUs); nalus != nil {
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
			s.timer = time.AfterFunc(s.p.trackWait, s.trackWaitOver)
		}
	}
	return now.Sub(s.origin)
}

// trackReady records that t can be declared, and declares the tracks if
// every expected one is ready or the wait is over.
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

// trackWaitOver declares the tracks that are ready trackWait after the
// first packet.
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
	if err := s.pub.SetTracks(tracks...); err != nil {
		s.log.Error("cannot declare the stream's tracks", "err", err)
		s.cancel(fmt.Errorf("declare tracks: %w", err))
		return
	}
	s.declared = tracks
	if s.expectVideo && s.video == nil {
		s.log.Warn("publishing without video: no decodable H264 keyframe arrived in time", "waited", s.p.trackWait)
	}
	if s.expectAudio && s.audio == nil {
		s.log.Warn("publishing without audio: no Opus packet arrived in time", "waited", s.p.trackWait)
	}
	for _, u := range s.pending {
		s.pub.Write(u)
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
		s.pub.Write(u)
	default:
		s.stats.dropped.Add(1)
	}
}

// requestKeyframe sends the server a PLI, at most once per pliInterval,
// for the video's reassembly or for the hub's readers. Safe from any
// goroutine; it does not block on the network.
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

// keepCodecs returns the codecs of a list the hub can carry (see
// acceptableCodec) and the RTX formats that repair them.
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

// acceptableCodec reports whether c is H.264 the hub can carry
// (packetization-mode 1; Baseline, Main or High profile, or no
// profile-level-id, which means Baseline) or Opus.
func acceptableCodec(c webrtc.RTPCodecParameters) bool {
	switch {
	case strings.EqualFold(c.MimeType, webrtc.MimeTypeOpus):
		return true
	case !strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) || fmtpParam(c.SDPFmtpLine, "packetization-mode") != "1":
		return false
	}
	plid := fmtpParam(c.SDPFmtpLine, "profile-level-id")
	if plid == "" {
		return true
	}
	b, err := hex.DecodeString(plid)
	if err != nil || len(b) != 3 {
		return false
	}
	return b[0] == 0x42 || b[0] == 0x4d || b[0] == 0x64
}

// fmtpParam returns the value of key in an fmtp line ("a=1;b=2").
func fmtpParam(fmtp, key string) string {
	for kv := range strings.SplitSeq(fmtp, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, key) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// spropParameterSets returns the SPS and PPS of an H.264 fmtp line's
// sprop-parameter-sets, or nil for those it does not carry.
func spropParameterSets(fmtp string) (sps, pps []byte) {
	v := fmtpParam(fmtp, "sprop-parameter-sets")
	if v == "" {
		return nil, nil
	}
	for part := range strings.SplitSeq(v, ",") {
		nalu, err := base64.StdEncoding.DecodeString(strings.TrimSpace(part))
		if err != nil || len(nalu) == 0 {
			continue
		}
		switch h264.NALUType(nalu[0] & 0x1f) {
		case h264.NALUTypeSPS:
			if sps == nil {
				sps = nalu
			}
		case h264.NALUTypePPS:
			if pps == nil {
				pps = nalu
			}
		}
	}
	return sps, pps
}
