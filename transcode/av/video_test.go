package av

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"testing"

	"github.com/bluenviron/mediacommon/v2/pkg/bits"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

const (
	bframesFLV = "../../../shared/media/h264-bframes-aac.flv"
	plainFLV   = "../../../shared/media/h264-aac.flv"
)

// flvAU is one H.264 access unit of an FLV file: NAL units without start
// codes, times in 90 kHz ticks.
type flvAU struct {
	nalus    [][]byte
	pts, dts int64
	key      bool
}

// readFLVVideo reads the H.264 track of an FLV file: the parameter sets of
// its (first) AVC sequence header and its access units in file (decoding)
// order. FLV: a 9-byte header and a 4-byte previous tag size, then tags of
// an 11-byte header (type, 24-bit size, 24-bit timestamp plus an 8-bit
// extension, 24-bit stream id), the data and a 4-byte previous tag size. A
// video tag's data: frame type and codec id (7: AVC), AVCPacketType (0:
// AVCDecoderConfigurationRecord, 1: NAL units with big-endian length
// prefixes), a signed 24-bit composition time offset in ms.
func readFLVVideo(tb testing.TB, path string) (sps, pps []byte, aus []flvAU) {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		tb.Fatalf("%s: not FLV", path)
	}
	lengthSize := 4
	for pos := int(binary.BigEndian.Uint32(b[5:9])) + 4; pos+11 <= len(b); {
		typ := b[pos]
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := int64(b[pos+7])<<24 | int64(b[pos+4])<<16 | int64(b[pos+5])<<8 | int64(b[pos+6])
		data := b[pos+11 : pos+11+size]
		pos += 11 + size + 4
		if typ != 9 || len(data) < 5 || data[0]&0x0f != 7 {
			continue
		}
		cts := int64(int32(uint32(data[2])<<24|uint32(data[3])<<16|uint32(data[4])<<8) >> 8)
		body := data[5:]
		switch data[1] {
		case 0:
			if sps != nil {
				continue
			}
			lengthSize = int(body[4]&3) + 1
			p := 6
			n := int(binary.BigEndian.Uint16(body[p:]))
			sps = body[p+2 : p+2+n]
			p += 2 + n + 1
			n = int(binary.BigEndian.Uint16(body[p:]))
			pps = body[p+2 : p+2+n]
		case 1:
			var nalus [][]byte
			for len(body) >= lengthSize {
				n := 0
				for _, c := range body[:lengthSize] {
					n = n<<8 | int(c)
				}
				body = body[lengthSize:]
				nalus = append(nalus, body[:n])
				body = body[n:]
			}
			aus = append(aus, flvAU{nalus: nalus, dts: ts * 90, pts: (ts + cts) * 90, key: data[0]>>4 == 1})
		}
	}
	if sps == nil || len(aus) == 0 {
		tb.Fatalf("%s: no H.264", path)
	}
	return sps, pps, aus
}

// sliceType returns slice_type % 5 of a coded slice NAL unit (0 P, 1 B,
// 2 I, 3 SP, 4 SI), or -1 for other NAL units.
func sliceType(tb testing.TB, nalu []byte) int {
	tb.Helper()
	if typ := nalu[0] & 0x1f; typ != 1 && typ != 5 {
		return -1
	}
	hdr := h264.EmulationPreventionRemove(nalu[1:min(len(nalu), 32)])
	pos := 0
	if _, err := bits.ReadGolombUnsigned(hdr, &pos); err != nil { // first_mb_in_slice
		tb.Fatal(err)
	}
	st, err := bits.ReadGolombUnsigned(hdr, &pos)
	if err != nil {
		tb.Fatal(err)
	}
	return int(st % 5)
}

func naluTypesOf(nalus [][]byte) []int {
	out := make([]int, len(nalus))
	for i, n := range nalus {
		out[i] = int(n[0] & 0x1f)
	}
	return out
}

func decodeAll(tb testing.TB, d *VideoDecoder, aus []flvAU) []VideoFrame {
	tb.Helper()
	var frames []VideoFrame
	for i, au := range aus {
		f, err := d.Decode(au.nalus, au.pts, au.dts)
		if err != nil {
			tb.Fatalf("access unit %d: %v", i, err)
		}
		frames = append(frames, f...)
	}
	f, err := d.Flush()
	if err != nil {
		tb.Fatal(err)
	}
	return append(frames, f...)
}

func releaseAll(frames []VideoFrame) {
	for i := range frames {
		frames[i].Release()
	}
}

func needVideo(tb testing.TB) {
	tb.Helper()
	if !VideoAvailable() {
		tb.Skip("built without FFmpeg or libx264")
	}
}

