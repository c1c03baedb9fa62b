#!/bin/sh
# Write a complete nginx.conf for running nginx as a normal process in front of trackd.
#   scripts/gen-nginx.sh [options] PREFIX
# writes PREFIX/nginx.conf from conf/nginx.conf.in and creates PREFIX/logs and PREFIX/tmp (pid,
# logs and temp files all live under PREFIX). Then:
#   nginx -p PREFIX -c PREFIX/nginx.conf -e stderr -g 'daemon off;'
# Options (defaults in brackets):
#   --listen HOST:PORT      where nginx listens                         [127.0.0.1:8080]
#   --upstream HOST:PORT    trackd's --worker-listen (worker 1's port)  [127.0.0.1:8001]
#   --workers N             trackd's worker count: one upstream server per worker
#                           [the number of online cores, as trackd's default]
#   --web DIR               the web/ directory (dist/ and demo/ are served)  [<repo>/web]
#   --max-body SIZE         client_max_body_size, = trackd's max_body_bytes  [2m]
#   --inflight N            API requests in flight to trackd before nginx answers 503
#                           + Retry-After itself  [1000 per worker]
set -eu

usage() {
	awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2
	exit 2
}

root=$(cd "$(dirname "$0")/.." && pwd)
listen=127.0.0.1:8080
upstream=127.0.0.1:8001
workers=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc)
web=$root/web
max_body=2m
inflight=""
prefix=""

while [ $# -gt 0 ]; do
	case $1 in
	--listen) listen=${2:?}; shift 2 ;;
	--upstream) upstream=${2:?}; shift 2 ;;
	--workers) workers=${2:?}; shift 2 ;;
	--web) web=${2:?}; shift 2 ;;
	--max-body) max_body=${2:?}; shift 2 ;;
	--inflight) inflight=${2:?}; shift 2 ;;
	-h | --help) usage ;;
	-*) echo "gen-nginx: unknown option $1" >&2; usage ;;
	*) [ -z "$prefix" ] || usage; prefix=$1; shift ;;
	esac
done
[ -n "$prefix" ] || usage

case $workers in
'' | *[!0-9]*) echo "gen-nginx: bad --workers '$workers'" >&2; exit 2 ;;
esac
[ "$workers" -ge 1 ] || { echo "gen-nginx: --workers must be at least 1" >&2; exit 2; }
case $max_body in
*[!0-9kKmMgG]* | '') echo "gen-nginx: bad --max-body '$max_body' (e.g. 2m)" >&2; exit 2 ;;
esac
up_host=${upstream%:*}
up_port=${upstream##*:}
case $up_port in
'' | *[!0-9]*) echo "gen-nginx: bad --upstream '$upstream' (want HOST:PORT)" >&2; exit 2 ;;
esac
if [ $((up_port + workers - 1)) -gt 65535 ]; then
	echo "gen-nginx: $workers workers from port $up_port go past 65535" >&2
	exit 2
fi

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
case $web in
/*) ;;
*) web=$(cd "$web" && pwd) ;;
esac
mkdir -p "$prefix/logs" "$prefix/tmp/client_body" "$prefix/tmp/proxy" "$prefix/tmp/fastcgi" \
	"$prefix/tmp/uwsgi" "$prefix/tmp/scgi"

# nginx started as root switches its workers to an unprivileged user; they must be able to
# write the temp directories. As a normal user the directive would only draw a warning.
user_directive="# (not root: nginx runs as the user who starts it)"
if [ "$(id -u)" -eq 0 ]; then
	user_directive="user nobody nogroup;"
	chown -R nobody:nogroup "$prefix/tmp"
fi

[ -n "$inflight" ] || inflight=$((workers * 1000))
case $inflight in
'' | *[!0-9]*) echo "gen-nginx: bad --inflight '$inflight'" >&2; exit 2 ;;
esac

servers=$(i=0; while [ $i -lt "$workers" ]; do
	printf '        server %s:%d max_fails=0;\n' "$up_host" $((up_port + i))
	i=$((i + 1))
done)

out=$prefix/nginx.conf
tmp=$out.tmp.$$
# awk, not sed: the values contain '/' and the server list spans lines.
awk -v prefix="$prefix" -v listen="$listen" -v web="$web" -v max_body="$max_body" -v inflight="$inflight" \
	-v user_directive="$user_directive" -v servers="$servers" '
	{
		if ($0 == "@UPSTREAM_SERVERS@") { print servers; next }
		gsub(/@PREFIX@/, prefix); gsub(/@LISTEN@/, listen); gsub(/@WEB_ROOT@/, web)
		gsub(/@MAX_BODY@/, max_body); gsub(/@API_INFLIGHT@/, inflight); gsub(/@USER_DIRECTIVE@/, user_directive)
		print
	}' "$root/conf/nginx.conf.in" >"$tmp"
mv "$tmp" "$out"
echo "$out"
