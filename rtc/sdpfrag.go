package rtc

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/pion/ice/v4"
)

// SdpfragType is the media type of the body of a WHIP/WHEP PATCH (RFC 9725
// section 4.3.1, RFC 8840 section 9.2).
const SdpfragType = "application/trickle-ice-sdpfrag"

// MaxSdpfragSize bounds a PATCH body. A fragment with every candidate of a
// multi-homed host is 1-2 KiB; 16 KiB leaves room without inviting abuse.
const MaxSdpfragSize = 16 << 10

// Sdpfrag is an SDP fragment (RFC 8840 section 9.2) as WHIP and WHEP
// clients PATCH it: the ICE credentials of the client's ICE session and
// candidates by media section. Example, from Chromium with whip-whep.js:
//
//	a=ice-ufrag:AN62
//	a=ice-pwd:qZzYsZYRDoPjFbUPJ/8zt+MD
//	m=audio 9 UDP/TLS/RTP/SAVPF 0
//	a=mid:0
//	a=candidate:2790095899 1 udp 2122260223 127.0.0.1 43534 typ host generation 0 ufrag AN62
//	a=end-of-candidates
//
// The parser checks the structure of the fragment, not the candidates: a
// candidate the bridge cannot use is discarded when it is applied, as RFC
// 9725 section 4.3.2 asks for unsupported transports and unresolvable
// addresses.
type Sdpfrag struct {
	// ICEUfrag and ICEPwd are the client's ICE credentials, from the
	// session level or a media section (clients put them either way); ""
	// when absent.
	ICEUfrag, ICEPwd string
	// ICEOptions is the value of a session-level a=ice-options line, ICELite
	// whether there is an a=ice-lite line, Group the value of a=group (e.g.
	// "BUNDLE 0 1").
	ICEOptions string
	ICELite    bool
	Group      string
	// Candidates and EndOfCandidates are what came before the first m= line.
	// RFC 8840 puts candidates in media sections; session-level ones are
	// tolerated and apply to the first (BUNDLE-tagged) section.
	Candidates      []string
	EndOfCandidates bool
	Media           []SdpfragMedia
}

// SdpfragMedia is one media section of an Sdpfrag.
type SdpfragMedia struct {
	// Kind, Port, Proto and Formats are the m= line ("m=audio 9 RTP/AVP 0").
	// Clients send placeholders there; only a=mid (or, without it, the
	// section's position) says which section of the session is meant.
	Kind    string
	Port    string
	Proto   string
	Formats []string
	Mid     string
	// Candidates are a=candidate values, without the "candidate:" prefix.
	Candidates      []string
	EndOfCandidates bool
}

