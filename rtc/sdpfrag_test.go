package rtc

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sharedSDP holds the SDP captured from real clients (see its README.txt).
const sharedSDP = "../../shared/sdp/"

func TestParseSdpfrag(t *testing.T) {
	cases := []struct {
		name, body string
		want       *Sdpfrag
		err        string
	}{
		{
			name: "RFC 9725 trickle example, LF",
			body: "a=ice-ufrag:EsAw\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\nm=audio 9 RTP/AVP 0\na=mid:0\n" +
				"a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1\n" +
				"a=candidate:473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1\n" +
				"a=end-of-candidates\n",
			want: &Sdpfrag{ICEUfrag: "EsAw", ICEPwd: "P2uYro0UCOQ4zxjKXaWCBui1", Media: []SdpfragMedia{{
				Kind: "audio", Port: "9", Proto: "RTP/AVP", Formats: []string{"0"}, Mid: "0",
				Candidates: []string{
					"1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0 ufrag EsAw network-id 1",
					"473322822 1 tcp 1518280447 192.0.2.1 9 typ host tcptype active generation 0 ufrag EsAw network-id 1",
				},
				EndOfCandidates: true,
			}}},
		},
		{
			name: "WHEP draft restart answer: session attributes, credentials in the media section, CRLF",
			body: "a=ice-lite\r\na=ice-options:trickle ice2\r\na=group:BUNDLE 0 1\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n" +
				"a=ice-ufrag:289b31b754eaa438\r\na=ice-pwd:0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a\r\n" +
				"a=candidate:1 1 udp 2130706431 198.51.100.1 39132 typ host\r\na=end-of-candidates\r\n",
			want: &Sdpfrag{ICEUfrag: "289b31b754eaa438", ICEPwd: "0b66f472495ef0ccac7bda653ab6be49ea13114472a5d10a",
				ICELite: true, ICEOptions: "trickle ice2", Group: "BUNDLE 0 1",
				Media: []SdpfragMedia{{Kind: "audio", Port: "9", Proto: "UDP/TLS/RTP/SAVPF", Formats: []string{"111"}, Mid: "0",
					Candidates: []string{"1 1 udp 2130706431 198.51.100.1 39132 typ host"}, EndOfCandidates: true}}},
		},
		{
			name: "restart without candidates",
			body: "a=ice-ufrag:ysXw\r\na=ice-pwd:vw5LmwG4y/e6dPP/zAP9Gp5k\r\n",
			want: &Sdpfrag{ICEUfrag: "ysXw", ICEPwd: "vw5LmwG4y/e6dPP/zAP9Gp5k"},
		},
		{
			name: "session-level candidate, no mid, c= line and unknown attributes ignored, blank lines",
			body: "a=ice-ufrag:abcd\r\n\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\nm=video 9 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\na=rtcp-mux\r\na=end-of-candidates\r\n",
			want: &Sdpfrag{ICEUfrag: "abcd", Candidates: []string{"1 1 udp 1 10.0.0.1 5000 typ host"},
				Media: []SdpfragMedia{{Kind: "video", Port: "9", Proto: "RTP/AVP", Formats: []string{"0"}, EndOfCandidates: true}}},
		},
		{
			name: "same credentials at both levels",
			body: "a=ice-ufrag:abcd\na=ice-pwd:p\nm=audio 9 RTP/AVP 0\na=ice-ufrag:abcd\na=ice-pwd:p\n",
			want: &Sdpfrag{ICEUfrag: "abcd", ICEPwd: "p", Media: []SdpfragMedia{{Kind: "audio", Port: "9", Proto: "RTP/AVP", Formats: []string{"0"}}}},
		},
		{name: "empty", body: "", err: "empty"},
		{name: "only blank lines", body: "\r\n\r\n", err: "empty"},
		{name: "nothing about ICE", body: "v=0\r\na=rtcp-mux\r\n", err: "no ICE attribute"},
		{name: "JSON", body: `{"candidate":"candidate:1 1 udp 1 10.0.0.1 5000 typ host"}`, err: "line 1"},
		{name: "no type", body: "a=ice-ufrag:abcd\r\n=foo\r\n", err: "line 2"},
		{name: "upper-case type", body: "A=ice-ufrag:abcd", err: "not an SDP line"},
		{name: "indented", body: " a=ice-ufrag:abcd", err: "not an SDP line"},
		{name: "short m= line", body: "m=audio 9\r\n", err: "want <media> <port> <proto>"},
		{name: "m= port not a number", body: "m=audio nine RTP/AVP 0\r\n", err: "port"},
		{name: "attribute without name", body: "a=:x\r\n", err: "no attribute name"},
		{name: "ufrag with a space", body: "a=ice-ufrag:ab cd\r\n", err: "not allowed"},
		{name: "empty ufrag", body: "a=ice-ufrag:\r\n", err: "length 0"},
		{name: "two ufrags", body: "a=ice-ufrag:abcd\r\nm=audio 9 RTP/AVP 0\r\na=ice-ufrag:efgh\r\n", err: "contradicts"},
		{name: "two pwds", body: "a=ice-pwd:abcd\r\na=ice-pwd:efgh\r\n", err: "contradicts"},
		{name: "two mids", body: "m=audio 9 RTP/AVP 0\r\na=mid:0\r\na=mid:1\r\n", err: "second a=mid"},
		{name: "empty candidate", body: "a=ice-ufrag:abcd\r\na=candidate:\r\n", err: "empty a=candidate"},
		{name: "candidate that does not parse", body: "a=ice-ufrag:abcd\r\nm=audio 9 RTP/AVP 0\r\na=candidate:1 1 udp 1 10.0.0.1\r\n",
			err: "line 3: a=candidate:1 1 udp 1 10.0.0.1 does not parse"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := ParseSdpfrag(c.body)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got  %+v\nwant %+v", got, c.want)
			}
			again, err := ParseSdpfrag(got.Marshal())
			if err != nil || !reflect.DeepEqual(again, got) {
				t.Fatalf("Marshal does not round-trip: %q -> %+v, %v", got.Marshal(), again, err)
			}
		})
	}
}

