package transcode

import (
	"bytes"
	"context"
	"encoding/binary"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/wishbridge/bridge/media"
)

const testMTU = 1200

func h264Track() *media.Track { return &media.Track{Codec: media.H264{SPS: testSPS, PPS: testPPS}} }
func opusTrack() *media.Track { return &media.Track{ID: 1, Codec: media.Opus{Channels: 2}} }

// h264Check collects what the packets of successive units must satisfy
// and depacketizes them with pion's H264Packet.
type h264Check struct {
	t       testing.TB
	mtu     int
	nextSeq uint16
	started bool
	ssrc    uint32
}

// unit checks the packets of one access unit stamped ts and returns the
// NAL units they carry, and the NAL unit types of the first packet
// (several for a STAP-A).
func (c *h264Check) unit(pkts []*rtp.Packet, ts uint32) (nalus [][]byte, first []h264.NALUType) {
	t := c.t
	t.Helper()
	if len(pkts) == 0 {
		t.Fatal("no packets")
	}
	depack := &codecs.H264Packet{IsAVC: true}
	var avcc []byte
	inFU := false
	var fuType, fuIndicator byte // of the fragmented NAL unit in progress
	for i, p := range pkts {
		if !c.started {
			c.started, c.nextSeq, c.ssrc = true, p.SequenceNumber, p.SSRC
		}
		if p.SequenceNumber != c.nextSeq {
			t.Fatalf("packet %d: sequence number %d, expected %d", i, p.SequenceNumber, c.nextSeq)
		}
		c.nextSeq++
		if p.Version != 2 || p.PayloadType != PayloadTypeH264 || p.SSRC != c.ssrc || p.Timestamp != ts {
			t.Fatalf("packet %d: version %d, PT %d, SSRC %d, timestamp %d; expected 2, %d, %d, %d",
				i, p.Version, p.PayloadType, p.SSRC, p.Timestamp, PayloadTypeH264, c.ssrc, ts)
		}
		if p.Marker != (i == len(pkts)-1) {
			t.Fatalf("packet %d of %d: marker %v", i, len(pkts), p.Marker)
		}
		if size := p.MarshalSize(); size > c.mtu {
			t.Fatalf("packet %d: %d bytes, mtu is %d", i, size, c.mtu)
		}
		if len(p.Payload) == 0 {
			t.Fatalf("packet %d: empty payload", i)
		}
		if cap(p.Payload) != len(p.Payload) {
			t.Fatalf("packet %d: payload has spare capacity (%d > %d): a reader's append would overwrite the next packet",
				i, cap(p.Payload), len(p.Payload))
		}

		typ := p.Payload[0] & 0x1f
		if i == 0 {
			first = payloadNALUTypes(t, p.Payload)
		}
		switch {
		case typ == naluTypeFUA:
			if len(p.Payload) < 3 {
				t.Fatalf("packet %d: FU-A of %d bytes", i, len(p.Payload))
			}
			s, e, r := p.Payload[1]&0x80 != 0, p.Payload[1]&0x40 != 0, p.Payload[1]&0x20 != 0
			if r || (s && e) || s == inFU || (inFU && (p.Payload[1]&0x1f != fuType || p.Payload[0]&0xe0 != fuIndicator)) {
				t.Fatalf("packet %d: FU header %08b (in a fragmented unit: %v)", i, p.Payload[1], inFU)
			}
			inFU, fuType, fuIndicator = !e, p.Payload[1]&0x1f, p.Payload[0]&0xe0
		case inFU:
			t.Fatalf("packet %d: type %d inside a fragmented NAL unit", i, typ)
		case typ == naluTypeSTAPA || (typ >= 1 && typ <= 23):
		default:
			t.Fatalf("packet %d: payload type %d", i, typ)
		}

		out, err := depack.Unmarshal(p.Payload)
		if err != nil {
			t.Fatalf("packet %d: depacketize: %v", i, err)
		}
		if typ == naluTypeFUA && len(out) > 4 {
			// pion rebuilds a fragmented NAL unit's header from NRI and
			// type only; RFC 6184 5.8 carries its F bit in the FU
			// indicator too.
			out[4] |= p.Payload[0] & 0x80
		}
		avcc = append(avcc, out...)
	}
	if inFU {
		t.Fatal("last fragmented NAL unit has no end")
	}
	for len(avcc) > 0 {
		n := int(binary.BigEndian.Uint32(avcc))
		nalus = append(nalus, avcc[4:4+n])
		avcc = avcc[4+n:]
	}
	return nalus, first
}

