#!/usr/bin/env bash
# cluster-demo.sh [BRIDGE]: a three-node cluster on this machine, as the
# cluster tests run one (docs/cluster.md): a redis-server and bridges a, b
# and c, each with its own ports and config file, joined in relay mode. A
# stream published on any node plays on every node. It runs until Ctrl-C
# (SIGINT) or SIGTERM, then stops everything it started; if one of its
# processes exits first, it stops the others and exits 1.
#
#   BRIDGE     the bridge binary (default: bin/bridge, from make build)
#   PORT_BASE  redis-server listens on PORT_BASE (default 18000); node N
#              (a=1, b=2, c=3) on PORT_BASE+10N: HTTP +0, RTMP +1, SRT +2
#              (UDP), WebRTC media +3 (UDP)
#   WORKDIR    where the configs and logs go (default: a new temporary
#              directory, left for reading afterwards)
#
# HTTP, RTMP and SRT listen on 127.0.0.1; the WebRTC media port on every
# interface, so that a browser on this machine reaches it through a host
# candidate (the bridge offers no loopback candidates). The nodes talk to
# each other over plain HTTP on loopback, which is private; across
# machines, internal_url must be https unless the network is private.
# cmd/bridge's TestClusterDemoScript runs this script, publishes on a and
# checks that a viewer on b is answered 201.
set -euo pipefail

bridge=${1:-bin/bridge}
[ -x "$bridge" ] || { echo "cluster-demo: $bridge is not an executable (make build, or give the bridge binary's path)" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "cluster-demo: redis-server not found (apt-get install redis-server)" >&2; exit 2; }
base=${PORT_BASE:-18000}
[[ $base =~ ^[0-9]+$ ]] && [ "$base" -ge 1024 ] && [ "$base" -le 65500 ] ||
  { echo "cluster-demo: PORT_BASE=$base is not a port from 1024 to 65500" >&2; exit 2; }
work=${WORKDIR:-$(mktemp -d -t bridge-cluster.XXXXXX)}
mkdir -p "$work"
# The node-to-node credential: random, letters and digits only.
token=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32 || true)

pids=()
stop() {
  trap - EXIT INT TERM
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait || true
  echo "cluster-demo: stopped (configs and logs in $work)"
}
trap stop EXIT
trap 'exit 0' INT TERM

redis-server --port "$base" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)

names=(a b c)
for i in 1 2 3; do
  name=${names[$((i - 1))]}
  port=$((base + 10 * i))
  cat >"$work/$name.yaml" <<EOF
listen:
  http: "127.0.0.1:$port"
  rtmp: "127.0.0.1:$((port + 1))"
  srt: "127.0.0.1:$((port + 2))"
  webrtc_udp: ":$((port + 3))"
cluster:
  redis: "redis://127.0.0.1:$base/0"
  node: $name
  public_url: "http://127.0.0.1:$port"
  token: "$token"
  mode: relay
# Anyone on this machine may publish and read any path: a demo.
routes:
  - path: "{path...}"
EOF
  "$bridge" -check -config "$work/$name.yaml"
  "$bridge" -config "$work/$name.yaml" >"$work/$name.log" 2>&1 &
  pids+=($!)
done

# Ready when each node answers /readyz (within 20 s).
for i in 1 2 3; do
  url="http://127.0.0.1:$((base + 10 * i))/readyz"
  for try in $(seq 100); do
    "$bridge" -healthcheck "$url" >/dev/null 2>&1 && break
    [ "$try" -lt 100 ] || { echo "cluster-demo: node ${names[$((i - 1))]} not ready at $url within 20 s; its log: $work/${names[$((i - 1))]}.log" >&2; exit 1; }
    sleep 0.2
  done
done

cat <<EOF
cluster ready: redis 127.0.0.1:$base, nodes a b c (configs and logs in $work)
  a  http://127.0.0.1:$((base + 10))  rtmp://127.0.0.1:$((base + 11))  srt://127.0.0.1:$((base + 12))
  b  http://127.0.0.1:$((base + 20))  rtmp://127.0.0.1:$((base + 21))  srt://127.0.0.1:$((base + 22))
  c  http://127.0.0.1:$((base + 30))  rtmp://127.0.0.1:$((base + 31))  srt://127.0.0.1:$((base + 32))
publish on a:  ffmpeg -re -stream_loop -1 -i input.flv -c copy -f flv rtmp://127.0.0.1:$((base + 11))/live/demo
watch on b:    http://127.0.0.1:$((base + 20))/watch/live/demo  (relayed from a)
play on c:     ffplay rtmp://127.0.0.1:$((base + 31))/live/demo
Ctrl-C stops everything.
EOF

# Until a signal, or one of the processes exits.
set +e
wait -n "${pids[@]}"
status=$?
set -e
echo "cluster-demo: a process exited (status $status); stopping the others (logs in $work)" >&2
exit 1
