package whep

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/ingest/rtpin"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/webrtccodec"
)

// panicComponent names the pull session's callbacks in panic reports and
// in bridge_panics_total.
const panicComponent = "whep pull"

// errPanicked is the failure of a session that a panic ended; the puller
// retries as after any other failure.
var errPanicked = errors.New("internal error: a panic ended the session (see the error log)")

// session is one WHEP session: a PeerConnection whose received tracks are
// published at the puller's path. Each received track has a goroutine
// (started by pion's OnTrack) that reads, reassembles and writes.
type session struct {
	p   *Puller
	a   *reconnect.Attempt
	log *slog.Logger // the attempt's
	// notes is log for what every attempt finds again (a server without
	// Location, a track that never comes): at INFO or WARN once
	// (reconnect.Attempt.Notes).
	notes *slog.Logger
	pc    *webrtc.PeerConnection
	in    *rtpin.Receiver

	ctx       context.Context
	cancel    context.CancelCauseFunc
	connected chan struct{}
	connOnce  sync.Once

	videoMid, audioMid string             // of our transceivers, once the offer is made
	pub                *media.Publication // set once the server has answered
}

// pull makes one WHEP session and publishes what it receives until it
// fails or ctx ends; its session starts once connected. Every failure
// after the POST, and the end, DELETE the remote session.
func (p *Puller) pull(ctx context.Context, a *reconnect.Attempt) error {
	s, err := newSession(ctx, p, a)
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
		if err := p.client.Delete(context.WithoutCancel(ctx), remote); err != nil {
			s.notes.Warn("cannot end the remote session", "err", err)
		}
	}()
	offer, err := s.offer()
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, rtc.PostTimeout)
	answer, remote, err := p.client.Post(pctx, offer)
	cancel()
	if err != nil {
		return err
	}
	if remote.URL == nil {
		s.notes.Warn("the server answered without a Location: its session cannot be ended with DELETE")
	}
	s.log.Debug("remote session created", "etag", remote.ETag, "accepts_patch", remote.Trickle, "ice_servers", len(p.client.LastICEServers()))
	// The path is claimed once the server has answered, so that while it
	// is unreachable the stream's readers just wait (the grace period)
	// rather than see a publisher come and go at every attempt.
	pub, err := p.cfg.Registry.Publish(p.cfg.Path, "whep pull "+p.client.Redacted())
	if err != nil {
		return err
	}
	pub.SetKind(access.KindWHEPPull)
	s.setPublication(pub)
	if err := s.accept(answer); err != nil {
		return err
	}
	t := time.NewTimer(p.connectTimeout)
	defer t.Stop()
	select {
	case <-s.connected:
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	case <-t.C:
		return fmt.Errorf("ICE/DTLS did not complete within %v", p.connectTimeout)
	}
	video, audio := s.in.Expected()
	a.Started("video", video, "audio", audio)
	if p.onConnected != nil {
		p.onConnected()
	}
	return s.wait()
}

func newSession(ctx context.Context, p *Puller, a *reconnect.Attempt) (*session, error) {
	pc, err := p.cfg.Engine.NewOutboundPeerConnection()
	if err != nil {
		return nil, fmt.Errorf("new peer connection: %w", err)
	}
	s := &session{p: p, a: a, log: a.Log, notes: a.Notes(), pc: pc, connected: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancelCause(ctx)
	s.in = rtpin.New(rtpin.Config{PC: pc, Log: s.notes, TrackWait: p.trackWait, Fail: s.cancel})
	if extra := p.client.LastICEServers(); len(extra) > 0 {
		c := pc.GetConfiguration()
		c.ICEServers = append(slices.Clone(c.ICEServers), extra...)
		if err := pc.SetConfiguration(c); err != nil {
			s.notes.Warn("the ICE servers the server advertised are not used", "err", err)
		}
	}
	for _, kind := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		tr, err := pc.AddTransceiverFromKind(kind, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly})
		if err == nil {
			// Offer only what the hub can carry, so the server cannot
			// pick VP8 or AV1.
			err = tr.SetCodecPreferences(webrtccodec.KeepCodecs(tr.Receiver().GetParameters().Codecs))
		}
		if err != nil {
			_ = pc.Close()
			return nil, fmt.Errorf("add %s transceiver: %w", kind, err)
		}
	}
	pc.OnTrack(s.in.OnTrack)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		defer panics.Recover(panicComponent, s.log, func() { s.cancel(errPanicked) })
		switch st {
		case webrtc.PeerConnectionStateConnected:
			s.connOnce.Do(func() {
				s.in.ResetIdle()
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
	s.pub = pub
	s.in.SetPublication(pub)
	pub.OnKeyframeRequest(func(int) { s.in.RequestKeyframe() })
}

// offer makes the offer and waits for every candidate to be in it.
func (s *session) offer() (string, error) {
	offer, err := rtc.Offer(s.ctx, s.pc, gatherTimeout, s.notes)
	if err != nil {
		return "", err
	}
	for _, tr := range s.pc.GetTransceivers() {
		if tr.Kind() == webrtc.RTPCodecTypeVideo {
			s.videoMid = tr.Mid()
		} else {
			s.audioMid = tr.Mid()
		}
	}
	return offer, nil
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
	video, audio := sending[s.videoMid], sending[s.audioMid]
	s.in.Expect(video, audio)
	if !video && !audio {
		return errors.New("the server's answer sends neither H264 video nor Opus audio")
	}
	return nil
}

// sendingMids returns the mids of the answer's media sections that send:
// not rejected (port 0) and sendonly or sendrecv (the default).
func sendingMids(answer string) (map[string]bool, error) {
	return rtc.AnswerMids(answer, "sendonly")
}

// wait returns why the session ends: a cancellation (ctx, connection
// failed or closed) or no media for idleTimeout.
func (s *session) wait() error {
	tick := time.NewTicker(max(s.p.idleTimeout/10, 10*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return context.Cause(s.ctx)
		case now := <-tick.C:
			if idle := s.in.Idle(now); idle >= s.p.idleTimeout {
				return fmt.Errorf("no media for %v", idle.Round(time.Millisecond))
			}
		}
	}
}

// close ends the PeerConnection, waits for the track goroutines, leaves
// the stream and tells the attempt what the session received (RTP payload
// bytes and packets), for its end line.
func (s *session) close() {
	s.cancel(errors.New("session closed"))
	s.in.Close() // closes the PeerConnection
	if s.pub != nil {
		s.pub.Close()
	}
	st := s.in.Stats()
	s.a.Moved(st.Bytes, st.Packets, st.LogAttrs()...)
}
