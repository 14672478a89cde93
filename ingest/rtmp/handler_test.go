package rtmp

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	gortmp "github.com/yutopp/go-rtmp"
	"github.com/yutopp/go-rtmp/message"

	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// handlerRig drives one handler directly, without the network: the
// callbacks are what go-rtmp would call.
type handlerRig struct {
	h      *handler
	reg    *media.Registry
	logs   *testkit.LogBuf
	reader *media.Reader
}

func newHandlerRig(t *testing.T, configWait time.Duration) *handlerRig {
	t.Helper()
	logs := &testkit.LogBuf{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := media.NewRegistry(log)
	s := NewServer(Config{Registry: reg, Authorize: allowAll, Log: log})
	s.configWait = configWait
	rig := &handlerRig{reg: reg, logs: logs}
	s.onPublish = func(st *media.Stream) {
		r, err := st.NewReader(media.ReaderOptions{QueueSize: 8192})
		if err != nil {
			t.Fatal(err)
		}
		rig.reader = r
	}
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	rig.h = newHandler(s, newConn(a, s))
	if err := rig.h.OnConnect(0, &message.NetConnectionConnect{Command: message.NetConnectionConnectCommand{App: "live"}}); err != nil {
		t.Fatal(err)
	}
	if err := rig.h.OnPublish(&gortmp.StreamContext{StreamID: 1}, 0, &message.NetStreamPublish{PublishingName: "test", PublishingType: "live"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rig.h.OnClose)
	return rig
}

func (r *handlerRig) video(t *testing.T, ts uint32, tag []byte) {
	t.Helper()
	if err := r.h.OnVideo(ts, bytes.NewReader(tag)); err != nil {
		t.Fatalf("OnVideo at %d: %v", ts, err)
	}
}

func (r *handlerRig) audio(t *testing.T, ts uint32, tag []byte) {
	t.Helper()
	if err := r.h.OnAudio(ts, bytes.NewReader(tag)); err != nil {
		t.Fatalf("OnAudio at %d: %v", ts, err)
	}
}

// drain returns the units queued so far.
func (r *handlerRig) drain() []*media.Unit {
	var out []*media.Unit
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		u, err := r.reader.Read(ctx)
		cancel()
		if err != nil {
			return out
		}
		out = append(out, u)
	}
}

func (r *handlerRig) tracks() []*media.Track {
	st, ok := r.reg.Get("live/test")
	if !ok {
		return nil
	}
	return st.Tracks()
}

// TestHandlerFixture feeds every tag of the fixture through the handler.
func TestHandlerFixture(t *testing.T) {
	rig := newHandlerRig(t, time.Second)
	rawAAC := 0
	for _, tag := range readFLV(t, "h264-bframes-aac.flv") {
		if tag.Type == 8 && tag.Data[1] == aacPacketRaw {
			rawAAC++
		}
		var err error
		switch tag.Type {
		case 8:
			err = rig.h.OnAudio(tag.TS, bytes.NewReader(tag.Data))
		case 9:
			err = rig.h.OnVideo(tag.TS, bytes.NewReader(tag.Data))
		case 18:
			err = rig.h.OnSetDataFrame(tag.TS, &message.NetStreamSetDataFrame{Payload: tag.Data})
		}
		if err != nil {
			t.Fatalf("tag at %d ms: %v", tag.TS, err)
		}
	}
	units := rig.drain()
	var video, audio []*media.Unit
	for _, u := range units {
		if u.Track.IsVideo() {
			video = append(video, u)
		} else {
			audio = append(audio, u)
		}
	}
	if len(video) != 300 || len(audio) != rawAAC {
		t.Fatalf("%d video and %d audio units, want 300 and %d", len(video), len(audio), rawAAC)
	}
	if tr := rig.tracks(); len(tr) != 2 || tr[0] != video[0].Track || tr[1] != audio[0].Track {
		t.Fatalf("tracks %v", tr)
	}
	first := video[0]
	if !first.Key || first.DTS != 0 || first.PTS != 67*time.Millisecond {
		t.Errorf("first video unit: key %v, dts %v, pts %v; want IDR, 0, 67ms", first.Key, first.DTS, first.PTS)
	}
	reordered, keys := 0, 0
	for i, u := range video {
		if u.PTS != u.DTS {
			reordered++
		}
		if u.PTS < u.DTS {
			t.Errorf("unit %d: PTS %v before DTS %v", i, u.PTS, u.DTS)
		}
		if i > 0 && u.DTS <= video[i-1].DTS {
			t.Errorf("unit %d: DTS %v after %v", i, u.DTS, video[i-1].DTS)
		}
		if u.Key {
			keys++
			if h264.NALUType(u.NALUs[0][0]&0x1f) != h264.NALUTypeSPS || h264.NALUType(u.NALUs[1][0]&0x1f) != h264.NALUTypePPS {
				t.Errorf("IDR unit %d does not start with SPS, PPS", i)
			}
		}
		for _, n := range u.NALUs {
			if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeAccessUnitDelimiter || (!u.Key && (typ == h264.NALUTypeSPS || typ == h264.NALUTypePPS)) {
				t.Errorf("unit %d holds NAL unit type %d", i, typ)
			}
		}
	}
	if keys != 10 || reordered < 150 {
		t.Errorf("%d IDRs, %d units with PTS != DTS", keys, reordered)
	}
	if audio[0].DTS != 46*time.Millisecond {
		t.Errorf("first audio DTS %v, want 46ms (the fixture's first AAC frame)", audio[0].DTS)
	}
	rig.h.OnClose()
	line := rig.logs.WaitLog(t, time.Second, "rtmp publish ended")
	for _, want := range []string{"stream=live/test", "video_frames=300", "audio_frames="} {
		if !strings.Contains(line, want) {
			t.Errorf("summary %q lacks %q", line, want)
		}
	}
}

// TestHandlerVideoOnly: no metadata, no audio. The video track is declared
// configWait after its sequence header, and the units buffered meanwhile
// (from the first IDR) are delivered.
func TestHandlerVideoOnly(t *testing.T) {
	rig := newHandlerRig(t, 100*time.Millisecond)
	rig.video(t, 0, avcNALUTag(false, 0, 4, testP)) // before the sequence header: dropped
	rig.video(t, 0, avcSeqHeaderTag(4, testSPS, testPPS))
	rig.video(t, 0, avcNALUTag(false, 0, 4, testP)) // before the first IDR: dropped
	start := time.Now()
	ts := uint32(0)
	for rig.tracks() == nil {
		if time.Since(start) > 2*time.Second {
			t.Fatal("tracks never declared")
		}
		ts += 33
		rig.video(t, ts, avcNALUTag(ts == 33, 0, 4, testAUD, testSEI, pick(ts == 33, testIDR, testP)))
		time.Sleep(10 * time.Millisecond)
	}
	if waited := time.Since(start); waited < 90*time.Millisecond {
		t.Errorf("declared after %v, before configWait", waited)
	}
	if tr := rig.tracks(); len(tr) != 1 || !tr[0].IsVideo() {
		t.Fatalf("tracks %v", tr)
	}
	units := rig.drain()
	if want := int(ts / 33); len(units) != want {
		t.Fatalf("%d units, want %d (all from the IDR on)", len(units), want)
	}
	if !units[0].Key || units[0].DTS != 33*time.Millisecond || len(units[0].NALUs) != 4 {
		t.Errorf("first unit: key %v dts %v, %d NALUs (want SPS PPS SEI IDR)", units[0].Key, units[0].DTS, len(units[0].NALUs))
	}
	if len(units[1].NALUs) != 2 || !bytes.Equal(units[1].NALUs[1], testP) {
		t.Errorf("second unit NALUs %x, want SEI, P (AUD stripped)", units[1].NALUs)
	}
	rig.logs.WaitLog(t, time.Second, "rtmp declaring tracks without audio")
	// Audio after the declaration is ignored, with one log line.
	rig.audio(t, ts, aacSeqHeaderTag(testASC))
	rig.audio(t, ts, aacRawTag([]byte{1, 2, 3}))
	rig.audio(t, ts, aacSeqHeaderTag(testASC))
	if n := len(rig.logs.Lines("rtmp audio ignored", "after the tracks were declared")); n != 1 {
		t.Errorf("%d log lines about late audio", n)
	}
	if u := rig.drain(); len(u) != 0 {
		t.Errorf("%d units after late audio", len(u))
	}
}

func pick[T any](c bool, a, b T) T {
	if c {
		return a
	}
	return b
}

// TestHandlerWaitsForAudio: metadata announces audio; video is buffered
// until the AAC sequence header, then everything goes out in order.
func TestHandlerWaitsForAudio(t *testing.T) {
	rig := newHandlerRig(t, time.Hour)
	meta := (&amfEnc{}).str("onMetaData").raw(amf0ECMAArray, 0, 0, 0, 2)
	meta.key("videocodecid").num(7).key("audiocodecid").num(10).end()
	if err := rig.h.OnSetDataFrame(0, &message.NetStreamSetDataFrame{Payload: meta.Bytes()}); err != nil {
		t.Fatal(err)
	}
	rig.video(t, 0, avcSeqHeaderTag(2, testSPS, testPPS)) // 2-byte NAL unit lengths
	rig.video(t, 0, avcNALUTag(true, 0, 2, testIDR))
	rig.video(t, 33, avcNALUTag(false, 0, 2, testP))
	if rig.tracks() != nil {
		t.Fatal("tracks declared before the AAC sequence header")
	}
	rig.audio(t, 40, aacSeqHeaderTag(testASC))
	tr := rig.tracks()
	if len(tr) != 2 {
		t.Fatalf("tracks %v", tr)
	}
	if c := tr[1].Codec.(media.AAC); c.SampleRate != 48000 || c.Channels != 2 || !bytes.Equal(c.Config, testASC) {
		t.Errorf("AAC codec %+v", c)
	}
	rig.audio(t, 40, aacRawTag([]byte{0x21, 0x10}))
	units := rig.drain()
	if len(units) != 3 || !units[0].Key || !bytes.Equal(units[1].NALUs[0], testP) || !bytes.Equal(units[2].Data, []byte{0x21, 0x10}) {
		t.Fatalf("units %v", units)
	}
	if units[2].PTS != 40*time.Millisecond || units[2].DTS != 40*time.Millisecond || !units[2].Key {
		t.Errorf("audio unit %+v", units[2])
	}
}

// TestHandlerPendingBound: the buffer before the declaration is bounded.
func TestHandlerPendingBound(t *testing.T) {
	rig := newHandlerRig(t, time.Hour)
	meta := (&amfEnc{}).str("onMetaData").raw(amf0ECMAArray, 0, 0, 0, 2)
	meta.key("videocodecid").num(7).key("audiocodecid").str("mp4a").end()
	if err := rig.h.OnSetDataFrame(0, &message.NetStreamSetDataFrame{Payload: meta.Bytes()}); err != nil {
		t.Fatal(err)
	}
	rig.video(t, 0, avcSeqHeaderTag(4, testSPS, testPPS))
	for i := range 3 * maxPendingUnits {
		rig.video(t, uint32(i*33), avcNALUTag(i%30 == 0, 0, 4, pick(i%30 == 0, testIDR, testP)))
		if len(rig.h.pending) > maxPendingUnits {
			t.Fatalf("%d units pending", len(rig.h.pending))
		}
	}
	if rig.h.dropped == 0 {
		t.Error("nothing dropped")
	}
	rig.audio(t, 0, aacSeqHeaderTag(testASC))
	units := rig.drain()
	if len(units) == 0 || !units[0].Key {
		t.Fatalf("after the declaration: %d units, first key %v", len(units), len(units) > 0 && units[0].Key)
	}
}

// TestHandlerUnsupportedAudio: MP3 audio is ignored (one log line); the
// video track is declared without waiting.
func TestHandlerUnsupportedAudio(t *testing.T) {
	rig := newHandlerRig(t, time.Hour)
	rig.audio(t, 0, []byte{0x2f, 0xff, 0xfb, 0x90})
	rig.audio(t, 26, []byte{0x2f, 0xff, 0xfb, 0x90})
	rig.video(t, 0, avcSeqHeaderTag(4, testSPS, testPPS))
	if tr := rig.tracks(); len(tr) != 1 || !tr[0].IsVideo() {
		t.Fatalf("tracks %v", tr)
	}
	if n := len(rig.logs.Lines("rtmp audio ignored", "MP3")); n != 1 {
		t.Errorf("%d log lines about MP3:\n%s", n, rig.logs.String())
	}
}

func TestHandlerRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		video   bool
		tag     []byte
		wantErr string
	}{
		{"HEVC", true, []byte{0x1c, 0, 0, 0, 0}, "video codec H.265 (FLV codec id 12) is not supported; only H.264 (codec id 7) is"},
		{"enhanced RTMP", true, []byte{0x90, 'h', 'v', 'c', '1'}, "enhanced RTMP video"},
		{"garbage avcC", true, []byte{0x17, 0, 0, 0, 0, 1, 2, 3}, "AVC sequence header"},
		{"truncated NAL unit", true, []byte{0x17, 1, 0, 0, 0, 0, 0, 0, 9, 0x65}, "only 1 remain"},
		{"empty video", true, nil, "empty"},
		{"empty audio", false, nil, "empty"},
		{"AAC packet type", false, []byte{0xaf, 7}, "AACPacketType 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rig := newHandlerRig(t, time.Second)
			rig.video(t, 0, avcSeqHeaderTag(4, testSPS, testPPS))
			var err error
			if tc.video {
				err = rig.h.OnVideo(100, bytes.NewReader(tc.tag))
			} else {
				err = rig.h.OnAudio(100, bytes.NewReader(tc.tag))
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
			}
			rig.h.OnClose()
			rig.logs.WaitLog(t, time.Second, "rtmp publish ended", "reason=", tc.wantErr[:5])
		})
	}
}

