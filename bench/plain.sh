#!/usr/bin/env bash
# plain.sh [SCALE] [RUNS]: scenario 1, loopback, plain format. pgbb -j 2 (xargs; without sync also with GNU
# parallel) against pg_basebackup -Fp -Xstream -c fast, both with their default fsync and both with
# --no-sync, and against cp -a of the data directory (no sync: the physical limit of this machine).
# Alternately, RUNS times each (default scale 50, 3 runs); prints medians and the ratios.
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3} jobs=${PGBB_BENCH_JOBS:-2}
start_cluster "$scale"
out=$dst/out
native() { rm -rf "$out"; pg_basebackup -D "$out" -Fp -Xstream -c fast "$@"; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -j "$jobs" "$@" "$DSN" "$out"; }
cpa() { rm -rf "$out"; cp -a "$work/src" "$out"; }
for f in native native_ns pgbb pgbb_ns pgbb_p cp; do : >"$work/$f"; done
for i in $(seq "$runs"); do
	seconds native >>"$work/native"
	seconds pgbb >>"$work/pgbb"
	# alternate which pgbb fan-out runs right after native
	if [ $((i % 2)) = 1 ]; then
		seconds native --no-sync >>"$work/native_ns"
		seconds pgbb --no-sync >>"$work/pgbb_ns"
		seconds pgbb --no-sync --fanout parallel >>"$work/pgbb_p"
	else
		seconds native --no-sync >>"$work/native_ns"
		seconds pgbb --no-sync --fanout parallel >>"$work/pgbb_p"
		seconds pgbb --no-sync >>"$work/pgbb_ns"
	fi
	seconds cpa >>"$work/cp"
	echo "run $i: native $(tail -1 "$work/native") s, pgbb $(tail -1 "$work/pgbb") s;" \
		"--no-sync: native $(tail -1 "$work/native_ns") s, pgbb $(tail -1 "$work/pgbb_ns") s, with GNU parallel $(tail -1 "$work/pgbb_p") s; cp -a $(tail -1 "$work/cp") s" >&2
done
# one more run of each under /usr/bin/time: where the CPU goes, per process
make_wrappers
tnative() { rm -rf "$out"; timed_basebackup -D "$out" -Fp -Xstream -c fast "$@"; }
echo "CPU seconds of every process (one more run each):" >&2
cpu_run "pg_basebackup" tnative >&2
cpu_run "pgbb -j $jobs" pgbb >&2
cpu_run "pg_basebackup --no-sync" tnative --no-sync >&2
cpu_run "pgbb -j $jobs --no-sync" pgbb --no-sync >&2
n=$(median <"$work/native") p=$(median <"$work/pgbb") nn=$(median <"$work/native_ns") pn=$(median <"$work/pgbb_ns") pp=$(median <"$work/pgbb_p") c=$(median <"$work/cp")
printf '\n%-52s %8s\n' "plain, loopback, pgbench scale $scale ($(du -sh "$work/src" | cut -f1)), median of $runs" seconds
printf '%-52s %8.2f\n' "pg_basebackup -Fp -Xstream -c fast" "$n" "pgbb -j $jobs" "$p" \
	"pg_basebackup -Fp -Xstream -c fast --no-sync" "$nn" "pgbb -j $jobs --no-sync" "$pn" "pgbb -j $jobs --no-sync --fanout parallel" "$pp" "cp -a" "$c"
printf 'ratio pgbb / native, fsync:     %.2f (goal <= 1.0)\n' "$(echo "$p/$n" | bc -l)"
printf 'ratio pgbb / native, --no-sync: %.2f (goal <= 1.0)\n' "$(echo "$pn/$nn" | bc -l)"
printf 'ratio pgbb --no-sync / cp -a:   %.2f (goal <= 1.3)\n' "$(echo "$pn/$c" | bc -l)"
printf 'with --fanout parallel: %.2f of native, %.2f of cp -a\n' "$(echo "$pp/$nn" | bc -l)" "$(echo "$pp/$c" | bc -l)"
