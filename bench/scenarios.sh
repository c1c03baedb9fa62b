#!/usr/bin/env bash
# Load scenarios for trackd, driven by bin/trackbench, and the side-by-side comparison with the
# servers of bench/peers/. Run by bench/run.sh (`make bench`) with the defaults below, which
# keep the standard set to under five minutes; every knob is an environment variable.
#
#   bench/scenarios.sh [SCENARIO...]        (default: all)
#
#   throughput  one trackd worker on CPU 0, load on CPU 1: single-event GETs and 50-event form
#               POSTs, keep-alive, durability none / write / fsync (in `all`, these are rows of
#               `compare`, measured once)
#   compare     side by side, one server core each, interleaved rounds, ratios to nginx
#               `return 200`: nginx return 200, nginx access_log of the query string, nginx +
#               the Python eventlet design of 2011, trackd (none/write/fsync) directly, trackd
#               (write/fsync) behind nginx; then a concurrency sweep (SWEEP) drawn as an SVG
#   users       USERS (20,000) connections held open to trackd (2 workers) by trackbench over
#               several processes, sending USERS_RATE requests/s in all; success rate, latency,
#               resident memory of every trackd process
#   spike       the 2012 post-mortem: 100 connections to SPIKE_TO within one second through
#               nginx (conf/nginx.conf.in via scripts/gen-nginx.sh, adapted to a single client
#               address) to trackd (2 workers, fsync); memory of every trackd and nginx process
#               sampled every 100 ms; a small open-loop "canary" client measures what an
#               ordinary user sees meanwhile; both ledgers verified against the log (nothing
#               acknowledged may be missing)
#   spike-capped  the same with nginx's in-flight cap (503 + Retry-After beyond it, now in the
#               template: 1,000 per worker) set to SPIKE_CAP instead; not in the standard set
#   long        LONG_SECONDS at 70 % of the fsync capacity measured by `compare`/`throughput`
#               (or LONG_RATE); memory and descriptors sampled every 5 s, p99 every second.
#               The standard set runs 60 s; the full run is  LONG_SECONDS=300 bench/scenarios.sh long
#
# Results: bench/results/scenarios-<stamp>.jsonl (one record per trackbench run, holding
# trackbench's --json output; see bench/report.py), scenarios-<stamp>.md (machine, commands,
# tables) and sweep-<stamp>.svg (bench/chart.py). Everything listens on 127.0.0.1 only, on
# ports BENCH_PORT_BASE..+99 (19100); trackd's data goes under BENCH_DATA_ROOT (./build), which
# must be a real disk for the fsync figures to mean anything, and is deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

BIN=${BIN:-bin}
PY=${PY:-/usr/bin/python3}             # Debian's python: python3-eventlet lives there
RUN_SECONDS=${RUN_SECONDS:-1.5}        # measured seconds of each comparison run
WARMUP_SECONDS=${WARMUP_SECONDS:-0.5}  # load before measuring, each run
ROUNDS=${ROUNDS:-3}                    # interleaved rounds of the comparison table
TABLE_CONNS=${TABLE_CONNS:-64}         # connections of the comparison table
SWEEP=${SWEEP:-"16 64 256 1024"}       # connections of the sweep (chart)
SWEEP_ROUNDS=${SWEEP_ROUNDS:-1}        # rounds of the sweep points other than TABLE_CONNS
USERS=${USERS:-20000}
USERS_PROCS=${USERS_PROCS:-2}          # trackbench processes (at most 20,000 files each)
USERS_RATE=${USERS_RATE:-2000}         # requests/s in all: each user sends one every 10 s
USERS_SECONDS=${USERS_SECONDS:-10}
USERS_RAMP=${USERS_RAMP:-3}            # seconds over which the connections are opened
USERS_WARMUP=${USERS_WARMUP:-6}        # not measured: the ramp and a few seconds after it
USERS_MAXCONN=${USERS_MAXCONN:-15000}  # trackd --max-connections, per worker
SPIKE_FROM=${SPIKE_FROM:-100}
SPIKE_TO=${SPIKE_TO:-18000}
SPIKE_SECONDS=${SPIKE_SECONDS:-6}
SPIKE_PROCS=${SPIKE_PROCS:-2}
SPIKE_MAXCONN=${SPIKE_MAXCONN:-10000}  # trackd --max-connections per worker behind nginx
SPIKE_QUEUE=${SPIKE_QUEUE:-64m}        # trackd --queue-max-bytes (its default: 64m)
SPIKE_CAP=${SPIKE_CAP:-2000}           # spike-capped: nginx admits at most this many API requests at once
LONG_SECONDS=${LONG_SECONDS:-60}
LONG_RATE=${LONG_RATE:-}               # requests/s; default 70 % of the measured capacity
LONG_CONNS=${LONG_CONNS:-256}          # open-loop connection pool
BENCH_PORT_BASE=${BENCH_PORT_BASE:-19100}
BENCH_DATA_ROOT=${BENCH_DATA_ROOT:-$root/build}
RESULTS=${RESULTS:-bench/results}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(all)
for s in "${scenarios[@]}"; do
	case $s in
	all | throughput | compare | users | spike | spike-capped | long) ;;
	-h | --help) sed -n '2,34p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "scenarios: unknown scenario '$s' (all throughput compare users spike spike-capped long)" >&2; exit 2 ;;
	esac
