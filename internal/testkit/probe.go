package testkit

import (
	"encoding/json"
	"errors"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// Probe is what ffprobe says about a file.
type Probe struct {
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

// FFprobe runs ffprobe (counting frames) on file.
func FFprobe(t testing.TB, file string) Probe {
	t.Helper()
	out, err := exec.Command(FFmpegBin(t, "ffprobe"), "-v", "error", "-count_frames",
		"-show_entries", "stream=codec_type,codec_name,profile,width,height,sample_rate,channels,nb_read_frames,start_time:format=duration",
		"-of", "json", file).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("ffprobe %s: %v\n%s", file, err, ee.Stderr)
		}
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	var p Probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatalf("ffprobe output: %v\n%s", err, out)
	}
	return p
}

// Duration returns the file's duration.
func (p Probe) Duration(t testing.TB) time.Duration {
	t.Helper()
	d, err := strconv.ParseFloat(p.Format.Duration, 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q", p.Format.Duration)
	}
	return time.Duration(d * float64(time.Second))
}

// CheckAVC checks p has H.264 640x360 and AAC 48 kHz stereo.
func (p Probe) CheckAVC(t testing.TB) {
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

// Start returns the start time of p's stream of type typ ("video", "audio").
func (p Probe) Start(t testing.TB, typ string) time.Duration {
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
