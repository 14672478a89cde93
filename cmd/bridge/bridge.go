package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wishbridge/bridge/certs"
	"github.com/wishbridge/bridge/cluster"
	"github.com/wishbridge/bridge/config"
	"github.com/wishbridge/bridge/egress/whep"
	"github.com/wishbridge/bridge/health"
	"github.com/wishbridge/bridge/ingest/rtmp"
	"github.com/wishbridge/bridge/ingest/srt"
	"github.com/wishbridge/bridge/ingest/whip"
	"github.com/wishbridge/bridge/internal/forwarded"
	"github.com/wishbridge/bridge/internal/memrelease"
	"github.com/wishbridge/bridge/internal/mergelisten"
	"github.com/wishbridge/bridge/internal/panics"
	"github.com/wishbridge/bridge/media"
	"github.com/wishbridge/bridge/metrics"
	"github.com/wishbridge/bridge/node"
	"github.com/wishbridge/bridge/relay"
	"github.com/wishbridge/bridge/rtc"
	"github.com/wishbridge/bridge/transcode"
	"github.com/wishbridge/bridge/web"
)

// Bridge is one running bridge: its listeners, the hub, the node (the
// route runtime) and the adapters. There are no package globals, so tests
// can run several in one process.
type Bridge struct {
	log *slog.Logger

	registry *media.Registry
	node     *node.Node
	engine   *rtc.Engine
	sessions *rtc.Sessions
	// metrics sees every stream path; publicMetrics, served to scrapes
	// without the metrics token, sums private ones (see newMetrics).
	metrics       *metrics.Metrics
	publicMetrics *metrics.Metrics
	// sendDelay is filled by the WHEP sessions, batchWait by the UDP
	// socket's flushers; both served by metrics.
	sendDelay *metrics.SendDelay
	batchWait *metrics.BatchWait
	httpSrv   *http.Server
	rtmpSrv   *rtmp.Server
	srtSrv    *srt.Server

	httpLn net.Listener
	rtmpLn net.Listener
	udp    net.PacketConn
	tcpLn  net.Listener // ICE-TCP; nil when listen.webrtc_tcp is off
	// httpLn and rtmpLn are nil when off (""); httpsLn and rtmpsLn (plain
	// TCP, TLS on top when served) when off or without TLS.
	httpsLn net.Listener
	rtmpsLn net.Listener
	// certs serves the TLS certificate (files or ACME); nil without TLS.
	certs *certs.Manager
	// rtmpAccept accepts on rtmpLn and rtmpsLn for the RTMP server (the
	// shutdown's drain closes them); nil with both off.
	rtmpAccept *mergelisten.Listener

	// The admin API's own listener and server (listen.api); nil when the
	// API is on the HTTP listener (api.go). health answers /readyz.
	apiLn      net.Listener
	apiSrv     *http.Server
	health     *health.Checker
	configFile string               // Options.ConfigFile
	onReload   func(*config.Config) // Options.OnReload

	// front is the HTTP handler: trusted proxies' headers applied
	// (http.trusted_proxies, swapped on reload), then CORS and the mux.
	front *forwarded.Front

	// memory returns the memory of WebRTC sessions to the OS soon after
	// many of them end (see memrelease).
	memory *memrelease.Watcher

	// origin serves relays of this node's streams to other nodes;
	// relays counts them both ways.
	origin *relay.Origin
	relays relay.Counters

	// cluster is the cluster's registry (cluster.*); nil outside one, or
	// with Options.Cluster (cluster.go).
	cluster *cluster.Cluster

	closing atomic.Bool // set by Close
	wg      sync.WaitGroup
}

// Options are process-level knobs that are not part of the YAML config.
type Options struct {
	// IncludeLoopback gathers ICE candidates on loopback too (tests).
	IncludeLoopback bool
	// ICELite makes server sessions ICE-lite (rtc.Settings.ICELite).
	ICELite bool
	// ConfigFile is the file the config was loaded from, which
	// ReloadConfig (SIGHUP, POST /api/v1/reload) reads again; "" for the
	// embedded defaults.
	ConfigFile string
	// OnReload, when set, is given each config ReloadConfig loads, before
	// the bridge applies it (the process's own settings, such as logging).
	OnReload func(*config.Config)
	// RelaySource says which other node owns a path this one does not
	// publish, for its readers to be served through a relay from it
	// (tests: a static table); nil: the cluster's registry, if any
	// (cluster.go).
	RelaySource relay.Source
	// Cluster, when set, is the registry the node asks where new WHIP and
	// WHEP sessions go and where other nodes' sessions live (tests: a
	// static table); nil: the cluster.* config's (cluster.go).
	Cluster node.Cluster
}

