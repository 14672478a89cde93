package transcode

import (
	"bytes"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
)

// Stand-ins for NAL units; only the header byte matters to the assembler.
var (
	tSPS = []byte{0x67, 0x42, 0xc0, 0x1f, 0xd9}
	tPPS = []byte{0x68, 0xce, 0x3c, 0x80}
	tIDR = bytes.Repeat([]byte{0x65, 0x88, 0x84, 0x00}, 100) // 400 bytes: FU-A at mtu 120
	tP   = []byte{0x41, 0x9a, 0x02, 0x04}
)

// frameTime is the frame duration of the packetized units (30 fps).
const frameTime = time.Second / 30

// packetize makes the RTP packets of access units with the transcode
// packetizer (STAP-A for SPS+PPS, FU-A above mtu), on consecutive
// timestamps, sequence numbers from seq0.
func packetize(t *testing.T, seq0 uint16, aus ...[][]byte) [][]*rtp.Packet {
	t.Helper()
	tr := &media.Track{Codec: media.H264{SPS: tSPS, PPS: tPPS}}
	p := NewRTPPacketizer(tr, 120)
	var out [][]*rtp.Packet
	seq := seq0
	for i, au := range aus {
		u := &media.Unit{Track: tr, PTS: time.Duration(i) * frameTime, NALUs: au}
		if err := p.Process(u); err != nil {
			t.Fatal(err)
		}
		for _, pkt := range u.RTP {
			pkt.SequenceNumber = seq
			seq++
		}
		out = append(out, u.RTP)
	}
	return out
}

type collected struct{ aus []*RTPAccessUnit }

func (c *collected) emit(au *RTPAccessUnit) { c.aus = append(c.aus, au) }

func feed(a *H264Assembler, c *collected, pkts ...*rtp.Packet) {
	for _, p := range pkts {
		a.Push(p, c.emit)
	}
}

func flat(groups ...[]*rtp.Packet) []*rtp.Packet { return slices.Concat(groups...) }

func without(pkts []*rtp.Packet, i int) []*rtp.Packet {
	return slices.Delete(slices.Clone(pkts), i, i+1)
}

func TestH264AssemblerWhole(t *testing.T) {
	aus := [][][]byte{{tSPS, tPPS, tIDR}, {tP}, {tP, tP}}
	for _, seq0 := range []uint16{1000, 65530} { // and across the wrap
		pk := packetize(t, seq0, aus...)
		if len(pk[0]) < 4 {
			t.Fatalf("IDR unit made %d packets, expected STAP-A and several FU-A", len(pk[0]))
		}
		var a H264Assembler
		var c collected
		feed(&a, &c, flat(pk...)...)
		if len(c.aus) != 3 {
			t.Fatalf("seq0 %d: %d units, expected 3", seq0, len(c.aus))
		}
		for i, au := range c.aus {
			if au.Err != nil || !equalNALUs(au.NALUs, aus[i]) || len(au.Packets) != len(pk[i]) {
				t.Errorf("seq0 %d unit %d: err %v, NALUs %v, %d packets", seq0, i, au.Err, naluTypes(au.NALUs), len(au.Packets))
			}
		}
	}
}

func TestH264AssemblerLoss(t *testing.T) {
	pk := packetize(t, 100, [][]byte{tSPS, tPPS, tIDR}, [][]byte{tP}, [][]byte{tP}, [][]byte{tP})
	idr := pk[0]
	last := len(idr) - 1
	pk2 := packetize(t, 200, [][]byte{tP}, [][]byte{tSPS, tPPS, tIDR}, [][]byte{tP})
	cases := []struct {
		name    string
		pkts    []*rtp.Packet
		damaged []bool // per unit emitted
		err     string // of the first damaged unit
	}{
		{"middle packet", flat(without(idr, 2), pk[1], pk[2]), []bool{true, false, false}, "lost after"},
		{"head of a unit", flat(pk[1], without(pk2[1], 0), pk2[2]), []bool{false, true, false}, "before its first"},
		{"marker packet", flat(without(idr, last), pk[1], pk[2]), []bool{true, false, false}, "after its last"},
		{"tail and a whole unit", flat(without(without(idr, last), last-1), pk[2], pk[3]), []bool{true, true, false}, "after its last"},
		// A unit lost entirely: the next one is damaged (its reference is missing).
		{"whole unit", flat(pk[0], pk[2], pk[3]), []bool{false, true, false}, "before its first"},
	}
	for _, tc := range cases {
		var a H264Assembler
		var c collected
		feed(&a, &c, tc.pkts...)
		var got []bool
		for _, au := range c.aus {
			got = append(got, au.Err != nil)
			if (au.Err != nil) != (au.NALUs == nil) {
				t.Errorf("%s: err %v with %d NAL units", tc.name, au.Err, len(au.NALUs))
			}
		}
		if !slices.Equal(got, tc.damaged) {
			t.Errorf("%s: damaged %v, expected %v", tc.name, got, tc.damaged)
			continue
		}
		for _, au := range c.aus {
			if au.Err != nil {
				if !strings.Contains(au.Err.Error(), tc.err) {
					t.Errorf("%s: err %q, expected %q", tc.name, au.Err, tc.err)
				}
				break
			}
		}
	}
}

