#!/bin/sh
# Run the black-box test suite (tests/blackbox/*.test.mjs, node:test) against the binaries in
# BIN_DIR (bin for the optimised build, build/san/bin for the sanitized one).
#   scripts/blackbox.sh BIN_DIR
# Installs the suite's npm dependencies from the committed lockfile first, when node_modules is
# missing or the lockfile changed since the last install. Test files run one at a time (each
# starts its own servers; running them side by side on 2 cores only makes timing tests flaky).
# node's own test report goes to stdout unchanged, so CI reads its closing summary.
set -eu

name=blackbox
# shellcheck source=scripts/test-env.sh
. "$(dirname "$0")/test-env.sh"

cd "$root"
# The glob names exactly the suite's files, including ones added later (lib/ holds helpers).
# --test-timeout is a backstop (per test, and per file) so that a hung test fails instead of
# stalling CI; the slowest test here takes seconds.
exec node --test --test-concurrency=1 --test-timeout=180000 tests/blackbox/*.test.mjs
