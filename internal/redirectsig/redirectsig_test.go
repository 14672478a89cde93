package redirectsig

import (
	"errors"
	"strings"
	"testing"
	"time"
)

const token = "cluster-token-0123456789"

func TestVerifyAcceptsWhatSignMade(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	v := Sign(token, Read, "b", "live/cam", now.Add(TTL))
	for _, at := range []time.Time{now, now.Add(TTL - time.Second)} {
		if err := Verify(token, v, Read, "b", "live/cam", at); err != nil {
			t.Errorf("at +%v: %v", at.Sub(now), err)
		}
	}
	// A retried POST within the window is admitted again.
	if err := Verify(token, v, Read, "b", "live/cam", now.Add(time.Second)); err != nil {
		t.Errorf("second use within the window: %v", err)
	}
}

func TestVerifyRefuses(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	good := Sign(token, Read, "b", "live/cam", now.Add(TTL))
	exp, sig, _ := strings.Cut(good, ".")
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	for _, c := range []struct {
		name   string
		value  string
		action Action
		node   string
		path   string
		token  string
		at     time.Time
		want   error
	}{
		{"replayed at its expiry", good, Read, "b", "live/cam", token, now.Add(TTL), ErrExpired},
		{"replayed after the window", good, Read, "b", "live/cam", token, now.Add(time.Minute), ErrExpired},
		{"another path", good, Read, "b", "live/other", token, now, ErrInvalid},
		{"another node", good, Read, "c", "live/cam", token, now, ErrInvalid},
		{"another action", good, Publish, "b", "live/cam", token, now, ErrInvalid},
		{"another cluster token", good, Read, "b", "live/cam", "another-token-0123456789", now, ErrInvalid},
		{"expiry moved later", "9" + good, Read, "b", "live/cam", token, now, ErrInvalid},
		{"signature tampered", exp + "." + flip(sig, 5), Read, "b", "live/cam", token, now, ErrInvalid},
		{"signature cut", exp + "." + sig[:20], Read, "b", "live/cam", token, now, ErrInvalid},
		{"signature empty", exp + ".", Read, "b", "live/cam", token, now, ErrInvalid},
		{"no dot", exp + sig, Read, "b", "live/cam", token, now, ErrMalformed},
		{"expiry not a number", "x" + good, Read, "b", "live/cam", token, now, ErrMalformed},
		{"signature not base64url", exp + ".+/+/", Read, "b", "live/cam", token, now, ErrMalformed},
		{"empty", "", Read, "b", "live/cam", token, now, ErrMalformed},
		{"huge", strings.Repeat("1", 10_000), Read, "b", "live/cam", token, now, ErrMalformed},
		{"signed too far ahead", Sign(token, Read, "b", "live/cam", now.Add(time.Hour)), Read, "b", "live/cam", token, now, ErrInvalid},
	} {
		err := Verify(c.token, c.value, c.action, c.node, c.path, c.at)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: Verify = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestExpiredSaysHowToRecover(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	v := Sign(token, Read, "b", "live/cam", now)
	err := Verify(token, v, Read, "b", "live/cam", now.Add(30*time.Second))
	if err == nil || !strings.Contains(err.Error(), "30s ago") || !strings.Contains(err.Error(), "ask the first node again") {
		t.Fatalf("error %q does not say how long ago it expired and what to do", err)
	}
}

func FuzzVerify(f *testing.F) {
	now := time.Unix(1_700_000_000, 0)
	f.Add(Sign(token, Read, "b", "live/cam", now.Add(TTL)))
	f.Add("1.")
	f.Add(".")
	f.Fuzz(func(t *testing.T, v string) {
		// Nothing but Sign's own output for these fields verifies.
		if Verify(token, v, Read, "b", "live/cam", now) == nil && v != Sign(token, Read, "b", "live/cam", now.Add(TTL)) {
			// Another expiry within the window is Sign's output too.
			exp, _, _ := strings.Cut(v, ".")
			for d := time.Duration(0); d <= TTL+MaxSkew; d += time.Second {
				if v == Sign(token, Read, "b", "live/cam", now.Add(d)) {
					return
				}
			}
			t.Fatalf("forged value %q (expiry %s) verified", v, exp)
		}
	})
}
