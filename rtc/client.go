package rtc

// The HTTP side of a WHIP (RFC 9725) or WHEP (draft-ietf-wish-whep) client:
// both POST an SDP offer to an endpoint and get a session resource back.
// egress/whip (forwarding) and ingest/whep (pulling) use it.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/wishbridge/bridge/internal/rawurl"
)

const (
	// maxRedirects bounds the 307/308 redirects followed for one POST.
	maxRedirects = 5
	// PostTimeout bounds one POST, redirects included: the endpoint
	// gathers its candidates before it answers, which takes milliseconds
	// to seconds.
	PostTimeout = 15 * time.Second
	// deleteTimeout bounds the DELETE of a session resource.
	deleteTimeout = 5 * time.Second
	// maxErrorBody is how much of a refusal's body goes into the error.
	maxErrorBody = 512
	// maxRetryAfter caps a server's Retry-After.
	maxRetryAfter = 10 * time.Minute
)

// Client POSTs offers to one endpoint and DELETEs the sessions it made.
// Safe for concurrent use.
type Client struct {
	hc       *http.Client
	own      *http.Transport // the transport we made (nil: the caller's client's)
	endpoint *url.URL
	redacted string // the endpoint for logs and errors
	token    string

	mu         sync.Mutex
	iceServers []webrtc.ICEServer // guarded by mu: from the last 201's Link headers
}

// RemoteSession is a session resource on the server.
type RemoteSession struct {
	// URL is the resource (the 201's Location resolved against the URL
	// that answered); nil if the server sent none, in which case the
	// session cannot be deleted.
	URL  *url.URL
	ETag string
	// Trickle reports whether the server accepts trickle ICE
	// (Accept-Patch: application/trickle-ice-sdpfrag).
	Trickle bool
}

// statusError is an endpoint's refusal.
type statusError struct {
	status     int
	retryAfter time.Duration // from Retry-After; 0 if none
	msg        string        // the start of the body
	url        string        // redacted
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("%s answered %d %s", e.url, e.status, http.StatusText(e.status))
	if e.msg != "" {
		s += ": " + e.msg
	}
	if e.retryAfter > 0 {
		s += fmt.Sprintf(" (retry after %v)", e.retryAfter)
	}
	return s
}

// RetryAfter returns the Retry-After of a refusal in err (503, 429 or
// any other status that carried one), or 0.
func RetryAfter(err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) {
		return se.retryAfter
	}
	return 0
}

// NewClient checks endpoint (an http:// or https:// URL) and returns a
// client for it. hc nil means a client of our own, whose idle connections
// Close releases. Errors never quote the URL unredacted.
func NewClient(hc *http.Client, endpoint, token string) (*Client, error) {
	redacted := rawurl.Redact(endpoint)
	u, err := url.Parse(endpoint)
	if err != nil {
		return nil, fmt.Errorf("%s is not a valid URL", redacted)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("%s is not an http:// or https:// URL", redacted)
	}
	if u.Host == "" {
		return nil, fmt.Errorf("%s has no host", redacted)
	}
	c := &Client{endpoint: u, redacted: redacted, token: token}
	if hc == nil {
		c.own = http.DefaultTransport.(*http.Transport).Clone()
		c.hc = &http.Client{Transport: c.own}
	} else {
		cp := *hc
		c.hc = &cp
	}
	// Redirects are followed by Post itself: net/http would turn a 301 or
	// 302 into a GET, and drop the token for another host silently.
	c.hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// Close releases the idle connections of a client of our own.
func (c *Client) Close() {
	if c.own != nil {
		c.own.CloseIdleConnections()
	}
}

// Redacted returns the endpoint for logs and errors.
func (c *Client) Redacted() string { return c.redacted }

// LastICEServers returns the ICE servers the endpoint advertised in the
// Link headers of its last 201 (RFC 9725 section 4.6), for the next
// PeerConnection.
func (c *Client) LastICEServers() []webrtc.ICEServer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.iceServers
}

// sendsToken reports whether the bearer token may go to u: the endpoint's
// host or one of its subdomains (a load balancer's redirect to a media
// node), never from https down to http. This is net/http's rule for
// redirects, applied to DELETE as well.
func (c *Client) sendsToken(u *url.URL) bool {
	if c.token == "" {
		return false
	}
	if c.endpoint.Scheme == "https" && u.Scheme != "https" {
		return false
	}
	h, o := strings.ToLower(u.Hostname()), strings.ToLower(c.endpoint.Hostname())
	return h == o || strings.HasSuffix(h, "."+o)
}

