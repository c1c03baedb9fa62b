#!/bin/sh
# Build every libFuzzer target fuzz/fuzz_<name>.c with ASan and UBSan, run each for N seconds
# (default 60) from its checked-in seed corpus fuzz/corpus/<name>/, and fail on any finding.
#   scripts/fuzz.sh [SECONDS] [NAME...]      e.g. scripts/fuzz.sh 10 form base64
#   FUZZ_JOBS=2 scripts/fuzz.sh 60           all targets, two at a time
#
# A target says what it needs in its leading comment, one line each (all optional):
#   fuzz-sources: src/decode.c src/event.c   (default: every src/*.c but the mains, src/*.S, and
#                                             llhttp; the word `llhttp` adds llhttp's sources)
#   fuzz-dict: json.dict                     (a dictionary in fuzz/)
#   fuzz-max-len: 16384                      (libFuzzer -max_len; default 4096)
#
# New inputs the fuzzer finds go to build/fuzz/corpus/<name>/, not into the checked-in corpus;
# to keep the interesting ones, minimise them into it:
#   build/fuzz/fuzz_<name> -merge=1 fuzz/corpus/<name> build/fuzz/corpus/<name>
# A crash, leak, timeout or out-of-memory leaves its input in build/fuzz/artifacts/ and the log
# in build/fuzz/<name>.log; reproduce with `build/fuzz/fuzz_<name> ARTIFACT`.
set -eu

secs=${1:-60}
[ $# -gt 0 ] && shift
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

CC=${FUZZ_CC:-clang}
LLHTTP_SRC=${LLHTTP_SRC:-/usr/share/llhttp}
LLHTTP_INC=${LLHTTP_INC:-/usr/share/include/llhttp}
out=build/fuzz
pkgs="libuv jansson libbsd-overlay zlib"
mkdir -p "$out/artifacts"

# One value of a `fuzz-KEY:` line in the target's source.
meta() {
	sed -n "s/^.*fuzz-$2:[[:space:]]*//p" "$1" | head -n 1
}

# Every library source: src/*.c but the programs' mains (each has its own main()), the
# hand-written assembly (coroutine switch), and llhttp.
lib_sources() {
	for f in src/*.c; do
		case $f in src/main.c | src/trackctl.c | src/trackbench.c) ;; *) printf '%s ' "$f" ;; esac
	done
	for f in src/*.S; do
		[ -e "$f" ] && printf '%s ' "$f"
	done
	echo llhttp
}

targets=""
if [ $# -gt 0 ]; then
	for n in "$@"; do targets="$targets fuzz/fuzz_$n.c"; done
else
	targets=$(ls fuzz/fuzz_*.c)
fi

# FUZZ_JOBS=N runs the targets in N parallel groups (one per core is right: each target is
# single-threaded), each group a child of this script; their outputs follow one another.
jobs=${FUZZ_JOBS:-1}
if [ "$jobs" -gt 1 ] && [ -z "${FUZZ_CHILD:-}" ]; then
	pids=""
	j=0
	while [ "$j" -lt "$jobs" ]; do
		names=""
		k=0
		for t in $targets; do
			if [ $((k % jobs)) -eq "$j" ]; then
				t=$(basename "$t" .c)
				names="$names ${t#fuzz_}"
			fi
			k=$((k + 1))
		done
		if [ -n "$names" ]; then
			# shellcheck disable=SC2086
			FUZZ_CHILD=1 "$0" "$secs" $names >"$out/job$j.out" 2>&1 &
			pids="$pids $!"
		fi
		j=$((j + 1))
	done
	rc=0
	for p in $pids; do wait "$p" || rc=1; done
	cat "$out"/job*.out
	rm -f "$out"/job*.out
	exit $rc
fi

failed=0
summary=""
for src in $targets; do
	name=$(basename "$src" .c)
	short=${name#fuzz_}
	sources=$(meta "$src" sources)
	[ -n "$sources" ] || sources=$(lib_sources)
	files=""
	for s in $sources; do
		if [ "$s" = llhttp ]; then
			files="$files $LLHTTP_SRC/llhttp.c $LLHTTP_SRC/api.c $LLHTTP_SRC/http.c"
		else
			files="$files $s"
		fi
	done
	dict=$(meta "$src" dict)
	max_len=$(meta "$src" max-len)
	[ -n "$max_len" ] || max_len=4096

	echo "fuzz: building $name" >&2
	# shellcheck disable=SC2086
	# LLHTTP_STRICT_MODE: the parser the server runs (see the Makefile's LLHTTP_CFLAGS).
	if ! $CC -g -O1 -std=c11 -D_GNU_SOURCE -DLLHTTP_STRICT_MODE=1 -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=undefined -fno-omit-frame-pointer -Iinclude -isystem "$LLHTTP_INC" \
		$(pkg-config --cflags $pkgs) -o "$out/$name" "$src" $files \
		$(pkg-config --libs $pkgs) -lpthread -lm; then
		summary="$summary$name: BUILD FAILED\n"
		failed=1
		continue
	fi

	mkdir -p "$out/corpus/$short"
	seeds="fuzz/corpus/$short"
	[ -d "$seeds" ] || seeds=""
	set -- -max_total_time="$secs" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$out/artifacts/$name-"
	[ -n "$dict" ] && set -- "$@" -dict="fuzz/$dict"
	echo "fuzz: running $name for ${secs}s" >&2
	rc=0
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		"$out/$name" "$@" "$out/corpus/$short" $seeds >"$out/$name.log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$out/$name.log" | tail -n 1)
	cov=$(grep -a -o 'cov: [0-9]*' "$out/$name.log" | tail -n 1 | cut -d' ' -f2)
	corpus=$(ls "$out/corpus/$short" | wc -l)
	if [ "$rc" -eq 0 ]; then
		result=ok
	else
		result="FAILED (exit $rc, see $out/$name.log)"
		failed=1
		grep -a -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error)' "$out/$name.log" | head -n 5 >&2 || true
	fi
	summary="$summary$(printf '%-22s %-8s runs=%-10s cov=%-6s corpus=%s' "$name" "$result" \
		"${runs:-?}" "${cov:-?}" "$corpus")\n"
done

printf '\nfuzz summary (%ss per target):\n' "$secs"
printf "%b" "$summary"
exit $failed