done
if [ "${scenarios[*]}" = all ]; then scenarios=(compare users spike long); fi

for f in "$BIN/trackd" "$BIN/trackbench" "$BIN/trackctl"; do
	[ -x "$f" ] || { echo "scenarios: $f missing (make all)" >&2; exit 1; }
done
command -v nginx >/dev/null || { echo "scenarios: nginx missing (make deps)" >&2; exit 1; }
if [ ! -x "$PY" ]; then PY=python3; fi

mkdir -p "$RESULTS" "$BENCH_DATA_ROOT"
stamp=$(date -u +%Y%m%d-%H%M%S)
out=$RESULTS/scenarios-$stamp.jsonl
md=$RESULTS/scenarios-$stamp.md
svg=$RESULTS/sweep-$stamp.svg
work=$(mktemp -d "${TMPDIR:-/tmp}/trackd-scen.XXXXXX")
data=$(mktemp -d "$BENCH_DATA_ROOT/scen-data.XXXXXX")
mkdir -p "$work/runs" "$work/bin"
# Run a snapshot of the binaries: a rebuild of the checkout during the run (other people work
# in it) must neither break a run half-way nor mix two builds in one set of figures.
cp "$BIN/trackd" "$BIN/trackbench" "$BIN/trackctl" "$work/bin/"
BIN=$work/bin
: >"$out"

# ---- process bookkeeping: we stop only what we started, by pid.
pids=()
declare -A PORT ROOTS
cleanup() {
	local p
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work" "$data"
	# A run that failed before its first record leaves no empty results file behind.
	[ -s "$out" ] || rm -f "$out"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "scenarios: $*" >&2; }

port_busy() { ss -ltnH "sport = :$1" | grep -q .; }

wait_http() { # URL [seconds]
	for _ in $(seq $((${2:-10} * 10))); do
		curl -fs -o /dev/null --max-time 1 "$1" && return 0
		sleep 0.1
	done
	log "no answer from $1"
	return 1
}

# stop PID: graceful stop of a server we started, then forget it.
stop() {
	kill -TERM "$1" 2>/dev/null || true
	wait "$1" 2>/dev/null || true
	local keep=() p
	for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
	pids=("${keep[@]}")
}

check_port() {
	if port_busy "$1"; then
		log "port $1 is in use (set BENCH_PORT_BASE to another free range)"
		exit 1
	fi
}

# start_trackd NAME PORT DURABILITY WORKERS CPUS [trackd options...]: sets LAST_PID.
start_trackd() {
	local name=$1 port=$2 mode=$3 workers=$4 cpus=$5
	shift 5
	check_port "$port"
	mkdir -p "$data/$name"
	taskset -c "$cpus" "$BIN/trackd" --listen "127.0.0.1:$port" --workers "$workers" \
		--data-dir "$data/$name" --durability "$mode" --log-level warn "$@" \
		2>>"$work/$name.err" &
	LAST_PID=$!
	pids+=("$LAST_PID")
	wait_http "http://127.0.0.1:$port/healthz" || { cat "$work/$name.err" >&2; exit 1; }
}

