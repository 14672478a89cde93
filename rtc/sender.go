package rtc

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
)

// OutTrack sends the units of one hub track to one peer (a WHEP viewer, a
// WHIP target) on a local track: their RTP packets, as the hub's processor
// made them, rewritten for the peer, and RTCP sender reports. Send and
// Stats are used by one goroutine, ReadRTCP by another.
type OutTrack struct {
	pc     *webrtc.PeerConnection
	stream *media.Stream
	local  *webrtc.TrackLocalStaticRTP
	sender *webrtc.RTPSender
	video  bool
	rate   int // RTP clock rate of what is sent
	// Per-peer rewriting: consecutive sequence numbers (so a unit the
	// reader dropped is not NACKed in vain, and a publisher's reconnect
	// leaves no jump) and timestamps from a random origin (RFC 3550 5.1),
	// cached units squeezed (see rtpClock). Timestamps need no re-basing
	// across a publisher's reconnect: the hub keeps the stream clock
	// continuous (media.Publication.Write).
	seq    uint16
	clock  rtpClock
	report SenderReporter
	// sent answers the peer's NACKs (see history).
	sent history

	// observeDelay, if set, is told how long after its arrival at the hub
	// each live unit was sent (SetDelayObserver).
	observeDelay func(video bool, d time.Duration)

	stats SendStats // Packets and CachedUnits
	// keyframeRequests counts the PLI/FIR the peer sent, retransmits the
	// packets resent on its NACKs (ReadRTCP adds, Stats reads).
	keyframeRequests atomic.Uint64
	retransmits      atomic.Uint64
}

// MaxRTPSize bounds the RTP packets sent to WebRTC peers (header +
// payload): below the 1280-byte IPv6 minimum MTU once SRTP, UDP and IP
// headers are added. WHEP viewers and WHIP targets share the hub's "rtp"
// processor of a track, so they must packetize with the same bound.
const MaxRTPSize = 1200

// VideoFeedback is the RTCP feedback to negotiate for the video an OutTrack
// sends: the peer may NACK lost packets (OutTrack resends them) and ask for
// keyframes (PLI, FIR). A browser sends neither unless the SDP lists it.
var VideoFeedback = []webrtc.RTCPFeedback{
	{Type: webrtc.TypeRTCPFBNACK},
	{Type: webrtc.TypeRTCPFBNACK, Parameter: "pli"},
	{Type: webrtc.TypeRTCPFBCCM, Parameter: "fir"},
}

// SendStats counts what OutTracks sent, for a session's stats.
type SendStats struct {
	Packets          uint64 // RTP packets sent
	CachedUnits      uint64 // units sent from the GOP cache
	KeyframeRequests uint64 // PLI and FIR received
	Retransmits      uint64 // packets resent on the peer's NACKs
}

// Add adds o's counts to s.
func (s *SendStats) Add(o SendStats) {
	s.Packets += o.Packets
	s.CachedUnits += o.CachedUnits
	s.KeyframeRequests += o.KeyframeRequests
	s.Retransmits += o.Retransmits
}

// NewOutTrack returns an OutTrack that sends units of stream on local,
// which sender sends on pc, with sender reports stamped from the stream
// clock (media.Stream.Origin).
func NewOutTrack(pc *webrtc.PeerConnection, stream *media.Stream, local *webrtc.TrackLocalStaticRTP, sender *webrtc.RTPSender) *OutTrack {
	t := &OutTrack{
		pc:     pc,
		stream: stream,
		local:  local,
		sender: sender,
		video:  local.Kind() == webrtc.RTPCodecTypeVideo,
		rate:   int(local.Codec().ClockRate),
		seq:    uint16(rand.Uint32()),
		clock:  rtpClock{offset: rand.Uint32()},
	}
	if enc := sender.GetParameters().Encodings; len(enc) > 0 {
		t.report.SSRC = uint32(enc[0].SSRC)
	}
	return t
}

// SetDelayObserver makes Send call f with the time from each live unit's
// arrival at the hub (media.Unit.Arrived) to the end of its send: the
// delay the bridge added for this peer. Call it before the first Send.
func (t *OutTrack) SetDelayObserver(f func(video bool, d time.Duration)) { t.observeDelay = f }