// Start opens every listener (so a bind error is reported before anything
// runs), builds the adapters and starts serving.
func Start(cfg *config.Config, opts Options, log *slog.Logger) (_ *Bridge, err error) {
	b := &Bridge{log: log, registry: media.NewRegistry(log), health: &health.Checker{}, configFile: opts.ConfigFile, onReload: opts.OnReload}
	defer func() {
		if err != nil {
			b.closeListeners()
			b.certs.Close()
			b.leaveCluster()
		}
	}()
	// "" is off for each of these (config.Validate); HTTPS and RTMPS are
	// used only with TLS.
	var httpsAddr, rtmpsAddr string
	if cfg.TLS.Enabled() {
		httpsAddr, rtmpsAddr = cfg.Listen.HTTPS, cfg.Listen.RTMPS
	}
	for _, l := range []struct {
		name, addr string
		ln         *net.Listener
	}{{"http", cfg.Listen.HTTP, &b.httpLn}, {"rtmp", cfg.Listen.RTMP, &b.rtmpLn}, {"https", httpsAddr, &b.httpsLn}, {"rtmps", rtmpsAddr, &b.rtmpsLn}} {
		if l.addr == "" {
			continue
		}
		if *l.ln, err = net.Listen("tcp", l.addr); err != nil {
			return nil, fmt.Errorf("listen %s %s: %w", l.name, l.addr, err)
		}
	}
	if cfg.TLS.Enabled() {
		// After the listeners: ACME's challenges arrive on them.
		if b.certs, err = certs.New(certs.Config{TLS: cfg.TLS, HTTP: addrOf(b.httpLn), HTTPS: addrOf(b.httpsLn), Log: log}); err != nil {
			return nil, err
		}
		b.health.Register("tls", b.certs.Ready) // an ACME certificate still missing
	}
	if b.udp, err = net.ListenPacket("udp", cfg.Listen.WebRTCUDP); err != nil {
		return nil, fmt.Errorf("listen webrtc_udp %s: %w", cfg.Listen.WebRTCUDP, err)
	}
	if cfg.Listen.WebRTCTCP != "" {
		if b.tcpLn, err = net.Listen("tcp", cfg.Listen.WebRTCTCP); err != nil {
			return nil, fmt.Errorf("listen webrtc_tcp %s: %w", cfg.Listen.WebRTCTCP, err)
		}
	}
	nat, err := resolveNAT1To1(cfg.WebRTC.NAT1To1)
	if err != nil {
		return nil, err
	}
	b.batchWait = metrics.NewBatchWait()
	b.engine, err = rtc.New(rtc.Settings{
		OnFlush:         b.batchWait.Observe,
		UDP:             b.udp,
		TCP:             b.tcpLn,
		TCPConns:        cfg.Limits.WebRTCSessions,
		TCPConnsPerAddr: cfg.Limits.WebRTCSessionsPerAddress,
		ICEServers:      iceServers(cfg.WebRTC.ICEServers),
		NAT1To1:         nat,
		Interfaces:      cfg.WebRTC.Interfaces,
		IncludeLoopback: opts.IncludeLoopback,
		ICELite:         opts.ICELite,
		Log:             log,
		ICECandidates:   cfg.Limits.ICECandidates,
		PatchRate:       cfg.Limits.PatchRate,
		ICECheckRate:    cfg.Limits.ICECheckRate,
	})
	if err != nil {
		return nil, err
	}
	sl := cfg.Limits.WithDefaults()
	b.sessions = rtc.NewSessions(rtc.Limits{
		Sessions:           sl.WebRTCSessions,
		SessionsPerAddress: sl.WebRTCSessionsPerAddress,
		Pending:            sl.WebRTCPending,
		PendingPerAddress:  sl.WebRTCPendingPerAddress,
		ConnectTimeout:     sl.WebRTCConnectTimeout,
		ReadersPerStream:   sl.ReadersPerStream,
	}, log)

	// One cap for the process: re-encoders are CPU, whatever the route
	// or protocol (WHEP viewers and WHIP forwards share it).
	reencoders := &transcode.ReencodeSlots{Max: sl.VideoReencoders}
	// The running config's cluster.token: a reload applies to the next relay.
	clusterToken := func() string { return b.node.Config().Cluster.Token }
	lookups, err := b.clusterHTTP(cfg, opts, log)
	if err != nil {
		return nil, err
	}
	b.node = node.New(cfg, node.Options{Registry: b.registry, Engine: b.engine, Log: log, Reencoders: reencoders,
		SRTStats: func(path string) (srt.Stats, bool) { return b.srtSrv.Stats(path) },
		Relay:    relay.Edge{Source: b.relaySource(opts), Token: clusterToken, Counters: &b.relays},
		Cluster:  lookups, Sessions: b.sessions, Ownership: b.ownership()})
	mux := http.NewServeMux()
	b.sessions.Register(mux)
	b.origin = relay.NewOrigin(relay.OriginConfig{Registry: b.registry, Token: clusterToken, Counters: &b.relays, Log: log})
	b.origin.Register(mux)
	b.sendDelay = metrics.NewSendDelay()
	viewers := whep.NewHandler(whep.Config{
		SendDelay:         b.sendDelay.Observe,
		Registry:          b.registry,
		Engine:            b.engine,
		Sessions:          b.sessions,
		Authorize:         b.node.Authorize,
		Locate:            b.node.Locate,
		OpusBitrate:       b.node.OpusBitrate,
		BFrames:           b.node.BFrames,
		Reencoders:        reencoders,
		RetransmitPercent: sl.RetransmitPercent,
		MaxReaders:        b.node.MaxReaders,
		Log:               log,
	})
	viewers.Register(mux)
	whip.NewHandler(whip.Config{
		Registry:  b.registry,
		Engine:    b.engine,
		Sessions:  b.sessions,
		Authorize: b.node.Authorize,
		Log:       log,
	}).Register(mux)
	audioNote := ""
	if !transcode.CanTranscodeAudio() {
		audioNote = "This build cannot transcode audio (built without cgo/FFmpeg): AAC sources play without sound."
		log.Warn("built without FFmpeg: AAC audio will not reach WebRTC viewers (Opus sources pass through)")
	}
	var clusterURLs func() []string // the pages' CSP lets them follow a 307 to another node
	if b.cluster != nil {
		clusterURLs = b.cluster.PublicURLs
	}
	pages := web.New(web.Config{Streams: b.node.PublicPaths, AudioNote: audioNote, RTMPPort: port(b.rtmpLn), RTMPSPort: port(b.rtmpsLn),
		ConnectSources: clusterURLs})
	pages.Register(mux)
	if b.metrics, err = b.newMetrics(true); err != nil {
		return nil, err
	}
	if b.publicMetrics, err = b.newMetrics(false); err != nil {
		return nil, err
	}
	if cfg.Metrics.Enabled {
		if err := b.serveMetrics(mux, cfg.Metrics); err != nil {
			return nil, err
		}
	}
	var front http.Handler = rtc.CORS(b.node.ForwardSessions(mux))
	if cfg.TLS.RedirectHTTP && b.httpsLn != nil {
		// WHIP/WHEP clients do not follow redirects: their endpoints and
		// sessions stay on HTTP; so do relays (internal_url may be http).
		front = certs.Redirect(front, port(b.httpsLn), "/whip/", "/whep/", rtc.SessionPathPrefix, relay.PathPrefix)
	}
	b.front = forwarded.New(front, cfg.HTTP.TrustedPrefixes(), log)
	b.httpSrv = &http.Server{
		Handler:           b.certs.HTTPHandler(b.front), // ACME's HTTP-01 first
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       120 * time.Second,
		MaxHeaderBytes:    32 << 10,
		ErrorLog:          certs.ServerErrorLog(log), // TLS handshake failures at debug
	}
	b.httpSrv.RegisterOnShutdown(b.origin.Close) // Shutdown does not end running relays
	b.rtmpSrv = rtmp.NewServer(rtmp.Config{Registry: b.registry, Authorize: b.node.Authorize, Play: b.node.PlayRTMP, Log: log,
		MaxConns: sl.RTMPConnections, MaxConnsPerAddr: sl.RTMPConnectionsPerAddress,
		MaxReaders: b.node.MaxReaders, MaxBitrate: sl.IngestBitrate})
	b.srtSrv = srt.NewServer(srt.Config{Registry: b.registry, Authorize: b.node.Authorize, Passphrase: b.node.Passphrase,
		Read: b.node.SRTReads(), Log: log, MaxConns: sl.SRTConnections, MaxConnsPerAddr: sl.SRTConnectionsPerAddress,
		MaxReaders: b.node.MaxReaders, MaxBitrate: sl.IngestBitrate})
	if cfg.Listen.SRT != "" {
		if err := b.srtSrv.Listen(cfg.Listen.SRT); err != nil {
			return nil, fmt.Errorf("listen srt %s: %w", cfg.Listen.SRT, err)
		}
	}
	if b.httpsLn != nil {
		b.httpSrv.TLSConfig = b.certs.TLSConfig()
	}
	// RTMPS is RTMP over TLS: one server, one set of connection limits.
	var rtmpLns []net.Listener
	if b.rtmpLn != nil {
		rtmpLns = append(rtmpLns, b.rtmpLn)
	}
	if b.rtmpsLn != nil {
		rtmpLns = append(rtmpLns, tls.NewListener(b.rtmpsLn, b.certs.TLSConfig()))
	}
	// The dashboard's previews play wherever it is served: the WHEP
	// endpoint, the session resources and the WHEP client's files.
	previews := func(m *http.ServeMux) {
		b.sessions.Register(m)
		viewers.Register(m)
		pages.RegisterStatic(m)
	}
	if err := b.startAPI(cfg, mux, previews, log); err != nil {
		return nil, err
	}

	// Outbound work (pulls, forwards) is ready before any request can ask
	// for an on-demand pull.
	b.node.Start()
	b.startCluster()
	if b.httpLn != nil {
		b.serve("http", func() error { return b.httpSrv.Serve(b.httpLn) })
	}
	if b.httpsLn != nil {
		b.serve("https", func() error { return b.httpSrv.ServeTLS(b.httpsLn, "", "") })
	}
	if cfg.Listen.SRT != "" {
		b.serve("srt", b.srtSrv.Serve)
	}
	if len(rtmpLns) > 0 {
		b.rtmpAccept = mergelisten.New(log, rtmpLns...)
		b.serve("rtmp", func() error { return b.rtmpSrv.Serve(b.rtmpAccept) })
	}
	b.serveAPI()
	public := map[string]net.Addr{}
	for proto, a := range map[string]net.Addr{
		config.IngestRTMP: cmp.Or(addrOf(b.rtmpLn), addrOf(b.rtmpsLn)), config.IngestSRT: b.srtSrv.Addr(),
		config.IngestWHIP: cmp.Or(addrOf(b.httpLn), addrOf(b.httpsLn)),
	} {
		if a != nil {
			public[proto] = a
		}
	}
	if open := node.OpenPublishing(cfg, public); open != "" {
		log.Warn("anyone who can reach this bridge may publish on these routes; close them with a publish key: " + open)
	}
	b.memory = memrelease.Start(b.sessions.Len, log)
	log.Info("bridge started", "http", addrOf(b.httpLn), "https", addrOf(b.httpsLn), "rtmp", addrOf(b.rtmpLn), "rtmps", addrOf(b.rtmpsLn),
		"srt", b.srtSrv.Addr(), "webrtc_udp", b.udp.LocalAddr().String(), "webrtc_tcp", b.TCPAddr())
	return b, nil
}

