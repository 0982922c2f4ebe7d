#!/usr/bin/env bash
# timeline.sh [SCALE] [RUNS] [PGBB ARGS…]: issue 17's fixed cost of a run. A throwaway cluster (default
# pgbench scale 1, a tiny one, where every run is mostly fixed cost); RUNS (default 5) alternated runs of
# native pg_basebackup -Fp -Xstream -c fast -N and pgbb-basebackup -j 2 -N (or PGBB ARGS), their wall times
# and medians; then one more pgbb run with PGBB_TIMELINE set, whose events (every program's start, its
# connections, the checkpoint, the work list, each job's offer and batches, the stop, the commit, every
# exit) are printed in ms from the script's start (internal/timeline).
source "$(dirname "$0")/lib.sh"
scale=${1:-1} runs=${2:-5}
shift $(( $# > 2 ? 2 : $# ))
args=("$@"); [ ${#args[@]} -gt 0 ] || args=(-j 2 -N)
start_cluster "$scale"
out=$dst/out
native() { rm -rf "$out"; pg_basebackup -d "$DSN" -D "$out" -Fp -Xstream -c fast -N; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" "${args[@]}" "$DSN" "$out"; }
: >"$work/native"; : >"$work/pgbb"
for i in $(seq "$runs"); do
	seconds native >>"$work/native"
	seconds pgbb >>"$work/pgbb"
	echo "run $i: native $(tail -1 "$work/native") s, pgbb $(tail -1 "$work/pgbb") s" >&2
done
n=$(median <"$work/native") p=$(median <"$work/pgbb")
printf '\nscale %s, median of %s: native -N %.3f s, pgbb %s %.3f s: pgbb costs %+.3f s more (goal: at most +0.2 s)\n' "$scale" "$runs" "$n" "${args[*]}" "$p" "$(echo "$p - $n" | bc)"
export PGBB_TIMELINE=$work/timeline
rm -rf "$out"; : >"$PGBB_TIMELINE"
sync; sync
"$here/scripts/pgbb-basebackup" "${args[@]}" "$DSN" "$out"
echo
echo "timeline of one run (ms from the script's start; +ms since the line before):"
sort -n "$PGBB_TIMELINE" | awk 'NR == 1 { t0 = $1; prev = $1 } { t = $1; $1 = sprintf("%8.1f %+7.1f", (t - t0) * 1000, (t - prev) * 1000); prev = t; print }'
