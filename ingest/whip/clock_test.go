package whip

import (
	"sync"
	"testing"
	"time"

	"github.com/pion/interceptor"
	"github.com/pion/rtp"

	hub "github.com/wishbridge/bridge/media"
)

// TestTimestampJumps: a publisher whose RTP clock jumps 2^31-1 ticks
// forward at every frame (6.6 hours of video, 12.4 of audio; such steps
// wrapped the stream clock to negative after 386,000 packets) still makes
// a stream whose timestamps keep increasing by about a frame and stay
// within the time since it started: each jump is a discontinuity,
// re-anchored at the time that really passed.
func TestTimestampJumps(t *testing.T) {
	ts := newTestServer(t)
	c := newTestClientWith(t, &clockJumper{step: 1<<31 - 1})
	c.publish(t, ts, "live/jumps")
	start := time.Now()
	c.send(t, 10*time.Second)
	stream := ts.waitStream(t, "live/jumps", 5*time.Second)
	tracks := stream.Tracks()
	if len(tracks) != 2 {
		t.Fatalf("stream has %d tracks, expected H264 and Opus", len(tracks))
	}
	reader, err := stream.NewReader(hub.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	units := readFor(t, reader, 2*time.Second)
	elapsed := time.Since(start)

	for _, tr := range tracks {
		us := ofTrack(units, tr)
		if len(us) < 30 {
			t.Fatalf("%s: %d units in 2 s", tr.Codec.Name(), len(us))
		}
		rate := uint32(tr.Codec.ClockRate())
		for i, u := range us {
			if u.PTS < 0 || u.PTS > elapsed+time.Second {
				t.Fatalf("%s unit %d: PTS %v, the stream started %v ago", tr.Codec.Name(), i, u.PTS, elapsed.Round(time.Millisecond))
			}
			if i == 0 {
				continue
			}
			prev := us[i-1]
			if d := u.PTS - prev.PTS; d < 0 || d > time.Second {
				t.Errorf("%s unit %d: PTS step %v (%v after %v)", tr.Codec.Name(), i, d, u.PTS, prev.PTS)
			}
			// What WebRTC readers get: the packets' timestamps, on
			// the stream clock.
			if d := u.RTP[0].Timestamp - prev.RTP[len(prev.RTP)-1].Timestamp; int32(d) < 0 || d > rate {
				t.Errorf("%s unit %d: RTP timestamp step %d ticks", tr.Codec.Name(), i, int32(d))
			}
		}
	}
}

// clockJumper moves the RTP timestamps of every track it sends by step
// more for each new timestamp: every frame is a jump of step ticks.
type clockJumper struct {
	step uint32

	mu    sync.Mutex
	moved map[uint32]map[uint32]uint32 // per SSRC: timestamp sent -> on the wire
	bump  map[uint32]uint32            // per SSRC: the latest move
}

func (j *clockJumper) NewInterceptor(string) (interceptor.Interceptor, error) {
	return &jumpInterceptor{j: j}, nil
}

// wire returns the timestamp to put on the wire for ts on ssrc; a
// resent packet keeps the timestamp it was first sent with.
func (j *clockJumper) wire(ssrc, ts uint32) uint32 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.moved == nil {
		j.moved, j.bump = map[uint32]map[uint32]uint32{}, map[uint32]uint32{}
	}
	m := j.moved[ssrc]
	if m == nil {
		m = map[uint32]uint32{}
		j.moved[ssrc] = m
	}
	out, ok := m[ts]
	if !ok {
		j.bump[ssrc] += j.step
		out = ts + j.bump[ssrc]
		m[ts] = out
	}
	return out
}

type jumpInterceptor struct {
	interceptor.NoOp
	j *clockJumper
}

func (i *jumpInterceptor) BindLocalStream(_ *interceptor.StreamInfo, w interceptor.RTPWriter) interceptor.RTPWriter {
	return interceptor.RTPWriterFunc(func(h *rtp.Header, payload []byte, a interceptor.Attributes) (int, error) {
		out := *h // the header may be the NACK responder's copy
		out.Timestamp = i.j.wire(h.SSRC, h.Timestamp)
		return w.Write(&out, payload, a)
	})
}
