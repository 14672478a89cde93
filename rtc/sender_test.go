package rtc

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/media"
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
	now := time.Now()
	first := mk(3)
	h.add(first, 65534, 50, DefaultRetransmitPercent) // 65534, 65535, 0
	for i, seq := range []uint16{65534, 65535, 0} {
		p, _, v := h.resend(seq, now)
		if v != resendOK {
			t.Fatalf("seq %d: verdict %d, want resendOK", seq, v)
		}
		if p.SequenceNumber != seq || p.Timestamp != 1050 || p.Payload[0] != byte(i) {
			t.Errorf("seq %d: got seq %d ts %d payload %v", seq, p.SequenceNumber, p.Timestamp, p.Payload)
		}
	}
	if first[0].SequenceNumber != 7 || first[0].Timestamp != 1000 {
		t.Error("resend changed the shared packet")
	}
	if _, _, v := h.resend(1, now); v != resendMissing {
		t.Error("seq 1 was never sent but was found")
	}
	h.add(mk(historySize), 1, 0, DefaultRetransmitPercent) // 1 .. 256: pushes out 65534 .. 0
	if _, _, v := h.resend(0, now); v != resendMissing {
		t.Error("seq 0 still found after historySize later packets")
	}
	if _, _, v := h.resend(256, now); v != resendOK {
		t.Errorf("seq 256: verdict %d, want resendOK", v)
	}
}

// TestRetransmitBudget: the budget grows by the percentage of what is
// sent, up to that percentage of the history, and by the floor over time;
// a packet is not resent twice within the round trip time, which a
// receiver report sets.
func TestRetransmitBudget(t *testing.T) {
	var h history
	pkts := make([]*rtp.Packet, 100)
	for i := range pkts {
		pkts[i] = &rtp.Packet{Payload: make([]byte, MaxRTPSize-12)} // MaxRTPSize bytes each
	}
	h.add(pkts, 0, 0, 10)
	t0 := time.Now()
	var ok []uint16
	for seq := range uint16(len(pkts)) {
		if _, size, v := h.resend(seq, t0); v == resendOK {
			ok = append(ok, seq)
			if size != MaxRTPSize {
				t.Errorf("seq %d resent as %d bytes, want %d", seq, size, MaxRTPSize)
			}
		} else if v != resendOverBudget {
			t.Errorf("seq %d: verdict %d, want resendOK or resendOverBudget", seq, v)
		}
	}
	if len(ok) != 10 {
		t.Errorf("resent %v at once, want 10 packets (10 %% of the 100 sent)", ok)
	}
	if _, _, v := h.resend(0, t0.Add(defaultRTT/2)); v != resendTooSoon {
		t.Errorf("seq 0 again after half the RTT: verdict %d, want resendTooSoon", v)
	}
	// A second of the floor pays for two more packets.
	t1 := t0.Add(time.Second)
	for _, c := range []struct {
		seq  uint16
		want resendVerdict
	}{{0, resendOK}, {10, resendOK}, {11, resendOverBudget}} {
		if _, _, v := h.resend(c.seq, t1); v != c.want {
			t.Errorf("seq %d a second later: verdict %d, want %d", c.seq, v, c.want)
		}
	}

	// A receiver report: 800 ms after the sender report it echoes, which
	// the peer held 500 ms: a 300 ms round trip.
	const ntp = 0x1234_5678_9abc_def0
	h.reported(ntp, t0)
	h.receiverReport(0x5678_9abc, 65536/2, t0.Add(800*time.Millisecond))
	if h.rtt != 300*time.Millisecond {
		t.Errorf("rtt %v, want 300ms", h.rtt)
	}
	h.receiverReport(0x1111_1111, 0, t0.Add(time.Second)) // echoes another report
	h.receiverReport(0x5678_9abc, 65536*2, t0.Add(time.Second))
	if h.rtt != 300*time.Millisecond {
		t.Errorf("rtt %v after reports that do not measure it, want 300ms still", h.rtt)
	}
	t2 := t1.Add(2 * time.Second) // the floor pays for 4 packets
	if _, _, v := h.resend(20, t2); v != resendOK {
		t.Errorf("seq 20: verdict %d, want resendOK", v)
	}
	if _, _, v := h.resend(20, t2.Add(200*time.Millisecond)); v != resendTooSoon {
		t.Errorf("seq 20 again 200 ms later with a 300 ms RTT: verdict %d, want resendTooSoon", v)
	}
	if _, _, v := h.resend(20, t2.Add(300*time.Millisecond)); v != resendOK {
		t.Errorf("seq 20 again 300 ms later with a 300 ms RTT: verdict %d, want resendOK", v)
	}
}

