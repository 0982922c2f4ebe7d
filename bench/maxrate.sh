#!/usr/bin/env bash
# maxrate.sh [SCALE] [JOBS] [RATES…]: issue 15's figure, how closely --max-rate holds. The server runs in
# a network namespace made for the run; pgbb-basebackup -j JOBS reaches it over that namespace's loopback,
# whose counter (/sys/class/net/lo/statistics/tx_bytes: every byte either way, headers included) is
# sampled every 0.5 s. For each rate (default 10M and 50M, pg_basebackup's units) one backup of an idle
# cluster (default scale 50); then one that starts at the first rate from --max-rate-file and is switched
# to the second by rewriting the file (through a rename) 14 s after the run starts, and how soon after the
# write the wire's rate (over 0.5 s) was within 10% of the new limit. Printed per run: the wire's rate over every 10 s window
# that lies inside the copy (from 2 s after the start, when the pre-flight and the checkpoint are over, to
# 1 s before the end), its lowest and highest against the limit, and the whole run's mean. Each backup
# passes pg_verifybackup. Needs root (ip netns).
source "$(dirname "$0")/lib.sh"
scale=${1:-50} jobs=${2:-4}
shift $(( $# > 2 ? 2 : $# ))
rates=("$@"); [ ${#rates[@]} -gt 0 ] || rates=(10M 50M)
netns_start maxrate.sh
start_cluster "$scale"
tcp="host=127.0.0.1 port=5432 user=postgres dbname=postgres"
out=$dst/out
bytes() { awk -v r="$1" 'BEGIN { n = r + 0; if (r ~ /M$/) n *= 1024; printf "%d", n * 1024 }'; }

# sample FILE: append "seconds bytes" of the namespace's loopback every 0.5 s until killed
sample() { while :; do echo "$(date +%s.%N) $(wire)"; sleep 0.5; done >>"$1"; }

# windows SAMPLES FROM TO LIMIT: the 10 s windows inside [FROM, TO] (seconds since the first sample)
windows() {
	awk -v from="$2" -v to="$3" -v limit="$4" '
		{ t[NR] = $1; b[NR] = $2 }
		END {
			t0 = t[1]; n = 0; lo = 1e18; hi = 0
			for (i = 1; i <= NR; i++) {
				if (t[i] - t0 < from) continue
				for (j = i; j <= NR && t[j] - t[i] < 10; j++) ;
				if (j > NR || t[j] - t0 > to) break
				r = (b[j] - b[i]) / (t[j] - t[i]); n++
				if (r < lo) lo = r; if (r > hi) hi = r
			}
			if (n == 0) { printf "no 10 s window inside the copy"; exit }
			printf "%d windows of 10 s: lowest %.2f MB/s (%+.1f%%), highest %.2f MB/s (%+.1f%%)", n, lo / 1048576, 100 * (lo / limit - 1), hi / 1048576, 100 * (hi / limit - 1)
		}' "$1"
}

# limited NAME ARGS…: one backup with ARGS, sampled; leaves the samples in $work/NAME.samples
limited() {
	local name=$1; shift
	rm -rf "$out"; : >"$work/$name.samples"
	sample "$work/$name.samples" & local sp=$!
	sleep 0.6
	local s e w0=$(wire)
	s=$(date +%s.%N)
	if [ -n "${change_at:-}" ]; then
		( sleep "$change_at"; echo "$change_to" >"$work/rate.tmp"; mv "$work/rate.tmp" "$work/rate" ) &
	fi
	PGBB_DSN=$tcp inns "$here/scripts/pgbb-basebackup" -j "$jobs" -v "$@" "" "$out" 2>"$work/$name.err" || { cat "$work/$name.err" >&2; exit 1; }
	e=$(date +%s.%N)
	sleep 0.6; kill "$sp"; wait "$sp" 2>/dev/null || true
	pg_verifybackup -q "$out" || { echo "maxrate.sh: pg_verifybackup failed" >&2; exit 1; }
	dur=$(echo "$e - $s" | bc)
	wirebytes=$(( $(wire) - w0 ))
	start=$(awk -v s="$s" 'NR == 1 { print s - $1 }' "$work/$name.samples")
	echo "$name: $wirebytes bytes on the wire in $dur s, $(echo "scale=2; $wirebytes / $dur / 1048576" | bc) MB/s on average; $(grep -o 'the run read .*' "$work/$name.err")" >&2
}

for r in "${rates[@]}"; do
	limited "rate-$r" --max-rate "$r"
	printf '%-32s %s\n' "--max-rate $r, -j $jobs:" "$(windows "$work/rate-$r.samples" "$(echo "$start + 2" | bc)" "$(echo "$start + $dur - 1" | bc)" "$(bytes "$r")")"
done
if [ ${#rates[@]} -ge 2 ]; then
	a=${rates[0]} b=${rates[1]} at=14
	echo "$a" >"$work/rate"
	change_at=$at change_to=$b limited "change" --max-rate-file "$work/rate"
	wait
	grep -h "max rate now" "$work/change.err" >&2 || { echo "maxrate.sh: the change was not said" >&2; exit 1; }
	printf '%-32s %s\n' "--max-rate-file $a, first $at s:" "$(windows "$work/change.samples" "$(echo "$start + 2" | bc)" "$(echo "$start + $at" | bc)" "$(bytes "$a")")"
	printf '%-32s %s\n' "then $b (from $((at + 1)) s):" "$(windows "$work/change.samples" "$(echo "$start + $at + 1" | bc)" "$(echo "$start + $dur - 1" | bc)" "$(bytes "$b")")"
	awk -v at="$(echo "$start + $at" | bc)" -v limit="$(bytes "$b")" '
		{ t[NR] = $1; b[NR] = $2 }
		END {
			for (i = 2; i < NR; i++) {
				if (t[i] - t[1] < at) continue
				r = (b[i+1] - b[i]) / (t[i+1] - t[i]); if (r <= 1.1 * limit && r >= 0.9 * limit) { printf "the wire at the new rate %.2f s after the write (0.5 s samples)\n", t[i] - t[1] - at; exit }
			}
			print "the wire never came to the new rate"
		}' "$work/change.samples"
fi
echo "goal: within 10% of the limit over any 10 s" >&2
