package node

import (
	"net"
	"strings"
	"testing"

	"github.com/wishbridge/bridge/config"
)

func TestOpenPublishingWarning(t *testing.T) {
	local := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1935}
	public := &net.TCPAddr{IP: net.IPv4zero, Port: 1935}
	cfg := config.Default()
	if got := OpenPublishing(cfg, map[string]net.Addr{config.IngestRTMP: local, config.IngestWHIP: local}); got != "" {
		t.Errorf("loopback listeners: %q, want no warning", got)
	}
	got := OpenPublishing(cfg, map[string]net.Addr{config.IngestRTMP: public, config.IngestWHIP: local})
	if !strings.Contains(got, `routes[0] "{path...}" (rtmp): set routes[0].publish_key`) {
		t.Errorf("wildcard RTMP listener: %q", got)
	}
	cfg.Routes[0].PublishKey = "k"
	if got := OpenPublishing(cfg, map[string]net.Addr{config.IngestRTMP: public}); got != "" {
		t.Errorf("keyed route: %q, want no warning", got)
	}
}
