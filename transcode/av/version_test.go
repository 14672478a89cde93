package av

import (
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestVersion: the version named is the FFmpeg linked in, the one the
// ffmpeg tool of the same installation reports; without cgo it says so.
func TestVersion(t *testing.T) {
	v := Version()
	if !Available() {
		if v != "none (built without cgo)" {
			t.Errorf("Version() = %q in a build without FFmpeg", v)
		}
		return
	}
	if !regexp.MustCompile(`^\S+ \(libavcodec \d+\.\d+\.\d+\)$`).MatchString(v) {
		t.Fatalf("Version() = %q, want \"<release> (libavcodec X.Y.Z)\"", v)
	}
	out, err := exec.Command("ffmpeg", "-hide_banner", "-version").Output()
	if err != nil {
		t.Fatalf("ffmpeg -version: %v (install ffmpeg: apt-get install ffmpeg)", err)
	}
	release := strings.Fields(v)[0]
	if !strings.Contains(string(out), "ffmpeg version "+release) {
		t.Errorf("Version() = %q, but ffmpeg says:\n%s", v, out)
	}
	// ffmpeg prints "libavcodec     59. 37.100 / 59. 37.100" (built / running).
	m := regexp.MustCompile(`libavcodec\s+\d+\.\s*\d+\.\s*\d+ / +(\d+)\.\s*(\d+)\.\s*(\d+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no libavcodec version in ffmpeg -version:\n%s", out)
	}
	if want := fmt.Sprintf("(libavcodec %s.%s.%s)", m[1], m[2], m[3]); !strings.HasSuffix(v, want) {
		t.Errorf("Version() = %q, want %s as ffmpeg reports", v, want)
	}
}
