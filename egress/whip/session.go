package whip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
)

// outTrack is one hub track sent to the target.
type outTrack struct {
	// OutTrack sends the units, rewritten as for a WHEP viewer, and reads
	// the target's RTCP (see rtc.OutTrack).
	*rtc.OutTrack
	src *media.Track
	tr  *webrtc.RTPTransceiver
	mid string // set once the offer is made
	// proc names the hub processor that fills the units' RTP packets,
	// newProc makes it for the track the hub gives it (see
	// webrtccodec.Send).
	proc    webrtccodec.Processor
	newProc func(*media.Track) media.Processor
	// handle is the hub's processor once stream added it: a keyframe
	// request goes to it first (a re-encoder makes an IDR).
	handle atomic.Pointer[media.ProcessorHandle]
}

// session is one WHIP session: a PeerConnection sending one stream to the
// target, from the offer to the end of the forward.
type session struct {
	f   *Forwarder
	a   *reconnect.Attempt
	st  *media.Stream
	log *slog.Logger // the attempt's, then with the remote session
	// notes is log for what every attempt finds again (a track not
	// forwarded, a target without Location): at INFO or WARN once
	// (reconnect.Attempt.Notes).
	notes  *slog.Logger
	pc     *webrtc.PeerConnection
	tracks []*outTrack

	ctx       context.Context
	cancel    context.CancelCauseFunc
	connected chan struct{}
	connOnce  sync.Once
	wg        sync.WaitGroup // the RTCP readers

	// reader is set once media flows; the RTCP readers ask it for
	// keyframes.
	reader atomic.Pointer[media.Reader]

	mu     sync.Mutex
	lost   *time.Timer // guarded by mu: runs while the connection is disconnected
	closed bool        // guarded by mu
}

// panicComponent names the forward's session in panic reports
// (internal/panics, bridge_panics_total).
const panicComponent = "whip forward"

// errPanicked is the failure of a session that a panic ended.
var errPanicked = errors.New("internal error: a panic ended the session (see the error log)")

// forward makes one WHIP session for st and sends the stream until it
// fails, the stream ends or ctx ends; the attempt's session starts once
// media flows. Every failure after the POST, and the end, DELETE the
// remote session. A panic on the way ends this session like a failure
// (closed, DELETEd by the deferred calls); Run then starts a new one after
// the backoff.
func (f *Forwarder) forward(ctx context.Context, st *media.Stream, a *reconnect.Attempt) (err error) {
	defer panics.Recover(panicComponent, a.Log, func() { err = errPanicked })
	s, err := newSession(ctx, f, st, a)
	if err != nil {
		return err
	}
	var remote *rtc.RemoteSession
	defer func() {
		// DELETE first: the server then ends the session as asked, rather
		// than after seeing our PeerConnection close.
		defer s.close()
		if remote == nil {
			return
		}
		if err := f.client.Delete(context.WithoutCancel(ctx), remote); err != nil {
			s.notes.Warn("cannot end the remote session", "err", err)
		} else if remote.URL != nil {
			s.log.Debug("remote session ended")
		}
	}()
	offer, err := s.offer()
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, rtc.PostTimeout)
	answer, remote, err := f.client.Post(pctx, offer)
	cancel()
	if err != nil {
		return err
	}
	if remote.URL == nil {
		s.notes.Warn("the endpoint answered without a Location: its session cannot be ended with DELETE")
	}
	// remote_session, not session: that key is the bridge's own id of
	// the forward (the admin API's).
	s.log = s.log.With("remote_session", remoteName(remote))
	s.notes = s.notes.With("remote_session", remoteName(remote))
	s.log.Debug("remote session created", "etag", remote.ETag, "accepts_patch", remote.Trickle, "ice_servers", len(f.client.LastICEServers()))
	if err := s.accept(answer); err != nil {
		return err
	}
	if err := s.waitConnected(f.connectTimeout); err != nil {
		return err
	}
	return s.stream()
}

// remoteName identifies a remote session in logs: the last path segment of
// its resource URL, shortened (it may be the session's only secret).
func remoteName(rs *rtc.RemoteSession) string {
	if rs == nil || rs.URL == nil {
		return "?"
	}
	p := strings.TrimRight(rs.URL.Path, "/")
	p = p[strings.LastIndexByte(p, '/')+1:]
	if len(p) > 8 {
		p = p[:8]
	}
	return p
}

