package whip

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/ingest/rtpin"
	hub "github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
)

// TestPublish publishes the fixtures with a pion client and checks what a
// hub reader gets, that refusals leave the publish running, and that
// DELETE ends the stream and frees everything.
func TestPublish(t *testing.T) {
	ts := newTestServer(t)
	baseline := runtime.NumGoroutine()

	c := newTestClient(t)
	c.publish(t, ts, "live/cam")
	t.Run("answer", func(t *testing.T) { checkAnswer(t, ts, c) })

	c.send(t, 10*time.Second)
	stream := ts.waitStream(t, "live/cam", 5*time.Second)
	tracks := stream.Tracks()
	if len(tracks) != 2 {
		t.Fatalf("stream has %d tracks, expected H264 and Opus", len(tracks))
	}
	vt, at := tracks[0], tracks[1]
	codec, ok := vt.Codec.(hub.H264)
	if !ok {
		t.Fatalf("track 0 is %s, expected H264", vt.Codec.Name())
	}
	if _, ok := at.Codec.(hub.Opus); !ok {
		t.Fatalf("track 1 is %s, expected Opus", at.Codec.Name())
	}
	var sps h264.SPS
	if err := sps.Unmarshal(codec.SPS); err != nil {
		t.Fatalf("track SPS: %v", err)
	}
	if sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("track SPS says %dx%d, expected 640x360", sps.Width(), sps.Height())
	}

	reader, err := stream.NewReader(hub.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	units := readFor(t, reader, 2500*time.Millisecond)
	t.Run("video", func(t *testing.T) { checkVideo(t, c, vt, units) })
	t.Run("audio", func(t *testing.T) { checkAudio(t, c, at, units) })
	t.Run("sync", func(t *testing.T) { checkSync(t, c, vt, at, units) })

	t.Run("refusals", func(t *testing.T) {
		chromium := realOffer(t, "chromium156-whip-whep-js-offer.sdp")
		cases := []struct {
			name, path, token, ctype, body string
			status                         int
			msg                            string
		}{
			{"no token", "live/cam2", "", "application/sdp", chromium, 401, "needs a bearer token"},
			{"wrong token", "live/cam2", "nope", "application/sdp", chromium, 401, "wrong bearer token"},
			{"no route", "other/cam", testToken, "application/sdp", chromium, 404, "no route"},
			{"protocol not allowed", "rtmp-only/cam", testToken, "application/sdp", chromium, 403, "does not accept WHIP"},
			{"second publisher", "live/cam", testToken, "application/sdp", chromium, 409, "already has a publisher"},
			{"no H264 or Opus", "live/cam2", testToken, "application/sdp", realOffer(t, "werift-whip-offer.sdp"), 400, "VP8"},
			{"bad content type", "live/cam2", testToken, "text/plain", chromium, 415, "application/sdp"},
			{"malformed SDP", "live/cam2", testToken, "application/sdp", "v=0\r\nthis is not SDP\r\n", 400, "cannot be parsed"},
			{"empty body", "live/cam2", testToken, "application/sdp", "", 400, "empty"},
			{"no path", "", testToken, "application/sdp", chromium, 400, "invalid stream path: empty"},
			{"recvonly offer", "live/cam2", testToken, "application/sdp", realOffer(t, "chromium156-whep-offer.sdp"), 400, "sendonly or sendrecv"},
		}
		for _, tc := range cases {
			resp, body := ts.post(t, tc.path, tc.token, tc.ctype, tc.body)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.msg) {
				t.Errorf("%s: got %s %q, expected %d with %q", tc.name, resp.Status, body, tc.status, tc.msg)
			}
			if tc.status == 401 && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate is %q", tc.name, resp.Header.Get("WWW-Authenticate"))
			}
		}
		if _, ok := ts.reg.Get("live/cam2"); ok {
			t.Error("a refused publish left a stream behind")
		}
		if n := ts.sessions.Len(); n != 1 {
			t.Errorf("%d sessions after the refusals, expected 1", n)
		}
		// The established publish keeps going.
		if more := readFor(t, reader, 300*time.Millisecond); len(more) < 10 {
			t.Errorf("%d units in 300 ms after the refusals", len(more))
		}
	})

	t.Run("delete", func(t *testing.T) {
		resp, body := ts.delete(t, c.location)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("DELETE: %s %s", resp.Status, body)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for {
			_, err := reader.Read(ctx)
			if errors.Is(err, hub.ErrStreamEnded) {
				break
			}
			if err != nil {
				t.Fatalf("reader: %v, expected %v", err, hub.ErrStreamEnded)
			}
		}
		if _, ok := ts.reg.Get("live/cam"); ok {
			t.Error("stream still registered after DELETE")
		}
		if n := ts.sessions.Len(); n != 0 {
			t.Errorf("%d sessions after DELETE", n)
		}
		if resp, _ := ts.delete(t, c.location); resp.StatusCode != http.StatusNotFound {
			t.Errorf("second DELETE: %s, expected 404", resp.Status)
		}
	})
	c.close()
	waitGoroutines(t, baseline)
}