// Send sends the RTP packets of u, a unit of the track; cached says u came
// from the hub's GOP cache (media.Reader.Cached). A sender report follows
// when one is due.
func (t *OutTrack) Send(u *media.Unit, cached bool) error {
	if len(u.RTP) == 0 {
		return nil // nothing to send (a processor failed)
	}
	if cached && !t.video {
		// Cached audio is not sent: a burst of seconds of audio
		// would sit in the receiver's jitter buffer (NetEq) as
		// latency until time-stretched away. Audio starts live;
		// lip sync comes from the sender reports.
		return nil
	}
	if cached {
		t.stats.CachedUnits++
	}
	adj := t.clock.adjust(u.RTP[0].Timestamp, cached)
	unitTS := uint32(transcode.ClockTicks(u.PTS, t.rate))
	t.sent.add(u.RTP, t.seq, adj)
	for _, p := range u.RTP {
		out := rtp.Packet{Header: p.Header, Payload: p.Payload}
		out.SequenceNumber = t.seq
		out.Timestamp = p.Timestamp + adj
		t.seq++
		if err := t.local.WriteRTP(&out); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		t.stats.Packets++
		// The packet's own place on the media clock: its timestamp
		// relative to the unit's (they differ for transcoded audio).
		pts := u.PTS + time.Duration(int32(p.Timestamp-unitTS))*time.Second/time.Duration(t.rate)
		t.report.OnPacket(out.Timestamp, t.stream.Origin().Add(pts), len(out.Payload))
	}
	if cached {
		// A squeezed cached unit's timestamp does not map to its
		// PTS: report once a live unit has set the mapping again.
		return nil
	}
	if t.observeDelay != nil && !u.Arrived.IsZero() {
		t.observeDelay(t.video, time.Since(u.Arrived))
	}
	if sr := t.report.Report(time.Now()); sr != nil {
		if err := t.pc.WriteRTCP([]rtcp.Packet{sr}); err != nil {
			return fmt.Errorf("write RTCP: %w", err)
		}
	}
	return nil
}

// ReadRTCP reads the RTCP the peer sends about the track, resends the
// packets it NACKs, and calls onKeyframeRequest for each keyframe request
// (PLI, FIR); it returns when the PeerConnection closes.
func (t *OutTrack) ReadRTCP(onKeyframeRequest func()) {
	for {
		pkts, _, err := t.sender.ReadRTCP()
		if err != nil {
			return
		}
		for _, p := range pkts {
			switch p := p.(type) {
			case *rtcp.PictureLossIndication, *rtcp.FullIntraRequest:
				t.keyframeRequests.Add(1)
				onKeyframeRequest()
			case *rtcp.TransportLayerNack:
				t.retransmit(p)
			}
		}
	}
}

// retransmit resends the packets nack asks for that are still in the
// history, as they were first sent (same sequence number and timestamp:
// no RTX stream is negotiated). A packet no longer there is skipped; the
// peer asks for a keyframe once it gives up.
func (t *OutTrack) retransmit(nack *rtcp.TransportLayerNack) {
	for _, pair := range nack.Nacks {
		for _, seq := range pair.PacketList() {
			out, ok := t.sent.get(seq)
			if !ok {
				continue
			}
			if err := t.local.WriteRTP(&out); err != nil {
				return // the PeerConnection is closing
			}
			t.retransmits.Add(1)
		}
	}
}

// Stats returns what the track sent and the keyframe requests it got.
func (t *OutTrack) Stats() SendStats {
	st := t.stats
	st.KeyframeRequests = t.keyframeRequests.Load()
	st.Retransmits = t.retransmits.Load()
	return st
}

// historySize is how many sent packets an OutTrack can resend: about 4 s of
// 600 kbit/s video, far beyond any useful retransmission. A power of two,
// so a sequence number's slot survives the wrap at 65536.
const historySize = 256

// history remembers the last historySize packets sent on a track, for
// NACKs: references to the hub's packets, which are shared by every peer
// and never changed (media.Unit.RTP), plus what this peer's rewrite
// changed. It costs a few KiB per peer where a copy of each packet would
// cost hundreds. The mutex guards the slots: Send adds, ReadRTCP reads.
type history struct {
	mu    sync.Mutex
	slots [historySize]sentPacket
}

type sentPacket struct {
	pkt *rtp.Packet // the hub's packet; nil while the slot is empty
	seq uint16      // the sequence number it was sent with
	adj uint32      // added to its timestamp when sent
}

// add records pkts, sent with consecutive sequence numbers from seq and
// their timestamps moved by adj.
func (h *history) add(pkts []*rtp.Packet, seq uint16, adj uint32) {
	h.mu.Lock()
	for i, p := range pkts {
		s := seq + uint16(i)
		h.slots[s%historySize] = sentPacket{pkt: p, seq: s, adj: adj}
	}
	h.mu.Unlock()
}

// get returns the packet sent with sequence number seq, as it was sent, if
// it is still in the history.
func (h *history) get(seq uint16) (rtp.Packet, bool) {
	h.mu.Lock()
	sp := h.slots[seq%historySize]
	h.mu.Unlock()
	if sp.pkt == nil || sp.seq != seq {
		return rtp.Packet{}, false
	}
	out := rtp.Packet{Header: sp.pkt.Header, Payload: sp.pkt.Payload}
	out.SequenceNumber = seq
	out.Timestamp += sp.adj
	return out, true
}
