package whip

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/ingest/rtpin"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/sessionlog"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
)

const (
	// gatherTimeout bounds ICE gathering; with the UDP mux it takes
	// milliseconds, STUN servers can make it longer.
	gatherTimeout = 5 * time.Second
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
	in      *rtpin.Receiver
	started time.Time
	peer    string // the publisher's address; set before the session is in the table

	// expectVideo and expectAudio say which tracks the answer accepted;
	// the stream is declared once those are ready (or after trackWait).
	expectVideo, expectAudio bool

	ctx    context.Context
	cancel context.CancelCauseFunc
	done   chan struct{} // closed when run has cleaned up
}

// Status reports the publisher to the admin API (rtc.Reporter).
func (s *session) Status() access.Session {
	st := s.TransportStatus(s.id, s.peer, s.started)
	st.Kind, st.Stream = access.SessionWHIP, s.pub.pub.Path()
	return st
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
	s.in = rtpin.New(rtpin.Config{PC: pc, Log: log, TrackWait: h.trackWait, Fail: s.cancel})
	s.in.SetPublication(pub)
	pc.OnTrack(s.in.OnTrack)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		defer panics.Recover(panicComponent, log, func() { s.cancel(errPanicked) })
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.log.Debug("publisher connected")
			s.h.cfg.Sessions.Connected(s.id)
		case webrtc.PeerConnectionStateFailed:
			s.cancel(errors.New("connection failed (ICE or DTLS)"))
		case webrtc.PeerConnectionStateClosed:
			s.cancel(errors.New("connection closed"))
		}
	})

	if err := h.cfg.Engine.SetRemoteOffer(pc, rawOffer, log); err != nil {
		return nil, "", err
	}
	if err := s.selectCodecs(off); err != nil {
		return nil, "", err
	}
	s.in.Expect(s.expectVideo, s.expectAudio)
	if err := rtc.Answer(pc, gatherTimeout); err != nil {
		return nil, "", err
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
			keep := webrtccodec.KeepCodecs(t.Receiver().GetParameters().Codecs)
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

// start runs the session. Call it once the session is in the sessions
// table, so that its removal at the end cannot come first.
func (s *session) start() {
	s.pub.onKeyframeRequest(s.in.RequestKeyframe)
	go s.run()
}

// Close ends the session and waits until it has released everything: the
// PeerConnection, its goroutines, the stream and its sessions table entry.
func (s *session) Close(reason string) {
	s.cancel(errors.New(reason))
	<-s.done
}

// panicComponent names the session's goroutine and callbacks in panic
// reports (internal/panics, bridge_panics_total).
const panicComponent = "whip session"

// errPanicked ends a session whose goroutine or callback panicked.
var errPanicked = errors.New("internal error: a panic ended the session (see the error log)")

// run waits for the end of the session and cleans up. A panic on the way
// ends this session alone.
func (s *session) run() {
	defer close(s.done)
	defer panics.Recover(panicComponent, s.log, func() { s.end(errPanicked.Error()) })
	s.end(s.wait())
}

// end releases everything the session holds and logs why it ended; safe
// to call again after a panic in the first call.
func (s *session) end(reason string) {
	s.cancel(errors.New(reason)) // a no-op unless it ended by itself (idle)
	s.in.Close()                 // closes the PeerConnection
	s.pub.close()
	s.h.cfg.Sessions.Remove(s.id)
	st := s.in.Stats()
	sessionlog.End(s.log, "publish ended", s.started, st.Bytes, st.Packets, reason, st.LogAttrs()...)
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
			if idle := s.in.Idle(now); idle >= s.h.idleTimeout {
				return fmt.Sprintf("no media for %v", idle.Round(time.Second))
			}
		}
	}
}
