#!/usr/bin/env bash
# tar.sh [SCALE] [RUNS]: pgbb -F tar (-j 2 and -j 1) against pg_basebackup -Ft -Xfetch --compress=client-gzip
# on the same cluster, alternately, RUNS times each (default scale 50, 3 runs). Prints medians, output sizes,
# the ratios, and the CPU time and peak RSS of pgbb-pack and of the fetch jobs. Both tools fsync their output.
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3}
start_cluster "$scale"
out=$work/out
native() { rm -rf "$out"; pg_basebackup -D "$out" -Ft -Xfetch --compress=client-gzip -c fast; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -F tar -j "$1" "$DSN" "$out"; }
: >"$work/native" >"$work/j2" >"$work/j1"
for i in $(seq "$runs"); do
	seconds native >>"$work/native"; nsize=$(du -sb "$out" | cut -f1)
	seconds pgbb 2 >>"$work/j2"; psize=$(du -sb "$out" | cut -f1)
	seconds pgbb 1 >>"$work/j1"
	echo "run $i: native $(tail -1 "$work/native") s, pgbb -j 2 $(tail -1 "$work/j2") s, -j 1 $(tail -1 "$work/j1") s" >&2
done
n=$(median <"$work/native") j2=$(median <"$work/j2") j1=$(median <"$work/j1")

# one more pgbb -j 2 run with each stage under /usr/bin/time
rm -rf "$out"
t=$work/times; mkdir -p "$t"
export PGBB_DSN=$DSN
printf '#!/bin/sh\nexec /usr/bin/time -a -o %s -f "%%U %%S %%M" pgbb-fetch "$@"\n' "$t/fetch" >"$t/fetch.sh"
chmod +x "$t/fetch.sh"
pgbb-xlog --compress xz -- bash -c "set -o pipefail; pgbb-list | parallel --will-cite --pipe -N 32 -j 2 $t/fetch.sh --compress xz" \
	| /usr/bin/time -o "$t/pack" -f "%U %S %M" pgbb-pack -F tar -D "$out"
read -r pu ps pm <"$t/pack"
fcpu=$(awk '{s+=$1+$2} END {print s}' "$t/fetch"); fmax=$(awk '$3>m {m=$3} END {print m}' "$t/fetch")

printf '\n%-44s %10s\n' "tar.xz, pgbench scale $scale, median of $runs" "seconds"
printf '%-44s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-gzip" "$n" "$(echo "$nsize/1000000" | bc -l)"
printf '%-44s %10.2f   %6.1f MB\n' "pgbb -F tar -j 2" "$j2" "$(echo "$psize/1000000" | bc -l)"
printf '%-44s %10.2f\n' "pgbb -F tar -j 1" "$j1"
printf 'ratio pgbb -j 2 / native wall: %.2f (goal <= 1.25)\n' "$(echo "$j2/$n" | bc -l)"
printf 'ratio pgbb / native size:      %.2f (goal <= 0.6)\n' "$(echo "$psize/$nsize" | bc -l)"
printf 'speed-up -j 2 over -j 1:       %.2f (goal >= 1.6)\n' "$(echo "$j1/$j2" | bc -l)"
printf 'pgbb-pack CPU %.2f s = %.1f%% of the fetchers %.2f s (goal < 10%%); peak RSS pack %d MiB, fetch %d MiB (goal <= 100)\n' \
	"$(echo "$pu+$ps" | bc -l)" "$(echo "100*($pu+$ps)/$fcpu" | bc -l)" "$fcpu" "$((pm/1024))" "$((fmax/1024))"
