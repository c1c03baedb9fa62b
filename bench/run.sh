#!/bin/sh
# `make bench`: the standard benchmark set, in well under 10 minutes. Each part writes its own
# results file under bench/results/ and prints it; bench/*.md keep the recorded figures.
set -eu
cd "$(dirname "$0")/.."
B=build/rel/bench
mkdir -p bench/results
stamp=$(date -u +%Y%m%d-%H%M)

echo "== coroutine switch"
[ -x $B/coro_bench ] && $B/coro_bench | tee bench/results/coro-$stamp.txt
echo "== event decode + validation"
[ -x $B/event_bench ] && $B/event_bench | tee bench/results/event-$stamp.txt
echo "== log writer, no HTTP"
[ -x $B/log_bench ] && $B/log_bench | tee bench/results/log-$stamp.txt
echo "== HTTP: trackd vs nginx return 200, one core each"
bench/core.sh "${BENCH_SECONDS:-10}" "${BENCH_ROUNDS:-3}"
if [ -x bench/scenarios.sh ]; then
	echo "== load scenarios (trackbench)"
	bench/scenarios.sh
fi