// TestNACKFlood: a pion viewer that NACKs every packet the sender can
// still resend (its whole history) every millisecond, while 1,000 video
// packets are sent to it a millisecond apart, gets resent at most the
// budget: DefaultRetransmitPercent of the bytes sent, plus what a new peer
// starts with and the floor for the time it took; without the budget it
// got a copy of the history per NACK, hundreds of times the stream. It
// still gets some resends: the budget is not zero.
func TestNACKFlood(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	e := testEngine(t, log)
	pub, err := media.NewRegistry(log).Publish("flood", "flood")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pub.Close)

	var (
		mu           sync.Mutex
		seen         = map[uint16]bool{}
		last         uint16 // highest sequence number received
		sent, resent int    // packets received first and again
	)
	client, ot := testViewer(t, e, pub.Stream, true, func(tr *webrtc.TrackRemote) {
		for {
			p, _, err := tr.ReadRTP()
			if err != nil {
				return
			}
			mu.Lock()
			if seen[p.SequenceNumber] {
				resent++
			} else {
				seen[p.SequenceNumber] = true
				sent++
				if sent == 1 || int16(p.SequenceNumber-last) > 0 {
					last = p.SequenceNumber
				}
			}
			mu.Unlock()
		}
	})
	go ot.ReadRTCP(func() {})

	// The flood: a NACK of the last historySize packets every millisecond.
	stop := make(chan struct{})
	flooded := make(chan int)
	go func() {
		nacks := 0
		defer func() { flooded <- nacks }()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		seqs := make([]uint16, historySize)
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			mu.Lock()
			n, top := sent, last
			mu.Unlock()
			if n == 0 {
				continue
			}
			for i := range seqs {
				seqs[i] = top - historySize + 1 + uint16(i)
			}
			nack := &rtcp.TransportLayerNack{MediaSSRC: ot.report.SSRC, Nacks: rtcp.NackPairsFromSequenceNumbers(seqs)}
			if client.WriteRTCP([]rtcp.Packet{nack}) == nil {
				nacks++
			}
		}
	}()

	const packets = 1000
	start := time.Now()
	for i := range packets {
		u := &media.Unit{RTP: []*rtp.Packet{{
			Header:  rtp.Header{Version: 2, Marker: true, Timestamp: uint32(i) * 3000},
			Payload: make([]byte, MaxRTPSize-12),
		}}}
		if err := ot.Send(u, false); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
	}
	// Let the last packets arrive (a few may be lost on a busy host).
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		n := sent
		mu.Unlock()
		if n == packets {
			break
		}
	}
	close(stop)
	nacks := <-flooded
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()

	sentBytes, resentBytes := int(ot.Stats().Packets)*MaxRTPSize, resent*MaxRTPSize
	budget := sentBytes*DefaultRetransmitPercent/100 + retransmitMinBurst + int(elapsed.Seconds()*retransmitFloorRate+1)
	t.Logf("%d NACKs of %d packets each; %d bytes sent, the viewer got %d bytes again (%.2fx), budget %d bytes; sender stats %+v",
		nacks, historySize, sentBytes, resentBytes, float64(resentBytes)/float64(max(sentBytes, 1)), budget, ot.Stats())
	if sent < packets/2 {
		t.Fatalf("viewer got %d of %d packets", sent, packets)
	}
	if resentBytes > budget {
		t.Errorf("a NACK flood got %d bytes resent for %d bytes sent (%.2fx), more than the budget of %d bytes (%d %% + %d + %v of %d B/s)",
			resentBytes, sentBytes, float64(resentBytes)/float64(sentBytes), budget, DefaultRetransmitPercent, retransmitMinBurst, elapsed.Round(time.Millisecond), retransmitFloorRate)
	}
	if resent == 0 {
		t.Error("nothing was resent: the budget should allow some resends")
	}
	if st := ot.Stats(); st.RetransmitsOverBudget == 0 || st.RetransmitsTooSoon == 0 {
		t.Errorf("stats %+v: want NACKed packets counted as over the budget and as too soon", st)
	}
}
