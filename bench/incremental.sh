#!/usr/bin/env bash
# incremental.sh [SCALE] [RUNS] [JOBS] [SECONDS]: issue 14's figure, bytes on the wire of an incremental
# backup. PostgreSQL 18 (PGBB_PGBIN, default the one scripts/install-pg-majors 18 installs) with
# summarize_wal = on runs in a network namespace made for the run; the backups reach it over that
# namespace's loopback, whose counters (/sys/class/net/lo/statistics/tx_bytes) see only the backups'
# traffic: pgbench writes through the Unix socket. Each run: a pgbb full backup, pgbench -c 2 for SECONDS
# (default 20), then pgbb-basebackup --incremental against the full, idle; the pair is combined with stock
# pg_combinebackup 18 and checked with stock pg_verifybackup 18 (../shared/pg18/bin, or PGBB_STOCK18).
# Native pg_basebackup --incremental of the same change is measured in the same run. Needs root (ip netns).
set -euo pipefail
here0=$(cd "$(dirname "$0")/.." && pwd)
export PGBB_PGBIN=${PGBB_PGBIN:-$(ls -d /var/cache/pgbb/postgresql/18.*/bin | tail -1)}
stock=${PGBB_STOCK18:-$here0/../shared/pg18/bin}
export PATH="$stock:$PATH" # pgbench and psql: the server package has none
PGBB_BENCH_PGOPTS="-c summarize_wal=on ${PGBB_BENCH_PGOPTS:-}"
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3} jobs=${3:-4} secs=${4:-20}
netns_start incremental.sh
start_cluster "$scale"
tcp="host=127.0.0.1 port=5432 user=postgres dbname=postgres"

: >"$work/figures"
for i in $(seq "$runs"); do
	full=$dst/full inc=$dst/inc nat=$dst/native comb=$dst/comb
	rm -rf "$full" "$inc" "$nat" "$comb"
	w0=$(wire)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" "" "$full"
	fullb=$(( $(wire) - w0 ))
	tps=$(pgbench -n -c 2 -j 2 -T "$secs" 2>/dev/null | awk '/^tps/ {print $3}')
	w0=$(wire); s=$(date +%s.%N)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" --incremental "$full" "" "$inc" 2>"$work/inc.err" \
		|| { cat "$work/inc.err" >&2; exit 1; }
	e=$(date +%s.%N); incb=$(( $(wire) - w0 )); tinc=$(echo "$e - $s" | bc)
	w0=$(wire)
	inns "$stock/pg_basebackup" -d "$tcp" -D "$nat" -c fast --incremental "$full/backup_manifest"
	natb=$(( $(wire) - w0 ))
	"$stock/pg_verifybackup" -q "$inc" || { echo "incremental.sh: pg_verifybackup failed on the incremental" >&2; exit 1; }
	"$stock/pg_combinebackup" -o "$comb" "$full" "$inc" || { echo "incremental.sh: pg_combinebackup failed" >&2; exit 1; }
	"$stock/pg_verifybackup" -q "$comb" || { echo "incremental.sh: pg_verifybackup failed on the combined backup" >&2; exit 1; }
	echo "run $i: pgbench $secs s at $tps tps; full $fullb bytes; incremental $incb bytes ($tinc s) = $(echo "scale=1; 100 * $incb / $fullb" | bc)% of full; native incremental $natb bytes = $(echo "scale=1; 100 * $natb / $fullb" | bc)%" >&2
	grep -o 'incremental: [0-9]* bytes of changed.*' "$work/inc.err" >&2 || true
	grep -o "fetched [0-9]* bytes, took [0-9]* bytes from the prior.*" "$work/inc.err" >&2 || true
	echo "$fullb $incb $natb" >>"$work/figures"
done
printf '\n%-58s %14s %8s\n' "bytes on the wire, scale $scale, pgbench -c 2 -T $secs, -j $jobs" "median bytes" "of full"
f=$(cut -d' ' -f1 "$work/figures" | median)
printf '%-58s %14.0f %7.1f%%\n' "pgbb full" "$f" 100
printf '%-58s %14.0f %7.1f%%\n' "pgbb --incremental" "$(cut -d' ' -f2 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f2 "$work/figures" | median) / $f" | bc -l)"
printf '%-58s %14.0f %7.1f%%\n' "pg_basebackup --incremental (stock 18)" "$(cut -d' ' -f3 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f3 "$work/figures" | median) / $f" | bc -l)"
echo "goal: an incremental after pgbench -T 20 at scale 50 sends at most 10% of a full backup's bytes" >&2
