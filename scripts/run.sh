#!/usr/bin/env bash
# `make run`: trackd behind nginx, in the foreground, for this checkout.
#   trackd: shared socket 127.0.0.1:8000, worker i alone on 127.0.0.1:800i, one worker per core,
#           log under ./data, config ./run/trackd.conf (created once; edit it, then
#           `kill -HUP $(cat data/trackd.pid)` to reload)
#   nginx:  127.0.0.1:8080, config generated into ./run/nginx/ (logs there too), proxying the
#           API to the worker ports and serving web/ itself
# Ctrl-C (or SIGTERM, or the terminal closing) stops both gracefully. If either one dies, the
# other is stopped and the script exits non-zero. Override with TRACKD_WORKERS, TRACKD_LISTEN,
# TRACKD_WORKER_LISTEN, NGINX_LISTEN.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

workers=${TRACKD_WORKERS:-$(getconf _NPROCESSORS_ONLN)}
listen=${TRACKD_LISTEN:-127.0.0.1:8000}
worker_listen=${TRACKD_WORKER_LISTEN:-127.0.0.1:8001}
nginx_listen=${NGINX_LISTEN:-127.0.0.1:8080}
run=$root/run
conf=$run/trackd.conf
prefix=$run/nginx

for cmd in bin/trackd nginx; do
	if ! command -v "$cmd" >/dev/null 2>&1 && [ ! -x "$cmd" ]; then
		echo "run: $cmd is missing (make deps all)" >&2
		exit 1
	fi
done
mkdir -p "$run" data

if [ ! -f "$conf" ]; then
	cat >"$conf" <<'EOF'
# trackd config for `make run` (scripts/run.sh writes it once; edit freely, then reload with
# kill -HUP $(cat data/trackd.pid)). listen, worker_listen, workers and data_dir come from the
# command line, to match the generated nginx config. Every option: conf/trackd.conf.

# nginx runs on this host: believe its X-Forwarded-For / X-Real-IP, and nobody else's.
trusted_proxy 127.0.0.1/32

log_level info
durability fsync
EOF
fi

trackd_args=(--config "$conf" --listen "$listen" --worker-listen "$worker_listen"
	--workers "$workers" --data-dir "$root/data")
bin/trackd "${trackd_args[@]}" -t >/dev/null
scripts/gen-nginx.sh --listen "$nginx_listen" --upstream "$worker_listen" --workers "$workers" \
	--web "$root/web" "$prefix" >/dev/null
nginx -q -t -p "$prefix" -c "$prefix/nginx.conf" -e stderr

trackd_pid=""
nginx_pid=""
feed_pid=""
stopping=0

stop_all() {
	stopping=1
	if [ -n "$feed_pid" ]; then kill "$feed_pid" 2>/dev/null || true; fi
	if [ -n "$nginx_pid" ]; then kill -QUIT "$nginx_pid" 2>/dev/null || true; fi
	if [ -n "$trackd_pid" ]; then kill -TERM "$trackd_pid" 2>/dev/null || true; fi
	local status=0
	if [ -n "$trackd_pid" ]; then wait "$trackd_pid" || status=$?; fi
	if [ -n "$nginx_pid" ]; then wait "$nginx_pid" || true; fi
	trackd_pid=""
	nginx_pid=""
	return $status
}

# shellcheck disable=SC2317 # called from the trap below
on_signal() {
	echo >&2
	echo "run: stopping trackd and nginx" >&2
	if stop_all; then
		echo "run: stopped" >&2
		exit 0
	fi
	echo "run: trackd did not stop cleanly" >&2
	exit 1
}
trap on_signal INT TERM HUP

# Job control puts trackd and nginx in process groups of their own: a Ctrl-C reaches this script
# alone, which stops them gracefully (nginx takes SIGINT as "stop at once", SIGQUIT as "drain").
set -m

bin/trackd "${trackd_args[@]}" &
trackd_pid=$!
nginx -p "$prefix" -c "$prefix/nginx.conf" -e stderr -g 'daemon off;' &
nginx_pid=$!
# The demo page shows what trackd really stored: the newest records, refreshed every second.
mkdir -p "$prefix/demo"
scripts/demo-feed.sh --data-dir "$root/data" --out "$prefix/demo/feed.json" &
feed_pid=$!

# Wait until nginx answers and a worker answers behind it.
host=${nginx_listen%:*}
port=${nginx_listen##*:}
for _ in $(seq 100); do
	if (exec 3<>"/dev/tcp/$host/$port" && printf 'GET /healthz HTTP/1.0\r\n\r\n' >&3 &&
		head -c 12 <&3 | grep -q ' 200') 2>/dev/null; then
		break
	fi
	if ! kill -0 "$trackd_pid" 2>/dev/null || ! kill -0 "$nginx_pid" 2>/dev/null; then
		break
	fi
	sleep 0.1
done

if kill -0 "$trackd_pid" 2>/dev/null && kill -0 "$nginx_pid" 2>/dev/null; then
	cat >&2 <<EOF

trackd is running (master pid $trackd_pid, $workers worker(s)), nginx pid $nginx_pid
  demo page           http://$nginx_listen/
  JavaScript library  http://$nginx_listen/js/ (web/dist, cached as immutable)
  API through nginx   http://$nginx_listen/track  /engage  /groups  /import
  health              http://$nginx_listen/healthz
  trackd directly     http://$listen/  (worker i alone: port ${worker_listen##*:}+i-1)
  data                $root/data   (trackctl cat --data-dir data)
  nginx logs          $prefix/logs/
  reload config       kill -HUP \$(cat data/trackd.pid)
Ctrl-C stops both.

EOF
fi

# Whichever exits first ends the run: a dead trackd or nginx is not a working setup.
set +e
wait -n "$trackd_pid" "$nginx_pid"
status=$?
set -e
[ "$stopping" -eq 1 ] && exit 0
if ! kill -0 "$trackd_pid" 2>/dev/null; then
	echo "run: trackd exited (status $status); stopping nginx" >&2
	trackd_pid=""
else
	echo "run: nginx exited (status $status); stopping trackd" >&2
	nginx_pid=""
fi
stop_all || true
exit 1
