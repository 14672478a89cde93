package transcode

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
)

// Payload types put on the packets. They are placeholders: every reader
// rewrites the payload type (and SSRC) to what its peer negotiated.
const (
	PayloadTypeH264 = 96
	PayloadTypeOpus = 111
)

const (
	rtpHeaderSize = 12 // no CSRC, no extension: what the packetizer emits

	// MinRTPMTU is the smallest mtu NewRTPPacketizer accepts: an RTP header
	// plus an FU-A fragment carrying one byte.
	MinRTPMTU = rtpHeaderSize + fuAHeaderSize + 1
	// MaxRTPMTU is the largest mtu NewRTPPacketizer accepts (an RTP packet
	// in one UDP datagram can be no larger).
	MaxRTPMTU = 65507

	// RFC 6184 section 5.4: payload structures beyond NAL unit types 1-23.
	naluTypeSTAPA  = 24
	naluTypeFUA    = 28
	stapAHeaderLen = 1 // STAP-A NAL unit header
	stapASizeLen   = 2 // 16-bit NALU size in front of each aggregated NALU
	fuAHeaderSize  = 2 // FU indicator + FU header
)

// NewRTPPacketizer returns the processor that fills u.RTP for every unit of
// track t, to be registered with
//
//	stream.AddProcessor(t, "rtp", func(t *media.Track) media.Processor { return transcode.NewRTPPacketizer(t, mtu) })
//
// mtu is the largest RTP packet (12-byte header plus payload) it makes, e.g.
// 1200; header extensions a reader adds later come on top. It supports
// media.H264 (RFC 6184 packetization-mode 1, payload type 96) and media.Opus
// (RFC 7587, payload type 111); for any other codec, or an mtu outside
// [MinRTPMTU, MaxRTPMTU], every Process call returns an error.
//
// Packets carry the unit's PTS on the codec's clock (see media.RTPTimestamp) with
// no random offset, sequence numbers consecutive across units from a random
// start, and a fixed random SSRC; readers add their own offsets and rewrite
// SSRC and payload type. A unit that already carries RTP packets (from an
// RTP ingest such as WHIP) is left as it is, so those packets pass through.
//
// Like every media.Processor it is used by the publisher's goroutine only.
func NewRTPPacketizer(t *media.Track, mtu int) media.Processor {
	if mtu < MinRTPMTU || mtu > MaxRTPMTU {
		return errProcessor{fmt.Errorf("rtp packetizer: %s: mtu %d is out of range [%d, %d]", t, mtu, MinRTPMTU, MaxRTPMTU)}
	}
	s := rtpState{
		track:  t,
		budget: mtu - rtpHeaderSize,
		// Like pion's NewRandomSequencer: start in the lower half so that
		// SRTP's rollover guess survives early loss.
		seq:  uint16(rand.N(1 << 15)),
		ssrc: rand.Uint32(),
	}
	switch t.Codec.(type) {
	case media.H264:
		s.pt = PayloadTypeH264
		return &h264Packetizer{rtpState: s}
	case media.Opus:
		s.pt = PayloadTypeOpus
		return &opusPacketizer{rtpState: s}
	}
	return errProcessor{fmt.Errorf("rtp packetizer: %s: codec %s is not supported (supported: H264, Opus)", t, t.Codec.Name())}
}

// rtpState is what every packetizer of a track keeps between units.
type rtpState struct {
	track  *media.Track
	budget int // payload bytes per packet: mtu minus the RTP header
	pt     uint8
	seq    uint16 // next sequence number
	ssrc   uint32
}

// newPackets returns n packets with their headers filled for a unit at pts
// (marker on the last one if marker), all in one allocation, and advances
// the sequence number.
func (s *rtpState) newPackets(n int, pts time.Duration, marker bool) []*rtp.Packet {
	pkts := make([]rtp.Packet, n)
	out := make([]*rtp.Packet, n)
	ts := media.RTPTimestamp(s.track, pts)
	for i := range pkts {
		pkts[i].Header = rtp.Header{
			Version:        2,
			PayloadType:    s.pt,
			SequenceNumber: s.seq,
			Timestamp:      ts,
			SSRC:           s.ssrc,
		}
		s.seq++
		out[i] = &pkts[i]
	}
	out[n-1].Marker = marker
	return out
}

