#!/usr/bin/env bash
# reference.sh [SCALE] [RUNS] [JOBS] [SECONDS]: issue 14's figure for --reference, bytes on the wire of a
# backup against an earlier full one. The server (PGBB_PGBIN; default Debian's 15) runs in a network
# namespace made for the run; the backups reach it over that namespace's loopback, whose counters
# (/sys/class/net/lo/statistics/tx_bytes) see only the backups' traffic: pgbench writes through the Unix
# socket. Each run: a pgbb full backup, pgbench -c 2 for SECONDS (default 20), then pgbb-basebackup
# --reference against the full, idle; the new backup is checked with stock pg_verifybackup 18
# (../shared/pg18/bin, or PGBB_STOCK18; on another major, that major's, from PGBB_PGBIN). A stock pg_basebackup of the same cluster after the same change is
# measured in the same run. Needs root (ip netns).
set -euo pipefail
here0=$(cd "$(dirname "$0")/.." && pwd)
stock=${PGBB_STOCK18:-$here0/../shared/pg18/bin}
export PATH="$stock:$PATH" # pgbench and psql
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3} jobs=${3:-4} secs=${4:-20}
netns_start reference.sh
start_cluster "$scale"
major=$(psql -X -At -c "SELECT current_setting('server_version_num')::int / 10000")
tcp="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
# the verifier of the server's major: pg_verifybackup parses the WAL with its own pg_waldump
verifier=$stock/pg_verifybackup
[ "$major" = 18 ] || verifier=$pgbin/pg_verifybackup

: >"$work/figures"
for i in $(seq "$runs"); do
	full=$dst/full ref=$dst/ref nat=$dst/native
	rm -rf "$full" "$ref" "$nat"
	w0=$(wire); s=$(date +%s.%N)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" "" "$full"
	e=$(date +%s.%N); fullb=$(( $(wire) - w0 )); tfull=$(echo "$e - $s" | bc)
	tps=$(pgbench -n -c 2 -j 2 -T "$secs" 2>/dev/null | awk '/^tps/ {print $3}')
	w0=$(wire); s=$(date +%s.%N)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" --reference "$full" "" "$ref" 2>"$work/ref.err" \
		|| { cat "$work/ref.err" >&2; exit 1; }
	e=$(date +%s.%N); refb=$(( $(wire) - w0 )); tref=$(echo "$e - $s" | bc)
	w0=$(wire)
	inns "$stock/pg_basebackup" -d "$tcp" -D "$nat" -c fast
	natb=$(( $(wire) - w0 ))
	"$verifier" -q "$ref" || { echo "reference.sh: pg_verifybackup failed on the --reference backup" >&2; exit 1; }
	echo "run $i: PostgreSQL $major, pgbench $secs s at $tps tps; full $fullb bytes ($tfull s); --reference $refb bytes ($tref s) = $(echo "scale=1; 100 * $refb / $fullb" | bc)% of full; stock pg_basebackup $natb bytes" >&2
	grep -o 'fetched [0-9]* bytes, took [0-9]* bytes from the reference.*' "$work/ref.err" >&2 || true
	echo "$fullb $refb $natb $tfull $tref" >>"$work/figures"
done
printf '\n%-58s %14s %8s\n' "bytes on the wire, PG $major, scale $scale, pgbench -c 2 -T $secs, -j $jobs" "median bytes" "of full"
f=$(cut -d' ' -f1 "$work/figures" | median)
printf '%-58s %14.0f %7.1f%%  %ss\n' "pgbb full" "$f" 100 "$(cut -d' ' -f4 "$work/figures" | median)"
printf '%-58s %14.0f %7.1f%%  %ss\n' "pgbb --reference (a complete backup)" "$(cut -d' ' -f2 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f2 "$work/figures" | median) / $f" | bc -l)" "$(cut -d' ' -f5 "$work/figures" | median)"
printf '%-58s %14.0f %7.1f%%\n' "pg_basebackup (stock 18, full)" "$(cut -d' ' -f3 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f3 "$work/figures" | median) / $f" | bc -l)"
echo "goal: a --reference backup after pgbench -T 20 at scale 50 sends at most 15% of a full backup's bytes" >&2
