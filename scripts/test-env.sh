# Sourced by scripts/blackbox.sh and scripts/browser-tests.sh: checks the binaries in BIN_DIR,
# sets root and bin_dir, and installs tests/'s npm dependencies from the committed lockfile when
# node_modules is missing or the lockfile changed since the last install. `name` is the caller's
# name for messages. playwright-core never downloads a browser (Debian's chromium is used).
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
		echo "$name: $bin_dir/$b is missing (build it first)" >&2
		exit 2
	fi
done

tests=$root/tests
stamp=$tests/node_modules/.lockfile.sha256
want=$(sha256sum "$tests/package-lock.json" | cut -d' ' -f1)
if [ ! -d "$tests/node_modules" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
	echo "$name: npm ci in tests/" >&2
	(cd "$tests" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error) >&2
	echo "$want" >"$stamp"
fi
TRACKD_BIN_DIR=$bin_dir
export TRACKD_BIN_DIR
