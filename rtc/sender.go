package rtc

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
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
	// sent answers the peer's NACKs (see history), within a budget of
	// retransmitPercent of what was sent (SetRetransmitPercent).
	sent              history
	retransmitPercent int

	// observeDelay, if set, is told how long after its arrival at the hub
	// each live unit was sent (SetDelayObserver).
	observeDelay func(video bool, d time.Duration)

	stats SendStats // Packets and CachedUnits
	// keyframeRequests counts the PLI/FIR the peer sent, retransmits the
	// packets resent on its NACKs (ReadRTCP adds, Stats reads).
	keyframeRequests atomic.Uint64
	retransmits      atomic.Uint64
	retransmitBytes  atomic.Uint64
	overBudget       atomic.Uint64
	tooSoon          atomic.Uint64
	// lost is the cumulative number of packets lost the peer's latest
	// receiver report gives (RFC 3550 6.4.1), for Feedback.
	lost atomic.Uint32
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
	Bytes            uint64 // their payload bytes (an RTCP sender report's octet count)
	CachedUnits      uint64 // units sent from the GOP cache
	KeyframeRequests uint64 // PLI and FIR received
	Retransmits      uint64 // packets resent on the peer's NACKs
	RetransmitBytes  uint64 // bytes of those packets (RTP header and payload)
	// NACKed packets not resent: over the retransmission budget, or
	// already resent less than one round trip before.
	RetransmitsOverBudget uint64
	RetransmitsTooSoon    uint64
}

// Add adds o's counts to s.
func (s *SendStats) Add(o SendStats) {
	s.Packets += o.Packets
	s.Bytes += o.Bytes
	s.CachedUnits += o.CachedUnits
	s.KeyframeRequests += o.KeyframeRequests
	s.Retransmits += o.Retransmits
	s.RetransmitBytes += o.RetransmitBytes
	s.RetransmitsOverBudget += o.RetransmitsOverBudget
	s.RetransmitsTooSoon += o.RetransmitsTooSoon
}

// NewOutTrack returns an OutTrack that sends units of stream on local,
// which sender sends on pc, with sender reports stamped from the stream
// clock (media.Stream.Origin), and that resends what the peer NACKs
// within DefaultRetransmitPercent of what it sent (SetRetransmitPercent).
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

// SetRetransmitPercent sets the retransmission budget (config
// limits.retransmit_percent): the bytes resent on the peer's NACKs may be
// at most pct percent of the bytes sent, plus a small floor (see
// history). pct <= 0 means DefaultRetransmitPercent. Call it before the
// first Send.
func (t *OutTrack) SetRetransmitPercent(pct int) { t.retransmitPercent = pct }

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
	unitTS := uint32(media.ClockTicks(u.PTS, t.rate))
	pct := t.retransmitPercent
	if pct <= 0 {
		pct = DefaultRetransmitPercent
	}
	t.sent.add(u.RTP, t.seq, adj, pct)
	for _, p := range u.RTP {
		out := rtp.Packet{Header: p.Header, Payload: p.Payload}
		out.SequenceNumber = t.seq
		out.Timestamp = p.Timestamp + adj
		t.seq++
		if err := t.local.WriteRTP(&out); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		t.stats.Packets++
		t.stats.Bytes += uint64(len(out.Payload))
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
	now := time.Now()
	if sr := t.report.Report(now); sr != nil {
		if err := t.pc.WriteRTCP([]rtcp.Packet{sr}); err != nil {
			return fmt.Errorf("write RTCP: %w", err)
		}
		t.sent.reported(sr.NTPTime, now) // for the RTT (see history)
	}
	return nil
}

// ReadRTCP reads the RTCP the peer sends about the track, resends the
// packets it NACKs (within the budget, see retransmit), takes the round
// trip time from its receiver reports, and calls onKeyframeRequest for
// each keyframe request (PLI, FIR); it returns when the PeerConnection
// closes.
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
			case *rtcp.ReceiverReport:
				for _, rr := range p.Reports {
					if rr.SSRC == t.report.SSRC {
						t.sent.receiverReport(rr.LastSenderReport, rr.Delay, time.Now())
						t.lost.Store(rr.TotalLost)
					}
				}
			}
		}
	}
}