// checkAnswer checks the 201's headers and the answer: absolute Location
// in the sessions table, ETag, full candidates, CRLF, only H.264 and Opus.
func checkAnswer(t *testing.T, ts *testServer, c *testClient) {
	h := c.resp.Header
	if ct := h.Get("Content-Type"); ct != "application/sdp" {
		t.Errorf("Content-Type %q", ct)
	}
	if !strings.HasPrefix(c.location, ts.srv.URL+rtc.SessionPathPrefix) || len(c.location) < len(ts.srv.URL)+len(rtc.SessionPathPrefix)+32 {
		t.Errorf("Location %q is not an absolute session URL with an unguessable id", c.location)
	}
	if et := h.Get("ETag"); len(et) < 3 || et[0] != '"' {
		t.Errorf("ETag %q is not a strong entity tag", et)
	}
	a := c.answer
	if strings.Count(a, "\n") != strings.Count(a, "\r\n") {
		t.Error("answer has lines not ending in CRLF")
	}
	for _, want := range []string{"a=candidate:", "a=end-of-candidates", "H264/90000", "opus/48000/2", "a=recvonly", "packetization-mode=1",
		"a=rtcp-mux\r\n", "a=rtcp-mux-only\r\n"} {
		if !strings.Contains(a, want) {
			t.Errorf("answer lacks %q", want)
		}
	}
	if rtc.MuxOnly(a) != a {
		t.Errorf("a bundled section of the answer lacks a=rtcp-mux or a=rtcp-mux-only:\n%s", a)
	}
	for _, bad := range []string{"VP8", "VP9", "AV1", "H265", "packetization-mode=0", "PCMU", "G722"} {
		if strings.Contains(a, bad) {
			t.Errorf("answer offers %s", bad)
		}
	}
}

// readFor returns the units the reader gets in d.
func readFor(t *testing.T, r *hub.Reader, d time.Duration) []*hub.Unit {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var units []*hub.Unit
	for {
		u, err := r.Read(ctx)
		if err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("read: %v", err)
			}
			return units
		}
		units = append(units, u)
	}
}

func ofTrack(units []*hub.Unit, tr *hub.Track) []*hub.Unit {
	var out []*hub.Unit
	for _, u := range units {
		if u.Track == tr {
			out = append(out, u)
		}
	}
	return out
}

