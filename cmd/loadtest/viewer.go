package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/interceptor/pkg/nack"
	"github.com/pion/interceptor/pkg/report"
	"github.com/pion/transport/v5"
	"github.com/pion/transport/v5/stdnet"
	"github.com/pion/webrtc/v4"
)

// viewerOptions are the settings every viewer shares.
type viewerOptions struct {
	url          string
	token        string
	api          *webrtc.API
	http         *http.Client
	setupTimeout time.Duration
	// steady is set while the run is at full load: delay samples are kept
	// only then.
	steady *atomic.Bool
}

// newViewerAPI builds the one pion API every viewer shares: H.264 and Opus
// only (nothing is decoded), NACK generation and receiver reports as the
// only interceptors, UDP4 host candidates, no mDNS.
func newViewerAPI(loopback bool, ips []net.IP, rcvbuf int) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	video := []struct {
		pt   webrtc.PayloadType
		fmtp string
	}{
		{102, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"},
		{104, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42001f"},
		{106, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=4d001f"},
		{108, "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=64001f"},
	}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	for _, v := range video {
		if err := m.RegisterCodec(webrtc.RTPCodecParameters{
			RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000, SDPFmtpLine: v.fmtp, RTCPFeedback: fb},
			PayloadType:        v.pt,
		}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{
		RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"},
		PayloadType:        111,
	}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	reg := &interceptor.Registry{}
	gen, err := nack.NewGeneratorInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(gen)
	rr, err := report.NewReceiverInterceptor()
	if err != nil {
		return nil, err
	}
	reg.Add(rr)

	se := webrtc.SettingEngine{}
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIncludeLoopbackCandidate(loopback)
	if rcvbuf > 0 {
		n, err := stdnet.NewNet()
		if err != nil {
			return nil, err
		}
		se.SetNet(&bigBufferNet{Net: n, rcvbuf: rcvbuf})
	}
	if len(ips) > 0 {
		se.SetIPFilter(func(ip net.IP) bool {
			for _, want := range ips {
				if want.Equal(ip) {
					return true
				}
			}
			return false
		})
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(reg), webrtc.WithSettingEngine(se)), nil
}

// bigBufferNet gives every ICE socket a larger kernel receive buffer, so a
// loadtest process that falls behind for a moment (a GC, a busy machine)
// does not drop packets the server sent in time.
type bigBufferNet struct {
	*stdnet.Net
	rcvbuf int
}

func (n *bigBufferNet) ListenUDP(network string, laddr *net.UDPAddr) (transport.UDPConn, error) {
	c, err := n.Net.ListenUDP(network, laddr)
	if err == nil {
		_ = c.SetReadBuffer(n.rcvbuf) // capped by net.core.rmem_max
	}
	return c, err
}

func (n *bigBufferNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.Net.ListenPacket(network, address)
	if err == nil {
		if u, ok := c.(interface{ SetReadBuffer(int) error }); ok {
			_ = u.SetReadBuffer(n.rcvbuf)
		}
	}
	return c, err
}

// viewer is one WHEP session and what it measured.
type viewer struct {
	id  int
	opt *viewerOptions

	postAt      time.Time
	connectedAt atomic.Int64 // Unix ns, 0 if never connected
	firstKeyAt  atomic.Int64 // Unix ns of the first complete keyframe
	err         error
	location    string

	bytes  atomic.Int64 // RTP bytes received, both tracks
	frames atomic.Int64 // video access units received (marker bit seen)

	mu     sync.Mutex
	tracks []*trackStats // guarded by mu until the readers are done
	closed bool          // guarded by mu: no more readers may start

	readers sync.WaitGroup
}

// delaySample is one frame's end-to-end delay and when it was measured.
type delaySample struct {
	at int64 // Unix ns
	ms float32
}

// trackStats is what one track's reader measured.
type trackStats struct {
	kind    string
	seq     seqCounter
	delays  []delaySample // from SEI stamps, during the steady phase
	frames  int64
	stamped int64 // frames with a stamp
	keys    int64
}

// run opens the session, receives until ctx ends, then closes it. ready is
// called once setup ended, successfully or not.
func (v *viewer) run(ctx context.Context, ready func()) {
	var readyOnce sync.Once
	setupDone := func() { readyOnce.Do(ready) }
	defer setupDone()

	pc, err := v.opt.api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		v.err = fmt.Errorf("new peer connection: %w", err)
		return
	}
	defer func() {
		v.mu.Lock()
		v.closed = true
		v.mu.Unlock()
		_ = pc.Close()
		v.readers.Wait()
	}()
	connected := make(chan struct{})
	failed := make(chan struct{})
	var stateOnce sync.Once
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		switch s {
		case webrtc.PeerConnectionStateConnected:
			stateOnce.Do(func() { v.connectedAt.Store(time.Now().UnixNano()); close(connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			stateOnce.Do(func() { close(failed) })
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, rcv *webrtc.RTPReceiver) {
		ts := &trackStats{kind: tr.Kind().String()}
		v.mu.Lock()
		defer v.mu.Unlock()
		if v.closed {
			return
		}
		v.tracks = append(v.tracks, ts)
		v.readers.Add(2)
		go v.readTrack(tr, ts)
		go v.drainRTCP(rcv)
	})
	for _, k := range []webrtc.RTPCodecType{webrtc.RTPCodecTypeVideo, webrtc.RTPCodecTypeAudio} {
		if _, err := pc.AddTransceiverFromKind(k, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionRecvonly}); err != nil {
			v.err = fmt.Errorf("add transceiver: %w", err)
			return
		}
	}
	offer, err := pc.CreateOffer(nil)
	if err != nil {
		v.err = fmt.Errorf("create offer: %w", err)
		return
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(offer); err != nil {
		v.err = fmt.Errorf("set local description: %w", err)
		return
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		v.err = errors.New("stopped while gathering candidates")
		return
	}

	v.postAt = time.Now()
	answer, err := v.post(ctx, pc.LocalDescription().SDP)
	if err != nil {
		v.err = err
		return
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answer}); err != nil {
		v.err = fmt.Errorf("answer rejected: %w", err)
		v.delete()
		return
	}
	timer := time.NewTimer(v.opt.setupTimeout)
	defer timer.Stop()
	select {
	case <-connected:
	case <-failed:
		v.err = errors.New("ICE/DTLS failed")
	case <-timer.C:
		v.err = fmt.Errorf("not connected within %v", v.opt.setupTimeout)
	case <-ctx.Done():
		v.err = errors.New("stopped while connecting")
	}
	setupDone()
	if v.err == nil {
		select {
		case <-ctx.Done():
		case <-failed:
			v.err = errors.New("connection lost")
		}
	}
	v.delete()
}

// post sends the offer and returns the answer.
func (v *viewer) post(ctx context.Context, offer string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, v.opt.url, strings.NewReader(offer))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/sdp")
	if v.opt.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.opt.token)
	}
	resp, err := v.opt.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("POST: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("POST: reading the answer: %w", err)
	}
	if resp.StatusCode != http.StatusCreated {
		return "", fmt.Errorf("POST: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	if loc := resp.Header.Get("Location"); loc != "" {
		if base, err := url.Parse(v.opt.url); err == nil {
			if u, err := base.Parse(loc); err == nil {
				v.location = u.String()
			}
		}
	}
	return string(body), nil
}

// delete ends the session on the server (best effort).
func (v *viewer) delete() {
	if v.location == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, v.location, nil)
	if err != nil {
		return
	}
	if v.opt.token != "" {
		req.Header.Set("Authorization", "Bearer "+v.opt.token)
	}
	if resp, err := v.opt.http.Do(req); err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// readTrack reads one track's RTP until the connection closes: sequence
// accounting for both kinds, access unit tracking for H.264. It allocates
// nothing per packet (one buffer, delay samples appended to a slice).
func (v *viewer) readTrack(tr *webrtc.TrackRemote, ts *trackStats) {
	defer v.readers.Done()
	isVideo := tr.Kind() == webrtc.RTPCodecTypeVideo
	var au auAssembler
	buf := make([]byte, 1500)
	ssrc, haveSSRC := uint32(0), false
	for {
		n, _, err := tr.Read(buf)
		if err != nil {
			return
		}
		h, ok := parseRTP(buf[:n])
		if !ok {
			continue
		}
		v.bytes.Add(int64(n))
		if !haveSSRC {
			ssrc, haveSSRC = h.SSRC, true
		} else if h.SSRC != ssrc {
			continue // RTX or a stray stream: not counted
		}
		_, fresh := ts.seq.push(h.Seq)
		if !isVideo || !fresh {
			continue
		}
		ev, done := au.push(h.Seq, h.TS, h.Marker, h.Payload)
		if !done {
			continue
		}
		ts.frames++
		v.frames.Add(1)
		if ev.Keyframe {
			ts.keys++
			if v.firstKeyAt.Load() == 0 {
				v.firstKeyAt.Store(time.Now().UnixNano())
			}
		}
		if ev.Stamp != 0 {
			ts.stamped++
			if v.opt.steady.Load() {
				now := time.Now().UnixNano()
				ts.delays = append(ts.delays, delaySample{at: now, ms: float32(now-ev.Stamp) / 1e6})
			}
		}
	}
}

// drainRTCP reads (and drops) the RTCP of a receiver so the interceptors
// see the sender reports and the buffer never fills.
func (v *viewer) drainRTCP(rcv *webrtc.RTPReceiver) {
	defer v.readers.Done()
	buf := make([]byte, 1500)
	for {
		if _, _, err := rcv.Read(buf); err != nil {
			return
		}
	}
}

// ttff is the time from POST to the first complete keyframe (0, false if
// none came).
func (v *viewer) ttff() (time.Duration, bool) {
	at := v.firstKeyAt.Load()
	if at == 0 || v.postAt.IsZero() {
		return 0, false
	}
	return time.Unix(0, at).Sub(v.postAt), true
}
