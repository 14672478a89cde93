package whep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
)

// gatherTimeout bounds ICE gathering; with the UDP mux it takes
// milliseconds, STUN servers can make it longer.
const gatherTimeout = 5 * time.Second

// outTrack is one hub track sent to one viewer.
type outTrack struct {
	// OutTrack sends the units, rewritten for the viewer, and reads the
	// viewer's RTCP (see rtc.OutTrack).
	*rtc.OutTrack
	src *media.Track
	// proc names the hub processor that fills the units' RTP packets for
	// this track, and newProc makes it for the track the hub gives it
	// (see webrtccodec.Send).
	proc    webrtccodec.Processor
	newProc func(*media.Track) media.Processor
	// handle is the hub's processor once forward added it: a keyframe
	// request goes to it first (a re-encoder makes an IDR).
	handle atomic.Pointer[media.ProcessorHandle]
}

// session is one viewer. Its run goroutine owns the reader and the
// outTracks' counters. The embedded ICESession makes it an rtc.Session
// (entity-tag, trickle ICE, ICE restart).
type session struct {
	*rtc.ICESession
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
	// peer is the viewer's address; preview marks the dashboard's muted
	// player (see servePost). Both set before the session is in the
	// sessions table or runs.
	peer    string
	preview bool
	// reader is set by run once it reads; the RTCP goroutines use it to
	// ask for keyframes, the pump to read.
	reader atomic.Pointer[media.Reader]
	// byTrack maps hub track IDs to what the viewer takes; set before the
	// pump is given the session.
	byTrack map[int]*outTrack
	// sendMu is held by the pump while it sends for the session; stopped
	// (guarded by it) says it must not send any more.
	sendMu  sync.Mutex
	stopped bool
	// sent and dropped are the viewer's totals, set by forward once the
	// pump has let go of it, for the end line.
	sent    rtc.SendStats
	dropped uint64
}

// startSession makes a viewer's session: it answers off, or, when off is
// nil, offers every track of the stream it can send (WHEP's server-offer
// mode) and waits for the viewer's answer (rtc.ICESession.SetAnswer). It
// returns the session and its local description.
func startSession(h *Handler, stream *media.Stream, off *offer, rawOffer, id string, log *slog.Logger) (*session, string, error) {
	pc, err := h.cfg.Engine.NewSenderPeerConnection()
	if err != nil {
		return nil, "", fmt.Errorf("new peer connection: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			_ = pc.Close()
		}
	}()
	if off != nil {
		if err := h.cfg.Engine.SetRemoteOffer(pc, receiveOnly(rawOffer), log); err != nil {
			return nil, "", err
		}
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

	if off == nil {
		if _, err := rtc.Offer(context.Background(), pc, gatherTimeout, log); err != nil {
			return nil, "", err
		}
		s.ICESession, err = h.cfg.Engine.NewOfferSession(pc, log)
	} else {
		if err := rtc.Answer(pc, gatherTimeout); err != nil {
			return nil, "", err
		}
		s.ICESession, err = h.cfg.Engine.NewICESession(pc, log)
	}
	if err != nil {
		return nil, "", err
	}

	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		defer panics.Recover(panicComponent, log, func() { s.cancel(errPanicked) })
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() { close(s.connected) })
			s.h.cfg.Sessions.Connected(s.id)
		case webrtc.PeerConnectionStateFailed:
			s.cancel(errors.New("connection failed (ICE or DTLS)"))
		case webrtc.PeerConnectionStateClosed:
			s.cancel(errors.New("connection closed"))
		}
	})
	for _, ot := range s.tracks {
		go s.readRTCP(ot)
	}
	ok = true
	log.Info("viewer session created", "tracks", len(s.tracks), "bridge_offers", off == nil)
	return s, s.Answer(), nil
}