// checkVideo: ~30 fps, IDRs led by SPS/PPS, NAL units equal to the fixture
// frame sent, RTP packets equal to what the client sent (all of them).
func checkVideo(t *testing.T, c *testClient, vt *hub.Track, units []*hub.Unit) {
	video := ofTrack(units, vt)
	if len(video) < 60 {
		t.Fatalf("%d video units in 2.5 s, expected about 75", len(video))
	}
	span := video[len(video)-1].PTS - video[0].PTS
	if fps := float64(len(video)-1) / span.Seconds(); fps < 28 || fps > 32 {
		t.Errorf("video at %.1f fps, expected 30", fps)
	}
	want := readFixtureAUs(t)
	norm := transcode.NewH264Normalizer(nil, nil)
	for _, au := range want[:30] { // learn the parameter sets
		norm.Normalize(au)
	}
	keys, damaged := 0, 0
	for i, u := range video {
		if i > 0 {
			if d := u.PTS - video[i-1].PTS; d < frameTime-time.Millisecond || d > 2*frameTime+time.Millisecond {
				t.Errorf("unit %d: PTS step %v", i, d)
			}
		}
		if len(u.RTP) == 0 {
			t.Fatalf("unit %d has no RTP packets", i)
		}
		// The packets are the ones sent, payloads unchanged, all of them.
		sent0, rel, ok := c.rec.lookup(u.RTP[0].SSRC, u.RTP[0].SequenceNumber)
		if !ok {
			t.Fatalf("unit %d: packet %d was never sent", i, u.RTP[0].SequenceNumber)
		}
		if n := c.rec.countTS(u.RTP[0].SSRC, sent0.ts); n != len(u.RTP) {
			t.Errorf("unit %d has %d packets, %d were sent", i, len(u.RTP), n)
		}
		wantTS := hub.RTPTimestamp(vt, u.PTS)
		for _, p := range u.RTP {
			sent, _, ok := c.rec.lookup(p.SSRC, p.SequenceNumber)
			if !ok || !bytes.Equal(sent.payload, p.Payload) {
				t.Fatalf("unit %d: packet %d payload differs from the one sent", i, p.SequenceNumber)
			}
			if p.Extension || p.Padding || p.Timestamp != wantTS {
				t.Errorf("unit %d: packet %d: extension %v, padding %v, timestamp %d (expected %d, the PTS)", i, p.SequenceNumber, p.Extension, p.Padding, p.Timestamp, wantTS)
			}
		}
		if u.NALUs == nil {
			damaged++
			continue
		}
		frame := int((rel + 1500) / 3000) // pion stamps 2999.99... ticks a frame
		if frame >= len(want) {
			t.Fatalf("unit %d: sent timestamp %d is past the fixture", i, rel)
		}
		expected, idr := norm.Normalize(want[frame])
		if !equalNALUs(u.NALUs, expected) || u.Key != idr {
			t.Errorf("unit %d (frame %d): NAL units %v key %v, expected %v key %v", i, frame, naluTypes(u.NALUs), u.Key, naluTypes(expected), idr)
		}
		if u.Key {
			keys++
			if !bytes.Equal(u.NALUs[0], vt.Codec.(hub.H264).SPS) || h264.NALUType(u.NALUs[1][0]&0x1f) != h264.NALUTypePPS {
				t.Errorf("unit %d: IDR does not start with the SPS and PPS", i)
			}
		}
	}
	if keys < 2 {
		t.Errorf("%d IDR units in 2.5 s, expected 2 or 3", keys)
	}
	if damaged > len(video)/20 {
		t.Errorf("%d of %d video units without NAL units on loopback", damaged, len(video))
	}
}

// checkAudio: ~50 units a second, each one Opus packet as sent, PTS
// advancing 20 ms.
func checkAudio(t *testing.T, c *testClient, at *hub.Track, units []*hub.Unit) {
	audio := ofTrack(units, at)
	if len(audio) < 110 || len(audio) > 130 {
		t.Errorf("%d audio units in 2.5 s, expected about 125", len(audio))
	}
	for i, u := range audio {
		if len(u.RTP) != 1 || !bytes.Equal(u.RTP[0].Payload, u.Data) || !u.Key {
			t.Fatalf("unit %d: %d packets, key %v", i, len(u.RTP), u.Key)
		}
		sent, _, ok := c.rec.lookup(u.RTP[0].SSRC, u.RTP[0].SequenceNumber)
		if !ok || !bytes.Equal(sent.payload, u.Data) {
			t.Fatalf("unit %d: payload differs from the packet sent", i)
		}
		if i > 0 && u.RTP[0].SequenceNumber == audio[i-1].RTP[0].SequenceNumber+1 {
			if d := u.PTS - audio[i-1].PTS; d < opusFrame-time.Millisecond || d > opusFrame+time.Millisecond {
				t.Errorf("unit %d: PTS step %v, expected 20ms", i, d)
			}
		}
	}
}

// checkSync: the stream time of what was sent at the same moment differs
// by less than 100 ms between audio and video.
func checkSync(t *testing.T, c *testClient, vt, at *hub.Track, units []*hub.Unit) {
	offset := func(tr *hub.Track, rate uint32) (time.Duration, bool) {
		for _, u := range ofTrack(units, tr) {
			if _, rel, ok := c.rec.lookup(u.RTP[0].SSRC, u.RTP[0].SequenceNumber); ok {
				return u.PTS - time.Duration(rel)*time.Second/time.Duration(rate), true
			}
		}
		return 0, false
	}
	ov, ok1 := offset(vt, 90000)
	oa, ok2 := offset(at, 48000)
	if !ok1 || !ok2 {
		t.Fatal("no unit to compare")
	}
	if d := (ov - oa).Abs(); d > 100*time.Millisecond {
		t.Errorf("audio and video are %v apart (video offset %v, audio %v)", d, ov, oa)
	} else {
		t.Logf("audio/video offset difference: %v", d)
	}
}

