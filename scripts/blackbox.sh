#!/bin/sh
# Run the black-box test suite (tests/blackbox/*.test.mjs, node:test) against the binaries in
# BIN_DIR (bin for the optimised build, build/san/bin for the sanitized one).
#   scripts/blackbox.sh BIN_DIR
# Installs the suite's npm dependencies from the committed lockfile first, when node_modules is
# missing or the lockfile changed since the last install. Test files run one at a time (each
# starts its own servers; running them side by side on 2 cores only makes timing tests flaky).
# node's own test report goes to stdout unchanged, so CI reads its closing summary.
set -eu

if [ $# -ne 1 ]; then
	echo "usage: $0 BIN_DIR" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
case $1 in
/*) bin_dir=$1 ;;
*) bin_dir=$(pwd)/$1 ;;
esac
for b in trackd trackctl; do
	if [ ! -x "$bin_dir/$b" ]; then
		echo "blackbox: $bin_dir/$b is missing (build it first)" >&2
		exit 2
	fi
done

tests=$root/tests
stamp=$tests/node_modules/.lockfile.sha256
want=$(sha256sum "$tests/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$tests/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "blackbox: npm ci in tests/" >&2
	(cd "$tests" && npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
fi

cd "$root"
TRACKD_BIN_DIR=$bin_dir
export TRACKD_BIN_DIR
# The glob names exactly the suite's files, including ones added later (lib/ holds helpers).
# --test-timeout is a backstop (per test, and per file) so that a hung test fails instead of
# stalling CI; the slowest test here takes seconds.
exec node --test --test-concurrency=1 --test-timeout=180000 tests/blackbox/*.test.mjs