// payloadNALUTypes returns the NAL unit types in an RTP payload.
func payloadNALUTypes(t testing.TB, payload []byte) []h264.NALUType {
	switch typ := payload[0] & 0x1f; typ {
	case naluTypeSTAPA:
		var out []h264.NALUType
		for b := payload[1:]; len(b) > 0; {
			n := int(binary.BigEndian.Uint16(b))
			if n == 0 || 2+n > len(b) {
				t.Fatalf("STAP-A: bad size %d of %d", n, len(b))
			}
			out = append(out, h264.NALUType(b[2]&0x1f))
			b = b[2+n:]
		}
		return out
	case naluTypeFUA:
		return []h264.NALUType{h264.NALUType(payload[1] & 0x1f)}
	default:
		return []h264.NALUType{h264.NALUType(typ)}
	}
}

func TestPacketizeH264Fixture(t *testing.T) {
	for _, mtu := range []int{testMTU, 1500, 100, MinRTPMTU} {
		track := h264Track()
		// Start 3 frames before zero: negative PTS must wrap, not jump.
		units := readFixtureUnits(t, track, -3)
		p := NewRTPPacketizer(track, mtu)
		check := &h264Check{t: t, mtu: mtu}
		var stats struct{ packets, stapA, fuA int }
		for i, u := range units {
			if err := p.Process(u); err != nil {
				t.Fatalf("mtu %d, unit %d: %v", mtu, i, err)
			}
			wantTS := uint32(int64(i-3) * 3000) // PTS at 90 kHz
			got, first := check.unit(u.RTP, wantTS)
			if !equalNALUs(got, u.NALUs) {
				t.Fatalf("mtu %d, unit %d: depacketized %v, expected %v", mtu, i, naluTypes(got), naluTypes(u.NALUs))
			}
			if u.Key {
				// The parameter sets come first, in one STAP-A if they fit.
				if mtu >= testMTU && !slices.Equal(first, []h264.NALUType{h264.NALUTypeSPS, h264.NALUTypePPS}) {
					t.Fatalf("mtu %d, unit %d: IDR starts with a packet holding %v, expected a STAP-A with SPS, PPS", mtu, i, first)
				}
				types := naluTypes(got)
				idr := slices.Index(types, h264.NALUTypeIDR)
				if idr < 0 || !slices.Contains(types[:idr], h264.NALUTypeSPS) || !slices.Contains(types[:idr], h264.NALUTypePPS) {
					t.Fatalf("mtu %d, unit %d: IDR unit carries %v, expected SPS and PPS before the IDR slice", mtu, i, types)
				}
			}
			stats.packets += len(u.RTP)
			for _, pkt := range u.RTP {
				switch pkt.Payload[0] & 0x1f {
				case naluTypeSTAPA:
					stats.stapA++
				case naluTypeFUA:
					stats.fuA++
				}
			}
		}
		t.Logf("mtu %d: %d units, %d packets, %d STAP-A, %d FU-A", mtu, len(units), stats.packets, stats.stapA, stats.fuA)
		if mtu >= testMTU && stats.stapA != fixtureIDRs {
			t.Fatalf("mtu %d: %d STAP-A packets, expected one per IDR (%d)", mtu, stats.stapA, fixtureIDRs)
		}
		if stats.fuA == 0 {
			t.Fatalf("mtu %d: no FU-A packets", mtu)
		}
	}
}

