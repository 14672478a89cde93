package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/wishbridge/bridge/access"
	"github.com/wishbridge/bridge/internal/backoff"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/internal/rawurl"
	"github.com/wishbridge/bridge/internal/reconnect"
	"github.com/wishbridge/bridge/media"
)

// Timing and bounds of the edge side.
const (
	// DefaultReadTimeout ends a relay the origin has sent nothing on for
	// that long: it sends a keepalive at least every KeepaliveInterval,
	// so five missed ones mean the connection or the origin is gone.
	DefaultReadTimeout = 5 * KeepaliveInterval
	// connectTimeout bounds the dial, TLS and the origin's response
	// headers (which wait at most readyWait for a stream in its
	// handshake).
	connectTimeout = readyWait + 5*time.Second
	// maxBacklogUnits and maxBacklogBytes bound the units an edge holds
	// before the origin's live frame (the origin's GOP cache, which
	// media.MaxGOPUnits and media.MaxGOPBytes bound the same way).
	maxBacklogUnits = media.MaxGOPUnits
	maxBacklogBytes = media.MaxGOPBytes
	// maxRefusalBody bounds the reason read from a refusal's body.
	maxRefusalBody = 512
	// ownerMovedWait is the wait before the next attempt when the Source
	// names another origin than the one whose relay just ended (a
	// publisher took the path over at another node): the registry already
	// names the new owner, so the edge's readers need not wait out a
	// backoff; the wait only keeps two nodes that hand a path back and
	// forth from spinning.
	ownerMovedWait = 100 * time.Millisecond
	// sourceWait bounds one Source lookup between two attempts (a Redis
	// round trip).
	sourceWait = 2 * time.Second
)

// PullConfig configures a Puller. Registry, Path, Base and Token are
// required.
type PullConfig struct {
	Registry *media.Registry
	// Path is the stream's path, the same on the origin and here.
	Path string
	// Base is the origin's base URL (cluster.internal_url): http://host:port
	// or https://host:port, with a path prefix if it is behind one.
	Base string
	// Source, if set, is asked again which node owns Path after each
	// attempt: a relay that ended (the origin lost the path to another
	// node's publisher, or went away) is opened next from the origin it
	// names, at once if that is another one than before. While it names
	// none (Redis unreachable, the path in grace), the last origin is
	// tried again with the backoff.
	Source Source
	// Token is the cluster token, sent as a bearer token. Never logged.
	Token string
	// Client makes the requests; nil means one with the timeouts above
	// and no overall timeout (a relay lasts as long as its readers).
	Client *http.Client
	// ReadTimeout ends a relay with nothing received for that long; 0
	// means DefaultReadTimeout.
	ReadTimeout time.Duration
	// Counters, if set, counts the relay (direction "in").
	Counters *Counters
	Log      *slog.Logger
}

// Puller publishes a stream relayed from its origin in the local hub, as
// a publisher of kind access.KindRelay, until Run's context ends. Its
// attempts follow internal/reconnect's policy for pulls (1 s, doubling up
// to 30 s): a lost connection, a refusal, the origin ending the stream.
// Between two attempts the stream waits for its publisher for the
// route's grace period, so its local readers carry on across a
// reconnect. The relay carries no keyframe requests back: a local
// reader's request is answered from the local GOP cache.
type Puller struct {
	cfg    PullConfig
	client *http.Client
	log    *slog.Logger
	err    error  // a configuration error, reported by Run
	base   string // the origin now: cfg.Base, then what Source names; used by Run's goroutine only

	// Tunables, fixed before Run (tests shorten them).
	minBackoff, maxBackoff time.Duration
	// onRetry, if set, is called before each wait between two attempts.
	onRetry func(wait time.Duration, err error)
}

// NewPuller returns a Puller for cfg. A bad configuration is reported by
// Run.
func NewPuller(cfg PullConfig) *Puller {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	p := &Puller{cfg: cfg, client: cfg.Client, minBackoff: backoff.DefaultMin, maxBackoff: backoff.DefaultMax,
		log: cfg.Log.With("component", "relay pull", "stream", cfg.Path, "source", rawurl.Redact(cfg.Base))}
	if p.client == nil {
		p.client = defaultClient()
	}
	switch {
	case cfg.Registry == nil || cfg.Path == "":
		p.err = errors.New("relay pull: no registry or path")
	case cfg.Token == "":
		p.err = errors.New("relay pull: no cluster token")
	default:
		p.err = checkBase(cfg.Base)
		p.base = cfg.Base
	}
	return p
}