func TestH264AssemblerReorderLateDuplicate(t *testing.T) {
	pk := packetize(t, 7, [][]byte{tSPS, tPPS, tIDR}, [][]byte{tP}, [][]byte{tP})
	idr := pk[0]

	// Swapped within the unit: put back in order, whole.
	swapped := slices.Clone(idr)
	swapped[1], swapped[2] = swapped[2], swapped[1]
	var a H264Assembler
	var c collected
	feed(&a, &c, flat(swapped, pk[1])...)
	if len(c.aus) != 2 || c.aus[0].Err != nil || !equalNALUs(c.aus[0].NALUs, [][]byte{tSPS, tPPS, tIDR}) {
		t.Fatalf("reordered unit: %d units, first err %v", len(c.aus), c.aus[0].Err)
	}

	// Head reordered after the second packet (a unit before it, so the
	// gap shows): whole.
	a, c = H264Assembler{}, collected{}
	feed(&a, &c, pk[1]...)
	late := packetize(t, pk[1][len(pk[1])-1].SequenceNumber+1, [][]byte{tSPS, tPPS, tIDR})[0]
	feed(&a, &c, flat(late[1:2], late[0:1], late[2:])...)
	if len(c.aus) != 2 || c.aus[1].Err != nil {
		t.Fatalf("unit with its head late: %d units, err %v", len(c.aus), c.aus[len(c.aus)-1].Err)
	}

	// A retransmission after the unit was emitted: dropped and counted; a
	// duplicate too.
	a, c = H264Assembler{}, collected{}
	feed(&a, &c, flat(without(idr, 3), pk[1])...)
	feed(&a, &c, idr[3], pk[1][0])
	feed(&a, &c, pk[2]...)
	if len(c.aus) != 3 || c.aus[0].Err == nil || c.aus[1].Err != nil || c.aus[2].Err != nil {
		t.Fatalf("late packet: %d units", len(c.aus))
	}
	if a.late != 2 {
		t.Errorf("late = %d, expected 2", a.late)
	}
}

func TestH264AssemblerPaddingAndNoMarker(t *testing.T) {
	pk := packetize(t, 500, [][]byte{tP}, [][]byte{tP}, [][]byte{tP})
	pad := func(seq uint16, ts uint32) *rtp.Packet {
		return &rtp.Packet{Header: rtp.Header{Version: 2, SequenceNumber: seq, Timestamp: ts, Padding: true}}
	}
	// Padding between units (bandwidth probes) takes sequence numbers and
	// damages nothing.
	p0, p1, p2 := pk[0][0], pk[1][0], pk[2][0]
	p1.SequenceNumber, p2.SequenceNumber = p0.SequenceNumber+3, p0.SequenceNumber+4
	var a H264Assembler
	var c collected
	feed(&a, &c, p0, pad(p0.SequenceNumber+1, p0.Timestamp), pad(p0.SequenceNumber+2, p0.Timestamp), p1, p2)
	if len(c.aus) != 3 || c.aus[1].Err != nil || c.aus[2].Err != nil {
		t.Fatalf("with padding: %d units, errors %v %v", len(c.aus), c.aus[1].Err, c.aus[2].Err)
	}
	// A lost packet before padding is blamed on the next unit.
	a, c = H264Assembler{}, collected{}
	feed(&a, &c, p0, pad(p0.SequenceNumber+2, p0.Timestamp), p1)
	if len(c.aus) != 2 || c.aus[1].Err == nil {
		t.Fatalf("loss before padding not seen")
	}

	// Without markers a unit ends when the next one starts, whole if no
	// packet is missing in between.
	q := packetize(t, 9, [][]byte{tP}, [][]byte{tP}, [][]byte{tP})
	for _, g := range q {
		g[len(g)-1].Marker = false
	}
	a, c = H264Assembler{}, collected{}
	feed(&a, &c, flat(q...)...)
	if len(c.aus) != 2 || c.aus[0].Err != nil || c.aus[1].Err != nil {
		t.Fatalf("no markers: %d units (the last one waits)", len(c.aus))
	}
}