# start_nginx NAME TEMPLATE PORT [UPSTREAM_PORT...]: a 1-worker nginx on CPU 0 from a template of
# bench/peers/; sets LAST_PID.
start_nginx() {
	local name=$1 tmpl=$2 port=$3 prefix=$work/nginx-$1 ups="" p
	shift 3
	check_port "$port"
	mkdir -p "$prefix/tmp"
	for p in "$@"; do ups="$ups        server 127.0.0.1:$p;\n"; done
	sed -e "s|@PREFIX@|$prefix|g" -e "s|@PORT@|$port|g" -e "s|@WORKERS@|1|g" \
		-e "s|@LOG@|$data/$name-access.log|g" -e "s|@UPSTREAMS@|$ups|" \
		"bench/peers/$tmpl" >"$prefix/nginx.conf"
	taskset -c 0 nginx -q -p "$prefix" -c "$prefix/nginx.conf" -e stderr 2>>"$work/$name.err" &
	LAST_PID=$!
	pids+=("$LAST_PID")
	wait_http "http://127.0.0.1:$port/healthz" || { cat "$work/$name.err" >&2; exit 1; }
}

# start_eventlet NAME PORT: one eventlet process on CPU 0; sets LAST_PID.
start_eventlet() {
	check_port "$2"
	taskset -c 0 "$PY" bench/peers/eventlet_track.py --listen "127.0.0.1:$2" \
		--out "$data/$1.out" 2>>"$work/$1.err" &
	LAST_PID=$!
	pids+=("$LAST_PID")
	wait_http "http://127.0.0.1:$2/healthz" || { cat "$work/$1.err" >&2; exit 1; }
}

payload_args() {
	case $1 in
	get1) echo "--shape get --batch 1" ;;      # legacy GET /track?data=<base64>, one event
	post50) echo "--shape form-b64 --batch 50" ;; # the browser library's batch
	esac
}

# ---- the machine, once per results file.
fsync_probe() { # median and p99 of write(4 KiB) + fdatasync on the data disk, 200 times
	"$PY" - "$data/fsync-probe" <<'PY'
import os, statistics, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
buf = b"x" * 4096
t = []
for _ in range(200):
    a = time.perf_counter()
    os.write(fd, buf)
    os.fdatasync(fd)
    t.append((time.perf_counter() - a) * 1000)
os.close(fd)
os.unlink(sys.argv[1])
t.sort()
print(f"median {statistics.median(t):.3f} ms, p99 {t[197]:.3f} ms, max {t[-1]:.3f} ms (200 x write 4 KiB + fdatasync)")
PY
}

machine_info() {
	local fstype
	fstype=$(df -T "$data" | awk 'NR == 2 {print $2}')
	if [ "$fstype" = tmpfs ]; then
		log "WARNING: $data is on tmpfs: fsync costs nothing there; set BENCH_DATA_ROOT"
	fi
	echo "# Load scenarios, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
	echo
	echo "- machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
	echo "- data dir: $fstype ($(df -h "$data" | awk 'NR == 2 {print $1}')); fsync probe: $(fsync_probe)"
	echo "- load average at start: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared: compare ratios, not absolutes)"
	echo "- nginx $(nginx -v 2>&1 | sed 's|.*/||'), python $("$PY" -c 'import platform, eventlet; print(platform.python_version(), "eventlet", eventlet.__version__)' 2>/dev/null || echo '(no eventlet)')"
	echo "- command: \`$(for v in RUN_SECONDS WARMUP_SECONDS ROUNDS TABLE_CONNS SWEEP SWEEP_ROUNDS USERS USERS_RATE USERS_SECONDS SPIKE_TO SPIKE_SECONDS SPIKE_MAXCONN SPIKE_QUEUE SPIKE_CAP LONG_SECONDS; do printf '%s="%s" ' "$v" "${!v}"; done)bench/scenarios.sh ${scenarios[*]}\`"
	echo
}