// addTracks attaches one local track per hub track the offer can receive,
// sent as the codec table says (webrtccodec.Plan); with no offer (nil),
// one sendonly section per hub track the table can send, offering the
// format sent.
func (s *session) addTracks(off *offer) error {
	for _, t := range s.stream.Tracks() {
		kind, err := webrtccodec.KindOf(t)
		if err != nil {
			s.log.Info("track not sent: WHEP cannot carry it yet", "track", t.String(), "err", err)
			continue
		}
		var offered []webrtccodec.Offered
		switch {
		case off == nil:
		case kind == webrtc.RTPCodecTypeVideo && !off.hasVideo:
			return rtc.Errorf(http.StatusBadRequest, "offer has no video section that can receive the stream's %s video", t.Codec.Name())
		case kind == webrtc.RTPCodecTypeVideo:
			offered = off.video
		case !off.hasAudio || !webrtccodec.HasOpus(off.audio):
			s.log.Info("offer cannot receive Opus audio; sending video only", "offered", describeCodecs(off.audio))
			continue
		default:
			offered = off.audio
		}
		send, err := webrtccodec.Plan(s.stream, t, s.sendOptions())
		if errors.Is(err, webrtccodec.ErrCannotTranscode) {
			s.log.Warn("AAC audio not sent: this build cannot transcode (built without cgo/FFmpeg)")
			continue
		}
		if err != nil {
			return err
		}
		cap := send.Capability()
		if off != nil {
			if cap, err = send.Answer(offered); err != nil {
				return err
			}
		}
		s.logBFrames(send.BFrames)
		ot := &outTrack{src: t, proc: send.Processor, newProc: send.NewProcessor}
		// One msid stream for all tracks so the browser lip-syncs them.
		local, err := webrtc.NewTrackLocalStaticRTP(cap, kind.String(), "bridge")
		if err != nil {
			return fmt.Errorf("new %s track: %w", kind, err)
		}
		sender, err := s.addTrack(local, off == nil)
		if err != nil {
			return err
		}
		for _, tr := range s.pc.GetTransceivers() {
			if tr.Sender() == sender {
				// Answer or offer exactly the chosen format: the track can
				// only send that one.
				if err := tr.SetCodecPreferences([]webrtc.RTPCodecParameters{{RTPCodecCapability: cap}}); err != nil {
					return rtc.Errorf(http.StatusBadRequest, "offer cannot receive %s: %v", cap.MimeType, err)
				}
			}
		}
		ot.OutTrack = rtc.NewOutTrack(s.pc, s.stream, local, sender)
		ot.SetDelayObserver(s.h.cfg.SendDelay)
		ot.SetRetransmitPercent(s.h.cfg.RetransmitPercent)
		s.tracks = append(s.tracks, ot)
	}
	if len(s.tracks) == 0 {
		return rtc.Errorf(http.StatusBadRequest, "stream %q has no track this offer can receive", s.stream.Path())
	}
	return nil
}

