package transcode

import (
	"errors"
	"fmt"
	"slices"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
)

// maxAUPackets bounds the packets of one access unit, so a peer that never
// changes the timestamp or sets the marker cannot grow it without limit:
// h264.MaxAccessUnitSize (8 MiB, a 50 Mbit/s 2160p60 stream's largest
// frame) in packets of at least 1 KiB of payload.
const maxAUPackets = h264.MaxAccessUnitSize / 1024

// RTPAccessUnit is one access unit as it arrived: the packets that share
// one RTP timestamp, in sequence order, and, if none is missing and they
// depacketize, the NAL units.
type RTPAccessUnit struct {
	Timestamp uint32
	Packets   []*rtp.Packet
	// NALUs is nil when the unit is damaged (Err says why).
	NALUs [][]byte
	Err   error
}

// Why an access unit could not be reassembled.
var (
	errLostHead = errors.New("packets lost before its first packet")
	errLostTail = errors.New("packets lost after its last packet, which has no marker (or before padding)")
	errTooLarge = fmt.Errorf("more than %d packets", maxAUPackets)
)

// H264Assembler groups the RTP packets of an H.264 stream (RFC 6184,
// packetization-mode 1) into access units and depacketizes the complete
// ones. It never waits for anything: a unit is emitted when its marker
// packet arrives (or when a packet of the next unit does), so a unit with a
// missing packet is emitted damaged rather than held for a retransmission;
// a late packet (retransmitted or reordered after its unit was emitted) is
// dropped and counted. Packets reordered within the unit being collected
// are put back in order. One per track, used by the track's goroutine.
type H264Assembler struct {
	started bool
	next    uint16 // sequence number expected next (highest seen + 1)

	open     bool // cur* describe a unit being collected
	curTS    uint32
	curPkts  []*rtp.Packet
	curHead  uint16 // sequence number its first packet must have for nothing to be lost before it
	curLoss  error  // a loss that may have hit this unit and that its packets cannot show
	carry    bool   // a loss seen between units (before padding), blamed on the next unit
	late     uint64 // packets dropped for arriving after their unit was emitted
	lostPkts uint64 // sequence numbers skipped
}

// Push adds p, whose payload the assembler keeps, and calls emit for each
// unit it completes (at most two).
func (a *H264Assembler) Push(p *rtp.Packet, emit func(*RTPAccessUnit)) {
	if !a.started {
		a.started, a.next = true, p.SequenceNumber
	}
	if d := int16(p.SequenceNumber - a.next); d < 0 {
		if a.open && p.Timestamp == a.curTS && len(p.Payload) > 0 && a.insertLate(p) {
			return
		}
		a.late++
		return
	} else if d > 0 {
		a.lostPkts += uint64(d)
	}
	expected := a.next
	lossBefore := p.SequenceNumber != expected
	a.next = p.SequenceNumber + 1
	media := len(p.Payload) > 0 // padding-only packets (bandwidth probes) carry no media

	if a.open && p.Timestamp != a.curTS {
		// A new unit starts; what was lost just before p may have been the
		// tail of the unit being collected, unless its marker arrived. If
		// that was a single packet, it was the marker packet: the new
		// unit's head is whole.
		if lossBefore && !a.curPkts[len(a.curPkts)-1].Marker {
			a.curLoss = errLostTail
			if p.SequenceNumber == expected+1 {
				expected = p.SequenceNumber
			}
		}
		a.flush(emit)
	}
	if a.open {
		if lossBefore {
			// Within the unit: a gap its packets show (and a late packet
			// can fill), unless p is padding, after which they would not.
			if !media {
				a.curLoss = errLostTail
			}
		}
	} else if media {
		// The unit is whole at its head only if it starts right after
		// the last packet seen; late packets can still fill the gap.
		a.open, a.curTS, a.curHead, a.curLoss = true, p.Timestamp, expected, nil
		if a.carry {
			a.curLoss, a.carry = errLostHead, false
		}
	} else if lossBefore {
		a.carry = true
	}
	if !media {
		return
	}
	a.curPkts = append(a.curPkts, p)
	if p.Marker || len(a.curPkts) >= maxAUPackets {
		a.flush(emit)
	}
}

// insertLate puts a packet that arrived out of order into the unit being
// collected, if it belongs there and is not a duplicate.
func (a *H264Assembler) insertLate(p *rtp.Packet) bool {
	if int16(p.SequenceNumber-a.curHead) < 0 {
		return false
	}
	i, found := slices.BinarySearchFunc(a.curPkts, p.SequenceNumber, func(q *rtp.Packet, seq uint16) int {
		return int(int16(q.SequenceNumber - seq))
	})
	if found {
		return false
	}
	a.curPkts = slices.Insert(a.curPkts, i, p)
	return true
}

