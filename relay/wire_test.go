package relay

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"

	"github.com/wishbridge/bridge/media"
)

// sampleTracks has one track of every codec the hub knows.
func sampleTracks() []*media.Track {
	return []*media.Track{
		{ID: 0, Codec: media.H264{SPS: []byte{0x67, 0x42, 0xc0, 0x1f, 0xda}, PPS: []byte{0x68, 0xce, 0x3c, 0x80}}},
		{ID: 1, Codec: media.AAC{Config: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2}},
		{ID: 2, Codec: media.H265{VPS: []byte{0x40, 0x01, 0x0c}, SPS: []byte{0x42, 0x01, 0x01}, PPS: []byte{0x44, 0x01}}},
		{ID: 3, Codec: media.Opus{Channels: 2}},
	}
}

// sampleUnits has every kind of unit: an H.264 keyframe, an AAC frame, an
// H.265 unit, an Opus packet with its RTP packet, an H.264 frame with its
// source's RTP packets (marker, CSRCs), and an RTP-only damaged unit.
func sampleUnits(ts []*media.Track) []*media.Unit {
	return []*media.Unit{
		{Track: ts[0], PTS: 21 * time.Millisecond, DTS: 21 * time.Millisecond, Key: true,
			NALUs: [][]byte{{0x67, 0x42}, {0x68, 0xce}, {0x65, 0x88, 0x84, 0x00}}},
		{Track: ts[1], PTS: 0, DTS: 0, Key: true, Data: []byte{0x21, 0x10, 0x04, 0x60}},
		{Track: ts[2], PTS: -5 * time.Millisecond, DTS: -40 * time.Millisecond, NALUs: [][]byte{{0x02, 0x01, 0xd0}}},
		{Track: ts[3], PTS: 20 * time.Millisecond, DTS: 20 * time.Millisecond, Key: true, Data: []byte{0xfc, 0xff, 0xfe},
			RTP: []*rtp.Packet{{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: 65535, Timestamp: 960, SSRC: 0xdeadbeef},
				Payload: []byte{0xfc, 0xff, 0xfe}}}},
		{Track: ts[0], PTS: time.Hour, DTS: time.Hour - time.Millisecond, NALUs: [][]byte{{0x41, 0x9a}},
			RTP: []*rtp.Packet{
				{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 7, Timestamp: 1 << 31, SSRC: 1, CSRC: []uint32{9, 10}}, Payload: []byte{0x7c, 0x81, 0x9a}},
				{Header: rtp.Header{Version: 2, Marker: true, PayloadType: 96, SequenceNumber: 8, Timestamp: 1 << 31, SSRC: 1}, Payload: []byte{0x7c, 0x41, 0x00}},
			}},
		{Track: ts[0], PTS: time.Hour + 33*time.Millisecond, DTS: time.Hour + 33*time.Millisecond,
			RTP: []*rtp.Packet{{Header: rtp.Header{Version: 2, PayloadType: 96, SequenceNumber: 9, Timestamp: 3, SSRC: 1}, Payload: []byte{0x41}}}},
	}
}

// TestRoundTrip: every kind of frame and of unit comes back as it was
// sent: tracks with their parameters, timestamps to the nanosecond, flags,
// payloads and RTP packets.
func TestRoundTrip(t *testing.T) {
	tracks := sampleTracks()
	units := sampleUnits(tracks)
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	must(t, e.Tracks(tracks))
	for i, u := range units {
		must(t, e.Unit(u, i == 0, true))
	}
	must(t, e.Live())
	must(t, e.Keepalive())
	// A second tracks frame (a takeover at the origin): later units name
	// its tracks.
	must(t, e.Tracks(tracks[:2]))
	must(t, e.Unit(units[1], false, true))
	must(t, e.End("publisher left"))

	d := NewDecoder(&buf)
	f := next(t, d, FrameTracks)
	if len(f.Tracks) != len(tracks) {
		t.Fatalf("got %d tracks, want %d", len(f.Tracks), len(tracks))
	}
	for i, tr := range f.Tracks {
		if tr.ID != i || !reflect.DeepEqual(tr.Codec, tracks[i].Codec) {
			t.Errorf("track %d: got %+v %#v, want %#v", i, tr.ID, tr.Codec, tracks[i].Codec)
		}
	}
	got := f.Tracks
	for i, want := range units {
		f := next(t, d, FrameUnit)
		if f.Cached != (i == 0) {
			t.Errorf("unit %d: cached %v", i, f.Cached)
		}
		u := f.Unit
		if u.Track != got[want.Track.ID] {
			t.Errorf("unit %d: track %v, want the decoded %v", i, u.Track, got[want.Track.ID])
		}
		if u.PTS != want.PTS || u.DTS != want.DTS || u.Key != want.Key {
			t.Errorf("unit %d: pts %v dts %v key %v, want %v %v %v", i, u.PTS, u.DTS, u.Key, want.PTS, want.DTS, want.Key)
		}
		if !reflect.DeepEqual(u.NALUs, want.NALUs) || !bytes.Equal(u.Data, want.Data) {
			t.Errorf("unit %d: payload %x %x, want %x %x", i, u.NALUs, u.Data, want.NALUs, want.Data)
		}
		if len(u.RTP) != len(want.RTP) {
			t.Fatalf("unit %d: %d RTP packets, want %d", i, len(u.RTP), len(want.RTP))
		}
		for j, p := range u.RTP {
			if !reflect.DeepEqual(p.Header, want.RTP[j].Header) || !bytes.Equal(p.Payload, want.RTP[j].Payload) {
				t.Errorf("unit %d packet %d: %+v %x, want %+v %x", i, j, p.Header, p.Payload, want.RTP[j].Header, want.RTP[j].Payload)
			}
		}
	}
	next(t, d, FrameLive)
	next(t, d, FrameKeepalive)
	if f := next(t, d, FrameTracks); len(f.Tracks) != 2 {
		t.Fatalf("second tracks frame: %d tracks", len(f.Tracks))
	} else if u := next(t, d, FrameUnit).Unit; u.Track != f.Tracks[1] {
		t.Error("a unit after the second tracks frame does not name its track")
	}
	if f := next(t, d, FrameEnd); f.Reason != "publisher left" {
		t.Errorf("end reason %q", f.Reason)
	}
	if _, err := d.Next(); err != io.EOF {
		t.Errorf("after the end: %v, want io.EOF", err)
	}
}

