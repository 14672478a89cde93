package srt

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/testkit"
	"github.com/wishbridge/bridge/media"
)

// checkH264 checks the video units of a 4 s publish of a fixture: H264
// 640x360, starting at an IDR, SPS and PPS in front of every IDR, about
// 30 fps, DTS increasing.
func checkH264(t *testing.T, video []*media.Unit) {
	t.Helper()
	if len(video) == 0 {
		t.Fatal("no video units")
	}
	vc, ok := video[0].Track.Codec.(media.H264)
	if !ok {
		t.Fatalf("video codec is %T", video[0].Track.Codec)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(vc.SPS); err != nil {
		t.Fatalf("SPS: %v", err)
	}
	if sps.Width() != 640 || sps.Height() != 360 {
		t.Errorf("SPS says %dx%d, want 640x360", sps.Width(), sps.Height())
	}
	if !video[0].Key {
		t.Errorf("first video unit is not an IDR")
	}
	idrs := 0
	for i, u := range video {
		if u.Key {
			idrs++
			if len(u.NALUs) < 3 || h264.NALUType(u.NALUs[0][0]&0x1f) != h264.NALUTypeSPS || h264.NALUType(u.NALUs[1][0]&0x1f) != h264.NALUTypePPS {
				t.Errorf("IDR unit %d does not start with SPS, PPS: %d NALUs", i, len(u.NALUs))
			}
		}
		for _, n := range u.NALUs {
			if typ := h264.NALUType(n[0] & 0x1f); typ == h264.NALUTypeAccessUnitDelimiter {
				t.Errorf("unit %d holds an access unit delimiter", i)
			}
		}
		if i > 0 && u.DTS <= video[i-1].DTS {
			t.Errorf("video DTS does not increase at unit %d: %v after %v", i, u.DTS, video[i-1].DTS)
		}
		if u.PTS < u.DTS {
			t.Errorf("video unit %d: PTS %v before DTS %v", i, u.PTS, u.DTS)
		}
	}
	span := (video[len(video)-1].DTS - video[0].DTS).Seconds()
	if rate := float64(len(video)-1) / span; rate < 28 || rate > 32 {
		t.Errorf("%d video units over %.2f s: %.1f/s, want about 30", len(video), span, rate)
	}
	if len(video) < 100 || len(video) > 130 {
		t.Errorf("%d video units for 4 s of 30 fps", len(video))
	}
	if idrs < 3 {
		t.Errorf("%d IDRs in 4 s with a 1 s GOP", idrs)
	}
}

// checkAudio checks audio units: key, PTS = DTS, PTS increasing, n in
// [lo, hi].
func checkAudio(t *testing.T, audio []*media.Unit, lo, hi int) {
	t.Helper()
	for i, u := range audio {
		if len(u.Data) == 0 || !u.Key || u.PTS != u.DTS {
			t.Errorf("audio unit %d: %d bytes, key %v, pts %v dts %v", i, len(u.Data), u.Key, u.PTS, u.DTS)
		}
		if i > 0 && u.PTS <= audio[i-1].PTS {
			t.Errorf("audio PTS does not increase at unit %d: %v after %v", i, u.PTS, audio[i-1].PTS)
		}
	}
	if n := len(audio); n < lo || n > hi {
		t.Errorf("%d audio units, want %d to %d", n, lo, hi)
	}
}

func TestPublishFFmpeg(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	for _, tc := range []struct {
		file   string
		codec  string
		lo, hi int // audio units in 4 s
	}{
		{"h264-aac.ts", "AAC", 170, 200},   // 46.875 frames/s
		{"h264-opus.ts", "Opus", 185, 215}, // 50 packets/s
	} {
		t.Run(tc.file, func(t *testing.T) {
			checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
			ts := startServer(t, Config{}, nil)

			ff := publish(t, testkit.Fixture(tc.file), 4, ts.url("publish:live/test"))
			r := ts.nextReader(t, 10*time.Second)
			units := testkit.ReadAll(t, r, 20*time.Second)
			if err := ff.Wait(t, 20*time.Second); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
			}
			if _, ok := ts.reg.Get("live/test"); ok {
				t.Fatalf("stream still registered after the publisher left")
			}
			video, audio := testkit.SplitUnits(units)
			checkH264(t, video)
			checkAudio(t, audio, tc.lo, tc.hi)
			if len(audio) == 0 {
				t.FailNow()
			}
			switch c := audio[0].Track.Codec.(type) {
			case media.AAC:
				if tc.codec != "AAC" || c.SampleRate != 48000 || c.Channels != 2 || len(c.Config) == 0 {
					t.Errorf("audio track %+v, want %s 48 kHz stereo", c, tc.codec)
				}
				for i, u := range audio[1:] {
					if d := u.PTS - audio[i].PTS; d < 21*time.Millisecond || d > 22*time.Millisecond {
						t.Errorf("AAC unit %d: %v after the previous one, want 21.33 ms", i+1, d)
						break
					}
				}
			case media.Opus:
				if tc.codec != "Opus" || c.Channels != 2 {
					t.Errorf("audio track %+v, want %s stereo", c, tc.codec)
				}
				for i, u := range audio[1:] {
					if d := u.PTS - audio[i].PTS; d != 20*time.Millisecond {
						t.Errorf("Opus unit %d: %v after the previous one, want 20 ms", i+1, d)
						break
					}
				}
			default:
				t.Errorf("audio codec is %T, want %s", c, tc.codec)
			}
			// Same origin: the tracks start together (the fixture's audio
			// and video start at the same instant).
			if d := (audio[0].PTS - video[0].PTS).Abs(); d > 100*time.Millisecond {
				t.Errorf("audio starts at %v, video at %v: %v apart", audio[0].PTS, video[0].PTS, d)
			}
			if video[0].DTS < 0 || audio[0].PTS < 0 || min(video[0].DTS, audio[0].PTS) != 0 {
				t.Errorf("stream clock starts at video %v, audio %v; want the earliest at 0", video[0].DTS, audio[0].PTS)
			}

			ts.logs.WaitLog(t, 2*time.Second, "srt publish ended", "stream=live/test", "peer=127.0.0.1:", "video_frames=", "bytes=", "duration=", "demux_errors=0")
			ts.logs.WaitLog(t, time.Second, "srt connect", "stream=live/test", "mode=publish")
			ts.close(t)
			checkGoroutines()
		})
	}
}