func (c *Client) authorize(req *http.Request) {
	if c.sendsToken(req.URL) {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

// Post sends offer to the endpoint, following up to maxRedirects 307 and
// 308 redirects with the same method and body, and returns the answer and
// the session resource. A refusal is a *statusError.
func (c *Client) Post(ctx context.Context, offer string) (string, *RemoteSession, error) {
	target := c.endpoint
	for redirects := 0; ; redirects++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target.String(), strings.NewReader(offer))
		if err != nil {
			return "", nil, fmt.Errorf("POST %s: %w", rawurl.Redact(target.String()), unwrapURLError(err))
		}
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Accept", "application/sdp")
		c.authorize(req)
		resp, err := c.hc.Do(req)
		if err != nil {
			return "", nil, fmt.Errorf("POST %s: %w", rawurl.Redact(target.String()), unwrapURLError(err))
		}
		switch resp.StatusCode {
		case http.StatusCreated, http.StatusOK: // 200: not RFC 9725, but some servers answer so
			return c.readAnswer(resp, target)
		case http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
			loc := resp.Header.Get("Location")
			drain(resp)
			if loc == "" {
				return "", nil, fmt.Errorf("%s answered %d without a Location", rawurl.Redact(target.String()), resp.StatusCode)
			}
			if redirects == maxRedirects {
				return "", nil, fmt.Errorf("%s: more than %d redirects", c.redacted, maxRedirects)
			}
			next, err := target.Parse(loc)
			if err != nil || (next.Scheme != "http" && next.Scheme != "https") {
				return "", nil, fmt.Errorf("%s redirected to %s, which is not an http(s) URL", rawurl.Redact(target.String()), rawurl.Redact(loc))
			}
			target = next
			continue
		case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther:
			loc := resp.Header.Get("Location")
			drain(resp)
			return "", nil, fmt.Errorf("%s answered %d redirecting to %s: only 307 and 308 redirects are followed (a %d would turn the POST into a GET)",
				rawurl.Redact(target.String()), resp.StatusCode, rawurl.Redact(loc), resp.StatusCode)
		}
		return "", nil, c.refusal(resp, target)
	}
}

// readAnswer reads a 201's SDP answer and the session it describes.
func (c *Client) readAnswer(resp *http.Response, from *url.URL) (string, *RemoteSession, error) {
	defer resp.Body.Close()
	where := rawurl.Redact(from.String())
	if ct := resp.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/sdp" {
			return "", nil, fmt.Errorf("%s answered %d with Content-Type %q, expected application/sdp", where, resp.StatusCode, ct)
		}
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxSDPSize+1))
	if err != nil {
		return "", nil, fmt.Errorf("%s: reading the answer: %w", where, err)
	}
	if len(body) > MaxSDPSize {
		return "", nil, fmt.Errorf("%s: the answer is larger than %d bytes", where, MaxSDPSize)
	}
	if len(body) == 0 {
		return "", nil, fmt.Errorf("%s answered %d with no SDP", where, resp.StatusCode)
	}
	rs := &RemoteSession{ETag: resp.Header.Get("ETag")}
	if loc := resp.Header.Get("Location"); loc != "" {
		if u, err := from.Parse(loc); err == nil {
			rs.URL = u
		}
	}
	for _, v := range resp.Header.Values("Accept-Patch") {
		for _, t := range strings.Split(v, ",") {
			if mt, _, err := mime.ParseMediaType(strings.TrimSpace(t)); err == nil && mt == "application/trickle-ice-sdpfrag" {
				rs.Trickle = true
			}
		}
	}
	servers := parseLinkICEServers(resp.Header.Values("Link"))
	c.mu.Lock()
	c.iceServers = servers
	c.mu.Unlock()
	return string(body), rs, nil
}

// refusal turns a failed response into a *statusError. The start of its
// body goes into the message, with the token taken out should the server
// quote it.
func (c *Client) refusal(resp *http.Response, from *url.URL) error {
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	msg := strings.Join(strings.Fields(strings.ToValidUTF8(string(body), "?")), " ")
	if c.token != "" {
		msg = strings.ReplaceAll(msg, c.token, "<redacted>")
	}
	return &statusError{
		status:     resp.StatusCode,
		retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		msg:        msg,
		url:        rawurl.Redact(from.String()),
	}
}

