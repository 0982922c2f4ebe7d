#!/usr/bin/env bash
# tar.sh [SCALE] [RUNS]: scenario 3. pgbb -F tar (xz: -j 2 and -j 1) against pg_basebackup -Ft -Xfetch
# --compress=client-gzip, and pgbb -F tar --compress zstd -j 2 against --compress=client-zstd, on the same
# cluster, alternately, RUNS times each (default scale 50, 3 runs). Prints medians, output sizes, the ratios,
# and the CPU time and peak RSS of pgbb-pack and of the fetch jobs for each codec. Both tools fsync their
# output. pg_basebackup is PostgreSQL 15's (PGBB_PGBIN), built with zstd on Debian.
# PGBB_BENCH_ONLY=zstd runs and prints only the zstd pair (issue 17's goal), without the slow xz runs.
source "$(dirname "$0")/lib.sh"
scale=${1:-50} runs=${2:-3}
only=${PGBB_BENCH_ONLY:-}
case "$only" in ''|zstd) ;; *) echo "tar.sh: PGBB_BENCH_ONLY wants zstd or nothing" >&2; exit 2 ;; esac
start_cluster "$scale"
out=$dst/out
native() { rm -rf "$out"; pg_basebackup -D "$out" -Ft -Xfetch --compress="client-${1:-gzip}" -c fast; }
pgbb() { rm -rf "$out"; "$here/scripts/pgbb-basebackup" -F tar -j "$1" "${@:2}" "$DSN" "$out"; }
: >"$work/native" >"$work/zstd" >"$work/j2" >"$work/j1" >"$work/z2"
for i in $(seq "$runs"); do
	if [ -z "$only" ]; then seconds native >>"$work/native"; nsize=$(du -sb "$out" | cut -f1); fi
	seconds native zstd >>"$work/zstd"; zsize=$(du -sb "$out" | cut -f1)
	if [ -z "$only" ]; then seconds pgbb 2 >>"$work/j2"; psize=$(du -sb "$out" | cut -f1); fi
	seconds pgbb 2 --compress zstd >>"$work/z2"; pzsize=$(du -sb "$out" | cut -f1)
	if [ -z "$only" ]; then
		seconds pgbb 1 >>"$work/j1"
		echo "run $i: native gzip $(tail -1 "$work/native") s, zstd $(tail -1 "$work/zstd") s, pgbb xz -j 2 $(tail -1 "$work/j2") s, -j 1 $(tail -1 "$work/j1") s, pgbb zstd -j 2 $(tail -1 "$work/z2") s" >&2
	else
		echo "run $i: native zstd $(tail -1 "$work/zstd") s, pgbb zstd -j 2 $(tail -1 "$work/z2") s" >&2
	fi
done
z=$(median <"$work/zstd") z2=$(median <"$work/z2")
if [ -n "$only" ]; then
	printf '\n%-48s %10s\n' "tar zstd, pgbench scale $scale, median of $runs" "seconds"
	printf '%-48s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-zstd" "$z" "$(echo "$zsize/1000000" | bc -l)"
	printf '%-48s %10.2f   %6.1f MB\n' "pgbb -F tar --compress zstd -j 2" "$z2" "$(echo "$pzsize/1000000" | bc -l)"
	printf 'zstd: ratio pgbb -j 2 / client-zstd wall: %.2f (goal <= 1.0), size: %.2f (goal <= 1.0)\n' "$(echo "$z2/$z" | bc -l)" "$(echo "$pzsize/$zsize" | bc -l)"
	exit 0
fi
n=$(median <"$work/native") j2=$(median <"$work/j2") j1=$(median <"$work/j1")

# one more pgbb -j 2 run of each codec with each program under /usr/bin/time: CPU-s and peak RSS
make_wrappers
usage() { # CODEC: pgbb-pack's user+sys CPU-s and peak RSS KiB, the fetchers' CPU-s and largest peak RSS KiB
	rm -rf "$out"; : >"$PGBB_RSS_LOG"
	PGBB_BINDIR=$wrap "$here/scripts/pgbb-basebackup" -F tar -j 2 --compress "$1" "$DSN" "$out" >/dev/null
	awk '$1=="pgbb-pack" {pc=$3+$4; pm=$2} $1=="pgbb-fetch" {fc+=$3+$4; if ($2>fm) fm=$2} $1=="pgbb-xlog" {xm=$2}
	END {print pc, pm, fc, fm, xm}' "$PGBB_RSS_LOG"
}
read -r pcpu pm fcpu fmax xmax < <(usage xz)
read -r zpcpu zpm zfcpu zfmax zxmax < <(usage zstd)

mb() { echo "$1/1000000" | bc -l; }
printf '\n%-48s %10s\n' "tar, pgbench scale $scale, median of $runs" "seconds"
printf '%-48s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-gzip" "$n" "$(mb "$nsize")"
printf '%-48s %10.2f   %6.1f MB\n' "pg_basebackup -Ft -Xfetch --compress=client-zstd" "$z" "$(mb "$zsize")"
printf '%-48s %10.2f   %6.1f MB\n' "pgbb -F tar -j 2 (xz)" "$j2" "$(mb "$psize")"
printf '%-48s %10.2f\n' "pgbb -F tar -j 1 (xz)" "$j1"
printf '%-48s %10.2f   %6.1f MB\n' "pgbb -F tar --compress zstd -j 2" "$z2" "$(mb "$pzsize")"
printf 'xz:   ratio pgbb -j 2 / client-gzip wall: %.2f (goal <= 1.25), size: %.2f (goal <= 0.4)\n' "$(echo "$j2/$n" | bc -l)" "$(echo "$psize/$nsize" | bc -l)"
printf 'xz:   ratio pgbb -j 2 / client-zstd wall: %.2f, size: %.2f\n' "$(echo "$j2/$z" | bc -l)" "$(echo "$psize/$zsize" | bc -l)"
printf 'xz:   speed-up -j 2 over -j 1: %.2f (goal >= 1.6)\n' "$(echo "$j1/$j2" | bc -l)"
printf 'zstd: ratio pgbb -j 2 / client-zstd wall: %.2f (goal <= 1.0), size: %.2f (goal <= 1.0)\n' "$(echo "$z2/$z" | bc -l)" "$(echo "$pzsize/$zsize" | bc -l)"
for c in xz zstd; do
	if [ $c = xz ]; then set -- "$pcpu" "$pm" "$fcpu" "$fmax" "$xmax"; else set -- "$zpcpu" "$zpm" "$zfcpu" "$zfmax" "$zxmax"; fi
	printf '%-5s pgbb-pack CPU %.2f s = %.1f%% of the fetchers %.2f s (goal < 10%%); peak RSS pack %d MiB, fetch %d MiB, xlog (with its children) %d MiB (goal <= 64)\n' \
		"$c:" "$1" "$(echo "100*$1/$3" | bc -l)" "$3" "$(($2 / 1024))" "$(($4 / 1024))" "$(($5 / 1024))"
done