// keyAuth allows path "live/test" with key "secret" and nothing else.
func keyAuth(req access.Request) error {
	if req.Protocol != "srt" {
		return fmt.Errorf("protocol %q: %w", req.Protocol, access.ErrProtocolNotAllowed)
	}
	if req.Path != "live/test" && req.Path != "live/other" {
		return fmt.Errorf("path %q: %w", req.Path, access.ErrNoRoute)
	}
	if req.Credential != "secret" {
		return fmt.Errorf("path %q: %w", req.Path, access.BadKey(access.Publish))
	}
	return nil
}

func TestPublishAccessControlSyntax(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	var mu sync.Mutex
	var reqs []access.Request
	ts := startServer(t, Config{Authorize: testkit.Authorizer(func(r access.Request) error {
		mu.Lock()
		reqs = append(reqs, r)
		mu.Unlock()
		return keyAuth(r)
	})}, nil)

	for _, sid := range []string{
		"#!::r=live/test,m=publish,u=alice,s=secret",
		"publish:live/test?key=secret",
		"live/test?key=secret",
	} {
		ff := publish(t, testkit.Fixture("h264-aac.ts"), 2, ts.url(sid))
		r := ts.nextReader(t, 10*time.Second)
		units := testkit.ReadAll(t, r, 20*time.Second)
		if err := ff.Wait(t, 20*time.Second); err != nil {
			t.Fatalf("%s: ffmpeg: %v\n%s", sid, err, ff.Stderr.String())
		}
		video, audio := testkit.SplitUnits(units)
		if len(video) < 40 || len(audio) < 70 {
			t.Errorf("%s: %d video and %d audio units for 2 s", sid, len(video), len(audio))
		}
		ts.logs.WaitLog(t, 2*time.Second, "srt publish ended", "stream=live/test")
	}
	mu.Lock()
	for _, r := range reqs {
		if r.Protocol != "srt" || r.Path != "live/test" || r.Credential != "secret" || !strings.HasPrefix(r.Remote, "127.0.0.1:") {
			t.Errorf("Authorize got %+v", r)
		}
	}
	mu.Unlock()
	if strings.Contains(ts.logs.String(), "secret") {
		t.Errorf("the key is in the log:\n%s", ts.logs.String())
	}
	ts.close(t)
	checkGoroutines()
}

func TestPassphrase(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	const pass = "0123456789"
	ts := startServer(t, Config{Passphrase: func(path string) string {
		if path == "live/secure" {
			return pass
		}
		return ""
	}}, nil)

	// The right passphrase works.
	ff := publish(t, testkit.Fixture("h264-aac.ts"), 2, ts.url("publish:live/secure", "passphrase="+pass))
	r := ts.nextReader(t, 10*time.Second)
	units := testkit.ReadAll(t, r, 20*time.Second)
	if err := ff.Wait(t, 20*time.Second); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, ff.Stderr.String())
	}
	if video, audio := testkit.SplitUnits(units); len(video) < 40 || len(audio) < 70 {
		t.Errorf("%d video and %d audio units for 2 s over an encrypted connection", len(video), len(audio))
	}
	ts.logs.WaitLog(t, 2*time.Second, "srt connect", "stream=live/secure", "encrypted=true")

	for _, tc := range []struct {
		name, sid, extra, code, reason string
	}{
		{"wrong passphrase", "publish:live/secure", "passphrase=9876543210", "code=1010", "wrong passphrase"},
		{"no passphrase", "publish:live/secure", "", "code=1011", "requires encryption"},
		{"passphrase on a plain path", "publish:live/plain", "passphrase=" + pass, "code=1011", "has no passphrase"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var extra []string
			if tc.extra != "" {
				extra = append(extra, tc.extra)
			}
			ff := publish(t, testkit.Fixture("h264-aac.ts"), 2, ts.url(tc.sid, extra...))
			start := time.Now()
			err := ff.Wait(t, 15*time.Second)
			if err == nil {
				t.Fatalf("ffmpeg succeeded; stderr:\n%s", ff.Stderr.String())
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("ffmpeg took %v to give up", d)
			}
			ts.logs.WaitLog(t, 2*time.Second, "srt connection refused", "peer=127.0.0.1:", tc.code, tc.reason)
			t.Logf("ffmpeg: %v: %s", err, strings.TrimSpace(ff.Stderr.String()))
		})
	}
	select {
	case r := <-ts.newRdr:
		r.Close()
		t.Errorf("a refused connection was published")
	default:
	}
	if strings.Contains(ts.logs.String(), pass) {
		t.Errorf("the passphrase is in the log")
	}
	ts.close(t)
	checkGoroutines()
}