// ParseSdpfrag parses a PATCH body. Lines may end in CRLF or LF; empty
// lines are skipped, and SDP lines the PATCH has no use for (c=, b=,
// unknown attributes) are ignored. It fails on what is not an SDP fragment:
// a line that is not <letter>=<value>, an m= line without media, port and
// protocol, an a=candidate line that does not parse, ICE credentials with characters RFC 8839 does not allow, two
// different values for them, or nothing about ICE at all.
func ParseSdpfrag(body string) (*Sdpfrag, error) {
	f := &Sdpfrag{}
	var cur *SdpfragMedia // nil at the session level
	lines := 0
	for i, line := range strings.Split(body, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		lines++
		n := i + 1
		if len(line) < 2 || line[1] != '=' || line[0] < 'a' || line[0] > 'z' {
			return nil, fmt.Errorf("line %d: %q is not an SDP line (<type>=<value>)", n, clip(line))
		}
		typ, val := line[0], line[2:]
		switch typ {
		case 'm':
			fields := strings.Fields(val)
			if len(fields) < 3 {
				return nil, fmt.Errorf("line %d: m=%s: want <media> <port> <proto> [<fmt> ...]", n, clip(val))
			}
			port, _, _ := strings.Cut(fields[1], "/")
			if _, err := strconv.ParseUint(port, 10, 16); err != nil {
				return nil, fmt.Errorf("line %d: m=%s: port %q is not a number", n, clip(val), fields[1])
			}
			f.Media = append(f.Media, SdpfragMedia{Kind: fields[0], Port: fields[1], Proto: fields[2], Formats: fields[3:]})
			cur = &f.Media[len(f.Media)-1]
			continue
		case 'a':
		default:
			continue // v=, o=, c=, b=, ...: nothing the PATCH needs
		}
		name, value, _ := strings.Cut(val, ":")
		if name == "" {
			return nil, fmt.Errorf("line %d: %q has no attribute name", n, clip(line))
		}
		switch name {
		case "ice-ufrag", "ice-pwd":
			if err := checkICEChars(value); err != nil {
				return nil, fmt.Errorf("line %d: a=%s: %w", n, name, err)
			}
			dst := &f.ICEUfrag
			if name == "ice-pwd" {
				dst = &f.ICEPwd
			}
			if *dst != "" && *dst != value {
				return nil, fmt.Errorf("line %d: a=%s:%s contradicts the earlier a=%s:%s", n, name, value, name, *dst)
			}
			*dst = value
		case "candidate":
			if value == "" {
				return nil, fmt.Errorf("line %d: empty a=candidate", n)
			}
			// A candidate that does not parse is the client's bug, said
			// so (400) rather than dropped: one that parses but the
			// bridge cannot or may not use (ICESession.Trickle) is
			// dropped, as RFC 9725 section 4.3.2 allows.
			if _, err := ice.UnmarshalCandidate(value); err != nil {
				return nil, fmt.Errorf("line %d: a=candidate:%s does not parse: %v", n, clip(value), err)
			}
			if cur == nil {
				f.Candidates = append(f.Candidates, value)
			} else {
				cur.Candidates = append(cur.Candidates, value)
			}
		case "end-of-candidates":
			if cur == nil {
				f.EndOfCandidates = true
			} else {
				cur.EndOfCandidates = true
			}
		case "mid":
			if cur != nil {
				if cur.Mid != "" && cur.Mid != value {
					return nil, fmt.Errorf("line %d: second a=mid (%q, then %q) in one media section", n, cur.Mid, value)
				}
				cur.Mid = value
			}
		case "ice-options":
			if cur == nil {
				f.ICEOptions = value
			}
		case "ice-lite":
			if cur == nil {
				f.ICELite = true
			}
		case "group":
			if cur == nil {
				f.Group = value
			}
		}
	}
	if lines == 0 {
		return nil, fmt.Errorf("empty SDP fragment")
	}
	if f.ICEUfrag == "" && f.ICEPwd == "" && f.ICEOptions == "" && !f.ICELite && f.Group == "" &&
		len(f.Candidates) == 0 && !f.EndOfCandidates && len(f.Media) == 0 {
		return nil, fmt.Errorf("the SDP fragment has no ICE attribute and no media section")
	}
	return f, nil
}

// checkICEChars checks an ice-ufrag or ice-pwd value: 1 to 256 ice-chars
// (RFC 8839 section 5.4: ALPHA / DIGIT / "+" / "/"). The lower bounds of
// the RFC (4 and 22 characters) are not enforced: pion and libwebrtc accept
// shorter ones.
func checkICEChars(v string) error {
	if v == "" || len(v) > 256 {
		return fmt.Errorf("length %d, want 1 to 256 characters", len(v))
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '/') {
			return fmt.Errorf("%q: character %q is not allowed (ALPHA, DIGIT, + and / are)", clip(v), c)
		}
	}
	return nil
}

// clip shortens s for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:77] + "..."
	}
	return s
}

// Marshal returns the fragment as a PATCH body, with CRLF line endings.
// Session-level attributes come first; the ICE credentials go into each
// media section (as in the examples of RFC 9725 and draft-ietf-wish-whep),
// or to the session level when there is none.
func (f *Sdpfrag) Marshal() string {
	var b strings.Builder
	line := func(s ...string) {
		for _, p := range s {
			b.WriteString(p)
		}
		b.WriteString("\r\n")
	}
	creds := func() {
		if f.ICEUfrag != "" {
			line("a=ice-ufrag:", f.ICEUfrag)
		}
		if f.ICEPwd != "" {
			line("a=ice-pwd:", f.ICEPwd)
		}
	}
	if f.ICELite {
		line("a=ice-lite")
	}
	if f.ICEOptions != "" {
		line("a=ice-options:", f.ICEOptions)
	}
	if f.Group != "" {
		line("a=group:", f.Group)
	}
	if len(f.Media) == 0 {
		creds()
	}
	for _, c := range f.Candidates {
		line("a=candidate:", c)
	}
	if f.EndOfCandidates {
		line("a=end-of-candidates")
	}
	for _, m := range f.Media {
		line("m=", strings.Join(append([]string{m.Kind, m.Port, m.Proto}, m.Formats...), " "))
		if m.Mid != "" {
			line("a=mid:", m.Mid)
		}
		creds()
		for _, c := range m.Candidates {
			line("a=candidate:", c)
		}
		if m.EndOfCandidates {
			line("a=end-of-candidates")
		}
	}
	return b.String()
}