// TestIdleTimeout: a publisher that stops sending is ended.
func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t)
	ts.h.idleTimeout = time.Second
	c := newTestClient(t)
	c.publish(t, ts, "live/idle")
	c.send(t, 700*time.Millisecond)
	stream := ts.waitStream(t, "live/idle", 5*time.Second)
	select {
	case <-stream.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("stream still running 4 s after the media stopped")
	}
	deadline := time.Now().Add(2 * time.Second)
	for ts.sessions.Len() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := ts.sessions.Len(); n != 0 {
		t.Errorf("%d sessions after the idle timeout", n)
	}
}

// TestTrackWait: an offer with audio and video whose video never comes is
// declared with audio only after trackWait.
func TestTrackWait(t *testing.T) {
	ts := newTestServer(t)
	ts.h.trackWait = 300 * time.Millisecond
	c := newTestClient(t)
	c.publish(t, ts, "live/novideo")
	pages := readFixturePages(t)
	go func() {
		for _, p := range pages[:50] {
			_ = c.audio.WriteSample(mediaSample(p))
			time.Sleep(opusFrame)
		}
	}()
	stream := ts.waitStream(t, "live/novideo", 3*time.Second)
	if tr := stream.Tracks(); len(tr) != 1 || tr[0].Codec.Name() != "Opus" {
		t.Errorf("tracks %v, expected Opus alone", tr)
	}
}

// TestRealClientOffers runs the WHIP offers captured from real clients
// through the offer check and, for those it accepts, through the endpoint.
func TestRealClientOffers(t *testing.T) {
	ts := newTestServer(t)
	cases := []struct {
		file                 string
		accept, video, audio bool
		refusal              string
	}{
		{file: "chromium156-whip-whep-js-offer.sdp", accept: true, video: true, audio: true},
		// Opus and VP8-only video: refused rather than half a session.
		{file: "simple-whip-client-gst1.22-offer.sdp", refusal: "it takes H264 (packetization-mode=1; Baseline, Main or High profile) video and/or Opus audio in a sendonly or sendrecv section (offered video: VP8; audio: OPUS)"},
		// VP8/AV1/VP9 only: the hub has no codec for them yet.
		{file: "werift-whip-offer.sdp", refusal: "offered video: VP8; audio: none"},
		{file: "wrtc-whip-offer.sdp", refusal: "offered video: VP8, AV1, VP9; audio: none"},
	}
	for _, tc := range cases {
		t.Run(tc.file, func(t *testing.T) {
			raw := realOffer(t, tc.file)
			off, err := checkOffer(raw)
			if !tc.accept {
				var he *rtc.Error
				if !errors.As(err, &he) || he.Status != 400 || !strings.Contains(he.Msg, tc.refusal) {
					t.Fatalf("checkOffer: %v, expected a 400 with %q", err, tc.refusal)
				}
				return
			}
			if err != nil {
				t.Fatalf("checkOffer: %v", err)
			}
			if off.hasVideo != tc.video || off.hasAudio != tc.audio {
				t.Fatalf("video %v audio %v, expected %v %v", off.hasVideo, off.hasAudio, tc.video, tc.audio)
			}
			path := "live/" + strings.TrimSuffix(tc.file, ".sdp")
			resp, answer := ts.post(t, path, testToken, "application/sdp", raw)
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("POST: %s %s", resp.Status, answer)
			}
			sections := strings.Split(answer, "\r\nm=")[1:]
			for _, sec := range sections {
				kind, _, _ := strings.Cut(sec, " ")
				used := kind == "video" && tc.video || kind == "audio" && tc.audio
				switch {
				case used && !strings.Contains(sec, "a=recvonly"):
					t.Errorf("%s section not recvonly:\n%s", kind, sec)
				case !used && !strings.Contains(sec, "a=inactive") && !strings.HasPrefix(sec, kind+" 0 "):
					t.Errorf("unused %s section not inactive:\n%s", kind, sec)
				}
				if used {
					for _, bad := range []string{"VP8", "VP9", "AV1", "packetization-mode=0", "PCMU"} {
						if strings.Contains(sec, bad) {
							t.Errorf("%s section accepts %s", kind, bad)
						}
					}
				}
			}
			if !strings.Contains(answer, "a=end-of-candidates") {
				t.Error("answer has no a=end-of-candidates")
			}
			if resp, _ := ts.delete(t, resp.Header.Get("Location")); resp.StatusCode != http.StatusOK {
				t.Errorf("DELETE: %s", resp.Status)
			}
			if _, ok := ts.reg.Get(path); ok {
				t.Error("stream still registered after DELETE")
			}
		})
	}
}

// waitGoroutines waits until no more goroutines run than at baseline.
func waitGoroutines(t *testing.T, baseline int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= baseline {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Fatalf("%d goroutines, %d at the start:\n%s", n, baseline, buf)
		}
		time.Sleep(50 * time.Millisecond)
	}
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