func TestDepacketizeH264Errors(t *testing.T) {
	pkt := func(payloads ...[]byte) []*rtp.Packet {
		var out []*rtp.Packet
		for i, p := range payloads {
			out = append(out, &rtp.Packet{Header: rtp.Header{SequenceNumber: uint16(i)}, Payload: p})
		}
		return out
	}
	cases := []struct {
		name string
		pkts []*rtp.Packet
		err  string
	}{
		{"STAP-A size past the end", pkt([]byte{24, 0, 9, 0x67, 1}), "STAP-A NAL unit of 9 bytes"},
		{"STAP-A cut in a size", pkt([]byte{24, 0, 1, 0x67, 0}), "truncated"},
		{"STAP-A empty unit", pkt([]byte{24, 0, 0}), "STAP-A NAL unit of 0 bytes"},
		{"FU-A without start", pkt([]byte{28, 0x05, 1, 2}), "start is missing"},
		{"FU-A without end", pkt([]byte{28, 0x85, 1, 2}), "no end bit"},
		{"FU-A restarted", pkt([]byte{28, 0x85, 1}, []byte{28, 0x85, 1}), "before the previous one ended"},
		{"single NAL inside FU-A", pkt([]byte{28, 0x85, 1}, []byte{0x41, 1}), "inside a fragmented"},
		{"STAP-B", pkt([]byte{25, 0, 0, 0}), "not allowed in packetization-mode 1"},
		{"type 0", pkt([]byte{0, 1}), "not allowed"},
		{"STAP-A with no unit", pkt([]byte{24}), "no NAL units"},
	}
	for _, tc := range cases {
		if _, err := depacketizeH264(tc.pkts); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, expected %q", tc.name, err, tc.err)
		}
	}
}

// FuzzH264Assembler feeds arbitrary packets (2-byte sequence number, 1-byte
// timestamp step, 1-byte flags, 2-byte payload length, payload) and checks
// the invariants: no panic, units in order with their packets, NAL units
// only for whole units, none empty.
func FuzzH264Assembler(f *testing.F) {
	enc := func(seq uint16, step, flags byte, payload []byte) []byte {
		b := binary.BigEndian.AppendUint16(nil, seq)
		b = append(b, step, flags)
		b = binary.BigEndian.AppendUint16(b, uint16(len(payload)))
		return append(b, payload...)
	}
	f.Add(slices.Concat(enc(1, 0, 0, []byte{24, 0, 2, 0x67, 1, 0, 2, 0x68, 1}), enc(2, 0, 1, []byte{0x65, 1})))
	f.Add(slices.Concat(enc(1, 0, 0, []byte{28, 0x85, 1}), enc(2, 0, 0, []byte{28, 0x05, 2}), enc(3, 0, 1, []byte{28, 0x45, 3})))
	f.Add(slices.Concat(enc(65535, 1, 1, []byte{0x41}), enc(1, 1, 1, []byte{0x41}), enc(0, 0, 1, []byte{0x41})))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a H264Assembler
		ts := uint32(0)
		var units []*RTPAccessUnit
		for len(data) >= 6 {
			seq, step, flags := binary.BigEndian.Uint16(data), data[2], data[3]
			n := min(int(binary.BigEndian.Uint16(data[4:])), len(data)-6)
			ts += uint32(step)
			p := &rtp.Packet{Header: rtp.Header{SequenceNumber: seq, Timestamp: ts, Marker: flags&1 != 0}, Payload: data[6 : 6+n]}
			data = data[6+n:]
			a.Push(p, func(au *RTPAccessUnit) { units = append(units, au) })
		}
		for _, au := range units {
			if len(au.Packets) == 0 {
				t.Fatal("unit without packets")
			}
			for _, p := range au.Packets {
				if p.Timestamp != au.Timestamp || len(p.Payload) == 0 {
					t.Fatalf("unit %d has a packet of timestamp %d, payload %d bytes", au.Timestamp, p.Timestamp, len(p.Payload))
				}
			}
			if (au.Err == nil) != (len(au.NALUs) > 0) {
				t.Fatalf("unit with error %v has %d NAL units", au.Err, len(au.NALUs))
			}
			for _, n := range au.NALUs {
				if len(n) == 0 {
					t.Fatal("empty NAL unit")
				}
			}
		}
	})
}
