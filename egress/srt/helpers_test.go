package srt

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/transcode/av"
)

// fixturesDir holds the shared media fixtures (see its README); the repo is
// expected at /work/main beside /work/shared.
const fixturesDir = "../../../shared/media"

func fixture(name string) string { return filepath.Join(fixturesDir, name) }

// logBuf is a goroutine-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// count returns how many log lines contain every one of subs.
func (l *logBuf) count(subs ...string) int {
	n := 0
	for line := range strings.SplitSeq(l.String(), "\n") {
		ok := line != ""
		for _, s := range subs {
			ok = ok && strings.Contains(line, s)
		}
		if ok {
			n++
		}
	}
	return n
}

// testLog returns a logger into a buffer that is printed if the test fails.
func testLog(t *testing.T) (*slog.Logger, *logBuf) {
	t.Helper()
	logs := &logBuf{}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("EGRESS_TEST_LOGS") != "" {
			t.Logf("log:\n%s", logs.String())
		}
	})
	return slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), logs
}

// flvMedia is a fixture read into hub units.
type flvMedia struct {
	video, audio *media.Track
	units        []*media.Unit // in file order
}

// readFLV reads an FLV file into units the way the RTMP ingest makes them:
// H.264 through transcode.H264Normalizer (SPS and PPS in front of every
// IDR), PTS = DTS + composition time; raw AAC frames.
func readFLV(t testing.TB, name string) *flvMedia {
	t.Helper()
	b, err := os.ReadFile(fixture(name))
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 13 || string(b[:3]) != "FLV" {
		t.Fatalf("%s is not FLV", name)
	}
	m := &flvMedia{}
	var norm *transcode.H264Normalizer
	for pos := int(binary.BigEndian.Uint32(b[5:9])) + 4; pos+11 <= len(b); {
		typ := b[pos]
		size := int(b[pos+1])<<16 | int(b[pos+2])<<8 | int(b[pos+3])
		ts := int64(b[pos+4])<<16 | int64(b[pos+5])<<8 | int64(b[pos+6]) | int64(b[pos+7])<<24
		body := b[pos+11 : pos+11+size]
		pos += 11 + size + 4
		dts := time.Duration(ts) * time.Millisecond
		switch typ {
		case 9:
			if body[0]&0x0f != 7 {
				t.Fatalf("video codec %d", body[0]&0x0f)
			}
			cts := int32(uint32(body[2])<<24|uint32(body[3])<<16|uint32(body[4])<<8) >> 8
			data := body[5:]
			switch body[1] {
			case 0:
				nsps := int(data[5] & 0x1f)
				if nsps != 1 {
					t.Fatalf("%d SPS", nsps)
				}
				l := int(binary.BigEndian.Uint16(data[6:]))
				sps := bytes.Clone(data[8 : 8+l])
				p := 8 + l + 1
				pl := int(binary.BigEndian.Uint16(data[p:]))
				pps := bytes.Clone(data[p+2 : p+2+pl])
				norm = transcode.NewH264Normalizer(sps, pps)
				if m.video == nil {
					m.video = &media.Track{Codec: media.H264{SPS: sps, PPS: pps}}
				}
			case 1:
				var nalus [][]byte
				for p := 0; p+4 <= len(data); {
					l := int(binary.BigEndian.Uint32(data[p:]))
					nalus = append(nalus, bytes.Clone(data[p+4:p+4+l]))
					p += 4 + l
				}
				au, idr := norm.Normalize(nalus)
				if au == nil {
					continue
				}
				m.units = append(m.units, &media.Unit{Track: m.video, DTS: dts, PTS: dts + time.Duration(cts)*time.Millisecond, Key: idr, NALUs: au})
			}
		case 8:
			if body[0]>>4 != 10 {
				t.Fatalf("audio format %d", body[0]>>4)
			}
			if body[1] == 0 {
				var asc mpeg4audio.AudioSpecificConfig
				if err := asc.Unmarshal(body[2:]); err != nil {
					t.Fatal(err)
				}
				if m.audio == nil {
					m.audio = &media.Track{Codec: media.AAC{Config: bytes.Clone(body[2:]), SampleRate: asc.SampleRate, Channels: int(asc.ChannelConfig)}}
				}
				continue
			}
			m.units = append(m.units, &media.Unit{Track: m.audio, DTS: dts, PTS: dts, Key: true, Data: bytes.Clone(body[2:])})
		}
	}
	if m.video == nil || m.audio == nil || len(m.units) == 0 {
		t.Fatalf("%s: no video or audio", name)
	}
	return m
}