func (b *Bridge) serve(name string, f func() error) {
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		defer panics.Recover("listener "+name, b.log, nil)
		if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			b.log.Error("listener stopped", "listener", name, "err", err)
		}
	}()
}

// Reload swaps in a new configuration (see node.Node.Reload) and returns
// the changed keys that need a restart; the trusted proxies apply from the
// next request.
func (b *Bridge) Reload(next *config.Config) (restartNeeded []string) {
	restartNeeded = b.node.Reload(next)
	b.front.SetTrusted(next.HTTP.TrustedPrefixes())
	return restartNeeded
}

// HTTPAddr, RTMPAddr and UDPAddr return the bound addresses; HTTPAddr,
// RTMPAddr, SRTAddr, HTTPSAddr and RTMPSAddr are nil for a listener that
// is off.
func (b *Bridge) HTTPAddr() net.Addr  { return addrOf(b.httpLn) }
func (b *Bridge) RTMPAddr() net.Addr  { return addrOf(b.rtmpLn) }
func (b *Bridge) HTTPSAddr() net.Addr { return addrOf(b.httpsLn) }
func (b *Bridge) RTMPSAddr() net.Addr { return addrOf(b.rtmpsLn) }
func (b *Bridge) UDPAddr() net.Addr   { return b.udp.LocalAddr() }
func (b *Bridge) SRTAddr() net.Addr   { return b.srtSrv.Addr() }

