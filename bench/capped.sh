#!/usr/bin/env bash
# capped.sh [SCALE] [RUNS] [JOBS...]: scenario 2, a per-flow-capped link. The server and every client run
# inside a network namespace made for the run, whose loopback has one HTB class per TCP flow bucket (the low
# 8 bits of the client port: server-to-client packets are classified by destination port) capped at
# ${PGBB_BENCH_RATE:-100mbit}; traffic to the server is not capped. Native pg_basebackup -Fp -Xstream is one
# data flow; pgbb -j N has N. Default scale 10, 3 runs, pgbb -j 1 2 4 8. Needs root (ip netns, tc).
# PGBB_BENCH_OTHER=DIR, a built checkout of another commit (git worktree add DIR COMMIT; make -C DIR build),
# runs that checkout's pgbb-basebackup too, alternated with this one's in every run, on the same cluster.
# PGBB_BENCH_TIMELINE=FILE writes the timeline of one more pgbb run (internal/timeline's events) to FILE.
source "$(dirname "$0")/lib.sh"
scale=${1:-10} runs=${2:-3}
shift $(( $# > 2 ? 2 : $# ))
jobs=("$@"); [ ${#jobs[@]} -gt 0 ] || jobs=(1 2 4 8)
rate=${PGBB_BENCH_RATE:-100mbit}
[ "$(id -u)" -eq 0 ] || { echo "capped.sh: needs root for ip netns and tc" >&2; exit 2; }
ns=pgbb-bench-$$
ip netns add "$ns"
trap 'bench_cleanup; ip netns delete "$ns" 2>/dev/null || true' EXIT
inns() { ip netns exec "$ns" "$@"; }
inns ip link set lo up
# HTB on lo: class 1:1 uncapped (default), 1:100+b capped for bucket b. lo's MTU is 64 KiB; bursts of a few
# packets keep HTB accurate at this rate. The u32 filters hash on the low byte of the destination port (the
# 32-bit word at offset 20 of an option-less IPv4 packet holds the TCP ports), so each packet costs one
# lookup rather than a walk over 256 filters.
inns tc qdisc add dev lo root handle 1: htb default 1 r2q 100
inns tc class add dev lo parent 1: classid 1:1 htb rate 40gbit quantum 200000
inns tc filter add dev lo parent 1:0 prio 1 handle 2: protocol ip u32 divisor 256
for b in $(seq 0 255); do
	inns tc class add dev lo parent 1: classid 1:$(printf '%x' $((0x100 + b))) htb rate "$rate" ceil "$rate" burst 256k cburst 256k quantum 65536
	inns tc filter add dev lo parent 1:0 prio 1 protocol ip u32 ht 2:$(printf '%x' "$b"): match ip sport 5432 0xffff flowid 1:$(printf '%x' $((0x100 + b)))
done
inns tc filter add dev lo parent 1:0 prio 1 protocol ip u32 ht 800:: match ip protocol 6 0xff match ip sport 5432 0xffff \
	hashkey mask 0x000000ff at 20 link 2:
bench_netns=$ns
start_cluster "$scale"
tcp="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
out=$dst/out
native() { rm -rf "$out"; inns pg_basebackup -d "$tcp" -D "$out" -Fp -Xstream -c fast; }
pgbb() { rm -rf "$out"; PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$1" "" "$out"; }
other=${PGBB_BENCH_OTHER:-}
opgbb() { rm -rf "$out"; PGBB_DSN=$tcp inns "$other/scripts/pgbb-basebackup" -j "$1" "" "$out"; }
: >"$work/native"; for j in "${jobs[@]}"; do : >"$work/j$j"; : >"$work/o$j"; done
for i in $(seq "$runs"); do
	seconds native >>"$work/native"
	line="run $i: native $(tail -1 "$work/native") s"
	for j in "${jobs[@]}"; do
		seconds pgbb "$j" >>"$work/j$j"
		line+=", -j $j $(tail -1 "$work/j$j") s"
		if [ -n "$other" ]; then
			seconds opgbb "$j" >>"$work/o$j"
			line+=" (other: $(tail -1 "$work/o$j") s)"
		fi
	done
	echo "$line" >&2
done
make_wrappers
tnative() { rm -rf "$out"; inns /usr/bin/time -a -o "$PGBB_RSS_LOG" -f "pg_basebackup %M %U %S" pg_basebackup -d "$tcp" -D "$out" -Fp -Xstream -c fast; }
tpgbb() { rm -rf "$out"; PGBB_DSN=$tcp PGBB_BINDIR=$wrap inns "$here/scripts/pgbb-basebackup" -j "$1" "" "$out"; }
echo "CPU seconds of every process (one more run each):" >&2
cpu_run "pg_basebackup" tnative >&2
cpu_run "pgbb -j ${jobs[-1]}" tpgbb "${jobs[-1]}" >&2
if [ -n "${PGBB_BENCH_TIMELINE:-}" ]; then
	# one more run of the last -j with PGBB_TIMELINE set: every program's events, in ms from the start
	tl=$work/timeline; : >"$tl"; chmod 666 "$tl"
	rm -rf "$out"; PGBB_DSN=$tcp PGBB_TIMELINE=$tl inns "$here/scripts/pgbb-basebackup" -j "${jobs[-1]}" "" "$out"
	sort -n "$tl" | awk 'NR == 1 { t0 = $1; prev = $1 } { t = $1; $1 = sprintf("%8.1f %+7.1f", (t - t0) * 1000, (t - prev) * 1000); prev = t; print }' >"$PGBB_BENCH_TIMELINE"
	echo "timeline of one pgbb -j ${jobs[-1]} run (ms from the script's start; +ms since the line before): $PGBB_BENCH_TIMELINE" >&2
fi
n=$(median <"$work/native")
printf '\n%-50s %8s %8s\n' "capped link ($rate per flow), scale $scale, median of $runs" seconds speed-up
printf '%-50s %8.2f\n' "pg_basebackup -Fp -Xstream -c fast" "$n"
for j in "${jobs[@]}"; do
	p=$(median <"$work/j$j")
	printf '%-50s %8.2f %7.2fx\n' "pgbb -j $j" "$p" "$(echo "$n/$p" | bc -l)"
	if [ -n "$other" ]; then
		p=$(median <"$work/o$j")
		printf '%-50s %8.2f %7.2fx\n' "pgbb -j $j of $(git -C "$other" rev-parse --short HEAD)" "$p" "$(echo "$n/$p" | bc -l)"
	fi
done
echo "goal: pgbb -j 8 at least 6x faster than native" >&2
