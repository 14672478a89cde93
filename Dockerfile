# The bridge in a container: docs/deploy.md ("Docker") says how to run it.
# Not built in CI (no Docker engine there); packaging/check.sh, run by
# make test, installs the runtime stage's package list below and checks that
# it carries every library the binary links.

# Builder: Go on Debian bookworm, the release whose FFmpeg (5.1) the
# runtime stage ships, with the cgo packages of packaging/setup.sh build.
FROM golang:1.26-bookworm AS builder
WORKDIR /src
COPY packaging/setup.sh packaging/setup.sh
RUN packaging/setup.sh build && rm -rf /var/lib/apt/lists/*
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# bridge -version prints it, with the commit go build reads from .git.
ARG VERSION=dev
RUN go build -trimpath -ldflags "-X main.version=${VERSION}" -o /out/bridge ./cmd/bridge

# Runtime: only the shared libraries the binary links (FFmpeg's, which
# pull their own dependencies) and the CA roots for outbound HTTPS (ACME,
# WHIP forwards, WHEP pulls). packaging/check.sh reads the package list
# from the apt-get install below: keep it one RUN in this form.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates libavcodec59 libavutil57 libswresample4 \
 && rm -rf /var/lib/apt/lists/*
# A system user of its own; /var/lib/bridge keeps the ACME account and
# certificates (tls.acme.cache_dir) and is the volume to keep.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/bridge --create-home --shell /usr/sbin/nologin bridge \
 && mkdir -p /etc/bridge
COPY --from=builder /out/bridge /usr/local/bin/bridge
USER bridge
WORKDIR /var/lib/bridge

# The defaults of config/default.yaml (and listen.https when TLS is on).
# A non-root user cannot bind below 1024: publish 80 and 443 onto these.
EXPOSE 8080/tcp
EXPOSE 8443/tcp
EXPOSE 1935/tcp
EXPOSE 8890/udp
EXPOSE 8189/udp
# listen.webrtc_tcp (ICE-TCP), off unless configured.
EXPOSE 8189/tcp

# The runtime image has no curl: the binary asks its own /healthz. The
# URL follows listen.http; change both together.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/bridge", "-healthcheck", "http://127.0.0.1:8080/healthz"]

# SIGTERM ends every session within shutdown.timeout (default 10 s):
# give docker stop more than that (docker stop -t 15, compose
# stop_grace_period).
STOPSIGNAL SIGTERM
# No arguments: the embedded defaults, as `make run`. With a config:
# mount it and pass -config /etc/bridge/config.yaml (docker-compose.yml).
ENTRYPOINT ["/usr/local/bin/bridge"]