func psnr(a, b []byte) float64 {
	var se float64
	for i := range a {
		d := float64(a[i]) - float64(b[i])
		se += d * d
	}
	if se == 0 {
		return 99
	}
	return 10 * math.Log10(255*255*float64(len(a))/se)
}

func TestVideoDecodeBFrames(t *testing.T) {
	needVideo(t)
	sps, pps, aus := readFLVVideo(t, bframesFLV)
	if len(aus) != 300 {
		t.Fatalf("%d access units", len(aus))
	}
	d, err := NewVideoDecoder(sps, pps)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// The decoder holds pictures back by the reorder depth (2), and
	// hands them out in presentation order.
	var frames []VideoFrame
	for i, au := range aus {
		f, err := d.Decode(au.nalus, au.pts, au.dts)
		if err != nil {
			t.Fatalf("access unit %d: %v", i, err)
		}
		if i < 2 && len(f) != 0 || i >= 2 && len(f) != 1 {
			t.Fatalf("access unit %d: %d frames", i, len(f))
		}
		frames = append(frames, f...)
	}
	tail, err := d.Flush()
	if err != nil {
		t.Fatal(err)
	}
	frames = append(frames, tail...)
	defer releaseAll(frames)
	if len(frames) != len(aus) {
		t.Fatalf("%d frames from %d access units", len(frames), len(aus))
	}
	keys := 0
	for i, f := range frames {
		if f.Width != 640 || f.Height != 360 {
			t.Fatalf("frame %d: %dx%d", i, f.Width, f.Height)
		}
		// FLV has millisecond timestamps: 33 or 34 ms apart.
		if i == 0 {
			continue
		}
		if d := f.PTS - frames[i-1].PTS; d < 33*90 || d > 34*90 {
			t.Fatalf("frame %d: PTS %d after %d", i, f.PTS, frames[i-1].PTS)
		}
	}
	for _, f := range frames {
		if f.Key {
			keys++
		}
	}
	if keys != 10 || !frames[0].Key {
		t.Errorf("%d keyframes (first %v)", keys, frames[0].Key)
	}
	// Decoding resumes after a flush, from an IDR.
	f, err := d.Decode(aus[0].nalus, 0, 0)
	if err != nil || len(f) != 0 {
		t.Fatalf("after flush: %d frames, %v", len(f), err)
	}
	f, err = d.Flush()
	if err != nil || len(f) != 1 || !f[0].Key {
		t.Fatalf("after flush: %d frames, %v", len(f), err)
	}
	releaseAll(f)
}

// checkBaseline checks an encoded stream: the first packet is an IDR with
// SPS and PPS, every IDR has them, no slice is a B slice, PTS increase, and
// the SPS says Constrained Baseline at width x height.
func checkBaseline(t *testing.T, pkts []VideoPacket, width, height int) {
	t.Helper()
	if len(pkts) == 0 {
		t.Fatal("no packets")
	}
	if !pkts[0].Key {
		t.Fatal("first packet is not a keyframe")
	}
	for i, p := range pkts {
		types := naluTypesOf(p.NALUs)
		hasIDR := false
		for _, n := range p.NALUs {
			switch n[0] & 0x1f {
			case 5:
				hasIDR = true
			case 7:
				var s h264.SPS
				if err := s.Unmarshal(n); err != nil {
					t.Fatalf("packet %d: SPS: %v", i, err)
				}
				if s.ProfileIdc != 66 || !s.ConstraintSet1Flag || s.Width() != width || s.Height() != height {
					t.Fatalf("packet %d: SPS profile %d cs1 %v %dx%d, want Constrained Baseline %dx%d",
						i, s.ProfileIdc, s.ConstraintSet1Flag, s.Width(), s.Height(), width, height)
				}
				if s.VUI != nil && s.VUI.BitstreamRestriction != nil && s.VUI.BitstreamRestriction.MaxNumReorderFrames != 0 {
					t.Fatalf("packet %d: max_num_reorder_frames %d", i, s.VUI.BitstreamRestriction.MaxNumReorderFrames)
				}
			}
			if st := sliceType(t, n); st != -1 && st != 0 && st != 2 {
				t.Fatalf("packet %d: slice type %d", i, st)
			}
		}
		if hasIDR != p.Key {
			t.Fatalf("packet %d: key %v, NAL unit types %v", i, p.Key, types)
		}
		if p.Key && (len(types) < 3 || types[0] != 7 || types[1] != 8) {
			t.Fatalf("packet %d: IDR with NAL unit types %v, want SPS, PPS first", i, types)
		}
		if i > 0 && p.PTS <= pkts[i-1].PTS {
			t.Fatalf("packet %d: PTS %d after %d", i, p.PTS, pkts[i-1].PTS)
		}
	}
}