// until returns the units with DTS before d.
func until(units []*media.Unit, d time.Duration) []*media.Unit {
	var out []*media.Unit
	for _, u := range units {
		if u.DTS < d {
			out = append(out, u)
		}
	}
	return out
}

// withOpus returns m with its audio transcoded to Opus (20 ms packets at
// 64 kbit/s), as a WHIP source would send it: video units unchanged.
func withOpus(t testing.TB, m *flvMedia) *flvMedia {
	t.Helper()
	if !av.Available() {
		t.Skip("built without FFmpeg")
	}
	c := m.audio.Codec.(media.AAC)
	dec, err := av.NewDecoder("aac", c.Config, c.SampleRate, c.Channels)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	enc, err := av.NewEncoder("opus", 48000, 2, 64000)
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	out := &flvMedia{video: m.video, audio: &media.Track{Codec: media.Opus{Channels: 2}}}
	for _, u := range m.units {
		if u.Track != m.audio {
			out.units = append(out.units, u)
			continue
		}
		frames, err := dec.Decode(u.Data, transcode.ClockTicks(u.PTS, c.SampleRate))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range frames {
			pkts, err := enc.Encode(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range pkts {
				pts := time.Duration(p.PTS) * time.Second / 48000
				out.units = append(out.units, &media.Unit{Track: out.audio, PTS: pts, DTS: pts, Key: true, Data: p.Data})
			}
		}
	}
	return out
}

// publish registers path with m's tracks. Units written later must be
// copies pointing at the returned tracks (see feed).
func publish(t testing.TB, reg *media.Registry, path string, m *flvMedia) *media.Publication {
	t.Helper()
	p, err := reg.Publish(path, "test")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.SetTracks(m.video, m.audio); err != nil {
		t.Fatal(err)
	}
	return p
}

// feed writes units to p in real time (speed 1; 2 is twice as fast),
// starting now, and shifted by offset. It returns when done or ctx ends.
func feed(ctx context.Context, p *media.Publication, units []*media.Unit, speed float64, offset time.Duration) {
	if len(units) == 0 {
		return
	}
	start := time.Now()
	first := units[0].DTS
	for _, u := range units {
		at := start.Add(time.Duration(float64(u.DTS-first) / speed))
		if d := time.Until(at); d > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
		}
		c := *u
		c.PTS += offset
		c.DTS += offset
		p.Write(&c)
	}
}

// ffmpegBin returns ffmpeg's path; a missing ffmpeg fails the test.
func ffmpegBin(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is required for this test (%v): apt-get install ffmpeg", name, err)
	}
	return p
}

// proc is a running ffmpeg.
type proc struct {
	cmd    *exec.Cmd
	stderr *logBuf
	done   chan struct{}
	err    error
}

func startFFmpeg(t *testing.T, args ...string) *proc {
	t.Helper()
	f := &proc{stderr: &logBuf{}, done: make(chan struct{})}
	f.cmd = exec.Command(ffmpegBin(t, "ffmpeg"), append([]string{"-hide_banner", "-nostdin", "-loglevel", "error", "-y"}, args...)...)
	f.cmd.Stderr = f.stderr
	f.cmd.Stdout = f.stderr
	if err := f.cmd.Start(); err != nil {
		t.Fatalf("start ffmpeg: %v", err)
	}
	go func() {
		f.err = f.cmd.Wait()
		close(f.done)
	}()
	t.Cleanup(func() { f.kill() })
	return f
}

