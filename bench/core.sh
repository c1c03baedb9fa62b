#!/bin/sh
# Side-by-side HTTP benchmark of one trackd worker against one nginx worker answering
# `return 200 "1"`, both pinned to CPU 0 with the load generator (wrk) pinned to CPU 1, in the
# same run, interleaved, so a noisy shared machine affects both alike. Also measures memory: an
# idle worker's resident set, and the cost of 10,000 idle keep-alive connections.
#
# wrk does not look at response bodies, so the script checks that the event is really stored:
# a probe request must be answered "1", and after the runs each trackd's log must hold at least
# as many records as requests were answered. Besides requests/s it reports the CPU time the
# server's worker process (all threads, user + system) spent per request: on a shared machine
# that figure moves much less than the wall-clock rate.
#
#   bench/core.sh [DURATION_S] [ROUNDS]      (defaults 10 s, 3 rounds; figures are medians; CONNS=N for other than 64 connections)
#
# BIN (default bin) holds the trackd measured. BASE_BIN, if set, holds a second trackd (say, a
# build of the previous commit) measured in the same rounds, for a before/after comparison that
# sees the same machine.
#
# Writes bench/results/core-<date>.md and prints it.
set -eu
cd "$(dirname "$0")/.."
DUR=${1:-10}
ROUNDS=${2:-3}
CONNS_SET=${CONNS:+1}
CONNS=${CONNS:-64} # wrk connections (the issue's figure is at 64)
IDLE=10000
BIN=${BIN:-bin}
BASE_BIN=${BASE_BIN:-}
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

# Ports: the first free one from a base each, so a server left running by someone else on the
# machine is never measured by mistake.
free_port() {
	p=$1
	while ss -ltnH "sport = :$p" | grep -q .; do p=$((p + 1)); done
	echo "$p"
}
next_port=18001
NGINX_PORT=$(free_port 18080)

# A realistic ~300-byte event, base64 in the query string as the legacy spec sends it. Its time
# must be recent: /track refuses events more than 5 days old (answered 200 "0", nothing stored).
event='{"event":"Viewed page","properties":{"token":"bench-token-0123456789","distinct_id":"user-4242-abcdef","time":'"$(date +%s)"',"$insert_id":"bench0000000000001","$browser":"Chrome","$os":"Linux","$current_url":"https://shop.example.com/products/42?ref=newsletter","plan":"pro","cart_items":3,"utm_source":"newsletter"}}'
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
        listen 127.0.0.1:$NGINX_PORT backlog=4096;
        location / { default_type text/plain; return 200 "1"; }
    }
}
NGX
taskset -c 0 nginx -p "$work" -c "$work/nginx.conf" &
pids="$pids $!"

worker_pid() { # the child of the master listening on port $1
	master=$(ss -ltnpH "sport = :$1" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)
	child=$(pgrep -P "$master" | head -1)
	echo "${child:-$master}"
}
metric() { # the value of metric $2 (summed over its labels) of trackd on port $1, or 0
	curl -fs "http://127.0.0.1:$1/metrics" |
		awk -v m="$2" '$1 == m || index($1, m "{") == 1 {s += $NF} END {printf "%.0f\n", s}'
}
records() { metric "$1" trackd_log_records_total; } # records in trackd's log on port $1

# The trackd servers measured: "name durability bin port worker-pid records-before", one a line.
: >"$work/servers"
start_trackd() { # $1 = name, $2 = durability, $3 = bin directory
	port=$(free_port "$next_port")
	next_port=$((port + 1))
	taskset -c 0 "$3/trackd" --workers 1 --listen "127.0.0.1:$port" --durability "$2" \
		--data-dir "$data/$1" --log-level warn --max-connections 20000 &
	started=$!
	pids="$pids $started"
	for _ in $(seq 100); do
		kill -0 "$started" 2>/dev/null || break
		if curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then
			answer=$(curl -fs "http://127.0.0.1:$port$path" || true)
			if [ "$answer" != 1 ]; then
				echo "trackd $1 does not store the benchmark event (answer: '$answer')" >&2
				exit 1
			fi
			echo "$1 $2 $3 $port $(worker_pid "$port") $(records "$port")" >>"$work/servers"
			return 0
		fi
		sleep 0.1
	done
	echo "trackd $1 did not start" >&2
	exit 1
}
start_trackd write write "$BIN"
start_trackd fsync fsync "$BIN"
if [ -n "$BASE_BIN" ]; then
	start_trackd base-write write "$BASE_BIN"
	start_trackd base-fsync fsync "$BASE_BIN"