// checkBase reports a base URL an edge cannot relay from.
func checkBase(base string) error {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return fmt.Errorf("relay pull: origin %q is not an http:// or https:// base URL", rawurl.Redact(base))
	}
	return nil
}

// defaultClient bounds every step before the stream flows; the stream
// itself is bounded by ReadTimeout.
func defaultClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{
			Proxy:                 nil, // node to node: never through a proxy of the environment
			DialContext:           (&net.Dialer{Timeout: connectTimeout, KeepAlive: 15 * time.Second}).DialContext,
			TLSHandshakeTimeout:   connectTimeout,
			ResponseHeaderTimeout: connectTimeout,
			MaxIdleConnsPerHost:   4,
			IdleConnTimeout:       30 * time.Second,
			ForceAttemptHTTP2:     true,
		},
		// A relay is not redirected: the token goes to the node named.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// Run relays until ctx ends, then leaves the stream (which waits for a
// publisher for its grace period) and returns.
func (p *Puller) Run(ctx context.Context) {
	reconnect.Loop{
		Name:    "relay pull",
		Log:     p.log,
		Invalid: p.err,
		Backoff: func() *backoff.Backoff {
			return backoff.New(p.minBackoff, p.maxBackoff, backoff.DefaultReset)
		},
		Attempt:    p.attempt,
		RetryAfter: retryWait,
		Retrying:   p.onRetry,
	}.Run(ctx)
}

// errOwnerMoved ends an attempt whose origin no longer owns the stream:
// the Source names another, tried next after ownerMovedWait.
type errOwnerMoved struct {
	err error  // why the relay from the old origin ended
	to  string // the new origin's base URL
}

func (e *errOwnerMoved) Error() string {
	return fmt.Sprintf("%v; the stream's owner is at %s now", e.err, rawurl.Redact(e.to))
}

func (e *errOwnerMoved) Unwrap() error { return e.err }

// retryWait is the wait before the next attempt that err asks for, 0 for
// the backoff's.
func retryWait(err error) time.Duration {
	var moved *errOwnerMoved
	if errors.As(err, &moved) {
		return ownerMovedWait
	}
	return refusedRetryAfter(err)
}

// follow asks the Source which origin owns the stream now, after an
// attempt that ended with err, and returns err, or an *errOwnerMoved
// when it names another origin, which the next attempt uses.
func (p *Puller) follow(ctx context.Context, err error) error {
	if p.cfg.Source == nil || ctx.Err() != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, sourceWait)
	defer cancel()
	base, ok := p.cfg.Source(sctx, p.cfg.Path)
	if !ok || base == p.base {
		return err
	}
	if bad := checkBase(base); bad != nil {
		p.log.Warn("relay pull: the cluster names an origin that cannot be used; trying the last one again", "err", bad)
		return err
	}
	p.base = base
	return &errOwnerMoved{err: err, to: base}
}

// errRefused is an origin's answer other than 200.
type errRefused struct {
	status int
	reason string
	retry  time.Duration
}

func (e *errRefused) Error() string {
	return fmt.Sprintf("the origin answered %d %s: %s", e.status, http.StatusText(e.status), e.reason)
}

func refusedRetryAfter(err error) time.Duration {
	var r *errRefused
	if errors.As(err, &r) {
		return r.retry
	}
	return 0
}

// attempt opens one relay and publishes it until it ends: a session
// (reconnect.Attempt) from its publication on.
func (p *Puller) attempt(ctx context.Context, _ *media.Stream, a *reconnect.Attempt) error {
	return p.follow(ctx, p.relayOnce(ctx, a))
}