func TestRefusals(t *testing.T) {
	testkit.FFmpegBin(t, "ffmpeg")
	checkGoroutines := testkit.GoroutineBaseline(t, 8*time.Second, gosrtDialer)
	ts := startServer(t, Config{Authorize: testkit.Authorizer(keyAuth)}, nil)

	// An established stream that must keep going through the refusals.
	main := publish(t, testkit.Fixture("h264-aac.ts"), -1, ts.url("publish:live/test?key=secret"))
	r := ts.nextReader(t, 10*time.Second)
	if u := testkit.ReadFor(t, r, time.Second); len(u) == 0 {
		t.Fatalf("no units from the established stream")
	}
	var units []*media.Unit
	readDone := make(chan struct{})
	stopRead := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(readDone)
		for {
			select {
			case <-stopRead:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			u, err := r.Read(ctx)
			cancel()
			if err == nil {
				units = append(units, u)
			} else if !errors.Is(err, context.DeadlineExceeded) {
				return
			}
		}
	}()

	for _, tc := range []struct {
		name, sid, code, reason string
	}{
		{"unknown path", "publish:live/nope?key=secret", "code=1404", "no route"},
		{"missing key", "publish:live/other", "code=1401", "publish key"},
		{"wrong key", "#!::r=live/other,m=publish,s=guess", "code=1401", "publish key"},
		{"second publisher", "publish:live/test?key=secret", "code=1409", "already has a publisher"},
		{"read", "read:live/test", "code=1405", "mode read is not supported yet"},
		{"default mode of the access-control syntax", "#!::r=live/test", "code=1405", "mode read"},
		{"bad streamid", "publish:live/../x", "code=1400", "invalid streamid"},
		{"unknown mode", "play:live/test", "code=1405", "unsupported streamid mode"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			subs := []string{"srt connection refused", "peer=127.0.0.1:", tc.code, tc.reason}
			before := len(ts.logs.Lines(subs...))
			ff := publish(t, testkit.Fixture("h264-aac.ts"), 2, ts.url(tc.sid))
			t0 := time.Now()
			err := ff.Wait(t, 15*time.Second)
			if err == nil {
				t.Fatalf("ffmpeg succeeded; stderr:\n%s", ff.Stderr.String())
			}
			if d := time.Since(t0); d > 10*time.Second {
				t.Errorf("ffmpeg took %v to give up", d)
			}
			deadline := time.Now().Add(2 * time.Second)
			for len(ts.logs.Lines(subs...)) == before {
				if time.Now().After(deadline) {
					t.Fatalf("no new log line with %q; log:\n%s", subs, ts.logs.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			line := ts.logs.Lines(subs...)[before]
			if strings.Contains(line, "secret") || strings.Contains(line, "guess") {
				t.Errorf("refusal log has the key: %s", line)
			}
			t.Logf("%s", line)
			t.Logf("ffmpeg: %v: %s", err, strings.TrimSpace(ff.Stderr.String()))
		})
	}
	time.Sleep(500 * time.Millisecond)
	close(stopRead)
	<-readDone
	elapsed := time.Since(start)

	// The established stream went on undisturbed: 30 video frames a
	// second, no gap.
	video, audio := testkit.SplitUnits(units)
	if want := elapsed.Seconds() * 30; float64(len(video)) < want*0.8 {
		t.Errorf("the established stream delivered %d video units in %v, want about %.0f", len(video), elapsed, want)
	}
	if len(audio) == 0 {
		t.Errorf("the established stream delivered no audio meanwhile")
	}
	for i := 1; i < len(video); i++ {
		if d := video[i].DTS - video[i-1].DTS; d <= 0 || d > 100*time.Millisecond {
			t.Errorf("video unit %d: DTS %v after %v", i, video[i].DTS, video[i-1].DTS)
		}
	}
	if st, ok := ts.reg.Get("live/test"); !ok || !strings.HasPrefix(st.Publisher(), "srt 127.0.0.1:") {
		t.Fatalf("live/test is no longer published")
	}
	if r.Dropped() != 0 {
		t.Errorf("reader dropped %d units", r.Dropped())
	}
	main.Kill()
	ts.close(t)
	checkGoroutines()
}
