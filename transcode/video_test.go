package transcode

import (
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

const (
	bframesFLV = "../../shared/media/h264-bframes-aac.flv"
	plainFLV   = "../../shared/media/h264-aac.flv"
)

// flvVideo is the H.264 track of an FLV file: the parameter sets of its
// AVC sequence header and its units in file (decoding) order, in the hub's
// canonical form (SPS and PPS in front of every IDR).
type flvVideo struct {
	sps, pps []byte
	units    []*media.Unit // Track unset
}

// readFLVVideo reads the H.264 track of an FLV file. FLV: a 9-byte header
// and a 4-byte previous tag size, then tags of an 11-byte header (type,
// 24-bit size, 24-bit timestamp plus an 8-bit extension, 24-bit stream id),
// the data and a 4-byte previous tag size. A video tag's data: frame type
// and codec id (7: AVC), AVCPacketType (0: AVCDecoderConfigurationRecord,
// 1: NAL units with big-endian length prefixes), a signed 24-bit
// composition time offset in ms.
func readFLVVideo(tb testing.TB, path string) flvVideo {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		tb.Fatalf("%s: not FLV", path)
	}
	var v flvVideo
	var norm *H264Normalizer
	lengthSize := 4
	for pos := int(binary.BigEndian.Uint32(b[5:9])) + 4; pos+11 <= len(b); {
		typ := b[pos]
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := time.Duration(int64(b[pos+7])<<24|int64(b[pos+4])<<16|int64(b[pos+5])<<8|int64(b[pos+6])) * time.Millisecond
		data := b[pos+11 : pos+11+size]
		pos += 11 + size + 4
		if typ != 9 || len(data) < 5 || data[0]&0x0f != 7 {
			continue
		}
		cts := time.Duration(int32(uint32(data[2])<<24|uint32(data[3])<<16|uint32(data[4])<<8)>>8) * time.Millisecond
		body := data[5:]
		switch data[1] {
		case 0:
			if v.sps != nil {
				continue
			}
			lengthSize = int(body[4]&3) + 1
			p := 6
			n := int(binary.BigEndian.Uint16(body[p:]))
			v.sps = body[p+2 : p+2+n]
			p += 2 + n + 1
			n = int(binary.BigEndian.Uint16(body[p:]))
			v.pps = body[p+2 : p+2+n]
			norm = NewH264Normalizer(v.sps, v.pps)
		case 1:
			var au [][]byte
			for len(body) >= lengthSize {
				n := 0
				for _, c := range body[:lengthSize] {
					n = n<<8 | int(c)
				}
				body = body[lengthSize:]
				au = append(au, body[:n])
				body = body[n:]
			}
			nalus, idr := norm.Normalize(au)
			v.units = append(v.units, &media.Unit{PTS: ts + cts, DTS: ts, Key: idr, NALUs: nalus})
		}
	}
	if v.sps == nil || len(v.units) == 0 {
		tb.Fatalf("%s: no H.264", path)
	}
	return v
}

// track returns a hub track for v, and v's units on it (copies).
func (v flvVideo) track() (*media.Track, []*media.Unit) {
	t := &media.Track{Codec: media.H264{SPS: v.sps, PPS: v.pps}}
	units := make([]*media.Unit, len(v.units))
	for i, u := range v.units {
		c := *u
		c.Track = t
		units[i] = &c
	}
	return t, units
}

// rtpFrame is one access unit depacketized from RTP.
type rtpFrame struct {
	ts     uint32
	nalus  [][]byte
	unit   int // index of the unit that carried it
	marker bool
}

// depacketizer turns RTP packets back into access units with pion's
// H264Packet (STAP-A, FU-A, single NAL unit packets), grouping by
// timestamp.
type depacketizer struct {
	tb      testing.TB
	pkt     codecs.H264Packet
	frames  []rtpFrame
	lastSeq uint16
	started bool
}