// retransmit resends the packets nack asks for that are still in the
// history, as they were first sent (same sequence number and timestamp:
// no RTX stream is negotiated), unless that would go over the budget or
// the packet was resent less than a round trip ago (history.resend); those
// are dropped and counted. A packet no longer there is skipped; the peer
// asks for a keyframe once it gives up.
func (t *OutTrack) retransmit(nack *rtcp.TransportLayerNack) {
	now := time.Now()
	for i := range nack.Nacks {
		closed := false
		nack.Nacks[i].Range(func(seq uint16) bool {
			out, size, verdict := t.sent.resend(seq, now)
			switch verdict {
			case resendOverBudget:
				t.overBudget.Add(1)
			case resendTooSoon:
				t.tooSoon.Add(1)
			case resendOK:
				if err := t.local.WriteRTP(&out); err != nil {
					closed = true // the PeerConnection is closing
					return false
				}
				t.retransmits.Add(1)
				t.retransmitBytes.Add(uint64(size))
			}
			return true
		})
		if closed {
			return
		}
	}
}

// Stats returns what the track sent and the keyframe requests it got.
func (t *OutTrack) Stats() SendStats {
	st := t.stats
	st.KeyframeRequests = t.keyframeRequests.Load()
	st.Retransmits = t.retransmits.Load()
	st.RetransmitBytes = t.retransmitBytes.Load()
	st.RetransmitsOverBudget = t.overBudget.Load()
	st.RetransmitsTooSoon = t.tooSoon.Load()
	return st
}

// Feedback returns what the peer reported losing (its latest receiver
// report's cumulative count) and how many packets were resent on its
// NACKs. Unlike Stats, safe from any goroutine.
func (t *OutTrack) Feedback() (lost, retransmitted uint64) {
	return uint64(t.lost.Load()), t.retransmits.Load()
}

// historySize is how many sent packets an OutTrack can resend: about 4 s of
// 600 kbit/s video, far beyond any useful retransmission. A power of two,
// so a sequence number's slot survives the wrap at 65536.
const historySize = 256

// The retransmission budget. Unbounded, a viewer's NACKs are an amplifier:
// one NACK of 80 bytes names the whole history, 300 KB of video, and a
// NACK every millisecond turned 15 KB of requests into 26 MB of resends.
// With it, what one viewer gets back on its NACKs is at most a fraction of
// what it is sent anyway, so a flood of NACKs costs the bridge no more
// than a viewer with a worse link would.
const (
	// DefaultRetransmitPercent is the budget's share of the bytes sent
	// when none is set (config limits.retransmit_percent): a viewer with 5 %
	// loss needs 5 %; a quarter leaves room for bursts of loss.
	DefaultRetransmitPercent = 25
	// retransmitFloorRate (bytes per second) is added to the budget
	// however little the stream sends (a still picture, audio), so that a
	// quiet stream still gets a loss repaired: two full-size packets a
	// second.
	retransmitFloorRate = 2 * MaxRTPSize
	// retransmitMinBurst (bytes) is the least the budget can hold, and
	// what a new peer starts with: the packets of one lost frame of a
	// quiet stream. Otherwise it holds at most the percentage of the
	// history's bytes: a burst of loss as long as the history.
	retransmitMinBurst = 4 * MaxRTPSize
	// defaultRTT is taken as the round trip time until a receiver report
	// gives the peer's: a packet is not resent again within it (the NACK
	// could not have seen the resend yet). It is the interval at which
	// pion's and libwebrtc's NACK generators repeat a request, so a peer's
	// own repeats are not dropped.
	defaultRTT = 100 * time.Millisecond
	// minRTT and maxRTT bound the round trip time taken from receiver
	// reports: a LAN's fraction of a millisecond would let a flood have
	// each packet resent a thousand times a second (the budget still
	// holds), and a report claiming more than a second would stop the
	// repair of real losses.
	minRTT = 10 * time.Millisecond
	maxRTT = time.Second
)

// history remembers the last historySize packets sent on a track, for
// NACKs: references to the hub's packets, which are shared by every peer
// and never changed (media.Unit.RTP), plus what this peer's rewrite
// changed. It costs a few KiB per peer where a copy of each packet would
// cost hundreds.
//
// It also keeps the retransmission budget, a token bucket: each packet
// sent adds pct percent of its bytes (so the budget follows the bitrate
// the track actually sends), the floor adds retransmitFloorRate per
// second, and it holds at most max(pct percent of the history's bytes,
// retransmitMinBurst). Tokens are counted in byte-percents (bytes * 100)
// so that no fraction of a byte is lost to rounding.
//
// The mutex guards everything: Send adds packets and reports, ReadRTCP
// resends and reads receiver reports. The zero value is ready.
type history struct {
	mu       sync.Mutex
	slots    [historySize]sentPacket
	bytes    int64     // of the packets in slots
	pct      int64     // the budget's percentage, as of the last add
	tokens   int64     // byte-percents that may be resent now
	started  bool      // tokens were given retransmitMinBurst
	refilled time.Time // when the floor was last added; zero before the first resend
	epoch    time.Time // origin of sentPacket.resent; set at the first resend
	// rtt is the round trip time from the last usable receiver report
	// (0: none yet, defaultRTT applies), measured from the last sender
	// report: its NTP time's middle 32 bits (what the peer echoes as LSR)
	// and when it was sent (zero before the first).
	rtt    time.Duration
	srNTP  uint32
	srSent time.Time
}

