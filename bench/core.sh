#!/bin/sh
# Side-by-side HTTP benchmark of one trackd worker against one nginx worker answering
# `return 200 "1"`, both pinned to CPU 0 with the load generator (wrk) pinned to CPU 1, in the
# same run, interleaved, so a noisy shared machine affects both alike. Also measures memory: an
# idle worker's resident set, and the cost of 10,000 idle keep-alive connections.
#
#   bench/core.sh [DURATION_S] [ROUNDS]      (defaults 10 s, 3 rounds; figures are medians)
#
# Writes bench/results/core-<date>.md and prints it.
set -eu
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS=64
IDLE=10000
BIN=${BIN:-bin}
IDLE_BIN=${IDLE_BIN:-build/rel/bench/idle_conns}
work=$(mktemp -d "${TMPDIR:-/tmp}/trackd-bench.XXXXXX")
# The data dir must be on a real disk: fsync on tmpfs would cost nothing.
data=$(mktemp -d "$PWD/build/bench-data.XXXXXX")
pids=""
cleanup() {
	for p in $pids; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$work" "$data"
}
trap cleanup EXIT INT TERM

# A realistic ~300-byte event, base64 in the query string as the legacy spec sends it.
event='{"event":"Viewed page","properties":{"token":"bench-token-0123456789","distinct_id":"user-4242-abcdef","time":1764000000,"$insert_id":"bench0000000000001","$browser":"Chrome","$os":"Linux","$current_url":"https://shop.example.com/products/42?ref=newsletter","plan":"pro","cart_items":3,"utm_source":"newsletter"}}'
b64=$(printf '%s' "$event" | base64 -w0 | sed 's/+/%2B/g; s/\//%2F/g; s/=/%3D/g')
path="/track?data=$b64"

cat >"$work/nginx.conf" <<NGX
worker_processes 1;
worker_cpu_affinity 01;
daemon off;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 16384; }
worker_rlimit_nofile 20000;
http {
    access_log off;
    client_body_temp_path $work/body;
    proxy_temp_path $work/proxy;
    fastcgi_temp_path $work/fastcgi;
    uwsgi_temp_path $work/uwsgi;
    scgi_temp_path $work/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {
        listen 127.0.0.1:18080 backlog=4096;
        location / { default_type text/plain; return 200 "1"; }
    }
}
NGX
taskset -c 0 nginx -p "$work" -c "$work/nginx.conf" &
pids="$pids $!"

start_trackd() { # $1 = durability, $2 = port
	taskset -c 0 "$BIN/trackd" --workers 1 --listen "127.0.0.1:$2" --durability "$1" \
		--data-dir "$data/$1" --log-level warn --max-connections 20000 &
	pids="$pids $!"
	for _ in $(seq 100); do
		curl -fs "http://127.0.0.1:$2/healthz" >/dev/null 2>&1 && return 0
		sleep 0.1
	done
	echo "trackd ($1) did not start" >&2
	exit 1
}
start_trackd write 18001
start_trackd fsync 18002
sleep 0.5

worker_pid() { # the child of the master listening on port $1
	master=$(ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
	child=$(pgrep -P "$master" | head -1)
	echo "${child:-$master}"
}
nginx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

run_wrk() { # $1 = port; prints requests/s and p99 (ms)
	taskset -c 1 wrk -t1 -c$CONNS -d"${DUR}s" --latency "http://127.0.0.1:$1$path" >"$work/wrk.out" 2>&1
	rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
	p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
	errs=$(awk '/Non-2xx|Socket errors/' "$work/wrk.out" | tr '\n' ' ')
	echo "$rps $p99 ${errs:-none}"
}

idle_rss_write=$(rss_kib "$(worker_pid 18001)")
idle_rss_nginx=$(rss_kib "$nginx_worker")

: >"$work/rows"
for r in $(seq "$ROUNDS"); do
	for target in nginx:18080 write:18001 fsync:18002; do
		name=${target%%:*}
		port=${target##*:}
		set -- $(run_wrk "$port")
		echo "$r $name $1 $2 ${3:-}" | tee -a "$work/rows" >&2
	done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
med_rps() { awk -v n="$1" '$2 == n {print $3}' "$work/rows" | median; }
nginx_rps=$(med_rps nginx)
write_rps=$(med_rps write)
fsync_rps=$(med_rps fsync)

# Idle connections: RSS before and after opening $IDLE keep-alive connections, one request each.
idle_cost() { # $1 = port, $2 = pid, $3 = path
	before=$(rss_kib "$2")
	"$IDLE_BIN" 127.0.0.1 "$1" $IDLE "$3" >"$work/idle.out" &
	ip=$!
	for _ in $(seq 600); do grep -q ready "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
	sleep 1
	after=$(rss_kib "$2")
	kill "$ip"; wait "$ip" 2>/dev/null || true
	echo "$before $after"
}
set -- $(idle_cost 18001 "$(worker_pid 18001)" "$path")
t_before=$1 t_after=$2
set -- $(idle_cost 18080 "$nginx_worker" /)
n_before=$1 n_after=$2

out=bench/results/core-$(date -u +%Y%m%d-%H%M).md
mkdir -p bench/results
{
	echo "# Core HTTP benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), data dir on $(df -T "$data" | awk 'NR==2 {print $2}')."
	echo "Command: \`bench/core.sh $DUR $ROUNDS\` (wrk -t1 -c$CONNS -d${DUR}s on CPU 1; one server worker on CPU 0; GET /track with a $(printf '%s' "$event" | wc -c)-byte event as base64, keep-alive)."
	echo
	echo "| round | server | requests/s | p99 | errors |"
	echo "|---|---|---|---|---|"
	awk '{e=""; for (i=5;i<=NF;i++) e=e" "$i; printf "| %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, e}' "$work/rows"
	echo
	echo "| median requests/s | value | ratio |"
	echo "|---|---|---|"
	echo "| nginx return 200 | $nginx_rps | 1.00 |"
	echo "| trackd write | $write_rps | $(echo "$write_rps $nginx_rps" | awk '{printf "%.2f x nginx", $1/$2}') |"
	echo "| trackd fsync | $fsync_rps | $(echo "$fsync_rps $write_rps" | awk '{printf "%.2f x trackd write", $1/$2}') |"
	echo
	echo "| memory | trackd worker | nginx worker |"
	echo "|---|---|---|"
	echo "| idle RSS | $idle_rss_write KiB | $idle_rss_nginx KiB |"
	echo "| RSS with $IDLE idle keep-alive connections | $t_after KiB | $n_after KiB |"
	echo "| per idle connection | $(echo "$t_before $t_after $IDLE" | awk '{printf "%.2f KiB", ($2-$1)/$3}') | $(echo "$n_before $n_after $IDLE" | awk '{printf "%.2f KiB", ($2-$1)/$3}') |"
} >"$out"
cat "$out"