// TestPacketizeH264MatchesPion compares the payloads with pion's
// H264Payloader, the reference implementation, on the real stream: where
// pion's payloader behaves well, the output is the same byte for byte.
func TestPacketizeH264MatchesPion(t *testing.T) {
	track := h264Track()
	p := NewRTPPacketizer(track, testMTU)
	pion := &codecs.H264Payloader{}
	for i, u := range readFixtureUnits(t, track, 0) {
		if err := p.Process(u); err != nil {
			t.Fatal(err)
		}
		annexb, err := h264.AnnexB(u.NALUs).Marshal()
		if err != nil {
			t.Fatal(err)
		}
		want := pion.Payload(testMTU-12, annexb)
		if len(want) != len(u.RTP) {
			t.Fatalf("unit %d: %d packets, pion makes %d", i, len(u.RTP), len(want))
		}
		for k := range want {
			if !bytes.Equal(u.RTP[k].Payload, want[k]) {
				t.Fatalf("unit %d, packet %d: payload differs from pion's (%x... vs %x...)",
					i, k, u.RTP[k].Payload[:min(8, len(u.RTP[k].Payload))], want[k][:min(8, len(want[k]))])
			}
		}
	}
}

func TestPacketizeH264FUA(t *testing.T) {
	big := make([]byte, 5000)
	big[0] = 0x65 // IDR, NRI 3
	for i := 1; i < len(big); i++ {
		big[i] = byte(i * 7)
	}
	track := h264Track()
	p := NewRTPPacketizer(track, testMTU)
	check := &h264Check{t: t, mtu: testMTU}
	units := []*media.Unit{
		{Track: track, PTS: time.Second, Key: true, NALUs: [][]byte{testSPS, testPPS, big}},
		{Track: track, PTS: time.Second + frameDuration, NALUs: [][]byte{testSEI, testSlice}},
	}
	for i, u := range units {
		if err := p.Process(u); err != nil {
			t.Fatal(err)
		}
		got, _ := check.unit(u.RTP, media.RTPTimestamp(track, u.PTS))
		if !equalNALUs(got, u.NALUs) {
			t.Fatalf("unit %d: depacketized %v, expected %v", i, naluTypes(got), naluTypes(u.NALUs))
		}
	}
	// STAP-A, then ceil(4999 / 1186) = 5 fragments.
	pkts := units[0].RTP
	if len(pkts) != 6 {
		t.Fatalf("%d packets, expected 6", len(pkts))
	}
	if pkts[0].Payload[0] != 0x78 {
		t.Fatalf("STAP-A header %#x, expected 0x78 (NRI 3, type 24)", pkts[0].Payload[0])
	}
	for i, pkt := range pkts[1:] {
		if pkt.Payload[0] != 0x7c { // FU indicator: NRI 3, type 28
			t.Fatalf("fragment %d: FU indicator %#x", i, pkt.Payload[0])
		}
		wantHdr := byte(5)
		switch i {
		case 0:
			wantHdr |= 0x80
		case len(pkts) - 2:
			wantHdr |= 0x40
		}
		if pkt.Payload[1] != wantHdr {
			t.Fatalf("fragment %d: FU header %08b, expected %08b", i, pkt.Payload[1], wantHdr)
		}
	}
	if n := len(units[1].RTP); n != 2 {
		t.Fatalf("P frame: %d packets, expected 2 single NAL unit packets", n)
	}
}

func TestPacketizeH264ParamSetsTooBigForSTAPA(t *testing.T) {
	// An SPS and PPS that do not fit one packet together are sent alone
	// (pion's payloader drops them).
	mtu := 100
	sps := append([]byte{0x67}, bytes.Repeat([]byte{0x42}, 60)...)
	pps := append([]byte{0x68}, bytes.Repeat([]byte{0xce}, 40)...)
	track := h264Track()
	u := &media.Unit{Track: track, Key: true, NALUs: [][]byte{sps, pps, testIDR}}
	if err := NewRTPPacketizer(track, mtu).Process(u); err != nil {
		t.Fatal(err)
	}
	got, first := (&h264Check{t: t, mtu: mtu}).unit(u.RTP, 0)
	if !equalNALUs(got, u.NALUs) || len(u.RTP) != 3 || !slices.Equal(first, []h264.NALUType{h264.NALUTypeSPS}) {
		t.Fatalf("got %d packets carrying %v, expected SPS, PPS, IDR alone", len(u.RTP), naluTypes(got))
	}
}

