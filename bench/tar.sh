#!/usr/bin/env bash
# tar.sh [SCALE] [RUNS]: scenario 3. pgbb -F tar (-j 2 and -j 1) against pg_basebackup -Ft -Xfetch with
# --compress=client-gzip and client-zstd on the same cluster, alternately, RUNS times each (default scale 50,
# 3 runs). Prints medians, output sizes, the ratios, and the CPU time and peak RSS of pgbb-pack and of the
# fetch jobs. Both tools fsync their output.
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3}
start_cluster "$scale"
out=$dst/out
native() { rm -rf "$out"; pg_basebackup -D "$out" -Ft -Xfetch --compress="client-${1:-gzip}" -c fast; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -F tar -j "$1" "$DSN" "$out"; }
: >"$work/native" >"$work/zstd" >"$work/j2" >"$work/j1"
for i in $(seq "$runs"); do
	seconds native >>"$work/native"; nsize=$(du -sb "$out" | cut -f1)
	seconds native zstd >>"$work/zstd"; zsize=$(du -sb "$out" | cut -f1)
	seconds pgbb 2 >>"$work/j2"; psize=$(du -sb "$out" | cut -f1)
	seconds pgbb 1 >>"$work/j1"
	echo "run $i: native gzip $(tail -1 "$work/native") s, zstd $(tail -1 "$work/zstd") s, pgbb -j 2 $(tail -1 "$work/j2") s, -j 1 $(tail -1 "$work/j1") s" >&2
done
n=$(median <"$work/native") z=$(median <"$work/zstd") j2=$(median <"$work/j2") j1=$(median <"$work/j1")

# one more pgbb -j 2 run with each program under /usr/bin/time
rm -rf "$out"
make_wrappers
PGBB_BINDIR=$wrap "$here/scripts/pgbb-basebackup" -F tar -j 2 "$DSN" "$out" >/dev/null
read -r pu ps pm < <(awk '$1=="pgbb-pack" {print $3, $4, $2}' "$PGBB_RSS_LOG")
fcpu=$(awk '$1=="pgbb-fetch" {s+=$3+$4} END {print s}' "$PGBB_RSS_LOG"); fmax=$(awk '$1=="pgbb-fetch" && $2>m {m=$2} END {print m}' "$PGBB_RSS_LOG")

printf '\n%-44s %10s\n' "tar.xz, pgbench scale $scale, median of $runs" "seconds"
printf '%-44s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-gzip" "$n" "$(echo "$nsize/1000000" | bc -l)"
printf '%-44s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-zstd" "$z" "$(echo "$zsize/1000000" | bc -l)"
printf '%-44s %10.2f   %6.1f MB\n' "pgbb -F tar -j 2" "$j2" "$(echo "$psize/1000000" | bc -l)"
printf '%-44s %10.2f\n' "pgbb -F tar -j 1" "$j1"
printf 'ratio pgbb -j 2 / native wall: %.2f (goal <= 1.25)\n' "$(echo "$j2/$n" | bc -l)"
printf 'ratio pgbb / native size:      %.2f (goal <= 0.6)\n' "$(echo "$psize/$nsize" | bc -l)"
printf 'ratio pgbb -j 2 / client-zstd wall: %.2f, size: %.2f\n' "$(echo "$j2/$z" | bc -l)" "$(echo "$psize/$zsize" | bc -l)"
printf 'speed-up -j 2 over -j 1:       %.2f (goal >= 1.6)\n' "$(echo "$j1/$j2" | bc -l)"
printf 'pgbb-pack CPU %.2f s = %.1f%% of the fetchers %.2f s (goal < 10%%); peak RSS pack %d MiB, fetch %d MiB (goal <= 100)\n' \
	"$(echo "$pu+$ps" | bc -l)" "$(echo "100*($pu+$ps)/$fcpu" | bc -l)" "$fcpu" "$((pm/1024))" "$((fmax/1024))"