func TestSdpfragMarshal(t *testing.T) {
	f := &Sdpfrag{ICEUfrag: "u1", ICEPwd: "p1", ICEOptions: "trickle", Group: "BUNDLE 0 1", Media: []SdpfragMedia{{
		Kind: "video", Port: "9", Proto: "UDP/TLS/RTP/SAVPF", Formats: []string{"96"}, Mid: "0",
		Candidates: []string{"1 1 udp 2130706431 198.51.100.1 39132 typ host"}, EndOfCandidates: true,
	}}}
	want := "a=ice-options:trickle\r\na=group:BUNDLE 0 1\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\n" +
		"a=ice-ufrag:u1\r\na=ice-pwd:p1\r\na=candidate:1 1 udp 2130706431 198.51.100.1 39132 typ host\r\na=end-of-candidates\r\n"
	if got := f.Marshal(); got != want {
		t.Errorf("got\n%q\nwant\n%q", got, want)
	}
	if got, want := (&Sdpfrag{ICEUfrag: "u", ICEPwd: "p"}).Marshal(), "a=ice-ufrag:u\r\na=ice-pwd:p\r\n"; got != want {
		t.Errorf("no media: got %q, want %q", got, want)
	}
}

// realPatch is a PATCH request logged from a real client.
type realPatch struct {
	CT      string `json:"ct"`
	IfMatch string `json:"ifMatch"`
	UA      string `json:"ua"`
	Body    string `json:"-"`
}