// flush emits the unit being collected.
func (a *H264Assembler) flush(emit func(*RTPAccessUnit)) {
	au := &RTPAccessUnit{Timestamp: a.curTS, Packets: a.curPkts}
	a.open, a.curPkts = false, nil
	switch {
	case au.Packets[0].SequenceNumber != a.curHead:
		au.Err = errLostHead
	case a.curLoss != nil:
		au.Err = a.curLoss
	case len(au.Packets) >= maxAUPackets:
		au.Err = errTooLarge
	}
	if au.Err == nil {
		for i := 1; i < len(au.Packets); i++ {
			if au.Packets[i].SequenceNumber != au.Packets[i-1].SequenceNumber+1 {
				au.Err = fmt.Errorf("packet lost after sequence number %d", au.Packets[i-1].SequenceNumber)
				break
			}
		}
	}
	if au.Err == nil {
		au.NALUs, au.Err = depacketizeH264(au.Packets)
	}
	emit(au)
}

// Late returns how many packets were dropped for arriving after their unit
// was emitted.
func (a *H264Assembler) Late() uint64 { return a.late }

// LostPackets returns how many sequence numbers were skipped.
func (a *H264Assembler) LostPackets() uint64 { return a.lostPkts }

// depacketizeH264 returns the NAL units of the payloads of one complete
// access unit (RFC 6184 packetization-mode 1: single NAL unit packets,
// STAP-A, FU-A). Single and aggregated NAL units share the payloads' memory;
// a fragmented one is put together in a new buffer.
func depacketizeH264(pkts []*rtp.Packet) ([][]byte, error) {
	var nalus [][]byte
	var fu []byte // the fragmented NAL unit being put together
	size := 0
	add := func(nalu []byte) error {
		size += len(nalu)
		if size > h264.MaxAccessUnitSize {
			return fmt.Errorf("access unit is larger than %d bytes", h264.MaxAccessUnitSize)
		}
		nalus = append(nalus, nalu)
		return nil
	}
	for _, p := range pkts {
		b := p.Payload
		typ := b[0] & 0x1f
		if fu != nil && typ != naluTypeFUA {
			return nil, fmt.Errorf("packet %d: NAL unit type %d inside a fragmented NAL unit", p.SequenceNumber, typ)
		}
		switch {
		case typ >= 1 && typ <= 23:
			if err := add(b); err != nil {
				return nil, err
			}
		case typ == naluTypeSTAPA:
			for pos := 1; pos < len(b); {
				if pos+2 > len(b) {
					return nil, fmt.Errorf("packet %d: STAP-A truncated in a NAL unit size", p.SequenceNumber)
				}
				n := int(b[pos])<<8 | int(b[pos+1])
				pos += 2
				if n == 0 || pos+n > len(b) {
					return nil, fmt.Errorf("packet %d: STAP-A NAL unit of %d bytes, %d left", p.SequenceNumber, n, len(b)-pos)
				}
				if err := add(b[pos : pos+n : pos+n]); err != nil {
					return nil, err
				}
				pos += n
			}
		case typ == naluTypeFUA:
			if len(b) < 3 {
				return nil, fmt.Errorf("packet %d: FU-A of %d bytes", p.SequenceNumber, len(b))
			}
			start, end := b[1]&0x80 != 0, b[1]&0x40 != 0
			switch {
			case start && fu != nil:
				return nil, fmt.Errorf("packet %d: FU-A starts before the previous one ended", p.SequenceNumber)
			case start:
				fu = append(make([]byte, 0, len(b)*4), b[0]&0xe0|b[1]&0x1f)
			case fu == nil:
				return nil, fmt.Errorf("packet %d: FU-A continues a NAL unit whose start is missing", p.SequenceNumber)
			}
			fu = append(fu, b[2:]...)
			if len(fu) > h264.MaxAccessUnitSize {
				return nil, fmt.Errorf("access unit is larger than %d bytes", h264.MaxAccessUnitSize)
			}
			if end {
				if err := add(fu[:len(fu):len(fu)]); err != nil {
					return nil, err
				}
				fu = nil
			}
		default:
			return nil, fmt.Errorf("packet %d: NAL unit type %d is not allowed in packetization-mode 1", p.SequenceNumber, typ)
		}
	}
	if fu != nil {
		return nil, errors.New("last FU-A fragment has no end bit")
	}
	if len(nalus) == 0 {
		return nil, errors.New("no NAL units")
	}
	return nalus, nil
}