// TCPAddr returns the ICE-TCP listener's address, nil when it is off.
func (b *Bridge) TCPAddr() net.Addr {
	if b.tcpLn == nil {
		return nil
	}
	return b.tcpLn.Addr()
}

// Close shuts down in order: drain (/readyz answers 503, new WHIP/WHEP
// sessions get 503, the RTMP listeners close, SRT rejects new callers),
// let the running sessions go on for shutdown.drain_delay, end the WHIP
// and WHEP sessions, the RTMP and SRT connections, the pulls and forwards
// (which DELETE their remote sessions), then close the HTTP servers (which
// answer session DELETEs and /readyz until then) and release the UDP
// port. ctx bounds the drain delay and the wait for HTTP requests in
// flight; the caller bounds the rest.
func (b *Bridge) Close(ctx context.Context) error {
	if b.closing.Swap(true) {
		return nil // already closed (or closing)
	}
	b.health.Drain("shutting down") // serve drained it first, with the signal
	b.sessions.Drain(&rtc.Error{Status: http.StatusServiceUnavailable, Msg: "server shutting down"})
	if b.rtmpAccept != nil {
		b.rtmpAccept.Drain()
	}
	b.srtSrv.Drain()
	b.node.Drain() // publishers leaving now get no grace
	if d := b.node.Config().Shutdown.DrainDelay; d > 0 {
		b.log.Info("draining: new sessions refused, the running ones end after the drain delay", "drain_delay", d.String())
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	// WebRTC sessions end first, so that their peers are told why (the
	// server shuts down), not that the stream ended.
	b.sessions.CloseAll("server shutting down")
	_ = b.rtmpSrv.Close()
	_ = b.srtSrv.Close()
	b.node.Stop()
	b.registry.EndWaiting() // publishers are gone: no grace at shutdown
	err := b.httpSrv.Shutdown(ctx)
	if b.apiSrv != nil {
		_ = b.apiSrv.Shutdown(ctx)
	}
	_ = b.engine.Close()
	b.wg.Wait()
	b.memory.Stop()
	b.certs.Close()
	b.leaveCluster()
	b.log.Info("bridge stopped")
	return err
}

func (b *Bridge) closeListeners() {
	if b.httpLn != nil {
		_ = b.httpLn.Close()
	}
	if b.rtmpLn != nil {
		_ = b.rtmpLn.Close()
	}
	if b.httpsLn != nil {
		_ = b.httpsLn.Close()
	}
	if b.rtmpsLn != nil {
		_ = b.rtmpsLn.Close()
	}
	if b.udp != nil {
		_ = b.udp.Close()
	}
	if b.tcpLn != nil {
		_ = b.tcpLn.Close()
	}
	if b.apiLn != nil {
		_ = b.apiLn.Close()
	}
}

// Certs returns the TLS certificate manager, nil without TLS (its
// methods work on nil): Ready for /readyz, Expiries for the metrics.
func (b *Bridge) Certs() *certs.Manager { return b.certs }

// addrOf returns ln's address, nil for a listener that is off.
func addrOf(ln net.Listener) net.Addr {
	if ln == nil {
		return nil
	}
	return ln.Addr()
}

// port returns ln's TCP port, 0 for a listener that is off.
func port(ln net.Listener) int {
	if a, ok := addrOf(ln).(*net.TCPAddr); ok {
		return a.Port
	}
	return 0
}

func iceServers(in []config.ICEServer) rtc.ICEServers {
	out := make(rtc.ICEServers, 0, len(in))
	for _, s := range in {
		out = append(out, rtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential, Secret: s.Secret, TTL: s.TTLOrDefault()})
	}
	return out
}

// resolveNAT1To1 turns the configured public addresses into IPs, resolving
// hostnames once at start.
func resolveNAT1To1(hosts []string) ([]string, error) {
	var out []string
	for _, h := range hosts {
		if net.ParseIP(h) != nil {
			out = append(out, h)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ips, err := net.DefaultResolver.LookupHost(ctx, h)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("webrtc.nat_1to1: resolve %q: %w", h, err)
		}
		out = append(out, ips...)
	}
	return out, nil
}