func newSession(ctx context.Context, f *Forwarder, st *media.Stream, a *reconnect.Attempt) (*session, error) {
	pc, err := f.cfg.Engine.NewOutboundSenderPeerConnection()
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	s := &session{f: f, a: a, st: st, log: a.Log, notes: a.Notes(), pc: pc, connected: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	if extra := f.client.LastICEServers(); len(extra) > 0 {
		c := pc.GetConfiguration()
		c.ICEServers = append(slices.Clone(c.ICEServers), extra...)
		if err := pc.SetConfiguration(c); err != nil {
			s.notes.Warn("the ICE servers the endpoint advertised are not used", "err", err)
		}
	}
	if err := s.addTracks(); err != nil {
		s.close()
		return nil, err
	}
	pc.OnConnectionStateChange(s.onState)
	return s, nil
}

// addTracks adds a sendonly transceiver for the stream's first video track
// and its first audio track, each offering exactly the codec sent, as the
// codec table says (webrtccodec.Plan, with the route's B-frame policy).
func (s *session) addTracks() error {
	var video, audio bool
	opts := webrtccodec.Options{BFrames: s.f.cfg.BFrames, OpusBitrate: s.f.cfg.OpusBitrate, Reencoders: s.f.cfg.Reencoders,
		Log: s.notes, Refusals: &s.f.reencodeRefusals}
	for _, t := range s.st.Tracks() {
		kind, err := webrtccodec.KindOf(t)
		if err != nil {
			s.notes.Info("track not forwarded", "track", t.String(), "err", err)
			continue
		}
		if (kind == webrtc.RTPCodecTypeVideo && video) || (kind == webrtc.RTPCodecTypeAudio && audio) {
			s.notes.Info("track not forwarded: one "+kind.String()+" track is sent", "track", t.String())
			continue
		}
		send, err := webrtccodec.Plan(s.st, t, opts)
		if errors.Is(err, webrtccodec.ErrCannotTranscode) {
			s.notes.Warn("AAC audio not forwarded: this build cannot transcode it to Opus (built without cgo/FFmpeg)")
			continue
		}
		if err != nil {
			return err
		}
		send.BFrames.Log(s.notes)
		if kind == webrtc.RTPCodecTypeVideo {
			video = true
		} else {
			audio = true
		}
		ot := &outTrack{src: t, proc: send.Processor, newProc: send.NewProcessor}
		cap := send.Capability()
		local, err := webrtc.NewTrackLocalStaticRTP(cap, kind.String(), "bridge")
		if err != nil {
			return fmt.Errorf("new %s track: %w", kind, err)
		}
		tr, err := s.pc.AddTransceiverFromTrack(local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			return fmt.Errorf("add %s track: %w", kind, err)
		}
		// Offer exactly the format sent: a target answering with another
		// (VP8, another H.264 profile) could not be sent to.
		if err := tr.SetCodecPreferences([]webrtc.RTPCodecParameters{{RTPCodecCapability: cap}}); err != nil {
			return fmt.Errorf("offer %s: %w", cap.MimeType, err)
		}
		ot.OutTrack = rtc.NewOutTrack(s.pc, s.st, local, tr.Sender())
		ot.tr = tr
		s.tracks = append(s.tracks, ot)
	}
	if len(s.tracks) == 0 {
		return fmt.Errorf("stream has no track WHIP forwarding can send (tracks: %s)", describeTracks(s.st.Tracks()))
	}
	return nil
}

func describeTracks(tracks []*media.Track) string {
	names := make([]string, len(tracks))
	for i, t := range tracks {
		names[i] = t.Codec.Name()
	}
	return "[" + strings.Join(names, " ") + "]"
}

// offer makes the offer and waits for every candidate to be in it.
func (s *session) offer() (string, error) {
	offer, err := rtc.Offer(s.ctx, s.pc, s.f.gather, s.notes)
	if err != nil {
		return "", err
	}
	for _, ot := range s.tracks {
		ot.mid = ot.tr.Mid()
	}
	return offer, nil
}

// accept applies the answer and keeps the tracks the target accepted.
func (s *session) accept(answer string) error {
	if err := s.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		return fmt.Errorf("the endpoint's answer cannot be used: %w", err)
	}
	receiving, err := receivingMids(answer)
	if err != nil {
		return fmt.Errorf("the endpoint's answer cannot be used: %w", err)
	}
	kept := s.tracks[:0]
	for _, ot := range s.tracks {
		if receiving[ot.mid] {
			kept = append(kept, ot)
		} else {
			s.notes.Warn("track not forwarded: the endpoint refused it", "track", ot.src.String())
		}
	}
	clear(s.tracks[len(kept):])
	s.tracks = kept
	if len(s.tracks) == 0 {
		return errors.New("the endpoint's answer accepts none of the offered tracks")
	}
	for _, ot := range s.tracks {
		s.wg.Add(1)
		go s.readRTCP(ot)
	}
	return nil
}

// receivingMids returns the mids of the answer's media sections that
// receive: not rejected (port 0) and recvonly or sendrecv (the default).
func receivingMids(answer string) (map[string]bool, error) {
	return rtc.AnswerMids(answer, "recvonly")
}

