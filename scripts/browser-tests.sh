#!/bin/sh
# Run the browser test suite (tests/browser/*.test.mjs, node:test): trackd.js, the demo page and
# the official mixpanel-browser library in a real headless Chromium (Debian's `chromium`, from
# scripts/deps.sh test; never a downloaded browser), against the binaries in BIN_DIR behind nginx.
#   scripts/browser-tests.sh BIN_DIR
# Installs the npm dependencies of tests/ from the committed lockfile first when node_modules is
# missing or the lockfile changed (the same check as scripts/blackbox.sh). Test files run one at
# a time: each starts its own trackd, nginx and browser.
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
		echo "browser-tests: $bin_dir/$b is missing (build it first)" >&2
		exit 2
	fi
done
chromium=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	echo "browser-tests: $chromium is missing (scripts/deps.sh test installs Debian's chromium)" >&2
	exit 2
fi

tests=$root/tests
stamp=$tests/node_modules/.lockfile.sha256
want=$(sha256sum "$tests/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$tests/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "browser-tests: npm ci in tests/" >&2
	# playwright-core never downloads a browser itself; say so anyway.
	(cd "$tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
fi

cd "$root"
TRACKD_BIN_DIR=$bin_dir
export TRACKD_BIN_DIR
# --test-timeout is a backstop so that a hung browser fails the run instead of stalling CI.
exec node --test --test-concurrency=1 --test-timeout=300000 tests/browser/*.test.mjs