fi
sleep 0.5
server() { awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$work/servers"; } # field $2 of $1
nginx_worker=$(pgrep -P "$(cat "$work/nginx.pid")" | head -1)
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # user + system, all threads
hz=$(getconf CLK_TCK)

run_wrk() { # $1 = port, $2 = server pid; prints requests/s, p99, CPU us per request, requests
	c0=$(cpu_ticks "$2")
	taskset -c 1 wrk -t1 -c$CONNS -d"${DUR}s" --latency "http://127.0.0.1:$1$path" >"$work/wrk.out" 2>&1
	c1=$(cpu_ticks "$2")
	rps=$(awk '/^Requests\/sec/ {print $2}' "$work/wrk.out")
	p99=$(awk '$1 == "99%" {print $2}' "$work/wrk.out")
	n=$(awk '/requests in/ {print $1}' "$work/wrk.out")
	us=$(echo "$c0 $c1 $hz $n" | awk '{printf "%.1f", ($2 - $1) / $3 * 1e6 / $4}')
	errs=$(awk '/Non-2xx|Socket errors/' "$work/wrk.out" | tr '\n' ' ')
	echo "$rps $p99 $us $n ${errs:-none}"
}

idle_rss_write=$(rss_kib "$(server write 5)")
idle_rss_nginx=$(rss_kib "$nginx_worker")
fsync_port=$(server fsync 4)
fsyncs0=$(metric "$fsync_port" trackd_log_fsync_seconds_count)
fsync_s0=$(metric "$fsync_port" trackd_log_fsync_seconds_sum)

: >"$work/rows"
for r in $(seq "$ROUNDS"); do
	targets="nginx:$NGINX_PORT:$nginx_worker"
	while read -r name _ _ port pid _; do
		targets="$targets $name:$port:$pid"
	done <"$work/servers"
	# Each round starts one server later, so none is always measured first or last (a machine
	# that slows down or speeds up during a round would favour one otherwise).
	set -- $targets
	k=$(((r - 1) % $#))
	i=0 later="" first=""
	for t in "$@"; do
		if [ $i -lt $k ]; then later="$later $t"; else first="$first $t"; fi
		i=$((i + 1))
	done
	targets="$first $later"
	for target in $targets; do
		name=${target%%:*}
		rest=${target#*:}
		set -- $(run_wrk "${rest%%:*}" "${rest#*:}")
		echo "$r $name $*" | tee -a "$work/rows" >&2
	done
done

# Every answered request of the runs must have been stored (wrk may count a few less answers
# than were sent at the end of a run, never more).
: >"$work/stored"
while read -r name _ _ port _ rec0; do
	answered=$(awk -v n="$name" '$2 == n {s += $6} END {print s + 0}' "$work/rows")
	stored=$(($(records "$port") - rec0))
	echo "$name $stored $answered" >>"$work/stored"
	if [ "$stored" -lt "$answered" ]; then
		echo "trackd $name stored $stored events for $answered answered requests" >&2
		exit 1
	fi
done <"$work/servers"
stored_of() { awk -v n="$1" -v f="$2" '$1 == n {print $f}' "$work/stored"; }
# Group commit: records per fdatasync, and the mean fdatasync time, of the fsync runs.
fsyncs=$(($(metric "$fsync_port" trackd_log_fsync_seconds_count) - fsyncs0))
fsync_ms=$(echo "$fsync_s0 $(metric "$fsync_port" trackd_log_fsync_seconds_sum) $fsyncs" |
	awk '{if ($3 > 0) printf "%.2f", ($2 - $1) * 1000 / $3; else print "n/a"}')
per_fsync=$(echo "$(stored_of fsync 2) $fsyncs" |
	awk '{if ($2 > 0) printf "%.1f", $1 / $2; else print "n/a"}')

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
med_rps() { awk -v n="$1" '$2 == n {print $3}' "$work/rows" | median; }
med_us() { awk -v n="$1" '$2 == n {print $5}' "$work/rows" | median; }
ratio() { echo "$1 $2" | awk '{printf "%.2f", $1 / $2}'; }
# The median over the rounds of one server's requests/s divided by another's in the same round.
round_ratio() {
	awk -v a="$1" -v b="$2" '$2 == a {x[$1] = $3} $2 == b {y[$1] = $3}
		END {for (r in x) if (y[r] > 0) printf "%.4f\n", x[r] / y[r]}' "$work/rows" |
		median | awk '{printf "%.2f", $1}'
}
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
set -- $(idle_cost "$(server write 4)" "$(server write 5)" "$path")
t_before=$1 t_after=$2
set -- $(idle_cost "$NGINX_PORT" "$nginx_worker" /)
n_before=$1 n_after=$2

out=bench/results/core-$(date -u +%Y%m%d-%H%M).md
mkdir -p bench/results
{
	echo "# Core HTTP benchmark, $(date -u +%Y-%m-%dT%H:%MZ)"
	echo
	echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), kernel $(uname -r), data dir on $(df -T "$data" | awk 'NR==2 {print $2}'), load average $(cut -d' ' -f1-3 /proc/loadavg)."
	bins=""
	if [ "$BIN" != bin ]; then bins="BIN=$BIN "; fi
	echo "Command: \`${CONNS_SET:+CONNS=$CONNS }$bins${BASE_BIN:+BASE_BIN=$BASE_BIN }bench/core.sh $DUR $ROUNDS\` (wrk -t1 -c$CONNS -d${DUR}s on CPU 1; one server worker on CPU 0; GET /track with a $(printf '%s' "$event" | wc -c)-byte event as base64, keep-alive)."
	echo
	echo "| round | server | requests/s | p99 | CPU us/request | errors |"
	echo "|---|---|---|---|---|---|"
	awk '{e=""; for (i=7;i<=NF;i++) e=e" "$i; printf "| %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, e}' "$work/rows"
	echo
	echo "| median | requests/s | ratio | CPU us/request |"
	echo "|---|---|---|---|"
	echo "| nginx return 200 | $nginx_rps | 1.00 | $(med_us nginx) |"
	echo "| trackd write | $write_rps | $(ratio "$write_rps" "$nginx_rps") x nginx | $(med_us write) |"
	echo "| trackd fsync | $fsync_rps | $(ratio "$fsync_rps" "$write_rps") x trackd write | $(med_us fsync) |"
	if [ -n "$BASE_BIN" ]; then
		bw=$(med_rps base-write)
		bf=$(med_rps base-fsync)
		echo "| base trackd write | $bw | $(ratio "$bw" "$nginx_rps") x nginx | $(med_us base-write) |"
		echo "| base trackd fsync | $bf | $(ratio "$bf" "$bw") x base write | $(med_us base-fsync) |"
	fi
	echo
	echo "Median of the rounds' own ratios: write $(round_ratio write nginx) x nginx, fsync $(round_ratio fsync write) x write."
	echo
	echo "CPU us/request: nginx $(med_us nginx), trackd write $(med_us write) ($(ratio "$(med_us nginx)" "$(med_us write)") x nginx's requests per CPU-second), fsync $(med_us fsync) ($(ratio "$(med_us write)" "$(med_us fsync)") x write's)."
	while read -r name stored answered; do
		echo "Stored by $name: $stored records for $answered answered requests."
	done <"$work/stored"
	echo "Group commit (fsync runs): $fsyncs fdatasyncs, $per_fsync records per fdatasync, mean fdatasync $fsync_ms ms."
	echo
	echo "| memory | trackd worker | nginx worker |"
	echo "|---|---|---|"
	echo "| idle RSS | $idle_rss_write KiB | $idle_rss_nginx KiB |"
	echo "| RSS with $IDLE idle keep-alive connections | $t_after KiB | $n_after KiB |"
	echo "| per idle connection | $(echo "$t_before $t_after $IDLE" | awk '{printf "%.2f KiB", ($2-$1)/$3}') | $(echo "$n_before $n_after $IDLE" | awk '{printf "%.2f KiB", ($2-$1)/$3}') |"
} >"$out"
cat "$out"