// errProcessor fails every unit with the same error (unsupported codec or
// bad configuration); the hub counts the failures.
type errProcessor struct{ err error }

func (p errProcessor) Process(*media.Unit) error { return p.err }

// opusPacketizer sends each Opus packet as one RTP packet (RFC 7587).
type opusPacketizer struct {
	rtpState
}

// Process implements media.Processor.
func (p *opusPacketizer) Process(u *media.Unit) error {
	if u.RTP != nil {
		return nil
	}
	if len(u.Data) == 0 {
		return fmt.Errorf("rtp packetizer: %s: empty Opus packet at %v", p.track, u.PTS)
	}
	pkts := p.newPackets(1, u.PTS, false)
	// The payload is shared, not copied: units are immutable once written
	// and readers never change a payload.
	pkts[0].Payload = u.Data[:len(u.Data):len(u.Data)]
	u.RTP = pkts
	if len(u.Data) > p.budget {
		// Opus cannot be fragmented; send it anyway (most paths carry it)
		// but let the hub count it.
		return fmt.Errorf("rtp packetizer: %s: Opus packet of %d bytes exceeds the payload budget of %d (mtu %d), sent anyway",
			p.track, len(u.Data), p.budget, p.budget+rtpHeaderSize)
	}
	return nil
}

// h264Packetizer packetizes H.264 access units per RFC 6184,
// packetization-mode 1:
//   - adjacent parameter sets (SPS, PPS) that fit together go in one STAP-A,
//     so every IDR of the canonical form starts with one packet holding both;
//   - a NAL unit that fits the payload budget goes alone (single NAL unit
//     packet);
//   - a larger one is split into FU-A fragments of budget-2 bytes.
//
// Access unit delimiters and filler data are dropped, as pion's
// H264Payloader does. NAL unit types 0 and 24-31 cannot be sent as they are
// (a receiver would read them as aggregation or fragmentation packets); they
// are dropped and reported. Unlike pion's payloader it keeps no NAL units
// from one unit to the next, never drops parameter sets that do not fit a
// STAP-A, never re-parses NAL units for start codes, and writes every payload
// of a unit into one buffer: a unit costs three allocations however many
// packets it makes.
type h264Packetizer struct {
	rtpState
}

// errNoNALUs is returned for an H.264 unit with nothing to send.
var errNoNALUs = errors.New("no NAL units to send")

// h264Payload is one RTP payload to be made from an access unit.
type h264Payload struct {
	kind  uint8 // NALU type of the payload: a NAL unit's own, naluTypeSTAPA or naluTypeFUA
	first int   // index of the (first) NAL unit
	end   int   // STAP-A: index after the last aggregated NAL unit
	off   int   // FU-A: offset in the NAL unit of the fragment (>= 1)
	n     int   // FU-A: fragment length
	size  int   // payload size in bytes
}

