#!/usr/bin/env bash
# setup.sh build|test: install the Debian packages the bridge needs for that
# purpose, and check the toolchains that are not installed from Debian.
#
#   build  gcc, pkg-config and FFmpeg's -dev packages: what `go build` with
#          cgo needs (make build / make run, the Dockerfile's builder).
#   test   build's, plus every tool the tests run (make test, .ci/run).
#   install PKG...  only those packages, the same way (packaging/check.sh:
#          the Dockerfile's runtime list).
#
# The one place these lists live. Idempotent: dpkg-query first, and
# apt-get update + install only for what is missing. As root it installs;
# otherwise with sudo when there is one; otherwise it prints the exact
# command to run as root and fails.
set -euo pipefail

# What `go build ./cmd/bridge` needs: the cgo toolchain and FFmpeg's
# headers and pkg-config files (transcode/av links libavcodec, libavutil
# and libswresample); libc6-dev is only a recommendation of gcc.
# ca-certificates: go build fetches modules over HTTPS. git: go build
# stamps the commit into the binary and fails in a git checkout without
# git. make: the Makefile.
build_packages=(gcc libc6-dev pkg-config libavcodec-dev libavutil-dev libswresample-dev git make ca-certificates)

# What the tests run, beyond the build's: ffmpeg publishes and reads
# RTMP/SRT; chromium plays and publishes in the browser tests; coturn is
# the TURN server of the TURN tests; nftables and iproute2 build the
# network namespaces and drop rules of the ICE/TURN/address tests;
# redis-server is the Redis the tests that need one start, redis-sentinel the
# Sentinel of the cluster's Sentinel test; simple-whip-client (whip-client)
# and its GStreamer plugins are the third-party WHIP publisher; systemd
# gives systemd-analyze, which checks packaging/bridge.service, and procps
# the /bin/kill of its ExecReload.
test_packages=(ffmpeg chromium coturn nftables iproute2 redis-server redis-sentinel
  simple-whip-client gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice
  systemd procps)

# The Go toolchain: go.mod's go line. Not a Debian package (bookworm's
# golang is 1.19), so it is checked, not installed.
go_minor=26

# Node.js for the browser tests (playwright-core 1.65 needs 20+; bookworm's
# nodejs is 18), checked, not installed.
node_major=20

usage() { echo "usage: $0 build|test|install PKG..." >&2; exit 2; }
[ $# -ge 1 ] || usage
case "$1" in
  build) want=("${build_packages[@]}") ;;
  test) want=("${build_packages[@]}" "${test_packages[@]}") ;;
  install) want=("${@:2}") ;;
  *) usage ;;
esac
[ ${#want[@]} -gt 0 ] || usage

# missing prints the packages of "$@" that are not installed.
missing() {
  local p status
  for p in "$@"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || echo "$p"
  done
}

# install_packages installs the missing ones of "$@" (see the header).
install_packages() {
  local todo
  mapfile -t todo < <(missing "$@")
  [ ${#todo[@]} -gt 0 ] || return 0
  local cmd="apt-get update && apt-get install -y --no-install-recommends ${todo[*]}"
  local run=()
  if [ "$(id -u)" = 0 ]; then
    run=(env DEBIAN_FRONTEND=noninteractive)
  elif command -v sudo >/dev/null; then
    run=(sudo env DEBIAN_FRONTEND=noninteractive)
  else
    echo "setup: missing Debian packages: ${todo[*]}" >&2
    echo "setup: run as root: $cmd" >&2
    exit 1
  fi
  echo "setup: installing ${todo[*]}" >&2
  if ! { "${run[@]}" apt-get update && "${run[@]}" apt-get install -y --no-install-recommends "${todo[@]}"; }; then
    echo "setup: installing failed; run as root: $cmd" >&2
    exit 1
  fi
}

install_packages "${want[@]}"
[ "$1" != install ] || exit 0

# Go: the Makefile and .ci/run put /usr/local/go/bin on PATH.
if ! command -v go >/dev/null; then
  echo "Go is not installed: install Go 1.$go_minor+ (https://go.dev/dl/) into /usr/local/go" >&2
  exit 1
fi
v=$(GOTOOLCHAIN=local go env GOVERSION) # go1.26.8
minor=${v#go1.}
minor=${minor%%[!0-9]*}
if [ "${minor:-0}" -lt "$go_minor" ]; then
  echo "$v is too old: install Go 1.$go_minor+ (https://go.dev/dl/) into /usr/local/go" >&2
  exit 1
fi

if [ "$1" = test ]; then
  if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt "$node_major" ]; then
    echo "Node.js $node_major+ with npm is needed for the browser tests (Debian 12's nodejs is 18: install NodeSource's nodejs $node_major)" >&2
    exit 1
  fi
fi
