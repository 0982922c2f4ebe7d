#!/usr/bin/env bash
# manyfiles.sh [TABLES] [RUNS]: scenario 4, many small files. A cluster with TABLES small tables (default
# 20000), each with a primary key and one row: a heap and an index file per table. pgbb -j 2 against
# pg_basebackup -Fp -Xstream -c fast, both with fsync and both with --no-sync, alternately (default 3 runs).
source "$(dirname "$0")/lib.sh"
tables=${1:-20000} runs=${2:-3} jobs=${PGBB_BENCH_JOBS:-2}
PGBB_BENCH_PGOPTS="-c max_locks_per_transaction=1024" start_cluster 1
for b in $(seq 0 1000 $((tables - 1))); do
	psql -X -q -c "DO \$\$ BEGIN FOR i IN $((b + 1))..$((b + 1000 < tables ? b + 1000 : tables)) LOOP
		EXECUTE format('CREATE TABLE small_%s (id int PRIMARY KEY, v int)', i);
		EXECUTE format('INSERT INTO small_%s VALUES (1, %s)', i, i);
	END LOOP; END \$\$"
done
psql -X -q -c CHECKPOINT
echo "$tables tables, $(find "$work/src" -type f | wc -l) files, $(du -sh "$work/src/base" | cut -f1) in base/" >&2
out=$dst/out
native() { rm -rf "$out"; pg_basebackup -D "$out" -Fp -Xstream -c fast "$@"; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -j "$jobs" "$@" "$DSN" "$out"; }
for f in native native_ns pgbb pgbb_ns; do : >"$work/$f"; done
for i in $(seq "$runs"); do
	seconds native >>"$work/native"
	seconds pgbb >>"$work/pgbb"
	seconds native --no-sync >>"$work/native_ns"
	seconds pgbb --no-sync >>"$work/pgbb_ns"
	echo "run $i: native $(tail -1 "$work/native") s, pgbb $(tail -1 "$work/pgbb") s;" \
		"--no-sync: native $(tail -1 "$work/native_ns") s, pgbb $(tail -1 "$work/pgbb_ns") s" >&2
done
make_wrappers
tnative() { rm -rf "$out"; timed_basebackup -D "$out" -Fp -Xstream -c fast "$@"; }
echo "CPU seconds of every process (one more run each):" >&2
cpu_run "pg_basebackup --no-sync" tnative --no-sync >&2
cpu_run "pgbb -j $jobs --no-sync" pgbb --no-sync >&2
n=$(median <"$work/native") p=$(median <"$work/pgbb") nn=$(median <"$work/native_ns") pn=$(median <"$work/pgbb_ns")
printf '\n%-52s %8s\n' "$tables small tables, median of $runs" seconds
printf '%-52s %8.2f\n' "pg_basebackup -Fp -Xstream -c fast" "$n" "pgbb -j $jobs" "$p" \
	"pg_basebackup -Fp -Xstream -c fast --no-sync" "$nn" "pgbb -j $jobs --no-sync" "$pn"
printf 'ratio pgbb / native, fsync:     %.2f (goal <= 1.5)\n' "$(echo "$p/$n" | bc -l)"
printf 'ratio pgbb / native, --no-sync: %.2f (goal <= 1.5)\n' "$(echo "$pn/$nn" | bc -l)"