func TestPacketizeH264DroppedNALUs(t *testing.T) {
	track := h264Track()
	p := NewRTPPacketizer(track, testMTU)

	// AUD and filler are dropped silently, as pion does.
	u := &media.Unit{Track: track, NALUs: [][]byte{testAUD, testSlice, testFiller, {}}}
	if err := p.Process(u); err != nil {
		t.Fatal(err)
	}
	if len(u.RTP) != 1 || !bytes.Equal(u.RTP[0].Payload, testSlice) {
		t.Fatalf("got %d packets, expected the slice alone", len(u.RTP))
	}
	seq := u.RTP[0].SequenceNumber

	// Types RFC 6184 reserves for its own payload structures cannot go as
	// they are: dropped and reported, the rest is still sent.
	u = &media.Unit{Track: track, NALUs: [][]byte{{0x7c, 0x85, 0x00}, testSlice}}
	err := p.Process(u)
	if err == nil || !strings.Contains(err.Error(), "type 28") {
		t.Fatalf("error %v, expected one naming type 28", err)
	}
	if len(u.RTP) != 1 || !bytes.Equal(u.RTP[0].Payload, testSlice) || u.RTP[0].SequenceNumber != seq+1 {
		t.Fatalf("got %d packets, expected the slice alone with sequence number %d", len(u.RTP), seq+1)
	}

	// Nothing to send: an error, no packets, no sequence number used.
	for _, nalus := range [][][]byte{nil, {testAUD}, {{0x00, 0x01}}} {
		u = &media.Unit{Track: track, NALUs: nalus}
		if err := p.Process(u); err == nil || u.RTP != nil {
			t.Fatalf("%x: error %v, %d packets; expected an error and none", nalus, err, len(u.RTP))
		}
	}
	u = &media.Unit{Track: track, NALUs: [][]byte{testSlice}}
	if err := p.Process(u); err != nil || u.RTP[0].SequenceNumber != seq+2 {
		t.Fatalf("error %v, sequence number %d; expected %d", err, u.RTP[0].SequenceNumber, seq+2)
	}
}

func TestPacketizeOpus(t *testing.T) {
	track := opusTrack()
	p := NewRTPPacketizer(track, testMTU)
	var prev *rtp.Packet
	for i := range 50 {
		// 20 ms packets starting at -6.5 ms, like the MKV fixture's pre-skip.
		pts := -6500*time.Microsecond + time.Duration(i)*20*time.Millisecond
		data := bytes.Repeat([]byte{byte(i)}, 80+i)
		u := &media.Unit{Track: track, PTS: pts, DTS: pts, Key: true, Data: data}
		if err := p.Process(u); err != nil {
			t.Fatal(err)
		}
		if len(u.RTP) != 1 {
			t.Fatalf("unit %d: %d packets, expected 1", i, len(u.RTP))
		}
		pkt := u.RTP[0]
		if pkt.Version != 2 || pkt.PayloadType != PayloadTypeOpus || pkt.Marker || !bytes.Equal(pkt.Payload, data) {
			t.Fatalf("unit %d: version %d, PT %d, marker %v, payload %d bytes", i, pkt.Version, pkt.PayloadType, pkt.Marker, len(pkt.Payload))
		}
		if want := uint32(-312 + 960*i); pkt.Timestamp != want { // -6.5 ms at 48 kHz is -312
			t.Fatalf("unit %d: timestamp %d, expected %d", i, pkt.Timestamp, want)
		}
		if prev != nil {
			if pkt.Timestamp-prev.Timestamp != 960 || pkt.SequenceNumber != prev.SequenceNumber+1 || pkt.SSRC != prev.SSRC {
				t.Fatalf("unit %d: timestamp %d, seq %d after %d, %d", i, pkt.Timestamp, pkt.SequenceNumber, prev.Timestamp, prev.SequenceNumber)
			}
		}
		prev = pkt
	}

	// Opus cannot be fragmented: a packet over the budget is still sent,
	// and reported.
	u := &media.Unit{Track: track, Data: make([]byte, testMTU)}
	if err := p.Process(u); err == nil || len(u.RTP) != 1 {
		t.Fatalf("oversized packet: error %v, %d packets; expected an error and 1 packet", err, len(u.RTP))
	}
	u = &media.Unit{Track: track}
	if err := p.Process(u); err == nil || u.RTP != nil {
		t.Fatalf("empty packet: error %v, %d packets; expected an error and none", err, len(u.RTP))
	}
}

