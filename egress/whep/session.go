package whep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// rtpMTU bounds the RTP packets we send (header + payload): below the
// 1280-byte IPv6 minimum MTU once SRTP, UDP and IP headers are added.
const rtpMTU = 1200

// gatherTimeout bounds ICE gathering; with the UDP mux it takes
// milliseconds, STUN servers can make it longer.
const gatherTimeout = 5 * time.Second

// outTrack is one hub track sent to one viewer.
type outTrack struct {
	src   *media.Track
	local *webrtc.TrackLocalStaticRTP
	// proc names the hub processor that fills the units' RTP packets for
	// this track ("rtp": packetize as is; "opus": transcode AAC), and
	// newProc makes it.
	proc    string
	newProc func() media.Processor
	rate    int // RTP clock rate of what is sent
	// Per-viewer rewriting: consecutive sequence numbers (so a unit the
	// reader dropped is not NACKed in vain) and a random timestamp origin
	// (RFC 3550 5.1).
	seq      uint16
	tsOffset uint32
	report   rtc.SenderReporter
}

// session is one viewer. Its run goroutine owns the reader and the
// outTracks' counters.
type session struct {
	h      *Handler
	id     string
	log    *slog.Logger
	pc     *webrtc.PeerConnection
	stream *media.Stream
	tracks []*outTrack

	ctx       context.Context
	cancel    context.CancelCauseFunc
	connected chan struct{}
	connOnce  sync.Once
	done      chan struct{}
	started   time.Time
}

func startSession(h *Handler, stream *media.Stream, off *offer, rawOffer, id string, log *slog.Logger) (*session, string, error) {
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
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: rawOffer}); err != nil {
		return nil, "", rtc.Errorf(http.StatusBadRequest, "SDP offer rejected: %v", err)
	}
	s := &session{
		h: h, id: id, log: log, pc: pc, stream: stream,
		connected: make(chan struct{}),
		done:      make(chan struct{}),
		started:   time.Now(),
	}
	if err := s.addTracks(off); err != nil {
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

	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() { close(s.connected) })
		case webrtc.PeerConnectionStateFailed:
			s.cancel(errors.New("connection failed (ICE or DTLS)"))
		case webrtc.PeerConnectionStateClosed:
			s.cancel(errors.New("connection closed"))
		}
	})
	for _, t := range pc.GetTransceivers() {
		if sender := t.Sender(); sender != nil && sender.Track() != nil {
			go drainRTCP(sender)
		}
	}
	go s.run()
	ok = true
	log.Info("viewer session created", "tracks", len(s.tracks))
	return s, pc.LocalDescription().SDP, nil
}

// addTracks attaches one local track per hub track the offer can receive.
func (s *session) addTracks(off *offer) error {
	for _, t := range s.stream.Tracks() {
		ot := &outTrack{src: t, proc: "rtp", seq: uint16(rand.Uint32()), tsOffset: rand.Uint32()}
		ot.newProc = func() media.Processor { return transcode.NewRTPPacketizer(t, rtpMTU) }
		var cap webrtc.RTPCodecCapability
		switch c := t.Codec.(type) {
		case media.H264:
			if !off.hasVideo {
				return rtc.Errorf(http.StatusBadRequest, "offer has no video section that can receive the stream's H264 video")
			}
			fmtp, err := chooseH264(off.video, c.SPS)
			if err != nil {
				return err
			}
			cap = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: fmtp}
		case media.Opus, media.AAC:
			if !off.hasAudio || !hasOpus(off.audio) {
				s.log.Info("offer cannot receive Opus audio; sending video only", "offered", describeCodecs(off.audio))
				continue
			}
			if _, ok := c.(media.AAC); ok {
				if !transcode.CanTranscodeAudio() {
					s.log.Warn("AAC audio not sent: this build cannot transcode (built without cgo/FFmpeg)")
					continue
				}
				ot.proc = "opus"
				bitrate := 0
				if f := s.h.cfg.OpusBitrate; f != nil {
					bitrate = f(s.stream.Path())
				}
				ot.newProc = func() media.Processor { return transcode.NewAACToOpus(t, bitrate) }
			}
			cap = webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}
		default:
			s.log.Info("track not sent: WHEP cannot carry it yet", "track", t.String())
			continue
		}
		ot.rate = int(cap.ClockRate)
		kind := "video"
		if !t.IsVideo() {
			kind = "audio"
		}
		// One msid stream for all tracks so the browser lip-syncs them.
		local, err := webrtc.NewTrackLocalStaticRTP(cap, kind, "bridge")
		if err != nil {
			return fmt.Errorf("new %s track: %w", kind, err)
		}
		sender, err := s.pc.AddTrack(local)
		if err != nil {
			return fmt.Errorf("add %s track: %w", kind, err)
		}
		for _, tr := range s.pc.GetTransceivers() {
			if tr.Sender() == sender {
				// Answer with exactly the chosen format: the track can only
				// send that one.
				if err := tr.SetCodecPreferences([]webrtc.RTPCodecParameters{{RTPCodecCapability: cap}}); err != nil {
					return rtc.Errorf(http.StatusBadRequest, "offer cannot receive %s: %v", cap.MimeType, err)
				}
			}
		}
		if enc := sender.GetParameters().Encodings; len(enc) > 0 {
			ot.report.SSRC = uint32(enc[0].SSRC)
		}
		ot.local = local
		s.tracks = append(s.tracks, ot)
	}
	if len(s.tracks) == 0 {
		return rtc.Errorf(http.StatusBadRequest, "stream %q has no track this offer can receive", s.stream.Path())
	}
	return nil
}