type sentPacket struct {
	pkt    *rtp.Packet   // the hub's packet; nil while the slot is empty
	seq    uint16        // the sequence number it was sent with
	size   uint16        // its bytes (header and payload), for the budget
	adj    uint32        // added to its timestamp when sent
	resent time.Duration // when it was last resent, after epoch; 0 if never
}

// add records pkts, sent with consecutive sequence numbers from seq and
// their timestamps moved by adj, and adds pct percent of their bytes to
// the budget.
func (h *history) add(pkts []*rtp.Packet, seq uint16, adj uint32, pct int) {
	h.mu.Lock()
	if !h.started {
		h.started, h.tokens = true, retransmitMinBurst*100
	}
	var bytes int64
	for i, p := range pkts {
		s := seq + uint16(i)
		slot := &h.slots[s%historySize]
		size := min(p.MarshalSize(), math.MaxUint16)
		h.bytes += int64(size) - int64(slot.size)
		bytes += int64(size)
		*slot = sentPacket{pkt: p, seq: s, size: uint16(size), adj: adj}
	}
	h.pct = int64(pct)
	h.tokens = min(h.tokens+bytes*h.pct, h.capacity())
	h.mu.Unlock()
}

// capacity is the most the budget holds, in byte-percents.
func (h *history) capacity() int64 { return max(h.bytes*h.pct, retransmitMinBurst*100) }

// reported records that a sender report with NTP time ntp was sent at now.
func (h *history) reported(ntp uint64, now time.Time) {
	h.mu.Lock()
	h.srNTP, h.srSent = uint32(ntp>>16), now
	h.mu.Unlock()
}

// receiverReport takes the round trip time from a receiver report block
// that arrived at now, if it refers to the last sender report (RFC 3550
// 6.4.1: the time since that report was sent, less the delay the peer
// says it held it, dlsr in 1/65536 s), bounded to [minRTT, maxRTT].
func (h *history) receiverReport(lsr, dlsr uint32, now time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.srSent.IsZero() || lsr != h.srNTP {
		return // no report yet, or an older one (or none) echoed
	}
	rtt := now.Sub(h.srSent) - time.Duration(dlsr)*time.Second/65536
	if rtt < 0 {
		return // the peer claims to have held the report longer than it was out
	}
	h.rtt = min(max(rtt, minRTT), maxRTT)
}

// resendVerdict is what resend decided for a NACKed packet.
type resendVerdict uint8

const (
	resendOK         resendVerdict = iota
	resendMissing                  // not in the history (any more)
	resendTooSoon                  // resent less than a round trip ago
	resendOverBudget               // the budget does not cover it
)

// resend returns the packet sent with sequence number seq, as it was sent,
// and its size, if it is still in the history, was not resent within the
// round trip time before now, and the budget covers it, which it then
// charges.
func (h *history) resend(seq uint16, now time.Time) (rtp.Packet, int, resendVerdict) {
	h.mu.Lock()
	defer h.mu.Unlock()
	sp := &h.slots[seq%historySize]
	if sp.pkt == nil || sp.seq != seq {
		return rtp.Packet{}, 0, resendMissing
	}
	if h.epoch.IsZero() {
		h.epoch = now.Add(-time.Nanosecond) // so that no resend is at 0
	}
	at := now.Sub(h.epoch)
	rtt := h.rtt
	if rtt == 0 {
		rtt = defaultRTT
	}
	if sp.resent != 0 && at-sp.resent < rtt {
		return rtp.Packet{}, 0, resendTooSoon
	}
	if !h.refilled.IsZero() {
		// Capped before the multiplication: an idle hour must not overflow.
		idle := min(now.Sub(h.refilled), time.Minute)
		h.tokens = min(h.tokens+int64(idle)*retransmitFloorRate*100/int64(time.Second), h.capacity())
	}
	h.refilled = now
	cost := int64(sp.size) * 100
	if cost > h.tokens {
		return rtp.Packet{}, 0, resendOverBudget
	}
	h.tokens -= cost
	sp.resent = at
	out := rtp.Packet{Header: sp.pkt.Header, Payload: sp.pkt.Payload}
	out.SequenceNumber = seq
	out.Timestamp += sp.adj
	return out, int(sp.size), resendOK
}