# run_one SCENARIO SYSTEM PAYLOAD CONNS ROUND: one closed-loop trackbench run of RUN_SECONDS on
# CPU 1 against SYSTEM, its servers' memory sampled every 100 ms; appends a record to $out.
run_one() {
	local scen=$1 sys=$2 payload=$3 conns=$4 round=$5
	local base="$work/runs/$scen-$sys-$payload-c$conns-r$round" pm rc=0
	# shellcheck disable=SC2086
	taskset -c 1 "$PY" bench/procmon.py ${ROOTS[$sys]} >"$base.mem" &
	pm=$!
	# shellcheck disable=SC2046
	taskset -c 1 "$BIN/trackbench" --target "http://127.0.0.1:${PORT[$sys]}" -c "$conns" \
		-d "$RUN_SECONDS" --warmup "$WARMUP_SECONDS" $(payload_args "$payload") --json -q \
		>"$base.tb" 2>"$base.err" || rc=$?
	kill -TERM "$pm"
	wait "$pm" || true
	if [ ! -s "$base.tb" ]; then
		log "trackbench failed against $sys (status $rc):"
		cat "$base.err" >&2
		return 1
	fi
	"$PY" bench/report.py record --scenario "$scen" --system "$sys" --payload "$payload" \
		--connections "$conns" --round "$round" --tb "$base.tb" --mem "$base.mem" >>"$out"
	tail -n1 "$out" | "$PY" bench/report.py line >&2
}

# ---- compare (and throughput): every system on CPU 0, interleaved rounds.
ALL_SYSTEMS=(nginx200 nginxlog eventlet trackd-none trackd-write trackd-fsync nginx+trackd-write
	nginx+trackd-fsync)
TRACKD_SYSTEMS=(trackd-none trackd-write trackd-fsync)

start_system() { # NAME
	local b=$BENCH_PORT_BASE tp
	case $1 in
	nginx200) start_nginx "$1" nginx-return200.conf.in $((b + 0)); PORT[$1]=$((b + 0)) ;;
	nginxlog) start_nginx "$1" nginx-accesslog.conf.in $((b + 1)); PORT[$1]=$((b + 1)) ;;
	eventlet)
		start_eventlet eventlet-app $((b + 50))
		tp=$LAST_PID
		start_nginx "$1" nginx-proxy.conf.in $((b + 2)) $((b + 50))
		PORT[$1]=$((b + 2))
		ROOTS[$1]="$1=$LAST_PID $1=$tp"
		return ;;
	trackd-none | trackd-write | trackd-fsync)
		local mode=${1#trackd-} off
		case $mode in none) off=10 ;; write) off=11 ;; fsync) off=12 ;; esac
		start_trackd "$1" $((b + off)) "$mode" 1 0
		PORT[$1]=$((b + off)) ;;
	nginx+trackd-write | nginx+trackd-fsync)
		local mode=${1#nginx+trackd-} off
		case $mode in write) off=0 ;; fsync) off=1 ;; esac
		# trackd's shared port is unused here: nginx talks to the worker's own port.
		start_trackd "$1" $((b + 13 + off)) "$mode" 1 0 --worker-listen "127.0.0.1:$((b + 20 + off))"
		tp=$LAST_PID
		start_nginx "$1" nginx-proxy.conf.in $((b + 3 + off)) $((b + 20 + off))
		PORT[$1]=$((b + 3 + off))
		ROOTS[$1]="$1=$LAST_PID $1=$tp"
		return ;;
	esac
	ROOTS[$1]="$1=$LAST_PID"
}