func TestVideoReencodeBFrames(t *testing.T) {
	needVideo(t)
	sps, pps, aus := readFLVVideo(t, bframesFLV)
	d, err := NewVideoDecoder(sps, pps)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	frames := decodeAll(t, d, aus)
	defer releaseAll(frames)

	e, err := NewVideoEncoder(640, 360, 30, 500_000)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var pkts []VideoPacket
	var bytes int
	for i, f := range frames {
		if i == 45 {
			e.ForceKeyframe()
		}
		p, err := e.Encode(f)
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(p) != 1 || p[0].PTS != f.PTS {
			t.Fatalf("frame %d: %d packets (zero latency: one, same PTS)", i, len(p))
		}
		pkts = append(pkts, p...)
	}
	tail, err := e.Flush()
	if err != nil {
		t.Fatal(err)
	}
	pkts = append(pkts, tail...)
	if len(pkts) != len(aus) {
		t.Fatalf("%d packets from %d access units", len(pkts), len(aus))
	}
	checkBaseline(t, pkts, 640, 360)
	keys := 0
	for i, p := range pkts {
		if p.Key {
			keys++
		}
		for _, n := range p.NALUs {
			bytes += len(n)
		}
		if i == 45 && !p.Key {
			t.Error("forced keyframe missing")
		}
	}
	// IDRs: the first, the forced one, and every 2 s (frames 60, 120, ...
	// counted from the forced one on at the latest).
	if keys < 5 || keys > 7 {
		t.Errorf("%d keyframes", keys)
	}
	if rate := bytes * 8 / 10; rate < 350_000 || rate > 650_000 {
		t.Errorf("%d bit/s, want about 500000", rate)
	}
	t.Logf("%d packets, %d keyframes, %d bit/s", len(pkts), keys, bytes*8/10)

	// The encoding decodes to what went in.
	d2, err := NewVideoDecoder(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	var worst float64 = 99
	n := 0
	for i, p := range pkts {
		out, err := d2.Decode(p.NALUs, p.PTS, p.PTS)
		if err != nil {
			t.Fatalf("decode packet %d: %v", i, err)
		}
		if len(out) != 1 || out[0].PTS != p.PTS {
			t.Fatalf("decode packet %d: %d frames (no reordering: one, at once)", i, len(out))
		}
		a, err := frameLuma(frames[i])
		if err != nil {
			t.Fatal(err)
		}
		b, err := frameLuma(out[0])
		if err != nil {
			t.Fatal(err)
		}
		worst = min(worst, psnr(a, b))
		n++
		releaseAll(out)
	}
	t.Logf("luma PSNR of the re-encode: worst %.1f dB over %d frames", worst, n)
	if worst < 25 {
		t.Errorf("luma PSNR %.1f dB", worst)
	}
}

func TestVideoEncoderRestart(t *testing.T) {
	needVideo(t)
	e, err := NewVideoEncoder(320, 240, 30, 300_000)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var pkts []VideoPacket
	encode := func(w, h, n int) {
		for range n {
			f, err := newTestFrame(w, h, int64(len(pkts)+1)*3000, len(pkts))
			if err != nil {
				t.Fatal(err)
			}
			p, err := e.Encode(f)
			f.Release()
			if err != nil {
				t.Fatal(err)
			}
			pkts = append(pkts, p...)
		}
	}
	encode(320, 240, 10)
	checkBaseline(t, pkts, 320, 240)
	encode(641, 361, 10) // odd: cropped to even
	if e.Width() != 640 || e.Height() != 360 {
		t.Fatalf("encoder at %dx%d", e.Width(), e.Height())
	}
	checkBaseline(t, pkts[10:], 640, 360)
	if len(pkts) != 20 {
		t.Fatalf("%d packets", len(pkts))
	}

	// A picture that does not come after the last one is refused, and the
	// encoder carries on.
	f, err := newTestFrame(640, 360, pkts[len(pkts)-1].PTS, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Release()
	if _, err := e.Encode(f); err == nil {
		t.Error("repeated PTS accepted")
	}
	f.PTS += 3000
	if p, err := e.Encode(f); err != nil || len(p) != 1 || p[0].Key {
		t.Errorf("after refusal: %d packets, %v", len(p), err)
	}
}

func TestVideoFrameRelease(t *testing.T) {
	needVideo(t)
	f, err := newTestFrame(64, 64, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	g := f // a copy shares the picture
	f.Release()
	f.Release()
	if !f.Released() || !g.Released() {
		t.Fatal("not released")
	}
	e, err := NewVideoEncoder(64, 64, 30, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Encode(g); !errors.Is(err, errFrameReleased) {
		t.Errorf("encode of a released frame: %v", err)
	}
	if _, err := e.Encode(VideoFrame{}); !errors.Is(err, errFrameReleased) {
		t.Errorf("encode of a zero frame: %v", err)
	}
	e.Close()
	e.Close()
	h, _ := newTestFrame(64, 64, 0, 0)
	defer h.Release()
	if _, err := e.Encode(h); err == nil {
		t.Error("encode after close")
	}
	for _, c := range []struct{ w, h, b int }{{1, 64, 0}, {64, 0, 0}, {9000, 64, 0}, {64, 64, -1}} {
		if _, err := NewVideoEncoder(c.w, c.h, 30, c.b); err == nil {
			t.Errorf("encoder %dx%d bitrate %d opened", c.w, c.h, c.b)
		}
	}
}

func TestVideoDecoderCorrupt(t *testing.T) {
	needVideo(t)
	sps, pps, aus := readFLVVideo(t, plainFLV)
	d, err := NewVideoDecoder(sps, pps)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	seed := uint32(7)
	for i := range 200 {
		n := make([]byte, 1+i*13%1500)
		for j := range n {
			seed = seed*1664525 + 1013904223
			n[j] = byte(seed >> 24)
		}
		n[0] = n[0]&0x60 | byte(1+i%5) // a slice NAL unit type
		f, _ := d.Decode([][]byte{n}, int64(i), int64(i))
		releaseAll(f)
	}
	if f, err := d.Decode(nil, 0, 0); err != nil || f != nil {
		t.Errorf("empty access unit: %v %v", f, err)
	}
	// The stream decodes after the garbage, from its IDR.
	frames := decodeAll(t, d, aus)
	defer releaseAll(frames)
	if len(frames) < len(aus) {
		t.Errorf("%d frames from %d access units after garbage", len(frames), len(aus))
	}
	d.Close()
	d.Close()
	if _, err := d.Decode(aus[0].nalus, 0, 0); err == nil {
		t.Error("decode after close")
	}
}

func TestFPSRational(t *testing.T) {
	for _, c := range []struct {
		fps      float64
		num, den int
	}{
		{30, 30, 1}, {29.97, 30000, 1001}, {59.94006, 60000, 1001}, {25, 25, 1},
		{12.5, 12500, 1000}, {0, 30, 1}, {math.NaN(), 30, 1}, {1e9, 30, 1},
	} {
		if n, d := fpsRational(c.fps); n != c.num || d != c.den {
			t.Errorf("fpsRational(%v) = %d/%d, want %d/%d", c.fps, n, d, c.num, c.den)
		}
	}
}

func TestSplitAnnexB(t *testing.T) {
	got := splitAnnexB([]byte{0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 0, 1, 0x65, 4, 0, 0, 1})
	want := "[[103 1 2] [104 3] [101 4]]"
	if fmt.Sprint(got) != want {
		t.Errorf("got %v, want %s", got, want)
	}
	if got := splitAnnexB([]byte{1, 2, 3}); got != nil {
		t.Errorf("no start code: %v", got)
	}
}

// BenchmarkVideoReencode measures decoding a 640x360 High profile frame
// with B-frames and encoding it as Constrained Baseline.
func BenchmarkVideoReencode(b *testing.B) {
	needVideo(b)
	sps, pps, aus := readFLVVideo(b, bframesFLV)
	var d *VideoDecoder
	var e *VideoEncoder
	var pts int64
	frames := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := i % len(aus)
		if k == 0 {
			// Loop the file: a new decoder (and encoder) per pass.
			if d != nil {
				d.Close()
				e.Close()
			}
			var err error
			if d, err = NewVideoDecoder(sps, pps); err != nil {
				b.Fatal(err)
			}
			if e, err = NewVideoEncoder(640, 360, 30, 500_000); err != nil {
				b.Fatal(err)
			}
			pts = 0
		}
		fs, err := d.Decode(aus[k].nalus, aus[k].pts, aus[k].dts)
		if err != nil {
			b.Fatal(err)
		}
		for j := range fs {
			if fs[j].PTS > pts {
				pts = fs[j].PTS
				if _, err := e.Encode(fs[j]); err != nil {
					b.Fatal(err)
				}
				frames++
			}
			fs[j].Release()
		}
	}
	b.StopTimer()
	if d != nil {
		d.Close()
		e.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(max(frames, 1)), "ms/frame")
}