// relayOnce is one attempt from the current origin.
func (p *Puller) relayOnce(ctx context.Context, a *reconnect.Attempt) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	u := strings.TrimSuffix(p.base, "/") + PathPrefix + p.cfg.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.cfg.Token)
	req.Header.Set("Accept", ContentType)
	resp, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("relay from %s: %w", rawurl.Redact(p.base), err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxRefusalBody))
		return &errRefused{status: resp.StatusCode, reason: strings.TrimSpace(string(body)), retry: retryAfter(resp.Header)}
	}
	p.cfg.Counters.relay(true, 1)
	defer p.cfg.Counters.relay(true, -1)

	// The read timeout: every frame pushes it back; when it fires, the
	// request's context ends and the body's Read returns.
	errIdle := fmt.Errorf("nothing received from the origin for %v", p.cfg.ReadTimeout)
	idle := time.AfterFunc(p.cfg.ReadTimeout, func() {
		defer panics.Recover("relay pull", p.log, nil)
		cancel(errIdle)
	})
	defer idle.Stop()
	body := &countingReader{r: resp.Body, c: p.cfg.Counters}
	in := &edgeRecv{p: p, a: a, dec: NewDecoder(body), alive: func() { idle.Reset(p.cfg.ReadTimeout) }}
	defer in.close()
	err = in.run()
	a.Moved(body.n, in.units)
	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		err = cause
	}
	return err
}

// edgeRecv is one relay's receiving side: it decodes frames and publishes
// them.
type edgeRecv struct {
	p     *Puller
	a     *reconnect.Attempt
	dec   *Decoder
	alive func()
	units uint64 // written to the hub

	pub          *media.Publication // nil until the first tracks are published
	tracks       []*media.Track     // the tracks of the frames being received
	pending      []*media.Unit      // until the live frame: the origin's cached GOP
	pendingBytes int
	live         bool // the live frame came for the current tracks
}

// run receives until the stream or the connection ends.
func (e *edgeRecv) run() error {
	for {
		f, err := e.dec.Next()
		if err == io.EOF {
			return errors.New("the origin closed the relay without an end frame")
		}
		if err != nil {
			return err
		}
		e.alive()
		switch f.Kind {
		case FrameTracks:
			// A new publisher at the origin (or the first tracks): a new
			// publication here too, which takes the stream over as the
			// origin's readers were (see media.Publication).
			e.close()
			e.tracks, e.pending, e.pendingBytes, e.live = f.Tracks, nil, 0, false
		case FrameUnit:
			if err := e.unit(f.Unit); err != nil {
				return err
			}
		case FrameLive:
			if err := e.publish(); err != nil {
				return err
			}
		case FrameEnd:
			return fmt.Errorf("the origin ended the stream: %s", f.Reason)
		}
	}
}

// unit writes u, or keeps it until the live frame.
func (e *edgeRecv) unit(u *media.Unit) error {
	if e.live {
		e.pub.Write(u)
		e.units++
		return nil
	}
	e.pending = append(e.pending, u)
	e.pendingBytes += u.Size()
	if len(e.pending) > maxBacklogUnits || e.pendingBytes > maxBacklogBytes {
		return fmt.Errorf("the origin sent %d units (%d bytes) before its live frame (expected at most %d units, %d bytes: its GOP cache)",
			len(e.pending), e.pendingBytes, maxBacklogUnits, maxBacklogBytes)
	}
	return nil
}

// publish publishes the current tracks and writes the units kept until
// now at once, so that a local reader joining finds the whole GOP in the
// local cache (from where it starts, as it would at the origin).
func (e *edgeRecv) publish() error {
	if e.live {
		return nil
	}
	pub, err := e.p.cfg.Registry.Publish(e.p.cfg.Path, "relay from "+rawurl.Redact(e.p.base))
	if err != nil {
		return err
	}
	pub.SetKind(access.KindRelay)
	if err := pub.SetTracks(e.tracks...); err != nil {
		pub.Close()
		return err
	}
	e.pub, e.live = pub, true
	e.a.Started("origin", rawurl.Redact(e.p.base), "tracks", len(e.tracks), "cached_units", len(e.pending))
	for _, u := range e.pending {
		pub.Write(u)
	}
	e.units += uint64(len(e.pending))
	e.pending, e.pendingBytes = nil, 0
	return nil
}

// close leaves the stream, if published.
func (e *edgeRecv) close() {
	if e.pub != nil {
		e.pub.Close()
		e.pub = nil
	}
}

// countingReader counts what it reads, for the relay's bytes.
type countingReader struct {
	r io.Reader
	c *Counters
	n uint64
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.n += uint64(n)
	r.c.bytes(true, n)
	return n, err
}
