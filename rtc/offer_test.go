package rtc

import (
	"strings"
	"testing"
)

// TestMuxOnly: every bundled media section says a=rtcp-mux and
// a=rtcp-mux-only once, after the a=rtcp-mux pion writes; a rejected
// section outside the group is left as it was.
func TestMuxOnly(t *testing.T) {
	in := "v=0\no=- 1 1 IN IP4 0.0.0.0\ns=-\nt=0 0\na=group:BUNDLE 0 1\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\nc=IN IP4 0.0.0.0\na=mid:0\na=rtcp-mux\na=rtcp-rsize\na=rtpmap:111 opus/48000/2\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\nc=IN IP4 0.0.0.0\na=mid:1\na=rtcp-mux-only\na=rtpmap:96 H264/90000\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 0\nc=IN IP4 0.0.0.0\na=mid:2\na=inactive\n"
	want := "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1\r\n" +
		"m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\na=rtcp-mux-only\r\na=rtcp-rsize\r\na=rtpmap:111 opus/48000/2\r\n" +
		"m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtcp-mux-only\r\na=rtpmap:96 H264/90000\r\na=rtcp-mux\r\n" +
		"m=video 0 UDP/TLS/RTP/SAVPF 0\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=inactive\r\n"
	if got := MuxOnly(in); got != want {
		t.Errorf("MuxOnly:\n%s\nwant\n%s", got, want)
	}
	if got := MuxOnly(want); got != want {
		t.Errorf("MuxOnly is not idempotent:\n%s", got)
	}
	if got := MuxOnly(strings.ReplaceAll(in, "a=group:BUNDLE 0 1\n", "")); strings.Contains(got, "a=rtcp-mux-only\r\na=rtcp-rsize") {
		t.Errorf("MuxOnly changed a description without BUNDLE:\n%s", got)
	}
}
