#!/usr/bin/env bash
# check.sh BIN: what CI can check of the packaging without a Docker engine
# or systemd running (make test runs it on bin/bridge):
#
#  1. The Dockerfile's runtime stage installs only shared libraries, and
#     they carry every library BIN needs: its package list (read from the
#     Dockerfile, so the two cannot drift) is installed with
#     --no-install-recommends, ldd resolves every library of BIN, each
#     library BIN links directly (FFmpeg's) comes from a listed package,
#     and every library ldd resolves comes from a package the list pulls
#     in (Depends/Pre-Depends, what apt installs in the image).
#  2. The config example in docker-compose.yml passes bridge -check, and
#     the Dockerfile's HEALTHCHECK command, run with BIN against BIN on
#     the HEALTHCHECK's HTTP port moved to a free one: healthy while it
#     runs, unhealthy once it has stopped.
#  3. packaging/bridge.service verifies (systemd-analyze verify, with
#     ExecStart pointed at BIN) and its hardening keeps systemd-analyze
#     security's exposure at or below max_exposure.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -eq 1 ] || { echo "usage: $0 path/to/bridge" >&2; exit 2; }
[ -x "$1" ] || { echo "check: $1 is not an executable: make build first" >&2; exit 1; }
bin=$(readlink -f "$1")

# systemd-analyze security's exposure (x10) the unit must stay under: 1.6
# ("OK") today; the remainder is the network access the bridge exists for.
max_exposure=20

# The C library is in every Debian image and is BIN's one direct library
# outside FFmpeg.
base_packages=(libc6)

passed=0 failed=0
pass() { echo "ok   packaging: $1"; passed=$((passed + 1)); }
fail() { echo "FAIL packaging: $1" >&2; failed=$((failed + 1)); }

# runtime_packages prints the packages the Dockerfile's runtime stage
# (FROM ... AS runtime) installs with apt-get install, one a line.
runtime_packages() {
  awk '
    /^FROM / { runtime = (tolower($NF) == "runtime"); next }
    !runtime { next }
    { cmd = cmd " " $0 }
    /\\$/ { sub(/\\$/, "", cmd); next }
    {
      n = split(cmd, seg, "&&")
      for (i = 1; i <= n; i++) {
        if (seg[i] !~ /apt-get[ \t]+install/) continue
        m = split(seg[i], w, /[ \t]+/); after = 0
        for (j = 1; j <= m; j++) {
          if (after && w[j] != "" && w[j] !~ /^-/) print w[j]
          if (w[j] == "install") after = 1
        }
      }
      cmd = ""
    }
  ' Dockerfile
}

