package rawurl

import (
	"slices"
	"strings"
)

// Redacted is what Redact shows in place of a secret.
const Redacted = "<redacted>"

// secretParams are query parameters whose values Redact hides.
var secretParams = []string{"passphrase", "key", "token", "s", "password", "secret", "access_token", "auth"}

// Redact returns raw fit for logs and error messages, with its secrets
// replaced by "<redacted>":
//   - the password in the userinfo ("rtmp://user:<redacted>@host/...");
//   - the values of the query parameters passphrase, key, token, s, password,
//     secret, access_token and auth (names compared case-insensitively and
//     after percent-decoding);
//   - in a streamid query parameter, the u= and s= values of the SRT
//     access-control syntax ("#!::r=live/x,m=publish,u=<redacted>,s=<redacted>")
//     and the secret parameters above after a "?" ("publish:live/x?key=<redacted>");
//     a percent-encoded streamid with something redacted is shown decoded;
//   - for rtmp:// and rtmps:// URLs, the last non-empty path segment, which
//     is the stream key ("rtmp://a.rtmp.youtube.com/live2/<redacted>").
//
// Everything else is kept as written. A value that is not a URL (no
// "scheme://") could be a secret pasted in the wrong place, so it is replaced
// whole. The result is for people to read, not to dial.
func Redact(raw string) string {
	u, _ := Split(raw)
	return redact(raw, isRTMP(u.Scheme))
}

// RedactKey is Redact, also hiding the last non-empty path segment whatever
// the scheme: for a value that may be an RTMP URL with its stream key but
// with a mistyped scheme ("rmtp://host/app/KEY").
func RedactKey(raw string) string { return redact(raw, true) }

func isRTMP(scheme string) bool {
	return strings.EqualFold(scheme, "rtmp") || strings.EqualFold(scheme, "rtmps")
}

// redact is Redact, hiding the last path segment if lastSegment.
func redact(raw string, lastSegment bool) string {
	if raw == "" {
		return ""
	}
	u, ok := Split(raw)
	if !ok {
		return Redacted
	}
	if user, _, hasPassword := strings.Cut(u.Userinfo, ":"); hasPassword {
		u.Userinfo = user + ":" + Redacted
	}
	if lastSegment {
		trimmed := strings.TrimRight(u.Path, "/")
		if i := strings.LastIndexByte(trimmed, '/'); i >= 0 && i < len(trimmed)-1 {
			u.Path = trimmed[:i+1] + Redacted + u.Path[len(trimmed):]
		}
	}
	if u.HasQuery {
		u.Query = redactQuery(u.Query)
	}
	return u.String()
}

// redactQuery hides the values of secretParams and the secrets in streamid
// in an "&"-separated query.
func redactQuery(q string) string {
	params := strings.Split(q, "&")
	for i, p := range params {
		k, v, hasValue := strings.Cut(p, "=")
		switch name := strings.ToLower(unescape(k)); {
		case !hasValue:
		case slices.Contains(secretParams, name):
			params[i] = k + "=" + Redacted
		case name == "streamid":
			params[i] = k + "=" + redactStreamID(v)
		}
	}
	return strings.Join(params, "&")
}

// redactStreamID hides the credentials in an SRT stream ID as found in a URL
// query (possibly percent-encoded).
func redactStreamID(raw string) string {
	id := unescape(raw)
	var out string
	if body, ok := strings.CutPrefix(id, "#!::"); ok {
		// Access-control syntax: comma-separated key=value pairs.
		pairs := strings.Split(body, ",")
		for i, p := range pairs {
			if k, _, ok := strings.Cut(p, "="); ok {
				if k := strings.TrimSpace(k); k == "u" || k == "s" {
					pairs[i] = k + "=" + Redacted
				}
			}
		}
		out = "#!::" + strings.Join(pairs, ",")
	} else if name, query, ok := strings.Cut(id, "?"); ok {
		out = name + "?" + redactQuery(query)
	} else {
		return raw
	}
	if out == id {
		return raw // nothing to hide: keep it as written
	}
	return out
}