func TestRTPPacketizerErrors(t *testing.T) {
	aac := &media.Track{Codec: media.AAC{SampleRate: 48000, Channels: 2}}
	u := &media.Unit{Track: aac, Data: []byte{1, 2, 3}}
	if err := NewRTPPacketizer(aac, testMTU).Process(u); err == nil || !strings.Contains(err.Error(), "AAC is not supported") || u.RTP != nil {
		t.Fatalf("AAC: error %v, %d packets; expected not supported", err, len(u.RTP))
	}
	for _, mtu := range []int{0, MinRTPMTU - 1, MaxRTPMTU + 1} {
		track := h264Track()
		u := &media.Unit{Track: track, NALUs: [][]byte{testSlice}}
		if err := NewRTPPacketizer(track, mtu).Process(u); err == nil || !strings.Contains(err.Error(), "mtu") || u.RTP != nil {
			t.Fatalf("mtu %d: error %v, %d packets; expected an mtu error", mtu, err, len(u.RTP))
		}
	}
}

// TestRTPPacketizerKeepsSourcePackets: units from an RTP ingest pass
// through untouched.
func TestRTPPacketizerKeepsSourcePackets(t *testing.T) {
	for _, track := range []*media.Track{h264Track(), opusTrack()} {
		src := []*rtp.Packet{{Header: rtp.Header{Version: 2, SequenceNumber: 7, Timestamp: 99}, Payload: testSlice}}
		u := &media.Unit{Track: track, NALUs: [][]byte{testSlice}, Data: []byte{1}, RTP: src}
		if err := NewRTPPacketizer(track, testMTU).Process(u); err != nil || len(u.RTP) != 1 || u.RTP[0] != src[0] {
			t.Fatalf("%s: error %v, packets %v; expected the source packets", track, err, u.RTP)
		}
	}
}