// drainRTCP reads RTCP so the interceptors (NACK responder, reports) see it;
// it ends when the PeerConnection closes.
func drainRTCP(sender *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := sender.Read(buf); err != nil {
			return
		}
	}
}

// run waits for the connection, then forwards the stream until the session
// or the stream ends, and cleans up.
func (s *session) run() {
	defer close(s.done)
	reason := s.forward()
	_ = s.pc.Close()
	s.h.cfg.Sessions.Remove(s.id)
	s.log.Info("viewer session ended", "reason", reason, "duration", time.Since(s.started).Round(time.Millisecond).String())
}

func (s *session) forward() string {
	timer := time.NewTimer(s.h.cfg.ConnectTimeout)
	defer timer.Stop()
	select {
	case <-s.connected:
	case <-s.ctx.Done():
		return context.Cause(s.ctx).Error()
	case <-s.stream.Done():
		return "stream ended"
	case <-timer.C:
		return fmt.Sprintf("ICE/DTLS did not complete within %v", s.h.cfg.ConnectTimeout)
	}
	reader, err := s.stream.NewReader(media.ReaderOptions{Name: "whep " + s.id[:8]})
	if err != nil {
		return err.Error()
	}
	defer reader.Close()
	// Start at a keyframe: a decoder can do nothing with what comes before.
	reader.SkipToKeyframe()
	byTrack := make(map[int]*outTrack, len(s.tracks))
	for _, ot := range s.tracks {
		defer s.stream.AddProcessor(ot.src.ID, ot.proc, ot.newProc)()
		byTrack[ot.src.ID] = ot
	}
	s.log.Info("viewer connected")
	var sent uint64
	defer func() { s.log.Debug("viewer stats", "packets", sent, "dropped_units", reader.Dropped()) }()
	for {
		u, err := reader.Read(s.ctx)
		if err != nil {
			if errors.Is(err, media.ErrStreamEnded) {
				return "stream ended"
			}
			if c := context.Cause(s.ctx); c != nil {
				return c.Error()
			}
			return err.Error()
		}
		ot := byTrack[u.Track.ID]
		if ot == nil || u.RTP == nil {
			continue // a track this viewer doesn't take, or a unit from before the processor started
		}
		unitTS := uint32(transcode.ClockTicks(u.PTS, ot.rate))
		for _, p := range u.RTP {
			out := rtp.Packet{Header: p.Header, Payload: p.Payload}
			out.SequenceNumber = ot.seq
			out.Timestamp = p.Timestamp + ot.tsOffset
			ot.seq++
			if err := ot.local.WriteRTP(&out); err != nil {
				return fmt.Sprintf("write: %v", err)
			}
			sent++
			// The packet's own place on the media clock: its timestamp
			// relative to the unit's (they differ for transcoded audio).
			pts := u.PTS + time.Duration(int32(p.Timestamp-unitTS))*time.Second/time.Duration(ot.rate)
			ot.report.OnPacket(out.Timestamp, s.stream.Origin().Add(pts), len(out.Payload))
		}
		if sr := ot.report.Report(time.Now()); sr != nil {
			if err := s.pc.WriteRTCP([]rtcp.Packet{sr}); err != nil {
				return fmt.Sprintf("write RTCP: %v", err)
			}
		}
	}
}

// Close ends the session and waits for its resources to be released.
func (s *session) Close(reason string) {
	s.cancel(errors.New(reason))
	<-s.done
}
