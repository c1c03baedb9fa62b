#!/bin/sh
# Feed for the demo page (web/demo/): every INTERVAL seconds, the last N records trackd stored,
# read from the log with `trackctl tail` (so the page shows what is really durable, not what the
# browser believes it sent), written as one JSON array to OUT, which nginx serves as /feed.json.
# OUT is replaced atomically (temp file + rename in the same directory): nginx never serves half
# a file. `make run` starts it next to trackd; it runs until killed.
#   scripts/demo-feed.sh [options]
# Options (defaults in brackets):
#   --data-dir DIR     trackd's data directory                         [./data]
#   --out FILE         where the feed goes                             [./run/nginx/demo/feed.json]
#   --lines N          how many of the newest records                  [20]
#   --interval SEC     seconds between updates (fractions allowed)     [1]
#   --trackctl PATH    the trackctl binary                             [<repo>/bin/trackctl]
#   --once             write the feed once and exit (status 1 if trackctl failed)
set -eu

usage() {
	sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
data=./data
out=./run/nginx/demo/feed.json
lines=20
interval=1
trackctl=$root/bin/trackctl
once=0

while [ $# -gt 0 ]; do
	case $1 in
	--data-dir) data=${2:?}; shift 2 ;;
	--out) out=${2:?}; shift 2 ;;
	--lines) lines=${2:?}; shift 2 ;;
	--interval) interval=${2:?}; shift 2 ;;
	--trackctl) trackctl=${2:?}; shift 2 ;;
	--once) once=1; shift ;;
	-h | --help) usage ;;
	*) echo "demo-feed: unknown argument $1" >&2; usage ;;
	esac
done
case $lines in
'' | *[!0-9]*) echo "demo-feed: bad --lines '$lines'" >&2; exit 2 ;;
esac

mkdir -p "$(dirname "$out")"
tmp=$out.tmp.$$
trap 'rm -f "$tmp" "$tmp.nd"; exit 0' INT TERM HUP
trap 'rm -f "$tmp" "$tmp.nd"' EXIT

last_error=""
while :; do
	if "$trackctl" tail -q -n "$lines" --data-dir "$data" >"$tmp.nd" 2>"$tmp"; then
		# NDJSON to one array: every line is a complete JSON object.
		{
			printf '['
			awk 'NR > 1 { printf "," } { printf "%s", $0 }' "$tmp.nd"
			printf ']\n'
		} >"$tmp"
		mv "$tmp" "$out"
		last_error=""
	else
		# Keep the last good feed; say what is wrong once, not every second.
		err=$(cat "$tmp")
		if [ "$err" != "$last_error" ]; then
			echo "demo-feed: trackctl tail failed: $err" >&2
			last_error=$err
		fi
		[ "$once" -eq 1 ] && exit 1
	fi
	[ "$once" -eq 1 ] && exit 0
	sleep "$interval"
done