// TestRTPPacketizerInStream registers the packetizer with a hub stream the
// way egress does and reads the packets back.
func TestRTPPacketizerInStream(t *testing.T) {
	reg := media.NewRegistry(nil)
	s, err := reg.Publish("live/test", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	video, audio := h264Track(), &media.Track{Codec: media.Opus{Channels: 2}}
	if err := s.SetTracks(video, audio); err != nil {
		t.Fatal(err)
	}
	for _, tr := range s.Tracks() {
		release, err := releaseOf(s.AddProcessor(tr, "rtp", func(t *media.Track) media.Processor { return NewRTPPacketizer(t, testMTU) }))
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	r, err := s.NewReader(media.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	units := readFixtureUnits(t, video, 0)[:31]
	go func() {
		for i, u := range units {
			s.Write(u)
			s.Write(&media.Unit{Track: audio, PTS: u.PTS, Key: true, Data: []byte{0xfc, byte(i)}})
		}
	}()
	check := &h264Check{t: t, mtu: testMTU}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := 0; i < 2*len(units); i++ {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if u.Track == audio {
			if len(u.RTP) != 1 || u.RTP[0].PayloadType != PayloadTypeOpus {
				t.Fatalf("audio unit %d: %d packets", i/2, len(u.RTP))
			}
			continue
		}
		got, _ := check.unit(u.RTP, media.RTPTimestamp(video, u.PTS))
		if !equalNALUs(got, u.NALUs) {
			t.Fatalf("video unit %d: depacketized %v, expected %v", i/2, naluTypes(got), naluTypes(u.NALUs))
		}
	}
}

func TestPacketizeH264Allocs(t *testing.T) {
	track := h264Track()
	units := readFixtureUnits(t, track, 0)
	p := NewRTPPacketizer(track, testMTU)
	u := units[0] // the first IDR: STAP-A, SEI and a dozen fragments
	allocs := testing.AllocsPerRun(100, func() {
		u.RTP = nil
		if err := p.Process(u); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 3 {
		t.Fatalf("%v allocations for %d packets, expected 3 (packets, pointers, payload buffer)", allocs, len(u.RTP))
	}
}

func FuzzPacketizeRoundTrip(f *testing.F) {
	f.Add(encodeNALUs(testSPS, testPPS, testIDR), uint16(testMTU))
	f.Add(encodeNALUs(testAUD, testSEI, testSlice, testFiller), uint16(0))
	f.Add(encodeNALUs(testSPS, testSPS2, testPPS, testPPS2, testIDR), uint16(30))
	f.Add(encodeNALUs(nil, []byte{0x18, 1, 2}, []byte{0x7c, 0x85}, []byte{0x00}, testSlice), uint16(3))
	au := readFixtureUnits(f, h264Track(), 0)[0]
	f.Add(encodeNALUs(au.NALUs...), uint16(testMTU))
	f.Add(encodeNALUs(au.NALUs...), uint16(9))

	f.Fuzz(func(t *testing.T, data []byte, mtu16 uint16) {
		mtu := MinRTPMTU + int(mtu16)%1500
		nalus := decodeNALUs(data)
		var want [][]byte
		for _, n := range nalus {
			if sendable(n) {
				want = append(want, n)
			}
		}
		in := cloneNALUs(nalus)
		track := h264Track()
		p := NewRTPPacketizer(track, mtu)
		check := &h264Check{t: t, mtu: mtu}
		for i := range 2 { // twice: the second unit must continue the sequence
			u := &media.Unit{Track: track, PTS: time.Duration(i) * frameDuration, NALUs: nalus}
			err := p.Process(u)
			if len(want) == 0 {
				if err == nil || u.RTP != nil {
					t.Fatalf("nothing to send: error %v, %d packets", err, len(u.RTP))
				}
				return
			}
			got, _ := check.unit(u.RTP, uint32(3000*i))
			if !equalNALUs(got, want) {
				t.Fatalf("mtu %d: depacketized %v, expected %v", mtu, naluTypes(got), naluTypes(want))
			}
			if !equalNALUs(nalus, in) {
				t.Fatal("Process modified the unit's NAL units")
			}
		}
	})
}

func BenchmarkPacketizeH264(b *testing.B) {
	track := h264Track()
	units := readFixtureUnits(b, track, 0)
	var total int64
	for _, u := range units {
		for _, n := range u.NALUs {
			total += int64(len(n))
		}
	}
	p := NewRTPPacketizer(track, testMTU)
	b.SetBytes(total / int64(len(units)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		u := units[i%len(units)]
		u.RTP = nil
		if err := p.Process(u); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPacketizeH264Pion is the same work with pion's Packetizer and
// H264Payloader (fed Annex-B, which it needs), for comparison.
func BenchmarkPacketizeH264Pion(b *testing.B) {
	units := readFixtureUnits(b, h264Track(), 0)
	annexb := make([][]byte, len(units))
	var total int64
	for i, u := range units {
		annexb[i], _ = h264.AnnexB(u.NALUs).Marshal()
		total += int64(len(annexb[i]))
	}
	p := rtp.NewPacketizer(testMTU, PayloadTypeH264, 1, &codecs.H264Payloader{}, rtp.NewRandomSequencer(), 90000)
	b.SetBytes(total / int64(len(units)))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if pkts := p.Packetize(annexb[i%len(annexb)], 3000); len(pkts) == 0 {
			b.Fatal("no packets")
		}
	}
}