# owners PATH... asks dpkg once which package installed each file and
# keeps the answers in pkg_of; owner PATH prints one of them. dpkg knows a
# file by the path its package ships (/lib or /usr/lib on merged-/usr,
# the link or its target), so every form of the path is asked.
declare -A pkg_of
forms() { local c; for c in "$1" "$(readlink -f "$1")"; do echo "$c"; echo "${c#/usr}"; echo "/usr$c"; done; }
owners() {
  local p line pkgs
  local all=()
  for p in "$@"; do mapfile -t -O ${#all[@]} all < <(forms "$p"); done
  while IFS= read -r line; do
    [[ $line == diversion* ]] && continue
    pkgs=${line%%: /*} # "libc6:amd64" or "a, b"
    pkg_of["/${line#*: /}"]=${pkgs%%[:,]*}
  done < <(dpkg-query -S "${all[@]}" 2>/dev/null || true)
}
owner() {
  local v
  while read -r v; do
    [ -n "${pkg_of[$v]:-}" ] && { echo "${pkg_of[$v]}"; return 0; }
  done < <(forms "$1")
  return 1
}

contains() { # contains WORD LIST...
  local w=$1 x
  shift
  for x in "$@"; do [ "$x" = "$w" ] && return 0; done
  return 1
}

# --- 1. the runtime image's libraries ---------------------------------
mapfile -t runtime < <(runtime_packages)
if [ ${#runtime[@]} -eq 0 ]; then
  fail "no apt-get install found in the Dockerfile's runtime stage (FROM ... AS runtime)"
else
  dev=()
  for p in "${runtime[@]}"; do [[ $p == *-dev ]] && dev+=("$p"); done
  if [ ${#dev[@]} -gt 0 ]; then
    fail "the runtime stage installs development packages: ${dev[*]} (only shared libraries belong there)"
  else
    pass "runtime stage installs shared libraries only: ${runtime[*]}"
  fi
  packaging/setup.sh install "${runtime[@]}"

  ldd_out=$(ldd "$bin" 2>&1) || { fail "ldd $bin: $ldd_out"; ldd_out=""; }
  notfound=$(grep 'not found' <<<"$ldd_out" || true)
  if [ -n "$notfound" ]; then
    fail "ldd $bin cannot resolve: $(tr -s ' \t\n' ' ' <<<"$notfound")"
  elif [ -n "$ldd_out" ]; then
    pass "ldd resolves every library of $bin ($(grep -c '=>' <<<"$ldd_out") libraries)"
  fi

  # The files ldd resolved: "name => path (addr)", and the loader as
  # "path (addr)".
  mapfile -t resolved < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out")
  owners "${resolved[@]}"

  # Direct libraries: from a listed package (or the C library's).
  mapfile -t needed < <(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  bad=()
  for lib in "${needed[@]}"; do
    path=""
    for r in "${resolved[@]}"; do [ "${r##*/}" != "$lib" ] || { path=$r; break; }; done
    pkg=$( [ -n "$path" ] && owner "$path" || echo "?")
    contains "$pkg" "${runtime[@]}" "${base_packages[@]}" || bad+=("$lib ($path, package $pkg)")
  done
  if [ ${#needed[@]} -eq 0 ]; then
    fail "$bin links no shared library: not a cgo build with FFmpeg"
  elif [ ${#bad[@]} -gt 0 ]; then
    fail "libraries $bin links that no package of the runtime stage's list ships: ${bad[*]}; add their packages to the Dockerfile's runtime apt-get install"
  else
    pass "each library $bin links comes from a listed package: ${needed[*]}"
  fi

  # Every resolved library: from the list's dependency closure.
  depends() {
    apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${runtime[@]}" 2>/dev/null | grep -v '^ ' || true
  }
  closure=$(depends)
  if [ -z "$closure" ] && [ "$(id -u)" = 0 ]; then
    # Everything was installed, so setup.sh did not update the package
    # lists, and a machine may come with none.
    apt-get update >/dev/null
    closure=$(depends)
  fi
  if [ -z "$closure" ]; then
    fail "apt-cache depends knows none of ${runtime[*]}: run apt-get update"
  else
    mapfile -t closure < <(sort -u <<<"$closure")
    bad=()
    for path in "${resolved[@]}"; do
      pkg=$(owner "$path" || echo "?")
      contains "$pkg" "${closure[@]}" || bad+=("$path (package $pkg)")
    done
    if [ ${#bad[@]} -gt 0 ]; then
      fail "libraries ldd resolves that the runtime stage's packages do not pull in: ${bad[*]}"
    else
      pass "every library ldd resolves comes from the runtime packages' dependencies"
    fi
  fi
fi

tmp=$(mktemp -d)
bridge_pid=""
trap '[ -z "$bridge_pid" ] || kill "$bridge_pid" 2>/dev/null; rm -rf "$tmp"' EXIT

# --- 2. the Docker HEALTHCHECK ------------------------------------------
# healthcheck_cmd prints the words of the HEALTHCHECK's CMD ["a", "b"],
# one a line.
healthcheck_cmd() {
  awk '
    /^HEALTHCHECK/ { on = 1 }
    !on { next }
    { cmd = cmd " " $0 }
    /\\$/ { sub(/\\$/, "", cmd); next }
    {
      on = 0
      sub(/.*CMD[ \t]*\[[ \t]*"/, "", cmd); sub(/"[ \t]*\][ \t]*$/, "", cmd)
      n = split(cmd, w, /"[ \t]*,[ \t]*"/)
      for (i = 1; i <= n; i++) print w[i]
    }
  ' Dockerfile
}
# free_ports N prints N distinct ports in 20000-29999 that no TCP or UDP
# socket of this machine uses now.
free_ports() {
  local used p got=()
  used=$(ss -Htuan | awk '{ n = split($5, a, ":"); print a[n] }' | sort -u)
  while [ ${#got[@]} -lt "$1" ]; do
    p=$((20000 + RANDOM % 10000))
    grep -qx "$p" <<<"$used" || contains "$p" "${got[@]}" || got+=("$p")
  done
  echo "${got[@]}"
}
stop_bridge() {
  [ -n "$bridge_pid" ] || return 0
  kill "$bridge_pid" 2>/dev/null || true
  wait "$bridge_pid" 2>/dev/null || true
  bridge_pid=""
}

mapfile -t hc < <(healthcheck_cmd)
if [ ${#hc[@]} -lt 2 ] || [ "${hc[0]}" != /usr/local/bin/bridge ] ||
  ! [[ ${hc[*]} =~ http://127\.0\.0\.1:([0-9]+)/ ]]; then
  fail "the Dockerfile's HEALTHCHECK is not CMD [\"/usr/local/bin/bridge\", ..., \"http://127.0.0.1:PORT/...\"]: ${hc[*]:-none}"
else
  hc_port=${BASH_REMATCH[1]}
  healthy=""
  for try in 1 2 3; do # a port taken between free_ports and the bind: again
    read -r http rtmp srt udp < <(free_ports 4)
    printf 'listen:\n  http: "127.0.0.1:%s"\n  rtmp: "127.0.0.1:%s"\n  srt: "127.0.0.1:%s"\n  webrtc_udp: "127.0.0.1:%s"\nroutes:\n  - path: "{path...}"\n    ingest: [whip]\n' \
      "$http" "$rtmp" "$srt" "$udp" >"$tmp/bridge.yaml"
    "$bin" -config "$tmp/bridge.yaml" >"$tmp/bridge.log" 2>&1 &
    bridge_pid=$!
    run_hc=("$bin" "${hc[@]:1}")
    run_hc=("${run_hc[@]/:$hc_port\//:$http/}")
    for _ in $(seq 50); do # up within 10 s, or it has failed
      kill -0 "$bridge_pid" 2>/dev/null || break
      if "${run_hc[@]}" >"$tmp/hc.out" 2>&1; then
        healthy=yes
        break
      fi
      sleep 0.2
    done
    # Only a bridge that exited (a port taken) is worth another try.
    [ -z "$healthy" ] && ! kill -0 "$bridge_pid" 2>/dev/null || break
    stop_bridge
  done
  if [ -z "$healthy" ]; then
    stop_bridge
    fail "HEALTHCHECK ${run_hc[*]} never answered healthy: $(cat "$tmp/hc.out"); bridge log: $(tail -5 "$tmp/bridge.log")"
  else
    stop_bridge
    if "${run_hc[@]}" >"$tmp/hc.out" 2>&1; then
      fail "HEALTHCHECK ${run_hc[*]} says healthy with the bridge stopped"
    else
      pass "HEALTHCHECK ${hc[*]}: healthy while the bridge runs, unhealthy once it stopped"
    fi
  fi
fi

# The config docker-compose.yml's header shows (from its "at least" line
# to the next empty comment line) passes bridge -check.
awk '/^# .*at least/ { on = 1; next } on && /^#[ \t]*$/ { if (seen) exit; next }
  on { seen = 1; sub(/^#  ?/, ""); print }' docker-compose.yml >"$tmp/compose.yaml"
if ! [ -s "$tmp/compose.yaml" ]; then
  fail "docker-compose.yml: no config example after an \"at least\" line"
elif out=$(PUBLIC_IP=203.0.113.7 TURN_SECRET=0123456789abcdef "$bin" -check -config "$tmp/compose.yaml" 2>&1); then
  pass "docker-compose.yml's config example passes bridge -check"
else
  fail "docker-compose.yml's config example: $out"
fi

# --- 3. the systemd unit ------------------------------------------------
# verify needs ExecStart's binary to exist: the unit as installed, with
# BIN's path in place of /usr/local/bin/bridge.
sed "s|/usr/local/bin/bridge|$bin|g" packaging/bridge.service >"$tmp/bridge.service"
if ! grep -q "^ExecStart=$bin " "$tmp/bridge.service"; then
  fail "packaging/bridge.service: no ExecStart=/usr/local/bin/bridge ..."
elif out=$(systemd-analyze verify --man=no "$tmp/bridge.service" 2>&1) && [ -z "$out" ]; then
  pass "systemd-analyze verify packaging/bridge.service"
else
  fail "systemd-analyze verify packaging/bridge.service: ${out:-exit status non-zero}"
fi
if out=$(systemd-analyze security --offline=yes --threshold="$max_exposure" "$tmp/bridge.service" 2>&1); then
  pass "packaging/bridge.service hardening: $(grep -o 'exposure level.*' <<<"$out")"
else
  fail "packaging/bridge.service hardening: exposure above $((max_exposure / 10)).$((max_exposure % 10)): $(grep -E '^✗|exposure level' <<<"$out")"
fi

echo "packaging: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
