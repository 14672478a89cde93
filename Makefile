# The two commands a new machine needs: `make run` and `make test`.
# Both build with cgo against FFmpeg's libraries (apt-get install
# libavcodec-dev libavutil-dev libswresample-dev pkg-config; .ci/run does it).

GO      ?= go
BIN     := bin/bridge
PKGS    := ./...

.PHONY: build run test lint bench clean

build:
	$(GO) build -o $(BIN) ./cmd/bridge

run: build
	./$(BIN) $(ARGS)

# Unit, integration and end-to-end tests (the e2e ones run ffmpeg).
test: lint
	$(GO) test -race -count=1 -timeout 20m $(PKGS)

lint:
	$(GO) vet $(PKGS)
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

bench:
	$(GO) test -run '^$$' -bench . -benchmem $(PKGS)

clean:
	rm -rf bin
