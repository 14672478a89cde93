package srt

import (
	"errors"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/internal/streampath"
)

func TestParseStreamID(t *testing.T) {
	pub := func(path, key string) StreamID { return StreamID{Mode: ModePublish, Path: path, Key: key} }
	read := func(path, key string) StreamID { return StreamID{Mode: ModeRead, Path: path, Key: key} }
	for _, tc := range []struct {
		in   string
		want StreamID
		err  error // ErrInvalidStreamID or ErrUnsupportedMode when it fails
	}{
		// Prefixed form.
		{in: "publish:live/test", want: pub("live/test", "")},
		{in: "publish:live/test?key=K", want: pub("live/test", "K")},
		{in: "PUBLISH:live/test", want: pub("live/test", "")},
		{in: "publish:/live/test/", want: pub("live/test", "")},
		{in: "publish:live/test?key=a%23b+c", want: pub("live/test", "a%23b+c")}, // raw, as sent
		{in: "publish:live/test?key=K&other=1", want: pub("live/test", "K")},
		{in: "publish:live/test?other=1&key=K", want: pub("live/test", "K")},
		{in: "publish:live/test?key=", want: pub("live/test", "")},
		{in: "publish:live/test?", want: pub("live/test", "")},
		{in: "publish:live/test?key=K=L", want: pub("live/test", "K=L")},
		{in: "publish:cam", want: pub("cam", "")},
		{in: "read:live/test", want: read("live/test", "")},
		{in: "Read:live/test?key=K", want: read("live/test", "K")},
		// Plain form: publish.
		{in: "live/test", want: pub("live/test", "")},
		{in: "live/test?key=K", want: pub("live/test", "K")},
		{in: "a/b/c/d", want: pub("a/b/c/d", "")},
		{in: "caméra/1", want: pub("caméra/1", "")},
		// SRT access-control syntax.
		{in: "#!::r=live/test,m=publish", want: pub("live/test", "")},
		{in: "#!::m=publish,r=live/test", want: pub("live/test", "")},
		{in: "#!::r=live/test,m=publish,u=user,s=KEY", want: StreamID{Mode: ModePublish, Path: "live/test", User: "user", Key: "KEY"}},
		{in: "#!::r=live/test,m=PUBLISH,s=KEY", want: pub("live/test", "KEY")},
		{in: "#!::r=live/test,m=request", want: read("live/test", "")},
		{in: "#!::r=live/test", want: read("live/test", "")}, // m defaults to request
		{in: "#!::r=live/test,m=publish,t=stream,h=example.com,x-custom=1", want: pub("live/test", "")},
		{in: "#!::r=live/test,m=publish,s=a=b", want: pub("live/test", "a=b")},
		{in: "#!::r=live/test,m=publish,s=", want: pub("live/test", "")},
		{in: "#!::r=/live/test/,m=publish", want: pub("live/test", "")},

		// Errors.
		{in: "", err: ErrInvalidStreamID},
		{in: strings.Repeat("a", 513), err: ErrInvalidStreamID},
		{in: "publish:" + strings.Repeat("a", 257), err: ErrInvalidStreamID},
		{in: "publish:", err: ErrInvalidStreamID},
		{in: "publish:/", err: ErrInvalidStreamID},
		{in: "publish:?key=K", err: ErrInvalidStreamID},
		{in: "publish:live//test", err: ErrInvalidStreamID},
		{in: "publish:live/../test", err: ErrInvalidStreamID},
		{in: "publish:./test", err: ErrInvalidStreamID},
		{in: "publish:live/te st", err: ErrInvalidStreamID},
		{in: "publish:live/te\x00st", err: ErrInvalidStreamID},
		{in: "publish:live/\xff", err: ErrInvalidStreamID},
		{in: "publish:live/test:user:pass", err: ErrInvalidStreamID},
		{in: "publish:live/test#x", err: ErrInvalidStreamID},
		{in: "publish:a,b", err: ErrInvalidStreamID},
		{in: "publish:live/a%2fb", err: ErrInvalidStreamID}, // the shared path rule: no "%"
		{in: "publish:live\\test", err: ErrInvalidStreamID}, // nor "\"
		{in: "publish:live/test?key=a&key=b", err: ErrInvalidStreamID},
		{in: "play:live/test", err: ErrUnsupportedMode},
		{in: "live/test:x", err: ErrUnsupportedMode},
		{in: "#!::", err: ErrInvalidStreamID},
		{in: "#!::m=publish", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,m=publish,", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,,m=publish", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,m", err: ErrInvalidStreamID},
		{in: "#!::=x,r=live/test", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,r=live/other", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,s=a,s=b,m=publish", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,m=bidirectional", err: ErrUnsupportedMode},
		{in: "#!::r=live/test,m=", err: ErrUnsupportedMode},
		{in: "#!::r=,m=publish", err: ErrInvalidStreamID},
		{in: "#!::r=live/test?key=K,m=publish", err: ErrInvalidStreamID},
		{in: "#!::r=live/test,m=publish,u=a\nb", err: ErrInvalidStreamID},
		{in: "%23!::r=live/test,m=publish", err: ErrUnsupportedMode}, // not %-decoded: "%23!" is an unknown prefix
	} {
		got, err := ParseStreamID(tc.in)
		if tc.err != nil {
			if !errors.Is(err, tc.err) {
				t.Errorf("ParseStreamID(%q) = %+v, %v; want an error wrapping %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseStreamID(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

func TestParseStreamIDErrorsHideTheKey(t *testing.T) {
	for _, in := range []string{
		"publish:live/test:user:hunter2",
		"publish:live/test?key=hunter2&key=hunter2",
		"#!::r=live/test,s=hunter2,s=hunter2",
		"#!::r=live/test,m=x,s=hunter2",
		"#!::r=live/te st,s=hunter2",
		"live/te st?key=hunter2",
		"hunter2:live/test",
	} {
		_, err := ParseStreamID(in)
		if err == nil {
			t.Errorf("ParseStreamID(%q) succeeded", in)
			continue
		}
		if strings.Contains(err.Error(), "hunter2") && !strings.HasPrefix(in, "hunter2:") {
			t.Errorf("ParseStreamID(%q): error quotes the key: %v", in, err)
		}
	}
}

func FuzzParseStreamID(f *testing.F) {
	for _, s := range []string{
		"publish:live/test", "publish:live/test?key=K", "read:live/test", "live/test",
		"#!::r=live/test,m=publish", "#!::r=live/test,m=publish,u=user,s=KEY",
		"#!::r=live/test", "#!::m=request,r=a/b", "", "publish:", "#!::", "a:b:c", "x?key=1&key=2",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseStreamID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidStreamID) && !errors.Is(err, ErrUnsupportedMode) {
				t.Fatalf("ParseStreamID(%q): error %v wraps neither sentinel", s, err)
			}
			if id != (StreamID{}) {
				t.Fatalf("ParseStreamID(%q) failed but returned %+v", s, id)
			}
			return
		}
		if id.Mode != ModePublish && id.Mode != ModeRead {
			t.Fatalf("ParseStreamID(%q): mode %v", s, id.Mode)
		}
		p := id.Path
		if err := streampath.Check(p); err != nil {
			t.Fatalf("ParseStreamID(%q): path %q breaks the path rule: %v", s, p, err)
		}
		if !strings.Contains(s, p) || (id.Key != "" && !strings.Contains(s, id.Key)) || (id.User != "" && !strings.Contains(s, id.User)) {
			t.Fatalf("ParseStreamID(%q) = %+v: parts not taken from the input", s, id)
		}
		// The parse is stable: the canonical forms parse back to the same.
		if id.User == "" && !strings.ContainsAny(id.Key, "&") {
			canon := id.Mode.String() + ":" + id.Path
			if id.Key != "" {
				canon += "?key=" + id.Key
			}
			if again, err := ParseStreamID(canon); len(canon) <= maxStreamIDLength && (err != nil || again != id) {
				t.Fatalf("ParseStreamID(%q) = %+v, but %q parses to %+v, %v", s, id, canon, again, err)
			}
		}
		if !strings.Contains(id.Key, ",") && !strings.Contains(id.User, ",") {
			m := "publish"
			if id.Mode == ModeRead {
				m = "request"
			}
			acl := "#!::r=" + id.Path + ",m=" + m
			if id.User != "" {
				acl += ",u=" + id.User
			}
			if id.Key != "" {
				acl += ",s=" + id.Key
			}
			if len(acl) <= maxStreamIDLength {
				if again, err := ParseStreamID(acl); err != nil || again != id {
					t.Fatalf("ParseStreamID(%q) = %+v, but %q parses to %+v, %v", s, id, acl, again, err)
				}
			}
		}
	})
}