func (d *depacketizer) push(unit int, pkts []*rtp.Packet) {
	d.tb.Helper()
	for _, p := range pkts {
		if d.started && p.SequenceNumber != d.lastSeq+1 {
			d.tb.Fatalf("unit %d: sequence %d after %d", unit, p.SequenceNumber, d.lastSeq)
		}
		d.started, d.lastSeq = true, p.SequenceNumber
		if p.PayloadType != PayloadTypeH264 || len(p.Payload)+rtpHeaderSize > testMTU {
			d.tb.Fatalf("unit %d: payload type %d, %d bytes", unit, p.PayloadType, len(p.Payload))
		}
		if n := len(d.frames); n == 0 || d.frames[n-1].marker {
			d.frames = append(d.frames, rtpFrame{ts: p.Timestamp, unit: unit})
		}
		f := &d.frames[len(d.frames)-1]
		if p.Timestamp != f.ts {
			d.tb.Fatalf("unit %d: timestamp %d inside a frame at %d (marker missing)", unit, p.Timestamp, f.ts)
		}
		annexB, err := d.pkt.Unmarshal(p.Payload)
		if err != nil {
			d.tb.Fatalf("unit %d: depacketize: %v", unit, err)
		}
		if len(annexB) > 0 {
			var au h264.AnnexB
			if err := au.Unmarshal(annexB); err != nil {
				d.tb.Fatalf("unit %d: %v", unit, err)
			}
			f.nalus = append(f.nalus, au...)
		}
		f.marker = p.Marker
	}
}

func needReencode(tb testing.TB) {
	tb.Helper()
	if !CanReencodeVideo() {
		tb.Skip("built without FFmpeg or libx264")
	}
}

// checkReencoded checks depacketized frames: complete, timestamps
// increasing, the first an IDR with SPS and PPS, every IDR with them, no B
// slice, Constrained Baseline 640x360; and that they decode, each at once.
func checkReencoded(t *testing.T, frames []rtpFrame) {
	t.Helper()
	if len(frames) == 0 {
		t.Fatal("no frames")
	}
	dec, err := av.NewVideoDecoder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	for i, f := range frames {
		if !f.marker {
			t.Fatalf("frame %d: incomplete", i)
		}
		if i > 0 && int32(f.ts-frames[i-1].ts) <= 0 {
			t.Fatalf("frame %d: timestamp %d after %d", i, f.ts, frames[i-1].ts)
		}
		types := naluTypes(f.nalus)
		idr := false
		for _, n := range f.nalus {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeIDR:
				idr = true
			case h264.NALUTypeSPS:
				var s h264.SPS
				if err := s.Unmarshal(n); err != nil {
					t.Fatalf("frame %d: SPS: %v", i, err)
				}
				if s.ProfileIdc != 66 || !s.ConstraintSet1Flag || s.Width() != 640 || s.Height() != 360 {
					t.Fatalf("frame %d: SPS profile %d %dx%d", i, s.ProfileIdc, s.Width(), s.Height())
				}
			}
			if st := SliceType(n); st == SliceB {
				t.Fatalf("frame %d: B slice", i)
			}
		}
		if i == 0 && !idr {
			t.Fatalf("first frame is not an IDR: %v", types)
		}
		if idr && (len(types) < 3 || types[0] != h264.NALUTypeSPS || types[1] != h264.NALUTypePPS) {
			t.Fatalf("frame %d: IDR without SPS, PPS in front: %v", i, types)
		}
		pics, err := dec.Decode(f.nalus, int64(f.ts), int64(f.ts))
		if err != nil {
			t.Fatalf("frame %d: decode: %v", i, err)
		}
		if len(pics) != 1 || pics[0].Width != 640 || pics[0].Height != 360 {
			t.Fatalf("frame %d: %d pictures", i, len(pics))
		}
		pics[0].Release()
	}
}