// realPatches returns the PATCH requests logged from real clients in
// ../shared/sdp/*.sdpfrag.txt: each starts with a ">> {...}" line (the
// logged request header, JSON), then the body; a line of the capturing
// tool's own log ("   [whip ...] connectionState=...") may follow, and is
// cut off.
func realPatches(t testing.TB) map[string]realPatch {
	t.Helper()
	files, err := filepath.Glob(sharedSDP + "*.sdpfrag.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.sdpfrag.txt in %s (%v)", sharedSDP, err)
	}
	out := map[string]realPatch{}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var cur *realPatch
		var body []string
		flush := func() {
			if cur != nil {
				n++
				cur.Body = strings.Join(body, "\n")
				out[fmt.Sprintf("%s#%d", filepath.Base(name), n)] = *cur
			}
			cur, body = nil, nil
		}
		for _, line := range strings.Split(string(b), "\n") {
			switch {
			case strings.HasPrefix(line, ">>"):
				flush()
				cur = &realPatch{}
				if err := json.Unmarshal([]byte(strings.TrimPrefix(line, ">>")), cur); err != nil {
					t.Fatalf("%s: logged header %q: %v", name, line, err)
				}
			case strings.HasPrefix(strings.TrimSpace(line), "["):
				// the capturing tool's log
			default:
				body = append(body, line)
			}
		}
		flush()
	}
	return out
}

func TestParseRealPatches(t *testing.T) {
	patches := realPatches(t)
	if len(patches) != 5 {
		t.Errorf("%d PATCH bodies in the captures, expected 5", len(patches))
	}
	for name, p := range patches {
		if p.CT != SdpfragType {
			t.Errorf("%s: logged Content-Type %q", name, p.CT)
		}
		f, err := ParseSdpfrag(p.Body)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if f.ICEUfrag == "" || f.ICEPwd == "" || len(f.Media) != 1 || f.Media[0].Mid == "" {
			t.Errorf("%s: parsed as %+v: want credentials and one media section with a mid", name, f)
			continue
		}
		m := f.Media[0]
		if len(m.Candidates) == 0 && !m.EndOfCandidates {
			t.Errorf("%s: neither candidates nor end-of-candidates: %+v", name, m)
		}
		for _, c := range m.Candidates {
			// GStreamer sends TCP and IPv6 link-local candidates: dropped
			// when applied, not a parse error.
			if _, reason := (&Engine{loopback: true}).usableCandidate(c, f.ICEUfrag); reason != "" && !strings.Contains(c, "TCP") {
				t.Errorf("%s: candidate %q unusable (%s)", name, c, reason)
			}
		}
	}
	gst := patches["simple-whip-client-patch.sdpfrag.txt#1"]
	f, err := ParseSdpfrag(gst.Body)
	if err != nil {
		t.Fatal(err)
	}
	if m := f.Media[0]; m.Kind != "video" || m.Proto != "RTP/AVP" || m.Mid != "video0" || len(m.Candidates) != 9 {
		t.Errorf("GStreamer PATCH parsed as %+v", m)
	}
}

func FuzzParseSdpfrag(f *testing.F) {
	for _, p := range realPatches(f) {
		f.Add(p.Body)
	}
	f.Add("a=ice-ufrag:abcd\r\na=ice-pwd:p\r\nm=audio 9 RTP/AVP 0\r\na=mid:0\r\na=candidate:1 1 udp 1 10.0.0.1 5000 typ host\r\na=end-of-candidates\r\n")
	f.Add("a=ice-lite\na=group:BUNDLE 0\na=candidate:x\nm=video 9/2 UDP/TLS/RTP/SAVPF\na=mid:\n")
	f.Fuzz(func(t *testing.T, body string) {
		frag, err := ParseSdpfrag(body)
		if err != nil {
			return
		}
		// Whatever parses marshals to a body that parses to the same.
		out := frag.Marshal()
		again, err := ParseSdpfrag(out)
		if err != nil {
			t.Fatalf("Marshal output %q does not parse: %v", out, err)
		}
		if !reflect.DeepEqual(again, frag) {
			t.Fatalf("round trip changed the fragment:\n%+v\n%+v", frag, again)
		}
		for _, m := range frag.Media {
			for _, c := range m.Candidates {
				_, _ = (&Engine{}).usableCandidate(c, frag.ICEUfrag) // must not panic
				_ = candidateRank(c, nil)
			}
		}
	})
}
