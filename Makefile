# The two commands a new machine needs: `make run` and `make test`. Each
# first installs the Debian packages it needs (packaging/setup.sh, which
# holds the lists: `build` for cgo against FFmpeg, `test` adds the tools
# the tests run; as root or with sudo, otherwise it prints the command) and
# checks Go 1.26 (and Node.js 20 for test), which it does not install.

# Go's official install puts it here, often not on a root shell's PATH.
export PATH := $(PATH):/usr/local/go/bin

GO      ?= go
BIN     := bin/bridge
PKGS    := ./...
# What `bridge -version` prints first: the nearest tag, the commit past it
# and -dirty for uncommitted changes; "dev" outside a git checkout. The
# commit itself is Go's VCS stamp (-buildvcs=true: some environments turn
# it off by default).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

.PHONY: build run test soak lint bench fuzz clean setup-build setup-test

setup-build:
	@packaging/setup.sh build

setup-test:
	@packaging/setup.sh test

build: setup-build
	$(GO) build -ldflags "-X main.version=$(VERSION)" -buildvcs=true -o $(BIN) ./cmd/bridge

run: build
	./$(BIN) $(ARGS)

# Unit, integration and end-to-end tests (the e2e ones run ffmpeg and
# headless Chromium through playwright-core), with the soak (TestSoak) for
# SOAK (default 60s).
# packaging/check.sh first: the Dockerfile's runtime packages carry every
# library bin/bridge links, and the systemd unit verifies.
test: setup-test lint test/browser/node_modules/playwright-core build
	packaging/check.sh $(BIN)
	SOAK=$(or $(SOAK),60s) $(GO) test -race -count=1 -timeout 30m $(PKGS)

# The soak alone for SOAK (default 10m): a publisher reconnecting every
# minute, 100 viewers joining and leaving, resources back at the end;
# verbose, for its "soak:" lines (start/end figures).
soak:
	SOAK=$(or $(SOAK),10m) $(GO) test -race -count=1 -v -timeout 30m -run '^TestSoak$$' ./cmd/bridge

test/browser/node_modules/playwright-core: test/browser/package-lock.json
	npm ci --prefix test/browser --no-audit --no-fund

lint:
	$(GO) vet $(PKGS)
	CGO_ENABLED=0 $(GO) build -o /dev/null ./...   # the no-FFmpeg build must keep compiling
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# Go benchmarks of the hot paths, connect times (TestConnectTimes, its
# "connect:" lines in the log), relay setup (TestRelaySetupTime), the
# cluster's numbers (TestClusterNumbers), then the fan-out run (loadtest against a
# fresh bridge per viewer count), written into docs/BENCHMARKS.md between
# its bench:begin/end markers.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./media ./rtc ./internal/udpbatch ./transcode/... ./cmd/loadtest
	BENCH_CONNECT=$(BENCH_CONNECT) $(GO) test -count=1 -v -run '^TestConnectTimes$$' ./cmd/bridge
	BENCH_RELAY=$(BENCH_RELAY) $(GO) test -count=1 -v -run '^TestRelaySetupTime$$' ./cmd/bridge
	BENCH_CLUSTER=$(BENCH_CLUSTER) $(GO) test -count=1 -v -timeout 30m -run '^TestClusterNumbers$$' ./cmd/bridge
	DOC=docs/BENCHMARKS.md cmd/loadtest/bench.sh $(BENCH_VIEWERS)

BENCH_VIEWERS ?= 50 100 200 400
# Viewers per client kind in TestConnectTimes (ICE connected and time to
# first frame from the POST, p50/p95, full ICE and ICE-lite).
BENCH_CONNECT ?= 50
# Runs of TestRelaySetupTime (a viewer on one bridge of a stream another
# owns: relay ready and first frame, p50/max).
BENCH_RELAY ?= 10
# Runs of each p50 in TestClusterNumbers (origin, two edges and Redis:
# relay setup, Redis restarted, a node killed; the origin's CPU and bytes
# with 0, 10 and 100 viewers per edge are measured once each).
BENCH_CLUSTER ?= 10

# Every fuzz target of the module, one at a time, FUZZTIME each (FUZZ=regexp
# picks targets); fails if any crashes.
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) test/fuzz.sh

FUZZTIME ?= 60s

clean:
	rm -rf bin
