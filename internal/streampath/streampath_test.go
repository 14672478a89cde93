package streampath

import (
	"errors"
	"strings"
	"testing"
)

func TestCheck(t *testing.T) {
	good := []string{"a", "live/cam1", "a/b/c", "x-y_z.~1", "ünï/cödé", strings.Repeat("a", MaxLength), "live/{key}", "{path...}"}
	for _, p := range good {
		if err := Check(p); err != nil {
			t.Errorf("Check(%q) = %v, want nil", p, err)
		}
	}
	bad := map[string]string{
		"":                               "empty",
		strings.Repeat("a", MaxLength+1): "257 bytes",
		"live/cam 1":                     "space",
		"live/cam\x00":                   "control",
		"live/\x7f":                      "control",
		"a:b":                            `':'`,
		"a?key=s3cret":                   `'?'`,
		"a#b":                            `'#'`,
		"a,b":                            `','`,
		"a%2e":                           `'%'`,
		`a\b`:                            `'\\'`,
		"/live":                          "segment",
		"live/":                          "segment",
		"a//b":                           "segment",
		"a/./b":                          "segment",
		"a/../b":                         "segment",
		"..":                             "segment",
		"a\xffb":                         "UTF-8",
	}
	for p, want := range bad {
		err := Check(p)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), want) {
			t.Errorf("Check(%q) = %v, want ErrInvalid mentioning %s", p, err, want)
		}
	}
	// The part after a bad character is never quoted: it may be a secret.
	if err := Check("cam?key=s3cret"); strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error quotes what follows the bad character: %v", err)
	}
}

func FuzzCheck(f *testing.F) {
	f.Add("live/cam")
	f.Add("a/../b")
	f.Fuzz(func(t *testing.T, p string) {
		if Check(p) != nil {
			return
		}
		if len(p) == 0 || len(p) > MaxLength || strings.ContainsAny(p, forbidden+" \t\r\n") {
			t.Fatalf("accepted %q", p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "" || seg == "." || seg == ".." {
				t.Fatalf("accepted %q", p)
			}
		}
	})
}