func (f *proc) kill() {
	select {
	case <-f.done:
	default:
		_ = f.cmd.Process.Kill()
		<-f.done
	}
}

// wait waits for ffmpeg to exit.
func (f *proc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-f.done:
		return f.err
	case <-time.After(timeout):
		t.Fatalf("ffmpeg still running after %v; stderr:\n%s", timeout, f.stderr.String())
		return nil
	}
}

// freePort returns a UDP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.LocalAddr().(*net.UDPAddr).Port
}

// probe is what ffprobe says about a file.
type probe struct {
	Streams []struct {
		CodecType  string `json:"codec_type"`
		CodecName  string `json:"codec_name"`
		Profile    string `json:"profile"`
		Width      int    `json:"width"`
		Height     int    `json:"height"`
		SampleRate string `json:"sample_rate"`
		Channels   int    `json:"channels"`
		NbFrames   string `json:"nb_read_frames"`
		StartTime  string `json:"start_time"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

func ffprobe(t *testing.T, file string) probe {
	t.Helper()
	out, err := exec.Command(ffmpegBin(t, "ffprobe"), "-v", "error", "-count_frames",
		"-show_entries", "stream=codec_type,codec_name,profile,width,height,sample_rate,channels,nb_read_frames,start_time:format=duration",
		"-of", "json", file).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("ffprobe %s: %v\n%s", file, err, ee.Stderr)
		}
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, out)
	}
	return p
}

func (p probe) duration(t *testing.T) time.Duration {
	t.Helper()
	d, err := strconv.ParseFloat(p.Format.Duration, 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q", p.Format.Duration)
	}
	return time.Duration(d * float64(time.Second))
}

// checkAVC checks p has H.264 640x360 and AAC 48 kHz stereo.
func (p probe) checkAVC(t *testing.T) {
	t.Helper()
	var v, a bool
	for _, s := range p.Streams {
		switch s.CodecType {
		case "video":
			v = true
			if s.CodecName != "h264" || s.Width != 640 || s.Height != 360 {
				t.Errorf("video is %s %dx%d, want h264 640x360", s.CodecName, s.Width, s.Height)
			}
		case "audio":
			a = true
			if s.CodecName != "aac" || s.SampleRate != "48000" || s.Channels != 2 {
				t.Errorf("audio is %s %s Hz %d channels, want aac 48000 Hz stereo", s.CodecName, s.SampleRate, s.Channels)
			}
		}
	}
	if !v || !a {
		t.Errorf("ffprobe found video %v, audio %v: %+v", v, a, p)
	}
}

// decodeAudio decodes file's audio to 48 kHz stereo float32.
func decodeAudio(t *testing.T, file string) (left, right []float32) {
	t.Helper()
	out, err := exec.Command(ffmpegBin(t, "ffmpeg"), "-v", "error", "-i", file, "-vn", "-f", "f32le", "-ac", "2", "-ar", "48000", "-").Output()
	if err != nil {
		t.Fatalf("decode %s: %v", file, err)
	}
	n := len(out) / 8
	left, right = make([]float32, n), make([]float32, n)
	for i := range n {
		left[i] = math.Float32frombits(binary.LittleEndian.Uint32(out[8*i:]))
		right[i] = math.Float32frombits(binary.LittleEndian.Uint32(out[8*i+4:]))
	}
	return left, right
}

// goertzel returns the power of frequency f in x.
func goertzel(x []float32, rate int, f float64) float64 {
	w := 2 * math.Pi * f / float64(rate)
	c := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s := float64(v) + c*s1 - s2
		s2, s1 = s1, s
	}
	return s1*s1 + s2*s2 - c*s1*s2
}

// checkTones checks that from sample from on, for n samples, the left
// channel is 440 Hz and the right 660 Hz (the fixtures' tones).
func checkTones(t *testing.T, left, right []float32, from, n int) {
	t.Helper()
	if from+n > len(left) {
		t.Fatalf("only %d samples decoded, want %d", len(left), from+n)
	}
	l, r := left[from:from+n], right[from:from+n]
	l440, l660 := goertzel(l, 48000, 440), goertzel(l, 48000, 660)
	r440, r660 := goertzel(r, 48000, 440), goertzel(r, 48000, 660)
	if l440 < 100*l660 || r660 < 100*r440 {
		t.Errorf("tones at %.2f s: left 440/660 Hz power %.3g/%.3g, right %.3g/%.3g; want 440 Hz left, 660 Hz right",
			float64(from)/48000, l440, l660, r440, r660)
	}
	if l440 < 1 {
		t.Errorf("left channel at %.2f s is nearly silent (440 Hz power %.3g)", float64(from)/48000, l440)
	}
}

// goroutineBaseline returns a check that the goroutine count is back to
// what it is now (polling until a deadline).
func goroutineBaseline(t *testing.T) func() {
	t.Helper()
	base := runtime.NumGoroutine()
	return func() {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			n := runtime.NumGoroutine()
			if n <= base {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				buf = buf[:runtime.Stack(buf, true)]
				t.Fatalf("%d goroutines, baseline %d:\n%s", n, base, buf)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestMain(m *testing.M) {
	av.SetLogLevel(av.LogError) // the AAC encoder's statistics at close
	os.Exit(m.Run())
}

// start returns the start time of p's stream of type typ ("video", "audio").
func (p probe) start(t *testing.T, typ string) time.Duration {
	t.Helper()
	for _, s := range p.Streams {
		if s.CodecType == typ {
			f, err := strconv.ParseFloat(s.StartTime, 64)
			if err != nil {
				t.Fatalf("%s start time %q", typ, s.StartTime)
			}
			return time.Duration(f * float64(time.Second))
		}
	}
	t.Fatalf("no %s stream", typ)
	return 0
}

// checkSync checks A/V sync at the fixtures' beeps: the left channel has a
// 1760 Hz beep starting with frames 0, 30, 60, ... The first video frame
// of the recording must be a keyframe at a whole second of the fixture
// (every keyframe is), so beep k is due k s after the video starts.
func checkSync(t *testing.T, p probe, left []float32, beeps int) {
	t.Helper()
	v, a := p.start(t, "video"), p.start(t, "audio")
	const rate, win, hop = 48000, 480, 48 // 10 ms windows, 1 ms steps
	for k := 1; k <= beeps; k++ {
		due := v + time.Duration(k)*time.Second
		// Search 300 ms either side of due for the beep's onset: the first
		// window whose 1760 Hz power reaches half the strongest one's.
		from := int((due - a - 300*time.Millisecond).Seconds() * rate)
		to := int((due - a + 300*time.Millisecond).Seconds() * rate)
		if from < 0 || to+win > len(left) {
			t.Fatalf("beep %d due at %v is outside the decoded audio (%d samples from %v)", k, due, len(left), a)
		}
		var powers []float64
		peak := 0.0
		for i := from; i < to; i += hop {
			pw := goertzel(left[i:i+win], rate, 1760)
			powers = append(powers, pw)
			peak = max(peak, pw)
		}
		onset := -1
		for i, pw := range powers {
			if pw >= peak/2 {
				onset = from + i*hop
				break
			}
		}
		// The window reaches half power when about half of it holds the beep.
		got := a + time.Duration(float64(onset+win/2)/rate*float64(time.Second))
		if d := got - due; d < -40*time.Millisecond || d > 40*time.Millisecond {
			t.Errorf("beep %d at %v, its frame at %v: A/V offset %v, want within 40 ms", k, got.Round(time.Millisecond), due, d.Round(time.Millisecond))
		} else {
			t.Logf("beep %d: A/V offset %v", k, d.Round(time.Millisecond))
		}
	}
}
