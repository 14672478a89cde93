package main

import (
	"encoding/binary"
	"errors"
)

// The send-time stamp: an H.264 SEI NAL unit (type 6) holding one
// user_data_unregistered message (payload type 5, ISO 14496-10 D.1.7): a
// fixed 16-byte UUID that marks it as ours, then the wall-clock send time
// as 8 bytes of big-endian Unix nanoseconds.

// stampUUID identifies the loadtest's SEI. No zero bytes, so it never needs
// emulation prevention.
var stampUUID = [16]byte{
	0x6c, 0x6f, 0x61, 0x64, 0x74, 0x65, 0x73, 0x74, // "loadtest"
	0x8a, 0x4e, 0x2f, 0x9b, 0xd1, 0x37, 0x45, 0xc6,
}

const (
	naluTypeSEI      = 6
	seiUserDataUnreg = 5
	stampPayloadSize = 16 + 8
)

// appendStampSEI appends to dst the SEI NAL unit (without start code or
// length prefix) stamping unixNano.
func appendStampSEI(dst []byte, unixNano int64) []byte {
	var rbsp [2 + stampPayloadSize]byte
	rbsp[0] = seiUserDataUnreg
	rbsp[1] = stampPayloadSize
	copy(rbsp[2:], stampUUID[:])
	binary.BigEndian.PutUint64(rbsp[2+16:], uint64(unixNano))

	dst = append(dst, naluTypeSEI) // forbidden_zero_bit 0, nal_ref_idc 0, type 6
	zeros := 0
	for _, c := range rbsp {
		// Emulation prevention (7.4.1): no 0x000000-0x000003 in the NAL unit.
		if zeros >= 2 && c <= 3 {
			dst = append(dst, 3)
			zeros = 0
		}
		dst = append(dst, c)
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	// rbsp_trailing_bits: the stop bit. The last payload byte may be zero,
	// but 0x80 is over 3 so no emulation prevention is needed before it.
	return append(dst, 0x80)
}

var errNoStamp = errors.New("not a loadtest stamp SEI")

// parseStampSEI returns the stamp of an SEI NAL unit written by
// appendStampSEI (or any SEI whose messages include one with our UUID). It
// does not allocate.
func parseStampSEI(nalu []byte) (int64, error) {
	if len(nalu) < 2 || nalu[0]&0x1f != naluTypeSEI {
		return 0, errNoStamp
	}
	// Unescape into a fixed buffer: our message is near the start, so the
	// first bytes suffice even behind another short message.
	var buf [256]byte
	n, zeros := 0, 0
	for _, c := range nalu[1:] {
		if n == len(buf) {
			break
		}
		if zeros >= 2 && c == 3 {
			zeros = 0
			continue
		}
		buf[n] = c
		n++
		if c == 0 {
			zeros++
		} else {
			zeros = 0
		}
	}
	b := buf[:n]
	for len(b) > 0 && b[0] != 0x80 {
		typ, rest, ok := seiNumber(b)
		if !ok {
			return 0, errNoStamp
		}
		size, rest, ok := seiNumber(rest)
		if !ok || size > len(rest) {
			return 0, errNoStamp
		}
		if typ == seiUserDataUnreg && size >= stampPayloadSize && [16]byte(rest[:16]) == stampUUID {
			return int64(binary.BigEndian.Uint64(rest[16:24])), nil
		}
		b = rest[size:]
	}
	return 0, errNoStamp
}

// seiNumber reads an ff-coded SEI payload type or size.
func seiNumber(b []byte) (int, []byte, bool) {
	v := 0
	for i, c := range b {
		v += int(c)
		if c != 0xff {
			return v, b[i+1:], true
		}
	}
	return 0, nil, false
}

// stampAVC returns an FLV AVC NALU tag body (5-byte header, then NAL units
// each behind a lengthSize-byte big-endian length) with the stamp SEI
// inserted as an extra NAL unit before the first slice. The result is built
// in dst[:0]. ok is false (and body should be sent as it is) when the body
// has no slice or is malformed.
func stampAVC(dst, body []byte, lengthSize int, unixNano int64) (out []byte, ok bool) {
	if len(body) < 5 || lengthSize < 1 || lengthSize > 4 {
		return nil, false
	}
	pos := 5
	for pos < len(body) {
		if len(body)-pos < lengthSize {
			return nil, false
		}
		n := 0
		for _, c := range body[pos : pos+lengthSize] {
			n = n<<8 | int(c)
		}
		if n > len(body)-pos-lengthSize {
			return nil, false
		}
		if n > 0 {
			if typ := body[pos+lengthSize] & 0x1f; typ >= 1 && typ <= 5 {
				break
			}
		}
		pos += lengthSize + n
	}
	if pos >= len(body) {
		return nil, false
	}
	out = append(dst[:0], body[:pos]...)
	lenAt := len(out)
	out = append(out, make([]byte, lengthSize)...)
	out = appendStampSEI(out, unixNano)
	seiLen := len(out) - lenAt - lengthSize
	for i := lengthSize - 1; i >= 0; i-- {
		out[lenAt+i] = byte(seiLen)
		seiLen >>= 8
	}
	return append(out, body[pos:]...), true
}
