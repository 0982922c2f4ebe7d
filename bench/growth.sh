#!/usr/bin/env bash
# growth.sh [SCALES] [RUNS]: scenarios 5 and 6. For each pgbench scale (default "10 100"): the wall time of
# pgbb -j 2 and of pg_basebackup -Fp -Xstream -c fast (median of RUNS, default 3, with fsync), then one
# more pgbb run with every pgbb process under /usr/bin/time for its peak RSS. Prints the growth of the wall
# time from the first scale to the last, and the peak RSS per program at each scale.
source "$(dirname "$0")/lib.sh"
scales=(${1:-10 100}) runs=${2:-3} jobs=${PGBB_BENCH_JOBS:-2}
out=$dst/out
make_wrappers
native() { rm -rf "$out"; pg_basebackup -D "$out" -Fp -Xstream -c fast; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -j "$jobs" "$DSN" "$out"; }
results=()
for scale in "${scales[@]}"; do
	[ -d "$work/src" ] && { as_server pg_ctl -D "$work/src" -m fast stop >/dev/null; rm -rf "$work/src"; }
	start_cluster "$scale"
	: >"$work/n$scale"; : >"$work/p$scale"
	for i in $(seq "$runs"); do
		seconds native >>"$work/n$scale"
		seconds pgbb >>"$work/p$scale"
		echo "scale $scale run $i: native $(tail -1 "$work/n$scale") s, pgbb -j $jobs $(tail -1 "$work/p$scale") s" >&2
	done
	rm -rf "$out"; : >"$PGBB_RSS_LOG"; PGBB_BINDIR=$wrap "$here/scripts/pgbb-basebackup" -j "$jobs" "$DSN" "$out" >/dev/null
	cp "$PGBB_RSS_LOG" "$work/rss$scale"
	results+=("$scale $(median <"$work/n$scale") $(median <"$work/p$scale")")
done
printf '\n%-8s %12s %12s %8s\n' scale "native s" "pgbb -j $jobs s" ratio
for r in "${results[@]}"; do set -- $r; printf '%-8s %12.2f %12.2f %8.2f\n' "$1" "$2" "$3" "$(echo "$3/$2" | bc -l)"; done
read -r fs nfirst first <<<"${results[0]}"
read -r ls nlast last <<<"${results[-1]}"
printf 'growth: pgbb time(scale %s) / time(scale %s) = %.2f (goal <= %.0f); native %.2f\n' "$ls" "$fs" \
	"$(echo "$last/$first" | bc -l)" "$(echo "1.1*$ls/$fs" | bc -l)" "$(echo "$nlast/$nfirst" | bc -l)"
printf '\npeak RSS in MiB (max over the processes of each program; pgbb-xlog includes its children, the jobs)\n'
printf '%-8s' scale; for b in pgbb-xlog pgbb-list pgbb-fetch pgbb-pack; do printf ' %11s' "$b"; done; echo
for scale in "${scales[@]}"; do
	printf '%-8s' "$scale"
	for b in pgbb-xlog pgbb-list pgbb-fetch pgbb-pack; do
		printf ' %11d' "$(awk -v b="$b" '$1==b && $2>m {m=$2} END {print int(m/1024)}' "$work/rss$scale")"
	done
	echo
done
echo "goal: at most 100 MiB per process, flat from the first scale to the last" >&2
