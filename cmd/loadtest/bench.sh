#!/usr/bin/env bash
# Fan-out benchmark: one bridge, one stream published by loadtest (looped
# fixture, SEI send-time stamps), then N WHEP viewers for each N given, a
# fresh bridge per N (so RSS baselines do not carry over). Everything on
# this machine; ports are chosen to stay out of the way of a running bridge.
#
#   cmd/loadtest/bench.sh [N ...]          # default: 50 100 200
#   PERF=200 cmd/loadtest/bench.sh 200     # also perf-profile the bridge at N=200
#   BRIDGE=/path/to/bridge cmd/loadtest/bench.sh   # a prebuilt bridge (e.g. another revision)
#   NICE=-10 cmd/loadtest/bench.sh         # ahead of other work on a shared machine
#   AFTER=0 cmd/loadtest/bench.sh          # no memory reading after the viewers left
#                                          # (default 60s: RSS and heap in use read from the
#                                          # bridge's metrics that long after they left)
#   DOC=docs/BENCHMARKS.md cmd/loadtest/bench.sh   # also write the machine, the commands
#                                          # and the table between the doc's bench:begin/end
#                                          # markers (make bench does)
#
# Writes $OUT (default /tmp/loadtest-bench)/nN.json, nN.txt, bridge-nN.log
# and, with PERF, perf-nN.data and perf-nN.txt.
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT=${OUT:-/tmp/loadtest-bench}
FLV=${FLV:-../shared/media/h264-aac.flv}
DURATION=${DURATION:-30s}
RATE=${RATE:-20}
AFTER=${AFTER:-60s}
HTTP_PORT=${HTTP_PORT:-18080}
RTMP_PORT=${RTMP_PORT:-11935}
UDP_PORT=${UDP_PORT:-18189}
SRT_PORT=${SRT_PORT:-18890}
mkdir -p "$OUT"
# NICE=-10 runs the bridge and the loadtest ahead of other work on a shared
# machine (root only).
run=()
[ -z "${NICE:-}" ] || run=(nice -n "$NICE")

if [ -n "${BRIDGE:-}" ]; then
	cp "$BRIDGE" "$OUT/bridge" # a prebuilt bridge binary
else
	go build -o "$OUT/bridge" ./cmd/bridge
fi
go build -o "$OUT/loadtest" ./cmd/loadtest

cat >"$OUT/bridge.yaml" <<EOF
listen:
  http: ":$HTTP_PORT"
  rtmp: ":$RTMP_PORT"
  srt: ":$SRT_PORT"
  webrtc_udp: ":$UDP_PORT"
routes:
  - path: "{path...}"
    ingest: [rtmp, srt, whip]
    whep:
      enabled: true
metrics:
  enabled: true
# Every viewer comes from this one address, faster than a real audience:
# the per-address and pending limits are raised for the load, as the
# config reference says a load test should.
limits:
  webrtc_sessions: 10000
  webrtc_sessions_per_address: 10000
  webrtc_pending: 2000
  webrtc_pending_per_address: 2000
  readers_per_stream: 10000
EOF

bridge_pid=
cleanup() { [ -n "$bridge_pid" ] && kill "$bridge_pid" 2>/dev/null && wait "$bridge_pid" 2>/dev/null; true; }
trap cleanup EXIT

[ $# -gt 0 ] || set -- 50 100 200
counts="$*"
for n in "$@"; do
	"${run[@]}" "$OUT/bridge" -config "$OUT/bridge.yaml" >"$OUT/bridge-n$n.log" 2>&1 &
	bridge_pid=$!
	# Wait until it serves HTTP (it may still be releasing the last run's
	# ports), and stop if it died.
	for _ in $(seq 100); do
		curl -fs -o /dev/null "http://127.0.0.1:$HTTP_PORT/" && break
		if ! kill -0 "$bridge_pid" 2>/dev/null; then
			echo "bench: the bridge exited: $(tail -n 3 "$OUT/bridge-n$n.log")" >&2
			exit 1
		fi
		sleep 0.1
	done
	"${run[@]}" "$OUT/loadtest" -q \
		-publish "rtmp://127.0.0.1:$RTMP_PORT/live/bench" -file "$FLV" -loop -sei \
		-whep "http://127.0.0.1:$HTTP_PORT/whep/live/bench" -n "$n" -rate "$RATE" -duration "$DURATION" \
		-pid "$bridge_pid" -metrics "http://127.0.0.1:$HTTP_PORT/metrics" -after "$AFTER" -json "$OUT/n$n.json" >"$OUT/n$n.txt" 2>&1 &
	lt=$!
	if [ "${PERF:-}" = "$n" ]; then
		# warmup 3 s + ramp + settle ~3 s, then 20 s inside the full-load window.
		sleep $((3 + n / RATE + 5))
		perf record -e cpu-clock -F 999 -g -p "$bridge_pid" -o "$OUT/perf-n$n.data" -- sleep 20 >/dev/null 2>&1 || true
		perf report -i "$OUT/perf-n$n.data" --stdio --no-children --sort symbol -g none --percent-limit 0.5 >"$OUT/perf-n$n.txt" 2>/dev/null || true
	fi
	wait "$lt" || true
	cleanup
	bridge_pid=
	tail -n 3 "$OUT/n$n.txt"
done

# With DOC, replace what is between the doc's bench markers with this run:
# the machine, the commands and the table.
if [ -n "${DOC:-}" ]; then
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	git diff --quiet HEAD 2>/dev/null || commit="$commit (with uncommitted changes)"
	block=$(mktemp)
	{
		echo "Written by \`make bench\` (cmd/loadtest/bench.sh with DOC); a new run replaces it."
		echo
		echo "$(date -u '+%Y-%m-%d %H:%M') UTC, commit \`$commit\`; $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), Linux $(uname -r), $(go version | cut -d' ' -f3)."
		echo "Source \`$FLV\`, ramp $RATE viewers/s, $DURATION at full load, a fresh bridge per run, everything on this machine:"
		echo
		echo '```sh'
		echo "cmd/loadtest/bench.sh $counts"
		echo "# for each N:"
		echo "bridge -config bench.yaml   # all paths, WHEP on, metrics on; ports $HTTP_PORT/$RTMP_PORT/$UDP_PORT"
		echo "loadtest -q -publish rtmp://127.0.0.1:$RTMP_PORT/live/bench -file $FLV -loop -sei \\"
		echo "         -whep http://127.0.0.1:$HTTP_PORT/whep/live/bench -n N -rate $RATE -duration $DURATION \\"
		echo "         -pid BRIDGE_PID -metrics http://127.0.0.1:$HTTP_PORT/metrics -after $AFTER -json nN.json"
		echo '```'
		echo
		echo "RSS and heap in use are the bridge's (its metrics: process_resident_memory_bytes, go_memstats_heap_inuse_bytes)"
		echo "with the publisher only, at the end of the full-load window, and $AFTER after the viewers left (the publisher still on)."
		echo
		first=1
		for n in $counts; do
			if [ -n "$first" ]; then
				grep -A1 '^| viewers' "$OUT/n$n.txt" | head -n 2
				first=
			fi
			tail -n 1 "$OUT/n$n.txt"
		done
	} >"$block"
	awk -v f="$block" '
		BEGIN { while ((getline l < f) > 0) b = b l "\n" }
		/<!-- bench:begin -->/ { print; printf "%s", b; skip = 1; next }
		/<!-- bench:end -->/ { skip = 0 }
		!skip' "$DOC" >"$DOC.tmp" && mv "$DOC.tmp" "$DOC"
	rm -f "$block"
	echo "wrote the run into $DOC"
fi
