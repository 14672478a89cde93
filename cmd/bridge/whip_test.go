package main

import (
	"context"
	"io"
	"math"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
	"github.com/pion/webrtc/v4/pkg/media/h264reader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/wishbridge/bridge/transcode/av"
)

// whipPublisher is a pion WHIP client sending the H.264 + Opus fixtures in
// real time, looping, until its context ends.
type whipPublisher struct {
	pc       *webrtc.PeerConnection
	location string
}

func publishWHIP(t *testing.T, ctx context.Context, url string) *whipPublisher {
	t.Helper()
	return publishWHIPWith(t, ctx, newViewerAPI(t), url)
}

// publishWHIPWith is publishWHIP with a client of api.
func publishWHIPWith(t *testing.T, ctx context.Context, api *webrtc.API, url string) *whipPublisher {
	t.Helper()
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = pc.Close() })
	video, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264}, "video", "pub")
	if err != nil {
		t.Fatal(err)
	}
	audio, err := webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus}, "audio", "pub")
	if err != nil {
		t.Fatal(err)
	}
	for _, tr := range []webrtc.TrackLocal{video, audio} {
		tc, err := pc.AddTransceiverFromTrack(tr, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendonly})
		if err != nil {
			t.Fatal(err)
		}
		go func() { // reports and NACKs need the RTCP read
			buf := make([]byte, 1500)
			for {
				if _, _, err := tc.Sender().Read(buf); err != nil {
					return
				}
			}
		}()
	}
	off, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(off); err != nil {
		t.Fatal(err)
	}
	<-gathered
	resp := post(t, url, "application/sdp", pc.LocalDescription().SDP, nil)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s: %d %s", url, resp.StatusCode, body)
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: string(body)}); err != nil {
		t.Fatal(err)
	}
	go sendH264(ctx, t, video)
	go sendOgg(ctx, t, audio)
	return &whipPublisher{pc: pc, location: resp.Header.Get("Location")}
}

// sendH264 sends h264-opus.h264 at 30 fps, one sample per frame.
func sendH264(ctx context.Context, t *testing.T, track *webrtc.TrackLocalStaticSample) {
	tick := time.NewTicker(time.Second / 30)
	defer tick.Stop()
	for ctx.Err() == nil {
		f, err := os.Open(fixture(t, "h264-opus.h264"))
		if err != nil {
			return
		}
		r, err := h264reader.NewReader(f)
		if err != nil {
			f.Close()
			return
		}
		var frame []byte
		for ctx.Err() == nil {
			nal, err := r.NextNAL()
			if err != nil {
				break
			}
			frame = append(frame, 0, 0, 0, 1)
			frame = append(frame, nal.Data...)
			if nal.UnitType != h264reader.NalUnitTypeCodedSliceIdr && nal.UnitType != h264reader.NalUnitTypeCodedSliceNonIdr {
				continue
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
			_ = track.WriteSample(media.Sample{Data: frame, Duration: time.Second / 30})
			frame = nil
		}
		f.Close()
	}
}

// sendOgg sends h264-opus.ogg's Opus packets every 20 ms.
func sendOgg(ctx context.Context, t *testing.T, track *webrtc.TrackLocalStaticSample) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for ctx.Err() == nil {
		f, err := os.Open(fixture(t, "h264-opus.ogg"))
		if err != nil {
			return
		}
		r, _, err := oggreader.NewWith(f)
		if err != nil {
			f.Close()
			return
		}
		for ctx.Err() == nil {
			page, hdr, err := r.ParseNextPage()
			if err != nil {
				break
			}
			if hdr.GranulePosition == 0 { // OpusHead / OpusTags
				continue
			}
			select {
			case <-tick.C:
			case <-ctx.Done():
			}
			_ = track.WriteSample(media.Sample{Data: page, Duration: 20 * time.Millisecond})
		}
		f.Close()
	}
}

// TestWHIPToWHEP: a WHIP publisher's H.264 and Opus reach a WHEP viewer
// (packets passed through, not repacketized): decodable video at 30 fps and
// the fixture's tones; DELETE on the publisher's session ends the viewer's.
func TestWHIPToWHEP(t *testing.T) {
	if !av.Available() {
		t.Fatal("this test binary has no FFmpeg: build with cgo and install libavcodec-dev libavutil-dev libswresample-dev pkg-config")
	}
	b := startBridge(t, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pub := publishWHIP(t, ctx, "http://"+b.HTTPAddr().String()+"/whip/live/w")
	waitStream(t, b, "live/w")

	v := watch(t, b, "live/w", nil)
	aus := v.waitFrames(t, 150, 20*time.Second)
	if types := naluTypes(aus[0]); len(types) < 3 || types[2] != 5 {
		t.Fatalf("first frame NAL types %v, want SPS, PPS, IDR", types)
	}
	rtpSecs := float64(aus[len(aus)-1].ts-aus[0].ts) / 90000
	if fps := float64(len(aus)-1) / rtpSecs; fps < 27 || fps > 33 {
		t.Errorf("%.1f fps by RTP timestamps, want about 30", fps)
	}

	left, right, _ := v.opus(t)
	from := len(left) / 2
	if on := beepOnsets(left); len(on) > 0 {
		from = on[0] + 4800
	}
	if from+24000 > len(left) {
		t.Fatalf("only %d samples of audio", len(left))
	}
	if got := dominant(left[from : from+24000]); math.Abs(got-440) > 5 {
		t.Errorf("left channel %.0f Hz, want 440", got)
	}
	if got := dominant(right[from : from+24000]); math.Abs(got-660) > 5 {
		t.Errorf("right channel %.0f Hz, want 660", got)
	}

	// The publisher leaving ends the stream, and with it the viewer.
	req, _ := http.NewRequest(http.MethodDelete, pub.location, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("DELETE publisher session: %d", resp.StatusCode)
	}
	deadline := time.Now().Add(30 * time.Second)
	for b.sessions.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := b.sessions.Len(); n != 0 {
		t.Errorf("%d sessions left after the publisher left", n)
	}
}

// opus decodes the Opus packets v has received (at least 100, 2 s) onto
// one stereo timeline (48 kHz).
func (v *viewer) opus(t *testing.T) (left, right []float32, packets int) {
	t.Helper()
	v.mu.Lock()
	audio := append([]audioPacket(nil), v.audio...)
	v.mu.Unlock()
	if len(audio) < 100 {
		t.Fatalf("got %d Opus packets, want ~50/s", len(audio))
	}
	left, right = decodeOpus(t, audio)
	return left, right, len(audio)
}

// decodeOpus decodes packets onto one stereo timeline (48 kHz).
func decodeOpus(t *testing.T, audio []audioPacket) (left, right []float32) {
	t.Helper()
	dec, err := av.NewDecoder("opus", nil, 48000, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	base := audio[0].ts
	for _, p := range audio {
		frames, err := dec.Decode(p.payload, int64(p.ts-base))
		if err != nil {
			if strings.Contains(err.Error(), "Invalid data") {
				continue
			}
			t.Fatalf("decode Opus at ts %d: %v", p.ts, err)
		}
		for _, f := range frames {
			at := int(f.PTS)
			for len(left) < at+f.Samples {
				left, right = append(left, 0), append(right, 0)
			}
			for i := 0; i < f.Samples; i++ {
				left[at+i], right[at+i] = f.PCM[2*i], f.PCM[2*i+1]
			}
		}
	}
	return left, right
}
