#!/usr/bin/env bash
# Runs every fuzz target of the module, one at a time, for FUZZTIME each
# (default 60s), and fails if any of them fails. Targets are discovered
# with `go test -list`, so a new Fuzz function is picked up without
# editing this file. A crash leaves its input under the package's
# testdata/fuzz/FuzzName/: commit it as a seed with the fix.
#
#   FUZZTIME=10s test/fuzz.sh           every target for 10 s
#   FUZZ=TS test/fuzz.sh                only targets whose name matches TS
#   FUZZFLAGS=-parallel=1 test/fuzz.sh  extra go test flags
#
# New interesting inputs are minimized for 5 s at most (go test's default
# is 60 s, during which no new input runs: most of a 60 s FUZZTIME).
set -uo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-60s}
FUZZ=${FUZZ:-.}
FUZZFLAGS=${FUZZFLAGS:-}

# `go test -list` prints a package's matching tests, one a line, then a
# line "ok <package> <time>" (or "? <package> [no test files]", or
# "FAIL <package> [build failed]" after the compiler's errors). A package
# that does not build counts as failed; the others still run.
list=$("$GO" test -list '^Fuzz' ./... 2>&1)
targets=()
names=()
failed=()
while read -r first pkg _; do
	case "$first" in
	Fuzz*) names+=("$first") ;;
	ok)
		for n in "${names[@]}"; do
			[[ $n =~ $FUZZ ]] && targets+=("$pkg $n")
		done
		names=()
		;;
	FAIL)
		[ -n "$pkg" ] && failed+=("$pkg: listing its fuzz targets failed")
		names=()
		;;
	*) names=() ;;
	esac
done <<<"$list"
if [ ${#failed[@]} -gt 0 ]; then
	grep -v -e '^Fuzz' -e '^ok' -e '^?' <<<"$list" >&2
fi

if [ ${#targets[@]} -eq 0 ] && [ ${#failed[@]} -eq 0 ]; then
	echo "fuzz: no fuzz target matches FUZZ=$FUZZ" >&2
	exit 1
fi

for t in "${targets[@]}"; do
	read -r pkg name <<<"$t"
	echo "=== fuzz $name ($pkg) for $FUZZTIME"
	# shellcheck disable=SC2086 # FUZZFLAGS is a list of flags
	if ! "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 5s $FUZZFLAGS "$pkg"; then
		failed+=("$pkg: $name")
	fi
done

echo
echo "fuzz: ${#targets[@]} targets for $FUZZTIME each, ${#failed[@]} failed"
for f in "${failed[@]}"; do
	echo "FAILED: $f"
done
[ ${#failed[@]} -eq 0 ]
