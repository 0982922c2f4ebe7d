#!/usr/bin/env bash
# resume.sh [SCALE] [RUNS] [JOBS] [AT]: issue 13's figure, bytes on the wire of a resume. The server runs in
# a network namespace made for the run and the backups reach it over that namespace's loopback, whose
# counters (/sys/class/net/lo/statistics/tx_bytes: every packet, either direction, counted once) see only
# the backups' traffic: pgbench writes through the Unix socket. Under pgbench -c 2 each run takes a full
# pgbb backup, then a second one that is SIGKILLed (every process of it, as a power loss would end it) once
# the wire has carried AT (default 0.6) of the full backup's bytes, then pgbb-basebackup --resume of that
# DEST; the resumed backup is checked with pg_verifybackup. Native pg_basebackup's bytes are measured once
# for reference. Default scale 50, 3 runs, -j 4. Needs root (ip netns).
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3} jobs=${3:-4} at=${4:-0.6}
[ "$(id -u)" -eq 0 ] || { echo "resume.sh: needs root for ip netns" >&2; exit 2; }
ns=pgbb-bench-$$
ip netns add "$ns"
load_pid=
trap '[ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null; bench_cleanup; ip netns delete "$ns" 2>/dev/null || true' EXIT
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up
bench_netns=$ns
start_cluster "$scale"
tcp="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
verify=$pgbin/pg_verifybackup # the server's major: its pg_waldump reads that major's WAL only
wire() { inns cat /sys/class/net/lo/statistics/tx_bytes; }

# pgbench -c 2 for the whole benchmark, through the Unix socket (not counted)
pgbench -n -c 2 -j 2 -T 100000 >/dev/null 2>&1 &
load_pid=$!
sleep 2

# killmarked MARK: SIGSTOP, then SIGKILL, every process whose environment holds PGBB_BENCH_MARK=MARK
marked() { { grep -lzx "PGBB_BENCH_MARK=$1" /proc/[0-9]*/environ 2>/dev/null || true; } | cut -d/ -f3; }
killmarked() {
	local pids
	for _ in $(seq 50); do
		pids=$(marked "$1")
		[ -n "$pids" ] || return 0
		kill -STOP $pids 2>/dev/null || true
		kill -KILL $pids 2>/dev/null || true
		sleep 0.05
	done
	echo "resume.sh: processes of the killed run survive" >&2
	exit 1
}

out=$dst/out
w0=$(wire); s=$(date +%s.%N)
rm -rf "$out"; inns pg_basebackup -d "$tcp" -D "$out" -Fp -Xstream -c fast
e=$(date +%s.%N); native=$(( $(wire) - w0 ))
echo "pg_basebackup -Fp -Xstream: $native bytes on the wire, $(echo "$e - $s" | bc) s" >&2

: >"$work/figures"
for i in $(seq "$runs"); do
	rm -rf "$out"
	w0=$(wire); s=$(date +%s.%N)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" "" "$out"
	e=$(date +%s.%N); full=$(( $(wire) - w0 )); tfull=$(echo "$e - $s" | bc)

	rm -rf "$out"
	mark=run$i-$$
	w0=$(wire)
	PGBB_BENCH_MARK=$mark PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" "" "$out" 2>/dev/null &
	bg=$!
	limit=$(echo "$full * $at / 1" | bc)
	while [ $(( $(wire) - w0 )) -lt "$limit" ]; do
		kill -0 "$bg" 2>/dev/null || { echo "resume.sh: run $i ended before the kill" >&2; exit 1; }
		sleep 0.02
	done
	killmarked "$mark"
	wait "$bg" 2>/dev/null || true
	killed=$(( $(wire) - w0 ))
	[ -e "$out/.pgbb-incomplete" ] || { echo "resume.sh: the killed run left no state file" >&2; exit 1; }

	w0=$(wire); s=$(date +%s.%N)
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" --resume "" "$out" 2>"$work/resume.err" \
		|| { cat "$work/resume.err" >&2; exit 1; }
	e=$(date +%s.%N); res=$(( $(wire) - w0 )); tres=$(echo "$e - $s" | bc)
	"$verify" -q "$out" || { echo "resume.sh: pg_verifybackup failed on the resumed backup" >&2; exit 1; }
	counters=$(grep -o 'fetched .* retries' "$work/resume.err")
	echo "run $i: full $full bytes ($tfull s); killed at $killed bytes ($(echo "scale=1; 100 * $killed / $full" | bc)%); resume $res bytes ($tres s) = $(echo "scale=1; 100 * $res / $full" | bc)% of full; $counters" >&2
	echo "$full $killed $res" >>"$work/figures"
done
kill "$load_pid" 2>/dev/null; load_pid=
printf '\n%-58s %14s %8s\n' "bytes on the wire, scale $scale under pgbench -c 2, -j $jobs" "median bytes" "of full"
f=$(cut -d' ' -f1 "$work/figures" | median)
printf '%-58s %14.0f\n' "pg_basebackup -Fp -Xstream (one run)" "$native"
printf '%-58s %14.0f %7.1f%%\n' "pgbb full" "$f" 100
printf '%-58s %14.0f %7.1f%%\n' "pgbb run SIGKILLed at ${at} of full" "$(cut -d' ' -f2 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f2 "$work/figures" | median) / $f" | bc -l)"
printf '%-58s %14.0f %7.1f%%\n' "pgbb --resume of it" "$(cut -d' ' -f3 "$work/figures" | median)" "$(echo "100 * $(cut -d' ' -f3 "$work/figures" | median) / $f" | bc -l)"
echo "goal: the resume sends at most 45% of a full backup's bytes" >&2