// TestUnitWithoutRTP: withRTP false leaves the packets out (a source that
// was not RTP: the edge packetizes for its own viewers).
func TestUnitWithoutRTP(t *testing.T) {
	tracks := sampleTracks()
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	must(t, e.Tracks(tracks))
	must(t, e.Unit(sampleUnits(tracks)[3], false, false))
	d := NewDecoder(&buf)
	next(t, d, FrameTracks)
	if u := next(t, d, FrameUnit).Unit; u.RTP != nil || len(u.Data) != 3 {
		t.Errorf("got RTP %v data %x, want no packets and the Opus packet", u.RTP, u.Data)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func next(t *testing.T, d *Decoder, want FrameKind) Frame {
	t.Helper()
	f, err := d.Next()
	if err != nil {
		t.Fatalf("want a %s frame: %v", want, err)
	}
	if f.Kind != want {
		t.Fatalf("got a %s frame, want %s", f.Kind, want)
	}
	return f
}

// encoded returns a stream of the sample tracks and units.
func encoded(t testing.TB) []byte {
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	tracks := sampleTracks()
	if err := e.Tracks(tracks); err != nil {
		t.Fatal(err)
	}
	for _, u := range sampleUnits(tracks) {
		if err := e.Unit(u, false, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.End("bye"); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// decodeAll reads frames until an error; io.EOF is nil.
func decodeAll(b []byte) ([]Frame, error) {
	d := NewDecoder(bytes.NewReader(b))
	var out []Frame
	for {
		f, err := d.Next()
		if err == io.EOF {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, f)
	}
}

// TestTruncated: a stream cut anywhere is an error saying so (io.EOF only
// between frames), never a panic or a unit made of what was there.
func TestTruncated(t *testing.T) {
	full := encoded(t)
	frames, err := decodeAll(full)
	if err != nil {
		t.Fatal(err)
	}
	ends := map[int]bool{headerSize: true} // where a frame ends
	at := headerSize
	for at < len(full) {
		at += frameHeaderSize + int(binary.BigEndian.Uint32(full[at+1:]))
		ends[at] = true
	}
	for cut := 0; cut < len(full); cut++ {
		got, err := decodeAll(full[:cut])
		switch {
		case ends[cut] && err != nil:
			t.Errorf("cut at a frame's end (%d): %v", cut, err)
		case !ends[cut] && cut > 0 && !errors.Is(err, io.ErrUnexpectedEOF):
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		case len(got) > len(frames):
			t.Errorf("cut at %d: %d frames from a stream of %d", cut, len(got), len(frames))
		}
	}
}

// TestBadInput: a wrong magic or version, an oversized or unknown frame,
// counts past their limits, a unit of an unannounced track: each is an
// error naming the problem, found before anything is allocated for it.
func TestBadInput(t *testing.T) {
	header := []byte(magic + "\x00\x01")
	frame := func(k FrameKind, body ...byte) []byte {
		return append(binary.BigEndian.AppendUint32([]byte{byte(k)}, uint32(len(body))), body...)
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	tracksH264 := frame(FrameTracks, 1, codecH264, 0, 1, 0x67, 0, 1, 0x68)
	unit := func(track, flags byte, tail ...byte) []byte {
		b := append([]byte{track, flags}, make([]byte, 16)...)
		return frame(FrameUnit, append(b, tail...)...)
	}
	for _, c := range []struct {
		name, want string
		in         []byte
	}{
		{"not a relay stream", "not a relay stream", []byte("HTTP/1.1 200 OK\r\n")},
		{"another version", "wire version 2", []byte(magic + "\x00\x02")},
		{"oversized frame", "past the relay's limit", cat(header, []byte{byte(FrameUnit), 0xff, 0xff, 0xff, 0xff})},
		{"unknown frame", "unknown frame type 9", cat(header, frame(9))},
		{"no tracks", "0 tracks", cat(header, frame(FrameTracks, 0))},
		{"too many tracks", "9 tracks", cat(header, frame(FrameTracks, 9))},
		{"unknown codec", "unknown codec 7", cat(header, frame(FrameTracks, 1, 7))},
		{"oversized SPS", "SPS of 65535 bytes", cat(header, frame(FrameTracks, 1, codecH264, 0xff, 0xff))},
		{"unit before tracks", "track 0, the stream has 0 tracks", cat(header, unit(0, 0, 0, 0, 0, 0, 0, 0, 0, 0))},
		{"unit of an unknown track", "track 1, the stream has 1 tracks", cat(header, tracksH264, unit(1, 0, 0, 0, 0, 0, 0, 0, 0, 0))},
		{"unknown flag", "unknown flags 0x4", cat(header, tracksH264, unit(0, 4, 0, 0, 0, 0, 0, 0, 0, 0))},
		{"too many NAL units", "65535 NAL units", cat(header, tracksH264, unit(0, 0, 0xff, 0xff))},
		{"NAL unit past the frame", "bytes needed", cat(header, tracksH264, unit(0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff))},
		{"video with audio data", "video unit with an audio frame", cat(header, tracksH264, unit(0, 0, 0, 0, 0, 0, 0, 1, 0xaa, 0, 0))},
		{"too many RTP packets", "65535 RTP packets", cat(header, tracksH264, unit(0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff))},
		{"too many CSRCs", "16 CSRCs", cat(header, tracksH264, unit(0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 16))},
		{"bytes left over", "1 bytes left over", cat(header, frame(FrameTracks, 1, codecOpus, 2, 0))},
		{"oversized reason", "reason of 1025 bytes", cat(header, frame(FrameEnd, bytes.Repeat([]byte{'x'}, 1025)...))},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := decodeAll(c.in)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("got %v, want an error containing %q", err, c.want)
			}
		})
	}
}

// TestEncoderLimits: a unit past a limit is refused with ErrTooLarge and
// nothing is written, so the stream can go on with the next unit.
func TestEncoderLimits(t *testing.T) {
	tracks := sampleTracks()
	var buf bytes.Buffer
	e := NewEncoder(&buf)
	must(t, e.Tracks(tracks))
	n := buf.Len()
	for _, u := range []*media.Unit{
		{Track: tracks[0], NALUs: make([][]byte, MaxNALUs+1)},
		{Track: tracks[1], Data: make([]byte, MaxFrameBytes)},
	} {
		if err := e.Unit(u, false, false); !errors.Is(err, ErrTooLarge) {
			t.Errorf("got %v, want ErrTooLarge", err)
		}
	}
	if buf.Len() != n {
		t.Errorf("%d bytes written for refused units", buf.Len()-n)
	}
	if err := e.Tracks(make([]*media.Track, MaxTracks+1)); !errors.Is(err, ErrTooLarge) {
		t.Errorf("tracks past MaxTracks: %v", err)
	}
}

// FuzzDecode: whatever the bytes, Next returns frames or an error, never
// panics; and every frame it returns encodes again to a stream that
// decodes to the same frames (one codec for both directions).
func FuzzDecode(f *testing.F) {
	f.Add(encoded(f))
	f.Add([]byte(magic + "\x00\x01"))
	f.Add([]byte(magic + "\x00\x01\x01\x00\x00\x00\x03\x01\x04\x02"))
	f.Fuzz(func(t *testing.T, b []byte) {
		frames, _ := decodeAll(b)
		var buf bytes.Buffer
		e := NewEncoder(&buf)
		for _, fr := range frames {
			var err error
			switch fr.Kind {
			case FrameTracks:
				err = e.Tracks(fr.Tracks)
			case FrameUnit:
				err = e.Unit(fr.Unit, fr.Cached, true)
			case FrameLive:
				err = e.Live()
			case FrameKeepalive:
				err = e.Keepalive()
			case FrameEnd:
				err = e.End(fr.Reason)
			}
			if err != nil {
				t.Fatalf("re-encode %s: %v", fr.Kind, err)
			}
		}
		again, err := decodeAll(buf.Bytes())
		if err != nil {
			t.Fatalf("re-encoded stream: %v", err)
		}
		if len(again) != len(frames) {
			t.Fatalf("%d frames re-decoded from %d", len(again), len(frames))
		}
		for i := range frames {
			a, b := frames[i], again[i]
			if a.Kind != b.Kind || a.Cached != b.Cached || a.Reason != b.Reason || len(a.Tracks) != len(b.Tracks) {
				t.Fatalf("frame %d differs: %+v vs %+v", i, a, b)
			}
			if a.Unit != nil && (a.Unit.PTS != b.Unit.PTS || a.Unit.DTS != b.Unit.DTS || a.Unit.Key != b.Unit.Key ||
				len(a.Unit.NALUs) != len(b.Unit.NALUs) || !bytes.Equal(a.Unit.Data, b.Unit.Data) || len(a.Unit.RTP) != len(b.Unit.RTP)) {
				t.Fatalf("unit %d differs", i)
			}
		}
	})
}
