package rtc

import (
	"testing"

	"github.com/pion/rtp"
)

// TestHistory: packets are found by the sequence number they were sent
// with, across the wrap at 65536, with this peer's timestamp; a packet
// pushed out by historySize later ones is gone.
func TestHistory(t *testing.T) {
	var h history
	mk := func(n int) []*rtp.Packet {
		pkts := make([]*rtp.Packet, n)
		for i := range pkts {
			pkts[i] = &rtp.Packet{Header: rtp.Header{Timestamp: 1000, SequenceNumber: 7}, Payload: []byte{byte(i)}}
		}
		return pkts
	}
	first := mk(3)
	h.add(first, 65534, 50) // 65534, 65535, 0
	for i, seq := range []uint16{65534, 65535, 0} {
		p, ok := h.get(seq)
		if !ok {
			t.Fatalf("seq %d not found", seq)
		}
		if p.SequenceNumber != seq || p.Timestamp != 1050 || p.Payload[0] != byte(i) {
			t.Errorf("seq %d: got seq %d ts %d payload %v", seq, p.SequenceNumber, p.Timestamp, p.Payload)
		}
	}
	if first[0].SequenceNumber != 7 || first[0].Timestamp != 1000 {
		t.Error("get changed the shared packet")
	}
	if _, ok := h.get(1); ok {
		t.Error("seq 1 was never sent but was found")
	}
	h.add(mk(historySize), 1, 0) // 1 .. 256: pushes out 65534 .. 0
	if _, ok := h.get(0); ok {
		t.Error("seq 0 still found after historySize later packets")
	}
	if _, ok := h.get(256); !ok {
		t.Error("seq 256 not found")
	}
}
