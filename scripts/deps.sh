#!/bin/sh
# Install the Debian packages trackd needs, and only those that are missing.
# Called by the Makefile (`make deps`, `make run`, `make test`); safe to run again.
#   scripts/deps.sh build   libraries and tools to build and run trackd (+ nginx)
#   scripts/deps.sh test    the above, plus what the test suites and benchmarks use
set -eu

build_pkgs="build-essential pkg-config libuv1-dev libjansson-dev libbsd-dev zlib1g-dev node-llhttp nginx"
# prometheus: only for its promtool, which checks conf/prometheus-alerts.yml (alerts.test.mjs).
test_pkgs="$build_pkgs chromium clang libclang-rt-14-dev libfuzzer-14-dev nodejs npm wrk valgrind util-linux e2fsprogs python3-eventlet prometheus"

case "${1:-build}" in
build) want=$build_pkgs ;;
test) want=$test_pkgs ;;
*) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	# nodejs/npm may come from outside Debian's archive (already on PATH): keep those.
	case $p in
	nodejs) command -v node >/dev/null 2>&1 && continue ;;
	npm) command -v npm >/dev/null 2>&1 && continue ;;
	esac
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
