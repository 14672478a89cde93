package main

import "encoding/binary"

// rtpHeader is what the viewer needs of an RTP packet. Payload aliases the
// packet.
type rtpHeader struct {
	Marker  bool
	Seq     uint16
	TS      uint32
	SSRC    uint32
	Payload []byte
}

// parseRTP parses an RTP packet without allocating (RFC 3550 5.1: CSRCs,
// a header extension and padding are skipped).
func parseRTP(b []byte) (h rtpHeader, ok bool) {
	if len(b) < 12 || b[0]>>6 != 2 {
		return h, false
	}
	off := 12 + 4*int(b[0]&0x0f)
	if b[0]&0x10 != 0 {
		if len(b) < off+4 {
			return h, false
		}
		off += 4 + 4*int(binary.BigEndian.Uint16(b[off+2:]))
	}
	end := len(b)
	if b[0]&0x20 != 0 && end > 0 {
		pad := int(b[end-1])
		if pad == 0 || pad > end-off {
			return h, false
		}
		end -= pad
	}
	if off > end {
		return h, false
	}
	h.Marker = b[1]&0x80 != 0
	h.Seq = binary.BigEndian.Uint16(b[2:])
	h.TS = binary.BigEndian.Uint32(b[4:])
	h.SSRC = binary.BigEndian.Uint32(b[8:])
	h.Payload = b[off:end]
	return h, true
}

// seqCounter counts RTP packets received and lost from sequence numbers,
// extended to 64 bits across wraps (RFC 3550 A.1, without the probation).
type seqCounter struct {
	started  bool
	cycles   int64 // wraps seen, times 65536
	maxSeq   uint16
	base     int64 // extended sequence number of the first packet
	received int64
}

// push accounts for one packet. fresh is true when seq is beyond every
// sequence number seen so far (in order, or after a gap of gap packets);
// false for a duplicate or a late (reordered or retransmitted) packet.
func (s *seqCounter) push(seq uint16) (gap int, fresh bool) {
	s.received++
	if !s.started {
		s.started, s.maxSeq, s.base = true, seq, int64(seq)
		return 0, true
	}
	d := seq - s.maxSeq
	if d == 0 || d >= 0x8000 {
		return 0, false
	}
	if seq < s.maxSeq {
		s.cycles += 1 << 16
	}
	s.maxSeq = seq
	return int(d) - 1, true
}

// expected is the number of packets from the first to the highest
// sequence number seen.
func (s *seqCounter) expected() int64 {
	if !s.started {
		return 0
	}
	return s.cycles + int64(s.maxSeq) - s.base + 1
}

// lost is expected minus received (duplicates can make received larger:
// never negative).
func (s *seqCounter) lost() int64 {
	return max(0, s.expected()-s.received)
}

// H.264 RTP payload structure (RFC 6184).
const (
	naluTypeIDR   = 5
	naluTypeSPS   = 7
	naluTypePPS   = 8
	naluTypeAUD   = 9
	naluTypeSTAPA = 24
	naluTypeFUA   = 28
)

// auEvent describes an access unit whose last packet (marker bit) arrived.
type auEvent struct {
	TS uint32
	// Complete: every packet of the AU arrived, in order, from the first NAL
	// unit to the marker, with every FU-A whole.
	Complete bool
	// Keyframe: complete, holds an IDR slice, and SPS and PPS were received
	// (in this AU or before): a decoder could show it.
	Keyframe bool
	// Stamp is the send time in the AU's loadtest SEI (Unix ns), 0 if none.
	Stamp int64
}

// auAssembler follows H.264 RTP packets far enough to tell complete access
// units, keyframes and SEI stamps, without copying payloads. Feed it the
// fresh packets of one SSRC (seqCounter.push's fresh ones) in arrival
// order.
type auAssembler struct {
	started    bool
	lastSeq    uint16
	lastMarker bool

	inAU     bool
	ts       uint32
	ok       bool // no missing packet and no broken FU-A so far
	verified bool // the AU's first NAL unit is known to be here
	nalus    int
	inFU     bool
	idr      bool
	stamp    int64

	knowSPS, knowPPS bool
}

// push takes one packet; done is true when it ends an access unit (marker
// bit), described by ev.
func (a *auAssembler) push(seq uint16, ts uint32, marker bool, payload []byte) (ev auEvent, done bool) {
	contiguous := a.started && seq == a.lastSeq+1
	if !a.inAU || ts != a.ts {
		// A new AU. One left open (its marker lost) is dropped.
		a.inAU, a.ts = true, ts
		a.ok, a.nalus, a.inFU, a.idr, a.stamp = true, 0, false, false, 0
		// The previous AU ended right before this packet: this one starts
		// here. Otherwise its first NAL unit will tell (see nal).
		a.verified = contiguous && a.lastMarker
	} else if !contiguous {
		a.ok = false
	}
	a.started, a.lastSeq, a.lastMarker = true, seq, marker

	if len(payload) == 0 {
		a.ok = false
	} else {
		switch typ := payload[0] & 0x1f; typ {
		case naluTypeSTAPA:
			if a.inFU {
				a.ok, a.inFU = false, false
			}
			for b := payload[1:]; len(b) > 0; {
				if len(b) < 2 {
					a.ok = false
					break
				}
				n := int(b[0])<<8 | int(b[1])
				if n == 0 || n > len(b)-2 {
					a.ok = false
					break
				}
				a.nal(b[2 : 2+n])
				b = b[2+n:]
			}
		case naluTypeFUA:
			if len(payload) < 2 {
				a.ok = false
				break
			}
			start, end := payload[1]&0x80 != 0, payload[1]&0x40 != 0
			switch {
			case start:
				if a.inFU {
					a.ok = false // the previous FU-A lost its end
				}
				a.inFU = true
				a.nalType(payload[1] & 0x1f)
			case !a.inFU:
				a.ok = false // a fragment whose start we missed
				if !a.verified {
					a.nalus++
				}
			}
			if end {
				a.inFU = false
			}
		default:
			if typ == 0 || typ > naluTypeSTAPA {
				a.ok = false // STAP-B, MTAP, FU-B or reserved: not expected
				break
			}
			if a.inFU {
				a.ok, a.inFU = false, false
			}
			a.nal(payload)
		}
	}

	if !marker {
		return ev, false
	}
	a.inAU = false
	ev = auEvent{TS: ts, Stamp: a.stamp}
	ev.Complete = a.ok && a.verified && !a.inFU
	ev.Keyframe = ev.Complete && a.idr && a.knowSPS && a.knowPPS
	return ev, true
}

// nal takes a whole NAL unit.
func (a *auAssembler) nal(nalu []byte) {
	if len(nalu) == 0 {
		a.ok = false
		return
	}
	typ := nalu[0] & 0x1f
	switch typ {
	case naluTypeSPS:
		a.knowSPS = true
	case naluTypePPS:
		a.knowPPS = true
	case naluTypeSEI:
		if a.stamp == 0 {
			if s, err := parseStampSEI(nalu); err == nil {
				a.stamp = s
			}
		}
	}
	a.nalType(typ)
}

// nalType notes a NAL unit's type, whole or the start of an FU-A.
func (a *auAssembler) nalType(typ byte) {
	if a.nalus == 0 && !a.verified {
		// An AU we did not see begin is known to be whole from its start
		// when it starts with what only starts an AU: a delimiter or the
		// parameter sets a server puts before an IDR.
		a.verified = typ == naluTypeAUD || typ == naluTypeSPS || typ == naluTypePPS
	}
	a.nalus++
	if typ == naluTypeIDR {
		a.idr = true
	}
}