// TestTimestampJumps: a publisher that stamps each tag 2^31 ms after the
// last (the largest step a 32-bit unwrapper takes as forward) must not
// carry the stream clock off: each jump is a discontinuity, the stream
// time goes on from where it was, and it never goes back.
func TestTimestampJumps(t *testing.T) {
	rig := newHandlerRig(t, time.Second)
	for i, tag := range readFLV(t, "h264-aac.flv") {
		ts := tag.TS + uint32(i)<<31 // wraps modulo 2^32, as on the wire
		var err error
		switch tag.Type {
		case 8:
			err = rig.h.OnAudio(ts, bytes.NewReader(tag.Data))
		case 9:
			err = rig.h.OnVideo(ts, bytes.NewReader(tag.Data))
		}
		if err != nil {
			t.Fatalf("tag %d: %v", i, err)
		}
	}
	units := rig.drain()
	if len(units) < 100 {
		t.Fatalf("only %d units", len(units))
	}
	first, last := map[*media.Track]time.Duration{}, map[*media.Track]time.Duration{}
	for _, u := range units {
		f, ok := first[u.Track]
		if !ok {
			f, first[u.Track] = u.DTS, u.DTS
		}
		if u.DTS-f > time.Minute {
			t.Fatalf("unit at %v after the first: the stream clock ran off (the fixture is 10 s long)", u.DTS-f)
		}
		if prev, ok := last[u.Track]; ok && u.DTS < prev {
			t.Fatalf("%v after %v: the stream clock went back", u.DTS, prev)
		}
		last[u.Track] = u.DTS
	}
	if rig.h.jumps == 0 {
		t.Error("no jump counted")
	}
}