func (s *session) onState(st webrtc.PeerConnectionState) {
	defer panics.Recover(panicComponent, s.log, func() { s.cancel(errPanicked) })
	switch st {
	case webrtc.PeerConnectionStateConnected:
		s.connOnce.Do(func() { close(s.connected) })
		s.mu.Lock()
		if s.lost != nil {
			s.lost.Stop()
			s.lost = nil
			s.log.Info("connection to the endpoint is back")
		}
		s.mu.Unlock()
	case webrtc.PeerConnectionStateDisconnected:
		s.mu.Lock()
		if !s.closed && s.lost == nil {
			grace := s.f.disconnectGrace
			s.lost = time.AfterFunc(grace, func() {
				defer panics.Recover(panicComponent, s.log, func() { s.cancel(errPanicked) })
				s.cancel(fmt.Errorf("connection lost: no answer from the endpoint's ICE agent for %v", grace))
			})
			s.log.Info("connection to the endpoint interrupted", "grace", grace.String())
		}
		s.mu.Unlock()
	case webrtc.PeerConnectionStateFailed:
		s.cancel(errors.New("connection failed (ICE or DTLS)"))
	case webrtc.PeerConnectionStateClosed:
		s.cancel(errors.New("connection closed"))
	}
}

func (s *session) waitConnected(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-s.connected:
		return nil
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	case <-t.C:
		return fmt.Errorf("ICE/DTLS did not complete within %v", timeout)
	}
}

// readRTCP reads the RTCP the target sends about ot, so the interceptors
// (NACK responder, reports) see it, and turns its PLI and FIR into
// keyframe requests; it ends when the PeerConnection closes.
func (s *session) readRTCP(ot *outTrack) {
	defer s.wg.Done()
	defer panics.Recover(panicComponent, s.log, func() { s.cancel(errPanicked) })
	ot.ReadRTCP(func() {
		// A forced IDR from the shared re-encoder is cheaper for the
		// target than a replay of the cached GOP. Otherwise, before
		// media flows there is nothing to ask: the first video unit
		// sent is a keyframe.
		if !ot.src.IsVideo() || ot.handle.Load().RequestKeyframe() {
			return
		}
		if r := s.reader.Load(); r != nil {
			r.RequestKeyframe(ot.src.ID)
		}
	})
}

// stream sends the stream from its last keyframe on until the session or
// the stream ends; the attempt's session starts when the reader is
// attached, and its end line gets the RTP payload bytes and packets sent.
func (s *session) stream() error {
	// Processors first: made now, they run over the cached GOP too, so
	// the reader created next gets it packetized. A publisher with other
	// tracks may have taken the stream over since the offer was made: the
	// hub then refuses a track that is gone.
	byTrack := make(map[int]*outTrack, len(s.tracks))
	for _, ot := range s.tracks {
		h, err := s.st.AddProcessor(ot.src, string(ot.proc), ot.newProc)
		defer h.Release()
		if err != nil {
			return s.republished()
		}
		ot.handle.Store(h)
		byTrack[ot.src.ID] = ot
	}
	reader, err := s.st.NewReader(media.ReaderOptions{Name: "whip forward " + s.f.client.Redacted(), StartAtKeyframe: true})
	if err != nil {
		return err
	}
	defer reader.Close()
	// Once the reader is attached, a later takeover with other tracks
	// ends it; one before is seen here.
	for _, ot := range s.tracks {
		if now := s.st.Track(ot.src.ID); now == nil || now.Codec.Name() != ot.src.Codec.Name() {
			return s.republished()
		}
	}
	s.reader.Store(reader)
	s.a.Started("tracks", len(s.tracks))
	if s.f.onStreaming != nil {
		s.f.onStreaming()
	}
	defer func() {
		var st rtc.SendStats
		for _, ot := range s.tracks {
			st.Add(ot.Stats())
		}
		s.a.Moved(st.Bytes, st.Packets, "cached_units", st.CachedUnits, "dropped_units", reader.Dropped(), "keyframe_requests", st.KeyframeRequests)
	}()
	for {
		u, err := reader.Read(s.ctx)
		if err != nil {
			if c := context.Cause(s.ctx); c != nil && !errors.Is(err, media.ErrStreamEnded) && !errors.Is(err, media.ErrIncompatibleRepublish) {
				err = c
			}
			return err
		}
		cached := reader.Cached()
		ot := byTrack[u.Track.ID]
		if ot == nil || len(u.RTP) == 0 {
			continue // a track not sent, or nothing to send (a processor failed)
		}
		if err := ot.Send(u, cached); err != nil {
			return err
		}
	}
}

// republished is the failure of a session whose tracks the stream no longer
// has: Run starts a new session, offering the new tracks.
func (s *session) republished() error {
	return fmt.Errorf("%w: the stream was republished with other tracks (%s) since the offer was made", media.ErrIncompatibleRepublish, describeTracks(s.st.Tracks()))
}

// close ends the PeerConnection and waits for the session's goroutines.
func (s *session) close() {
	s.mu.Lock()
	s.closed = true
	if s.lost != nil {
		s.lost.Stop()
		s.lost = nil
	}
	s.mu.Unlock()
	s.cancel(errors.New("session closed"))
	_ = s.pc.Close()
	s.wg.Wait()
}
