#!/usr/bin/env bash
# cpu.sh [SCALE] [RUNS]: where the CPU goes, per process, for a plain backup without sync: native
# pg_basebackup -Fp -Xstream --no-sync against pgbb -j 2 -N with direct writes (the default) and with
# --no-direct-write (the jobs stream their data to pgbb-pack), alternately RUNS times (default scale 50, 3
# runs). Each line gives the wall time, the server's CPU seconds (backends and walsender included) and the
# client's per program. PGBB_BENCH_LOOPFS=tmpfs writes to a tmpfs (no disk: CPU per byte alone).
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3} jobs=${PGBB_BENCH_JOBS:-2}
start_cluster "$scale"
make_wrappers
out=$dst/out
native() { rm -rf "$out"; timed_basebackup -D "$out" -Fp -Xstream -c fast --no-sync; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -j "$jobs" -N "$@" "$DSN" "$out"; }
for i in $(seq "$runs"); do
	echo "run $i of $runs" >&2
	cpu_run "pg_basebackup --no-sync" native | tee -a "$work/native"
	cpu_run "pgbb -j $jobs -N (direct writes)" pgbb | tee -a "$work/direct"
	cpu_run "pgbb -j $jobs -N --no-direct-write" pgbb --no-direct-write | tee -a "$work/stream"
done
wall() { grep -o 'wall *[0-9.]*' "$1" | awk '{ print $2 }' | median; }
n=$(wall "$work/native") d=$(wall "$work/direct") s=$(wall "$work/stream")
printf '\nmedians of %s runs, pgbench scale %s (%s), onto %s\n' "$runs" "$scale" "$(du -sh "$work/src" | cut -f1)" "$(df --output=fstype "$dst" | tail -1)"
printf 'pgbb direct / native:           %.2f\n' "$(echo "$d/$n" | bc -l)"
printf 'pgbb --no-direct-write / native: %.2f\n' "$(echo "$s/$n" | bc -l)"