// TestPacketLoss: one packet of an IDR is lost. Its unit still carries the
// packets that arrived, but no NAL units, and so do the units after it up
// to the next IDR; the publisher gets keyframe requests, at most one per
// 500 ms.
func TestPacketLoss(t *testing.T) {
	ts := newTestServer(t)
	drop := &idrDropper{skip: 1} // the IDR of frame 30
	c := newTestClientWith(t, drop)
	c.publish(t, ts, "live/lossy")
	c.send(t, 10*time.Second)
	stream := ts.waitStream(t, "live/lossy", 5*time.Second)
	vt := stream.Tracks()[0]
	reader, err := stream.NewReader(hub.ReaderOptions{Name: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	video := ofTrack(readFor(t, reader, 2500*time.Millisecond), vt)
	seq, ok := drop.droppedSeq()
	if !ok {
		t.Fatal("nothing was dropped")
	}
	hit := -1
	for i, u := range video {
		first, last := u.RTP[0].SequenceNumber, u.RTP[len(u.RTP)-1].SequenceNumber
		if int16(seq-first) > 0 && int16(last-seq) > 0 {
			hit = i
		}
	}
	if hit < 0 {
		t.Fatalf("no unit around the dropped packet %d", seq)
	}
	u := video[hit]
	sent, _, _ := c.rec.lookup(u.RTP[0].SSRC, u.RTP[0].SequenceNumber)
	if u.NALUs != nil || u.Key || len(u.RTP) != c.rec.countTS(u.RTP[0].SSRC, sent.ts)-1 {
		t.Errorf("damaged unit: %d NAL units, key %v, %d packets of %d sent", len(u.NALUs), u.Key, len(u.RTP), c.rec.countTS(u.RTP[0].SSRC, sent.ts))
	}
	for _, p := range u.RTP {
		if p.SequenceNumber == seq {
			t.Error("the dropped packet is in the unit (a retransmission must not be added after the unit was written)")
		}
	}
	for i, v := range video {
		switch {
		case i < hit && v.NALUs == nil:
			t.Errorf("unit %d before the loss has no NAL units", i)
		case i > hit && v.Key:
			if i-hit < 20 {
				t.Errorf("unit %d: key %d units after the damaged IDR, expected the next GOP's", i, i-hit)
			}
			hit = len(video) // from here on, whole again
		case i > hit && hit < len(video) && (v.NALUs != nil || len(v.RTP) == 0):
			t.Errorf("unit %d after the loss: %d NAL units, %d packets; expected packets only", i, len(v.NALUs), len(v.RTP))
		}
	}
	if hit != len(video) {
		t.Error("no IDR after the loss")
	}
	plis := c.pliTimes()
	if len(plis) < 1 {
		t.Fatal("no keyframe request reached the publisher")
	}
	for i := 1; i < len(plis); i++ {
		if d := plis[i].Sub(plis[i-1]); d < rtpin.PLIInterval-50*time.Millisecond {
			t.Errorf("keyframe requests %v apart", d)
		}
	}
	t.Logf("%d keyframe requests; dropped packet %d", len(plis), seq)
}

// TestSessionLimit: at the sessions table's limit a publish gets a 503
// with Retry-After, and a path freed by DELETE can be published again.
func TestSessionLimit(t *testing.T) {
	ts := newTestServerWith(t, rtc.Limits{Sessions: 1})
	offer := realOffer(t, "chromium156-whip-whep-js-offer.sdp")
	resp, body := ts.post(t, "live/a", testToken, "application/sdp", offer)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("first publish: %s %s", resp.Status, body)
	}
	loc := resp.Header.Get("Location")
	resp2, body2 := ts.post(t, "live/b", testToken, "application/sdp", offer)
	if resp2.StatusCode != http.StatusServiceUnavailable || resp2.Header.Get("Retry-After") == "" || !strings.Contains(body2, "session limit") {
		t.Errorf("at the limit: %s, Retry-After %q, %q", resp2.Status, resp2.Header.Get("Retry-After"), body2)
	}
	if _, ok := ts.reg.Get("live/b"); ok {
		t.Error("a refused publish claimed its path")
	}
	if resp, _ := ts.delete(t, loc); resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE: %s", resp.Status)
	}
	if resp, body := ts.post(t, "live/a", testToken, "application/sdp", offer); resp.StatusCode != http.StatusCreated {
		t.Errorf("publish again after DELETE: %s %s", resp.Status, body)
	}
}