// addTrack adds local to the PeerConnection: to the offer's section of its
// kind, or, when the bridge offers, in a sendonly section of its own (a
// WHEP session only sends).
func (s *session) addTrack(local webrtc.TrackLocal, offering bool) (*webrtc.RTPSender, error) {
	if !offering {
		sender, err := s.pc.AddTrack(local)
		if err != nil {
			return nil, fmt.Errorf("add %s track: %w", local.Kind(), err)
		}
		return sender, nil
	}
	tr, err := s.pc.AddTransceiverFromTrack(local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
	if err != nil {
		return nil, fmt.Errorf("add %s track: %w", local.Kind(), err)
	}
	return tr.Sender(), nil
}

// negotiated reports whether tracks still have the codecs the session was
// negotiated for, under the same IDs.
func (s *session) negotiated(tracks []*media.Track) bool {
	for _, ot := range s.tracks {
		id := ot.src.ID
		if id >= len(tracks) || tracks[id].Codec.Name() != ot.src.Codec.Name() {
			return false
		}
	}
	return true
}

func describeTracks(tracks []*media.Track) string {
	names := make([]string, len(tracks))
	for i, t := range tracks {
		names[i] = t.Codec.Name()
	}
	return strings.Join(names, " ")
}

// sendOptions are the route's options for sending the stream to viewers.
func (s *session) sendOptions() webrtccodec.Options {
	o := webrtccodec.Options{Reencoders: s.h.cfg.Reencoders, Log: s.log, Refusals: &s.h.reencodeRefusals}
	if f := s.h.cfg.BFrames; f != nil {
		o.BFrames = webrtccodec.BFramePolicy(f(s.stream.Path()))
	}
	if f := s.h.cfg.OpusBitrate; f != nil {
		o.OpusBitrate = f(s.stream.Path())
	}
	return o
}

// logBFrames logs what was done about the stream's B-frames, once per
// stream, not once per viewer.
func (s *session) logBFrames(d webrtccodec.BFramesDecision) {
	if d.Reason == "" {
		return
	}
	if _, logged := s.h.bframesLogged.LoadOrStore(s.stream, true); logged {
		return
	}
	st := s.stream
	panics.Go(panicComponent, s.log, func() { <-st.Done(); s.h.bframesLogged.Delete(st) })
	d.Log(s.log)
}

// readRTCP reads the RTCP the viewer sends about ot, so the interceptors
// (NACK responder, reports) see it, and passes its keyframe requests (PLI,
// FIR) on to the hub; it ends when the PeerConnection closes.
func (s *session) readRTCP(ot *outTrack) {
	defer panics.Recover(panicComponent, s.log, func() { s.cancel(errPanicked) })
	ot.ReadRTCP(func() { s.requestKeyframe(ot) })
}

// requestKeyframe asks the hub for a keyframe of ot's track: forwarded to
// an RTP publisher (merged with the other viewers', at most one per
// media.KeyframeRequestInterval), or, for RTMP and SRT sources, which
// cannot be asked, answered from the GOP cache for this viewer alone
// (media.Reader.RequestKeyframe: at most once per GOP). Before the viewer
// reads, nothing is done: its first video unit is a keyframe anyway.
func (s *session) requestKeyframe(ot *outTrack) {
	if !ot.src.IsVideo() {
		return
	}
	// A forced IDR from the shared re-encoder is cheaper for the viewer
	// than a replay of the whole cached GOP.
	if ot.handle.Load().RequestKeyframe() {
		return
	}
	if r := s.reader.Load(); r != nil {
		r.RequestKeyframe(ot.src.ID)
	}
}

// panicComponent names the session's goroutines and callbacks in panic
// reports (internal/panics, bridge_panics_total).
const panicComponent = "whep session"

// errPanicked ends a session whose goroutine or callback panicked.
var errPanicked = errors.New("internal error: a panic ended the session (see the error log)")

// run waits for the connection, then forwards the stream until the session
// or the stream ends, and cleans up. A panic on the way ends this session
// alone (forward's deferred releases have run by then).
func (s *session) run() {
	defer close(s.done)
	defer panics.Recover(panicComponent, s.log, func() { s.end(errPanicked.Error()) })
	s.end(s.forward())
}

// end releases what the session holds outside forward and logs its end.
func (s *session) end(reason string) {
	s.cancel(errors.New(reason))
	_ = s.pc.Close()
	s.h.cfg.Sessions.Remove(s.id)
	st := s.sent
	sessionlog.End(s.log, "viewer session ended", s.started, st.Bytes, st.Packets, reason,
		"retransmits", st.Retransmits, "cached_units", st.CachedUnits, "dropped_units", s.dropped, "keyframe_requests", st.KeyframeRequests)
}

func (s *session) forward() string {
	timer := time.NewTimer(s.h.cfg.ConnectTimeout)
	defer timer.Stop()
	// A session that offered waits for the viewer's answer first; the
	// connect timeout starts again at it.
	select {
	case <-s.Answered():
		timer.Reset(s.h.cfg.ConnectTimeout)
	case <-s.ctx.Done():
		return context.Cause(s.ctx).Error()
	case <-s.stream.Done():
		return "stream ended"
	case <-timer.C:
		return fmt.Sprintf("no SDP answer to the offer within %v", s.h.cfg.ConnectTimeout)
	}
	select {
	case <-s.connected:
	case <-s.ctx.Done():
		return context.Cause(s.ctx).Error()
	case <-s.stream.Done():
		return "stream ended"
	case <-timer.C:
		return fmt.Sprintf("ICE/DTLS did not complete within %v", s.h.cfg.ConnectTimeout)
	}
	// Processors first: made now, they run over the cached GOP too, so
	// the reader created next gets it packetized. A publisher with other
	// tracks may have taken the stream over while ICE ran: the hub then
	// refuses a track that is gone.
	byTrack := make(map[int]*outTrack, len(s.tracks))
	for _, ot := range s.tracks {
		h, err := s.stream.AddProcessor(ot.src, string(ot.proc), ot.newProc)
		defer h.Release()
		if err != nil {
			return s.cannotContinue(s.stream.Tracks())
		}
		ot.handle.Store(h)
		byTrack[ot.src.ID] = ot
	}
	s.byTrack = byTrack
	// Start at the last keyframe, from the GOP cache: the viewer gets a
	// picture at once, whatever the source's GOP length. One of the
	// handler's pumps sends what the reader gets.
	p := s.h.pumps.pick()
	reader, err := s.stream.NewReader(media.ReaderOptions{Name: "whep " + rtc.LogID(s.id), StartAtKeyframe: true, Notify: p.notify, Uncounted: s.preview})
	if err != nil {
		return err.Error()
	}
	defer reader.Close()
	// A publisher with other codecs may have taken the stream over since
	// the offer was answered (later ones end the reader).
	if now := s.stream.Tracks(); !s.negotiated(now) {
		return s.cannotContinue(now)
	}
	s.reader.Store(reader)
	s.log.Debug("viewer connected")
	p.add(s)
	<-s.ctx.Done() // the pump, a DELETE, the connection or shutdown ends it
	p.remove(s)
	// The pump no longer sends for s: its counts are final (for end).
	for _, ot := range s.tracks {
		s.sent.Add(ot.Stats())
	}
	s.dropped = reader.Dropped()
	return context.Cause(s.ctx).Error()
}

// cannotContinue logs and returns why a viewer negotiated for other tracks
// than the stream's (now) ends.
func (s *session) cannotContinue(now []*media.Track) string {
	reason := fmt.Sprintf("the stream was republished with other tracks (%s) since the viewer's offer was answered", describeTracks(now))
	s.log.Warn("viewer cannot continue", "reason", reason)
	return reason
}

// Status reports the viewer to the admin API (rtc.Reporter): kind whep
// or preview, its transport's bytes, and the packets the viewer reported
// lost and those resent on its NACKs, over every track.
func (s *session) Status() access.Session {
	st := s.TransportStatus(s.id, s.peer, s.started)
	st.Kind, st.Stream = access.SessionWHEP, s.stream.Path()
	if s.preview {
		st.Kind = access.SessionPreview
	}
	for _, ot := range s.tracks {
		lost, resent := ot.Feedback()
		st.PacketsLost += lost
		st.PacketsRetransmitted += resent
	}
	st.HasPackets = len(s.tracks) > 0
	return st
}

// Close ends the session and waits for its resources to be released.
func (s *session) Close(reason string) {
	s.cancel(errors.New(reason))
	<-s.done
}