func TestH264ReencoderInStream(t *testing.T) {
	needReencode(t)
	v := readFLVVideo(t, bframesFLV)
	reg := media.NewRegistry(nil)
	s, err := reg.Publish("live/bframes", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	video, units := v.track()
	if err := s.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	var proc *H264Reencoder
	release, err := releaseOf(s.AddProcessor(video, "rtp-reencode", func(t *media.Track) media.Processor {
		p := NewH264Reencoder(t, testMTU)
		proc, _ = p.(*H264Reencoder)
		return p
	}))
	if err != nil {
		t.Fatal(err)
	}
	// A packetizer added later leaves the re-encoded packets alone.
	releaseRTP, err := releaseOf(s.AddProcessor(video, "rtp", func(t *media.Track) media.Processor { return NewRTPPacketizer(t, testMTU) }))
	if err != nil {
		t.Fatal(err)
	}
	if proc == nil {
		t.Fatal("no re-encoder")
	}
	r, err := s.NewReader(media.ReaderOptions{Name: "test", QueueSize: len(units)})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, u := range units {
		s.Write(u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &depacketizer{tb: t}
	var outBytes int
	for i := range units {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if u.RTP == nil {
			t.Fatalf("unit %d: nil RTP", i)
		}
		if i < 2 && len(u.RTP) != 0 {
			t.Fatalf("unit %d: %d packets before the decoder's reorder delay", i, len(u.RTP))
		}
		n := len(d.frames)
		d.push(i, u.RTP)
		if u.Key && i > 0 {
			// The frame that came out with an input IDR is an IDR.
			if len(d.frames) == n || naluTypes(d.frames[n].nalus)[0] != h264.NALUTypeSPS {
				t.Fatalf("unit %d: input IDR, re-encoded frame is no IDR", i)
			}
		}
		for _, p := range u.RTP {
			if unitTS := media.RTPTimestamp(video, u.PTS); max(int32(p.Timestamp-unitTS), int32(unitTS-p.Timestamp)) > 6*3000 {
				t.Fatalf("unit %d at %d: packet at %d", i, unitTS, p.Timestamp)
			}
			if i >= 60 {
				outBytes += len(p.Payload)
			}
		}
	}
	release()
	releaseRTP()
	if got := s.ProcessorErrors(0, "rtp-reencode"); got != 0 {
		t.Errorf("%d processor errors", got)
	}
	// Every input picture but the two the decoder still holds.
	if len(d.frames) != len(units)-2 {
		t.Fatalf("%d frames from %d units", len(d.frames), len(units))
	}
	checkReencoded(t, d.frames)
	var sps h264.SPS
	if err := sps.Unmarshal(d.frames[0].nalus[0]); err != nil {
		t.Fatal(err)
	}
	t.Logf("re-encoded SPS: profile-level-id %x", d.frames[0].nalus[0][1:4])

	// Each re-encoded frame has the PTS of an input picture. It leaves
	// with a later unit: how much later is the delay the re-encode adds,
	// the decoder's reorder buffer. Measured against the stream clock, it
	// is the DTS of the unit that carries the frame (a live source writes
	// units at their DTS) minus the frame's PTS (when it is to be shown).
	// The source's own timeline already has its first PTS 67 ms (two
	// frames, the same reorder depth) after its first DTS, so a frame that
	// leaves at or before its PTS adds no delay over what the source
	// implies for any decoder.
	inPTS := map[uint32]bool{}
	for _, u := range units {
		inPTS[media.RTPTimestamp(video, u.PTS)] = true
	}
	var worst, sum time.Duration
	for i, f := range d.frames {
		if !inPTS[f.ts] {
			t.Fatalf("frame %d: timestamp %d is no input PTS", i, f.ts)
		}
		lag := units[f.unit].DTS - media.TicksDuration(int64(f.ts)-int64(media.RTPTimestamp(video, 0)), 90000)
		worst = max(worst, lag)
		sum += lag
	}
	t.Logf("carrying unit's DTS minus frame PTS: worst %v, mean %v", worst, sum/time.Duration(len(d.frames)))
	if worst > 0 {
		t.Errorf("frames leave up to %v after their PTS", worst)
	}

	// Bitrate: the source's 400 kbit/s, measured over 2 s, times 5/4.
	if b := proc.Bitrate(); b < 400_000 || b > 650_000 {
		t.Errorf("bitrate %d", b)
	}
	rate := outBytes * 8 * 30 / (len(units) - 60)
	t.Logf("encoder bitrate %d, RTP payload from 2 s on: %d bit/s", proc.Bitrate(), rate)
	if rate < 300_000 || rate > 700_000 {
		t.Errorf("output %d bit/s", rate)
	}
}

// TestH264ReencoderJoin: a re-encoder made while the stream has a GOP
// cached decodes the cache without encoding it (the stream's write lock is
// held meanwhile), and a viewer joining from the cache starts with an IDR
// at the first live unit.
func TestH264ReencoderJoin(t *testing.T) {
	needReencode(t)
	v := readFLVVideo(t, bframesFLV)
	reg := media.NewRegistry(nil)
	s, err := reg.Publish("live/bframes", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	video, units := v.track()
	if err := s.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	for _, u := range units[:45] {
		s.Write(u)
	}
	release, err := releaseOf(s.AddProcessor(video, "rtp-reencode", func(t *media.Track) media.Processor { return NewH264Reencoder(t, testMTU) }))
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	r, err := s.NewReader(media.ReaderOptions{Name: "test", StartAtKeyframe: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, u := range units[45:90] {
		s.Write(u)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	d := &depacketizer{tb: t}
	for i := 30; i < 90; i++ {
		u, err := r.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if u.DTS != units[i].DTS || r.Cached() != (i < 45) {
			t.Fatalf("unit %d: DTS %v, cached %v", i, u.DTS, r.Cached())
		}
		if r.Cached() && len(u.RTP) != 0 {
			t.Fatalf("cached unit %d has %d packets: the backfill encoded it", i, len(u.RTP))
		}
		d.push(i, u.RTP)
	}
	checkReencoded(t, d.frames)
	// One frame per live unit: the pictures the decoder held back from
	// the cached units come out during the first live ones.
	if len(d.frames) != 45 || d.frames[0].unit != 45 {
		t.Errorf("%d frames, the first in unit %d; want 45 from unit 45 on", len(d.frames), d.frames[0].unit)
	}
}

func TestH264ReencoderKeyframeRequest(t *testing.T) {
	needReencode(t)
	v := readFLVVideo(t, "../../shared/media/long-gop.flv") // IDRs at units 0, 120, 240
	video, units := v.track()
	// Requests reach it through the hub's handle, as a viewer's do; the
	// test runs it itself (nothing is written to the stream).
	pub, err := media.NewRegistry(nil).Publish("live/test", "test")
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	if err := pub.SetTracks(video); err != nil {
		t.Fatal(err)
	}
	packetizer, err := pub.AddProcessor(video, "rtp", func(t *media.Track) media.Processor { return NewRTPPacketizer(t, testMTU) })
	if err != nil {
		t.Fatal(err)
	}
	defer packetizer.Release()
	if packetizer.RequestKeyframe() {
		t.Fatal("request for a track with no re-encoder accepted")
	}
	p, ok := NewH264Reencoder(video, testMTU).(*H264Reencoder)
	if !ok {
		t.Fatal("no re-encoder")
	}
	h, err := pub.AddProcessor(video, "rtp-reencode", func(*media.Track) media.Processor { return p })
	if err != nil {
		t.Fatal(err)
	}
	// 50 ms per unit: KeyframeRequestInterval is 10 units.
	now := time.Unix(1000, 0)
	p.now = func() time.Time { return now }
	idrAt := func(i int) bool {
		t.Helper()
		u := units[i]
		if err := p.Process(u); err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
		d := &depacketizer{tb: t}
		d.push(i, u.RTP)
		if len(d.frames) != 1 {
			t.Fatalf("unit %d: %d frames (no B-frames: one each)", i, len(d.frames))
		}
		now = now.Add(50 * time.Millisecond)
		return SliceType(d.frames[0].nalus[len(d.frames[0].nalus)-1]) == SliceI
	}
	// Units 0 to 19: the first is an IDR; a request at 5 comes too soon
	// after it and is served 500 ms after it, at unit 10.
	for i := range 20 {
		if i == 5 {
			p.RequestKeyframe()
		}
		if idrAt(i) != (i == 0 || i == 10) {
			t.Fatalf("unit %d: unexpected IDR or lack of one", i)
		}
	}
	// Long after the last IDR: served at once.
	if !h.RequestKeyframe() || !idrAt(20) {
		t.Fatal("no IDR for the request")
	}
	// Requests are merged: two more right after make one IDR, at unit 30.
	p.RequestKeyframe()
	h.RequestKeyframe()
	for i := 21; i < 60; i++ {
		if idrAt(i) != (i == 30) {
			t.Fatalf("unit %d: unexpected IDR or lack of one", i)
		}
	}
	h.Release() // the last reference: the hub closes it
	p.Close()
	if h.RequestKeyframe() {
		t.Error("request after close accepted")
	}
	if err := p.Process(units[60]); err == nil {
		t.Error("process after close")
	}
}

func TestH264ReencoderErrors(t *testing.T) {
	opus := &media.Track{Codec: media.Opus{Channels: 2}}
	for _, c := range []struct {
		track *media.Track
		mtu   int
		want  string
	}{
		{opus, testMTU, "is not H264"},
		{h264Track(), 10, "mtu 10 is out of range"},
	} {
		p := NewH264Reencoder(c.track, c.mtu)
		err := p.Process(&media.Unit{Track: c.track})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %v, want %q", err, c.want)
		}
	}
	if !CanReencodeVideo() {
		err := NewH264Reencoder(h264Track(), testMTU).Process(&media.Unit{})
		if err == nil || !strings.Contains(err.Error(), "bframes") {
			t.Errorf("error %v", err)
		}
		return
	}
	// Garbage is reported, and the stream decodes after it.
	v := readFLVVideo(t, plainFLV)
	video, units := v.track()
	p := NewH264Reencoder(video, testMTU)
	defer p.(*H264Reencoder).Close()
	bad := &media.Unit{Track: video, NALUs: [][]byte{{0x41, 0xff, 0xff, 0x00, 0x13}}}
	if err := p.Process(bad); err == nil {
		t.Log("garbage slice decoded without error")
	}
	if bad.RTP == nil || len(bad.RTP) != 0 {
		t.Errorf("garbage: %d packets", len(bad.RTP))
	}
	d := &depacketizer{tb: t}
	for i, u := range units[:40] {
		u.PTS += time.Second
		if err := p.Process(u); err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
		d.push(i, u.RTP)
	}
	checkReencoded(t, d.frames)
}

// TestH264ReencoderRTPSource: units from an RTP source (WHIP) have no DTS
// (the hub sets it to PTS); the decoder reorders by PTS all the same.
func TestH264ReencoderRTPSource(t *testing.T) {
	needReencode(t)
	v := readFLVVideo(t, bframesFLV)
	_, units := v.track()
	// An RTP source declares no parameter sets: they come in-band.
	video := &media.Track{Codec: media.H264{}}
	p := NewH264Reencoder(video, testMTU)
	defer p.(*H264Reencoder).Close()
	d := &depacketizer{tb: t}
	for i, u := range units {
		u.Track, u.DTS = video, u.PTS
		if err := p.Process(u); err != nil {
			t.Fatalf("unit %d: %v", i, err)
		}
		d.push(i, u.RTP)
	}
	if len(d.frames) != len(units)-2 {
		t.Fatalf("%d frames from %d units", len(d.frames), len(units))
	}
	checkReencoded(t, d.frames)
}

// BenchmarkH264Reencoder measures the re-encoding processor per unit
// (640x360 High with B-frames in, Constrained Baseline RTP out).
func BenchmarkH264Reencoder(b *testing.B) {
	needReencode(b)
	v := readFLVVideo(b, bframesFLV)
	video, units := v.track()
	var p *H264Reencoder
	var off time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(units)
		if k == 0 {
			if p != nil {
				p.Close()
				off += 11 * time.Second
			}
			p = NewH264Reencoder(video, testMTU).(*H264Reencoder)
		}
		u := *units[k]
		u.PTS += off
		u.DTS += off
		if err := p.Process(&u); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	p.Close()
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/unit")
}