// Process implements media.Processor.
func (p *h264Packetizer) Process(u *media.Unit) error {
	if u.RTP != nil {
		return nil
	}
	var npkts, nbytes int
	err := p.plan(u.NALUs, func(pl h264Payload) {
		npkts++
		nbytes += pl.size
	})
	if npkts == 0 {
		if err == nil {
			err = errNoNALUs
		}
		return fmt.Errorf("rtp packetizer: %s: unit at %v: %w", p.track, u.PTS, err)
	}

	pkts := p.newPackets(npkts, u.PTS, true)
	buf := make([]byte, nbytes)
	i := 0
	p.plan(u.NALUs, func(pl h264Payload) {
		b := buf[:pl.size:pl.size]
		buf = buf[pl.size:]
		switch pl.kind {
		case naluTypeSTAPA:
			// F is set if any aggregated unit has it, NRI is their
			// highest (RFC 6184 section 5.7.1).
			var f, nri byte
			pos := stapAHeaderLen
			for _, nalu := range u.NALUs[pl.first:pl.end] {
				f |= nalu[0] & 0x80
				nri = max(nri, nalu[0]&0x60)
				b[pos], b[pos+1] = byte(len(nalu)>>8), byte(len(nalu))
				pos += stapASizeLen
				pos += copy(b[pos:], nalu)
			}
			b[0] = f | nri | naluTypeSTAPA
		case naluTypeFUA:
			nalu := u.NALUs[pl.first]
			b[0] = nalu[0]&0xe0 | naluTypeFUA // FU indicator: F, NRI
			b[1] = nalu[0] & 0x1f             // FU header: S, E, R=0, type
			if pl.off == 1 {
				b[1] |= 0x80
			}
			if pl.off+pl.n == len(nalu) {
				b[1] |= 0x40
			}
			copy(b[fuAHeaderSize:], nalu[pl.off:pl.off+pl.n])
		default:
			copy(b, u.NALUs[pl.first])
		}
		pkts[i].Payload = b
		i++
	})
	u.RTP = pkts
	if err != nil {
		return fmt.Errorf("rtp packetizer: %s: unit at %v: %w", p.track, u.PTS, err)
	}
	return nil
}

// plan calls emit for each payload the access unit makes, in order. It
// returns an error naming the first NAL unit it had to drop for its type.
func (p *h264Packetizer) plan(nalus [][]byte, emit func(h264Payload)) error {
	var err error
	for i := 0; i < len(nalus); {
		nalu := nalus[i]
		if !sendable(nalu) {
			if err == nil && len(nalu) > 0 {
				if typ := nalu[0] & 0x1f; typ == 0 || typ >= naluTypeSTAPA {
					err = fmt.Errorf("NAL unit %d has type %d, which RFC 6184 cannot carry; dropped", i, typ)
				}
			}
			i++
			continue
		}

		if isParamSet(nalu) {
			end, size := i, stapAHeaderLen
			for ; end < len(nalus) && isParamSet(nalus[end]); end++ {
				n := nalus[end]
				if size+stapASizeLen+len(n) > p.budget {
					break
				}
				size += stapASizeLen + len(n)
			}
			if end-i >= 2 {
				emit(h264Payload{kind: naluTypeSTAPA, first: i, end: end, size: size})
				i = end
				continue
			}
		}

		if len(nalu) <= p.budget {
			emit(h264Payload{kind: nalu[0] & 0x1f, first: i, size: len(nalu)})
		} else {
			// The NAL unit header is not sent as such: the FU indicator and
			// FU header carry its fields.
			frag := p.budget - fuAHeaderSize
			for off := 1; off < len(nalu); off += frag {
				n := min(frag, len(nalu)-off)
				emit(h264Payload{kind: naluTypeFUA, first: i, off: off, n: n, size: fuAHeaderSize + n})
			}
		}
		i++
	}
	return err
}

// sendable reports whether nalu goes on the wire: not empty, a type RFC 6184
// can carry in a single NAL unit packet (1-23), and neither an access unit
// delimiter nor filler data.
func sendable(nalu []byte) bool {
	if len(nalu) == 0 {
		return false
	}
	switch typ := nalu[0] & 0x1f; {
	case typ == 0 || typ >= naluTypeSTAPA:
		return false
	case h264.NALUType(typ) == h264.NALUTypeAccessUnitDelimiter, h264.NALUType(typ) == h264.NALUTypeFillerData:
		return false
	}
	return true
}

// isParamSet reports whether nalu is an SPS or a PPS.
func isParamSet(nalu []byte) bool {
	if len(nalu) == 0 {
		return false
	}
	typ := h264.NALUType(nalu[0] & 0x1f)
	return typ == h264.NALUTypeSPS || typ == h264.NALUTypePPS
}