// Delete ends the session resource rs on the server. A 404 means it is
// gone already, which is what was wanted.
func (c *Client) Delete(ctx context.Context, rs *RemoteSession) error {
	if rs == nil || rs.URL == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, deleteTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, rs.URL.String(), nil)
	if err != nil {
		return fmt.Errorf("DELETE %s: %w", rawurl.Redact(rs.URL.String()), unwrapURLError(err))
	}
	c.authorize(req)
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("DELETE %s: %w", rawurl.Redact(rs.URL.String()), unwrapURLError(err))
	}
	if resp.StatusCode/100 == 2 || resp.StatusCode == http.StatusNotFound {
		drain(resp)
		return nil
	}
	return c.refusal(resp, rs.URL)
}

// drain reads what is left of a small body and closes it, so the
// connection can be reused.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}

// unwrapURLError drops net/http's *url.Error wrapper, which quotes the
// URL, token-bearing query included.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// parseRetryAfter reads a Retry-After value (RFC 9110 section 10.2.3:
// seconds or an HTTP date), capped at maxRetryAfter; 0 if absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseUint(v, 10, 32); err == nil {
		return min(time.Duration(secs)*time.Second, maxRetryAfter)
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), maxRetryAfter)
	}
	return 0
}

// parseLinkICEServers returns the ICE servers of Link header values
// (RFC 8288 syntax; RFC 9725 section 4.6): each link with rel="ice-server"
// and a stun:, stuns:, turn: or turns: URL, with its username and
// credential (credential-type "password", the default; links with another
// credential type are skipped). Malformed links are skipped.
func parseLinkICEServers(values []string) []webrtc.ICEServer {
	var out []webrtc.ICEServer
	for _, v := range values {
		for _, l := range parseLinks(v) {
			if !l.hasRel("ice-server") {
				continue
			}
			scheme, _, _ := strings.Cut(l.target, ":")
			switch strings.ToLower(scheme) {
			case "stun", "stuns", "turn", "turns":
			default:
				continue
			}
			s := webrtc.ICEServer{URLs: []string{l.target}}
			if ct, ok := l.params["credential-type"]; ok && !strings.EqualFold(ct, "password") {
				continue
			}
			if u, ok := l.params["username"]; ok {
				s.Username = u
				s.Credential = l.params["credential"]
			}
			out = append(out, s)
		}
	}
	return out
}

// link is one link of a Link header: its target and its parameters
// (names lower-cased, values unquoted; the first of a repeated name wins).
type link struct {
	target string
	params map[string]string
}

func (l link) hasRel(rel string) bool {
	for _, r := range strings.Fields(l.params["rel"]) {
		if strings.EqualFold(r, rel) {
			return true
		}
	}
	return false
}

// parseLinks splits a Link header value into its links:
//
//	link = "<" target ">" *( ";" name [ "=" ( token / quoted-string ) ] )
//
// separated by commas. A link that does not follow the syntax ends the
// parse (what came before it is kept).
func parseLinks(v string) []link {
	var out []link
	i := 0
	skipSpace := func() {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
	}
	for {
		skipSpace()
		for i < len(v) && v[i] == ',' {
			i++
			skipSpace()
		}
		if i >= len(v) || v[i] != '<' {
			return out
		}
		end := strings.IndexByte(v[i:], '>')
		if end < 0 {
			return out
		}
		l := link{target: strings.TrimSpace(v[i+1 : i+end]), params: map[string]string{}}
		i += end + 1
		for {
			skipSpace()
			if i >= len(v) || v[i] == ',' {
				break
			}
			if v[i] != ';' {
				return out
			}
			i++
			skipSpace()
			start := i
			for i < len(v) && !strings.ContainsRune("=;, \t", rune(v[i])) {
				i++
			}
			name := strings.ToLower(v[start:i])
			skipSpace()
			value := ""
			if i < len(v) && v[i] == '=' {
				i++
				skipSpace()
				if i < len(v) && v[i] == '"' {
					var b strings.Builder
					i++
					closed := false
					for i < len(v) {
						c := v[i]
						i++
						if c == '\\' && i < len(v) {
							b.WriteByte(v[i])
							i++
							continue
						}
						if c == '"' {
							closed = true
							break
						}
						b.WriteByte(c)
					}
					if !closed {
						return out
					}
					value = b.String()
				} else {
					start := i
					for i < len(v) && !strings.ContainsRune(";, \t", rune(v[i])) {
						i++
					}
					value = v[start:i]
				}
			}
			if _, dup := l.params[name]; name != "" && !dup {
				l.params[name] = value
			}
		}
		if l.target != "" {
			out = append(out, l)
		}
	}
}
