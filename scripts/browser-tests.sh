#!/bin/sh
# Run the browser test suite (tests/browser/*.test.mjs, node:test): trackd.js, the demo page and
# the official mixpanel-browser library in a real headless Chromium (Debian's `chromium`, from
# scripts/deps.sh test; never a downloaded browser), against the binaries in BIN_DIR behind nginx.
#   scripts/browser-tests.sh BIN_DIR
# Installs the npm dependencies of tests/ from the committed lockfile first when node_modules is
# missing or the lockfile changed (the same check as scripts/blackbox.sh). Test files run one at
# a time: each starts its own trackd, nginx and browser.
set -eu

name=browser-tests
# shellcheck source=scripts/test-env.sh
. "$(dirname "$0")/test-env.sh"

chromium=${CHROMIUM_BIN:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	echo "browser-tests: $chromium is missing (scripts/deps.sh test installs Debian's chromium)" >&2
	exit 2
fi

cd "$root"
# --test-timeout is a backstop so that a hung browser fails the run instead of stalling CI.
exec node --test --test-concurrency=1 --test-timeout=300000 tests/browser/*.test.mjs