scen_matrix() { # SCENARIO SYSTEM...
	local scen=$1 s r p c
	shift
	log "$scen: starting ${*}"
	for s in "$@"; do start_system "$s"; done
	sleep 0.5
	for r in $(seq "$ROUNDS"); do
		for p in get1 post50; do
			for s in "$@"; do
				# nginx logs only the query string: a POST body would be acknowledged, not stored.
				[ "$p" = post50 ] && [ "$s" = nginxlog ] && continue
				run_one "$scen" "$s" "$p" "$TABLE_CONNS" "$r"
			done
		done
	done
	if [ "$scen" = compare ]; then
		for r in $(seq "$SWEEP_ROUNDS"); do
			for c in $SWEEP; do
				[ "$c" = "$TABLE_CONNS" ] && continue
				for s in "$@"; do run_one "$scen" "$s" get1 "$c" "$r"; done
			done
		done
	fi
	for s in "$@"; do
		for p in ${ROOTS[$s]}; do stop "${p#*=}"; done
	done
	# The logs written so far are no longer needed, and they are the bulk of the disk used.
	rm -rf "${data:?}"/trackd-* "${data:?}"/nginx+* "$data"/*.out "$data"/*-access.log
}

# ---- users: USERS connections held open, a modest rate over them.
scen_users() {
	local port=$((BENCH_PORT_BASE + 30)) tp pm base=$work/runs/users rc=0
	log "users: trackd, 2 workers, $USERS connections from $USERS_PROCS processes, $USERS_RATE req/s"
	start_trackd users "$port" fsync 2 0,1 --max-connections "$USERS_MAXCONN" \
		--worker-listen "127.0.0.1:$((port + 1))"
	tp=$LAST_PID
	sleep 0.5
	"$PY" bench/procmon.py --interval 0.5 --psi --series "$base.series" "trackd=$tp" >"$base.mem" &
	pm=$!
	sleep 1
	# The users come to three ports: trackd's shared one and each worker's own. Not for trackd's
	# sake but for the client's: a loopback connect() searches the ephemeral port range for a
	# port free towards that destination, and with 20,000 connections to one port (of 28,000
	# ephemeral ports here) each search costs ~300 us, which stalls the load generator itself for
	# seconds. Three destinations keep every search short.
	"$BIN/trackbench" --target "http://127.0.0.1:$port" --target "http://127.0.0.1:$((port + 1))" \
		--target "http://127.0.0.1:$((port + 2))" --procs "$USERS_PROCS" \
		--ramp "100:$USERS:$USERS_RAMP" --rate "$USERS_RATE" -d "$USERS_SECONDS" \
		--warmup "$USERS_WARMUP" --shape get --batch 1 --json >"$base.tb" 2>"$base.progress" || rc=$?
	kill -TERM "$pm"
	wait "$pm" || true
	[ -s "$base.tb" ] || { log "trackbench failed (status $rc)"; cat "$base.progress" >&2; return 1; }
	"$PY" bench/report.py record --scenario users --system trackd-fsync --payload get1 \
		--connections "$USERS" --tb "$base.tb" --mem "$base.mem" --series "$base.series" \
		--progress "$base.progress" --note "max_connections_per_worker=$USERS_MAXCONN" >>"$out"
	stop "$tp"
	rm -rf "${data:?}/users"
}

# ---- spike: the 2012 post-mortem, through the deployed nginx configuration.
scen_spike() { # deployed|capped
	local variant=$1 b tp np pm cp rc=0 base=$work/runs/spike-$1
	# Each variant on ports of its own: the first one's closed connections linger in TIME_WAIT.
	b=$((BENCH_PORT_BASE + $([ "$1" = deployed ] && echo 40 || echo 60)))
	local prefix=$work/spike-nginx-$1 conf
	log "spike ($variant nginx config): nginx (2 workers) -> trackd (2 workers, fsync), $SPIKE_FROM -> $SPIKE_TO connections in 1 s"
	start_trackd "spike-$variant" $((b + 1)) fsync 2 0,1 --worker-listen "127.0.0.1:$((b + 2))" \
		--max-connections "$SPIKE_MAXCONN" --queue-max-bytes "$SPIKE_QUEUE"
	tp=$LAST_PID
	check_port "$b"
	conf=$(scripts/gen-nginx.sh --listen "127.0.0.1:$b" --upstream "127.0.0.1:$((b + 2))" \
		--workers 2 --web "$root/web" "$prefix")
	# Three departures from the deployed configuration, all because the load comes from this
	# one machine: every client has the address 127.0.0.1, so the per-address limit (128) would
	# turn the spike into 429s at once; one process may hold 20,000 files here, so each worker
	# gets room for ~9,000 clients plus their upstream connections instead of ~4,000; and nginx
	# also listens on two more ports, so that the client's connect()s (a search of the ephemeral
	# ports towards each destination) stay cheap enough to open 18,000 connections in a second.
	sed -i -e 's/limit_conn per_ip [0-9]*;/limit_conn per_ip 60000;/' \
		-e 's/worker_connections [0-9]*;/worker_connections 19500;/' \
		-e 's/worker_rlimit_nofile [0-9]*;/worker_rlimit_nofile 20000;/' \
		-e "s/listen 127.0.0.1:$b backlog=4096;/& listen 127.0.0.1:$((b + 7)) backlog=4096; listen 127.0.0.1:$((b + 8)) backlog=4096;/" \
		"$conf"
	grep -q 'limit_conn per_ip 60000;' "$conf" && grep -q 'worker_connections 19500;' "$conf" &&
		grep -q "listen 127.0.0.1:$((b + 8))" "$conf" ||
		{ log "conf/nginx.conf.in changed: cannot adapt it for the spike"; return 1; }
	if [ "$variant" = capped ]; then
		# The template now carries the in-flight cap measured here first as a proposal
		# (gen-nginx.sh --inflight, 1,000 per worker by default): this variant pins it to
		# SPIKE_CAP, with as many idle upstream connections, to compare caps.
		sed -i -e "s|limit_conn api_inflight [0-9]*;|limit_conn api_inflight $SPIKE_CAP;|" \
			-e "s|^        keepalive [0-9]*;|        keepalive $SPIKE_CAP;|" "$conf"
		grep -q "limit_conn api_inflight $SPIKE_CAP;" "$conf" ||
			{ log "conf/nginx.conf.in changed: cannot set SPIKE_CAP"; return 1; }
	fi
	check_port $((b + 7))
	check_port $((b + 8))
	nginx -q -p "$prefix" -c "$conf" -e stderr -g 'daemon off;' 2>>"$prefix.err" &
	np=$!
	pids+=("$np")
	wait_http "http://127.0.0.1:$b/healthz" || { cat "$prefix.err" >&2; return 1; }
	"$PY" bench/procmon.py --interval 0.1 --series "$base.series" "trackd=$tp" "nginx=$np" \
		>"$base.mem" &
	pm=$!
	# The canary: 20 ordinary users at 200 requests/s in all, open loop, from before the spike
	# to after it: the latency an admitted request sees, and whether it is admitted at all.
	"$BIN/trackbench" --target "http://127.0.0.1:$b" -c 20 --rate 200 \
		-d $((SPIKE_SECONDS + 3)) --shape get --batch 1 --ledger "$base.canary.ledger" --json -q \
		>"$base.canary.tb" 2>"$base.canary.err" &
	cp=$!
	sleep 1
	"$BIN/trackbench" --target "http://127.0.0.1:$b" --target "http://127.0.0.1:$((b + 7))" \
		--target "http://127.0.0.1:$((b + 8))" --procs "$SPIKE_PROCS" \
		--ramp "$SPIKE_FROM:$SPIKE_TO:1" -d "$SPIKE_SECONDS" --shape get --batch 1 \
		--ledger "$base.flood.ledger" --json >"$base.flood.tb" 2>"$base.flood.progress" || rc=$?
	wait "$cp" || true
	sleep 0.5
	kill -TERM "$pm"
	wait "$pm" || true
	# Verify after a graceful stop, so the log is complete and closed.
	stop "$np"
	stop "$tp"
	[ -s "$base.flood.tb" ] || { log "trackbench failed (status $rc)"; cat "$base.flood.progress" >&2; return 1; }
	"$BIN/trackbench" verify --ledger "$base.flood.ledger" --data-dir "$data/spike-$variant" \
		--trackctl "$BIN/trackctl" --json >"$base.flood.verify" || true
	"$BIN/trackbench" verify --ledger "$base.canary.ledger" --data-dir "$data/spike-$variant" \
		--trackctl "$BIN/trackctl" --json >"$base.canary.verify" || true
	"$PY" bench/report.py record --scenario spike --system "$variant" --payload get1 \
		--connections "$SPIKE_TO" --role flood --tb "$base.flood.tb" --mem "$base.mem" \
		--series "$base.series" --progress "$base.flood.progress" --verify "$base.flood.verify" \
		--errlog "$prefix/logs/error.log" \
		--note "max_connections_per_worker=$SPIKE_MAXCONN" --note "queue_max_bytes=$SPIKE_QUEUE" >>"$out"
	"$PY" bench/report.py record --scenario spike --system "$variant" --payload get1 \
		--connections 20 --role canary --tb "$base.canary.tb" --verify "$base.canary.verify" >>"$out"
	cp "$conf" "$RESULTS/spike-nginx-$variant-$stamp.conf"
	rm -rf "${data:?}/spike-$variant"
}

# ---- long: a fixed rate for LONG_SECONDS.
scen_long() {
	local port=$((BENCH_PORT_BASE + 45)) tp pm cap rate rc=0 base=$work/runs/long
	start_trackd long "$port" fsync 1 0
	tp=$LAST_PID
	if [ -n "$LONG_RATE" ]; then
		rate=$LONG_RATE
		cap=0
	else
		cap=$("$PY" bench/report.py median "$out" trackd-fsync get1 "$TABLE_CONNS" requests_per_s \
			2>/dev/null) || cap=""
		if [ -z "$cap" ]; then
			# No capacity measured in this run: measure it now, on this instance.
			log "long: measuring capacity (fsync, get1, $TABLE_CONNS connections, 5 s)"
			taskset -c 1 "$BIN/trackbench" --target "http://127.0.0.1:$port" -c "$TABLE_CONNS" \
				-d 5 --warmup 1 --shape get --batch 1 --json -q >"$base.cal.tb"
			cap=$("$PY" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["rates"]["requests_per_s"]))' "$base.cal.tb")
		fi
		rate=$((cap * 7 / 10))
	fi
	log "long: $LONG_SECONDS s at $rate requests/s (capacity $cap), $LONG_CONNS connections"
	taskset -c 1 "$PY" bench/procmon.py --interval 5 --fds --psi --series "$base.series" "trackd=$tp" \
		>"$base.mem" &
	pm=$!
	taskset -c 1 "$BIN/trackbench" --target "http://127.0.0.1:$port" -c "$LONG_CONNS" \
		--rate "$rate" -d "$LONG_SECONDS" --shape get --batch 1 --json \
		>"$base.tb" 2>"$base.progress" || rc=$?
	kill -TERM "$pm"
	wait "$pm" || true
	[ -s "$base.tb" ] || { log "trackbench failed (status $rc)"; cat "$base.progress" >&2; return 1; }
	"$PY" bench/report.py record --scenario long --system trackd-fsync --payload get1 \
		--connections "$LONG_CONNS" --tb "$base.tb" --mem "$base.mem" --series "$base.series" \
		--progress "$base.progress" --note "capacity=$cap" >>"$out"
	stop "$tp"
	rm -rf "${data:?}/long"
}

t0=$(date +%s)
machine_info >"$work/machine.md"
cat "$work/machine.md" >&2
for s in "${scenarios[@]}"; do
	case $s in
	throughput) scen_matrix throughput "${TRACKD_SYSTEMS[@]}" ;;
	compare) scen_matrix compare "${ALL_SYSTEMS[@]}" ;;
	users) scen_users ;;
	spike) scen_spike deployed ;;
	spike-capped) scen_spike capped ;;
	long) scen_long ;;
	esac
	log "$s done at $(($(date +%s) - t0)) s"
done

{
	cat "$work/machine.md"
	"$PY" bench/report.py tables "$out"
	for v in deployed capped; do
		[ -f "$RESULTS/spike-nginx-$v-$stamp.conf" ] || continue
		echo
		echo "The $v spike ran nginx from scripts/gen-nginx.sh with limit_conn per_ip 60000, worker_connections 19500, worker_rlimit_nofile 20000 and two more listening ports$([ $v = capped ] && echo ", plus the proposal: at most $SPIKE_CAP API requests in flight (503 + Retry-After beyond), keepalive $SPIKE_CAP, max_fails=0"): $RESULTS/spike-nginx-$v-$stamp.conf."
	done
} >"$md"
if grep -q '"scenario":"compare"' "$out"; then
	"$PY" bench/chart.py "$out" "$svg" --subtitle "trackbench sweep, $stamp, one server core, load on the other" &&
		log "chart: $svg"
fi
cat "$md"
log "results: $out, $md ($(($(date +%s) - t0)) s in all)"
