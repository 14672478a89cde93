package transcode

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode/av"
)

// Bounds FuzzH264Reencoder holds FFmpeg to for one input.
const (
	// fuzzHang is how long one input may run before it counts as a hang:
	// an input is at most a few dozen access units, which take
	// milliseconds, and libx264 at MaxVideoPixels under -race about a
	// second a picture.
	fuzzHang = 30 * time.Second
	// fuzzPeakRSS bounds the fuzz worker's peak resident memory: 20
	// access units at av.MaxVideoPixels with 16 reference pictures,
	// re-encoded, peak at 520 MB; before the cap, the same at 16000x8000
	// (the seeds in testdata) took 4.4 GB.
	fuzzPeakRSS = 1 << 30
	// fuzzMTU is the RTP packet size the bridge uses for WebRTC.
	fuzzMTU = 1200
)

// FuzzH264Reencoder feeds publisher-controlled H.264 through the
// re-encoder exactly as the hub does for a B-frame stream played over
// WebRTC: the track's SPS and PPS (as an RTMP sequence header or an SDP
// declares them) open libavcodec's decoder, then access units go through
// Process, which decodes them and encodes every picture that comes out
// with libx264 at its size. aus holds the access units: NAL units as
// decodeNALUs reads them, an empty NAL unit ending each access unit.
// ptsShift[i] moves access unit i's PTS off its DTS by that many frames
// (int8), which is how B-frames reorder. No input may crash FFmpeg, panic,
// hang, or make FFmpeg hold more than fuzzPeakRSS; every packet out must
// fit the MTU. Seeds: the first units of the B-frame fixture, and in
// testdata pictures over av.MaxVideoPixels (TestVideoDecoderPictureLimit
// has the SPS and slices they are made of).
func FuzzH264Reencoder(f *testing.F) {
	v := readFLVVideo(f, bframesFLV)
	var aus []byte
	var shifts []byte
	for _, u := range v.units[:6] {
		aus = append(aus, encodeNALUs(append(u.NALUs, nil)...)...)
		shifts = append(shifts, byte(int8(math.Round(float64(u.PTS-u.DTS)/float64(frameDuration)))))
	}
	// Garbage makes libavcodec log a line per error, to stderr.
	av.SetLogLevel(av.LogQuiet)
	f.Add(v.sps, v.pps, aus, shifts)
	f.Add([]byte(nil), []byte(nil), aus, []byte(nil)) // parameter sets in-band only
	f.Fuzz(func(t *testing.T, sps, pps, aus, ptsShift []byte) {
		if !CanReencodeVideo() {
			t.Skip("this build cannot re-encode H.264 (no FFmpeg with libx264)")
		}
		track := &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
		units := fuzzAccessUnits(track, aus, ptsShift)
		done := make(chan struct{})
		go func() {
			defer close(done)
			p := NewH264Reencoder(track, fuzzMTU)
			if c, ok := p.(interface{ Close() }); ok {
				defer c.Close()
			}
			for _, u := range units {
				if p.Process(u) != nil {
					continue // an error is the expected answer to garbage
				}
				if u.RTP == nil {
					t.Errorf("unit at %v: no error and nil RTP (a packetizer after it would send the original)", u.PTS)
				}
				for _, pk := range u.RTP {
					if n := pk.MarshalSize(); n > fuzzMTU {
						t.Errorf("unit at %v: RTP packet of %d bytes, mtu %d", u.PTS, n, fuzzMTU)
					}
				}
			}
		}()
		select {
		case <-done:
		case <-time.After(fuzzHang):
			t.Fatalf("%d access units not processed in %v", len(units), fuzzHang)
		}
		if rss := peakRSS(); rss > fuzzPeakRSS {
			t.Fatalf("peak resident memory %d MiB, over %d MiB", rss>>20, fuzzPeakRSS>>20)
		}
	})
}

// fuzzAccessUnits cuts aus into units of track: NAL units as decodeNALUs
// reads them, an empty one ending each unit; 30 fps by DTS, PTS shifted by
// ptsShift frames (int8 each, 0 past its end).
func fuzzAccessUnits(track *media.Track, aus, ptsShift []byte) []*media.Unit {
	var units []*media.Unit
	var nalus [][]byte
	end := func() {
		if len(nalus) == 0 {
			return
		}
		dts := time.Duration(len(units)) * frameDuration
		pts := dts
		if i := len(units); i < len(ptsShift) {
			pts += time.Duration(int8(ptsShift[i])) * frameDuration
		}
		key := false
		for _, n := range nalus {
			key = key || len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeIDR
		}
		units = append(units, &media.Unit{Track: track, PTS: pts, DTS: dts, Key: key, NALUs: nalus})
		nalus = nil
	}
	for _, n := range decodeNALUs(aus) {
		if len(n) == 0 {
			end()
			continue
		}
		nalus = append(nalus, n)
	}
	end()
	return units
}

// peakRSS returns the process's peak resident memory in bytes (VmHWM,
// Linux), or 0 when unknown.
func peakRSS() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range bytes.Lines(b) {
		if v, ok := strings.CutPrefix(string(line), "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}
