package transcode

import (
	"bytes"
	"encoding/binary"
	"os"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/media"
)

// fixtureH264 is raw Annex-B H.264 from ../shared/media (see its README):
// 300 frames at 30 fps, one slice per frame, no AUD, SPS+PPS before each of
// the 10 IDRs, one x264 SEI at the start.
const fixtureH264 = "../../shared/media/h264-opus.h264"

const (
	fixtureFrames = 300
	fixtureIDRs   = 10
	frameDuration = time.Second / 30
)

// readFixtureAUs returns the access units of fixtureH264 as the file has
// them (SEI, SPS, PPS, IDR for the first), split with mediacommon's AnnexB.
func readFixtureAUs(tb testing.TB) [][][]byte {
	tb.Helper()
	file, err := os.ReadFile(fixtureH264)
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	var aus [][][]byte
	for _, chunk := range splitAnnexBAccessUnits(file) {
		var au h264.AnnexB
		if err := au.Unmarshal(chunk); err != nil {
			tb.Fatalf("access unit %d: %v", len(aus), err)
		}
		aus = append(aus, au)
	}
	if len(aus) != fixtureFrames {
		tb.Fatalf("fixture has %d access units, expected %d", len(aus), fixtureFrames)
	}
	return aus
}

// readFixtureUnits returns the fixture as the hub carries it: canonical
// access units (through H264Normalizer) on a 30 fps clock starting at
// frame first (negative to start before zero).
func readFixtureUnits(tb testing.TB, track *media.Track, first int) []*media.Unit {
	tb.Helper()
	n := NewH264Normalizer(nil, nil)
	var units []*media.Unit
	for i, au := range readFixtureAUs(tb) {
		nalus, idr := n.Normalize(au)
		if nalus == nil {
			tb.Fatalf("access unit %d normalized to nothing", i)
		}
		pts := time.Duration(first+i) * time.Second / 30
		units = append(units, &media.Unit{Track: track, PTS: pts, DTS: pts, Key: idr, NALUs: nalus})
	}
	return units
}

// splitAnnexBAccessUnits cuts an Annex-B byte stream into access units
// (each still Annex-B). The whole file cannot go through AnnexB.Unmarshal:
// it has more NAL units than h264.MaxNALUsPerAccessUnit. A new access unit
// starts at the first NAL unit after a VCL one that is either not VCL or a
// slice with first_mb_in_slice == 0 (ITU-T H.264 7.4.1.2.3, simplified).
func splitAnnexBAccessUnits(file []byte) [][]byte {
	var cuts []int
	seenVCL := false
	for pos := 0; ; {
		i := bytes.Index(file[pos:], []byte{0, 0, 1})
		if i < 0 || pos+i+4 >= len(file) {
			break
		}
		sc, hdr := pos+i, pos+i+3
		if sc > 0 && file[sc-1] == 0 {
			sc-- // 4-byte start code
		}
		typ := file[hdr] & 0x1f
		vcl := typ >= 1 && typ <= 5
		if len(cuts) == 0 || seenVCL && (!vcl || file[hdr+1]&0x80 != 0) {
			cuts = append(cuts, sc)
			seenVCL = false
		}
		seenVCL = seenVCL || vcl
		pos = hdr
	}
	chunks := make([][]byte, len(cuts))
	for k, c := range cuts {
		end := len(file)
		if k+1 < len(cuts) {
			end = cuts[k+1]
		}
		chunks[k] = file[c:end]
	}
	return chunks
}

// decodeNALUs turns fuzz input into a NAL unit list: each NAL unit is a
// 2-byte big-endian length and that many bytes (fewer at the end). Empty
// NAL units are kept.
func decodeNALUs(data []byte) [][]byte {
	var nalus [][]byte
	for len(data) >= 2 {
		n := min(int(binary.BigEndian.Uint16(data)), len(data)-2)
		nalus = append(nalus, data[2:2+n])
		data = data[2+n:]
	}
	return nalus
}

// encodeNALUs is the inverse of decodeNALUs, for seeds.
func encodeNALUs(nalus ...[]byte) []byte {
	var out []byte
	for _, n := range nalus {
		out = binary.BigEndian.AppendUint16(out, uint16(len(n)))
		out = append(out, n...)
	}
	return out
}

func cloneNALUs(nalus [][]byte) [][]byte {
	out := make([][]byte, len(nalus))
	for i, n := range nalus {
		out[i] = bytes.Clone(n)
	}
	return out
}

func equalNALUs(a, b [][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if !bytes.Equal(a[i], b[i]) {
			return false
		}
	}
	return true
}

func naluTypes(nalus [][]byte) []h264.NALUType {
	out := make([]h264.NALUType, len(nalus))
	for i, n := range nalus {
		if len(n) > 0 {
			out[i] = h264.NALUType(n[0] & 0x1f)
		}
	}
	return out
}

// releaseOf returns the Release of the handle AddProcessor returned, with
// its error: the tests hold a processor as a func.
func releaseOf(h *media.ProcessorHandle, err error) (func(), error) { return h.Release, err }