func TestTimestampWrap(t *testing.T) {
	var c rtmpClock
	h := &tagSink{log: slog.New(slog.DiscardHandler)}
	for _, tc := range []struct {
		in   uint32
		want int64
	}{
		{0xfffffff0, 0xfffffff0},
		{0xfffffffa, 0xfffffffa},
		{5, 1<<32 + 5},           // wrapped
		{0xfffffffe, 0xfffffffe}, // a late one from before the wrap
		{40, 1<<32 + 40},
	} {
		if got := h.streamTime(&c, "video", tc.in); got != tc.want {
			t.Errorf("streamTime(%#x) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
	if h.jumps != 0 {
		t.Errorf("%d jumps counted in a plain wrap", h.jumps)
	}
}

func TestStreamPath(t *testing.T) {
	for _, tc := range []struct {
		app, name         string
		wantPath, wantKey string
		wantErr           string
	}{
		{"live", "test", "live/test", "", ""},
		{"live", "test?key=SECRET", "live/test", "SECRET", ""},
		{"/live/", "/test/", "live/test", "", ""},
		{"a/b", "c?key=k&x=1", "a/b/c", "k", ""},
		{"", "test", "test", "", ""},
		{"live?key=fromapp", "test", "live/test", "fromapp", ""},
		{"live?key=fromapp", "test?key=fromname", "live/test", "fromname", ""},
		{"live", "test?key=a%2Bb", "live/test", "a+b", ""},
		// The shared path rule (streampath.Check): "%" is not decoded but refused.
		{"live", "te%20st", "", "", `contains '%'`},
		{"live", `a\b`, "", "", `contains '\\'`},
		{"live", "a:b", "", "", `contains ':'`},
		{"live", "", "", "", "empty stream name"},
		{"live", "?key=x", "", "", "empty stream name"},
		{"live", "a b", "", "", "space or control"},
		{"live", "a\x00b", "", "", "space or control"},
		{"live", "../x", "", "", `".."`},
		{"live", "a//b", "", "", "empty"},
		{"live", strings.Repeat("x", 300), "", "", "maximum is 256"},
	} {
		path, key, err := streamPath(tc.app, tc.name)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("streamPath(%q, %q): err %v, want %q", tc.app, tc.name, err, tc.wantErr)
			}
			continue
		}
		if err != nil || path != tc.wantPath || key != tc.wantKey {
			t.Errorf("streamPath(%q, %q) = %q, %q, %v; want %q, %q", tc.app, tc.name, path, key, err, tc.wantPath, tc.wantKey)
		}
	}
}
