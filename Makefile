# The two commands a new machine needs: `make run` and `make test`.
# Both build with cgo against FFmpeg's libraries (apt-get install
# libavcodec-dev libavutil-dev libswresample-dev pkg-config; .ci/run does it).

GO      ?= go
BIN     := bin/bridge
PKGS    := ./...

.PHONY: build run test soak lint bench fuzz clean

build:
	$(GO) build -o $(BIN) ./cmd/bridge

run: build
	./$(BIN) $(ARGS)

# Unit, integration and end-to-end tests (the e2e ones run ffmpeg and
# headless Chromium through playwright-core), with the soak (TestSoak) for
# SOAK (default 60s).
test: lint test/browser/node_modules/playwright-core
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
# "connect:" lines in the log), then the fan-out run (loadtest against a
# fresh bridge per viewer count), written into docs/BENCHMARKS.md between
# its bench:begin/end markers.
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./media ./rtc ./internal/udpbatch ./transcode/... ./cmd/loadtest
	BENCH_CONNECT=$(BENCH_CONNECT) $(GO) test -count=1 -v -run '^TestConnectTimes$$' ./cmd/bridge
	DOC=docs/BENCHMARKS.md cmd/loadtest/bench.sh $(BENCH_VIEWERS)

BENCH_VIEWERS ?= 50 100 200 400
# Viewers per client kind in TestConnectTimes (ICE connected and time to
# first frame from the POST, p50/p95, full ICE and ICE-lite).
BENCH_CONNECT ?= 50

# Every fuzz target of the module, one at a time, FUZZTIME each (FUZZ=regexp
# picks targets); fails if any crashes.
fuzz:
	FUZZTIME=$(FUZZTIME) GO=$(GO) test/fuzz.sh

FUZZTIME ?= 60s

clean:
	rm -rf bin
