# lib.sh: shared by the benchmark scripts. Starts a throwaway cluster as the postgres user (PostgreSQL
# refuses root), with a private socket directory; fills it with pgbench, settles it (VACUUM FREEZE, no
# autovacuum) so the runs see an idle cluster; stops it on exit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pgbin=${PGBB_PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$here/bin:$pgbin:$PATH"
# From /: the postgres user may not enter this checkout's directory, and initdb and pg_ctl would say
# "could not change directory" (every path they get is absolute).
as_server() { if [ "$(id -u)" -eq 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
work=$(mktemp -d "${PGBB_BENCH_DIR:-/tmp}/pgbb-bench.XXXXXX")
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres "$work"
bench_cleanup() {
	[ -f "$work/src/postmaster.pid" ] && as_server pg_ctl -D "$work/src" -m immediate stop >/dev/null 2>&1 || true
	mountpoint -q "$work/dst" 2>/dev/null && umount "$work/dst"
	rm -rf "$work"
}

# The backups go to $dst. As root, that is a fresh journaled ext4 file system on a loop device (a sparse
# image of ${PGBB_BENCH_FS_SIZE:-40G} in $work): this machine's root file system runs ext4 without a journal,
# where creating a file scans the inodes deleted in the last minute (ialloc.c, recently_deleted), so a run
# right after the last run's rm -rf pays for every file that run deleted, the more the more files. Set
# PGBB_BENCH_LOOPFS=0 to write to $work directly, PGBB_BENCH_LOOPFS=tmpfs to write to a tmpfs.
dst=$work/dst
mkdir -p "$dst"
if [ "$(id -u)" -eq 0 ] && [ "${PGBB_BENCH_LOOPFS:-1}" = tmpfs ]; then
	# PGBB_BENCH_LOOPFS=tmpfs: no disk at all, the steadiest measure of CPU per byte
	mount -t tmpfs -o size="${PGBB_BENCH_FS_SIZE:-16G}" tmpfs "$dst"
elif [ "$(id -u)" -eq 0 ] && [ "${PGBB_BENCH_LOOPFS:-1}" != 0 ]; then
	truncate -s "${PGBB_BENCH_FS_SIZE:-40G}" "$work/fs.img"
	mkfs.ext4 -q -F "$work/fs.img"
	mount -o loop "$work/fs.img" "$dst"
fi
trap bench_cleanup EXIT

# start_cluster SCALE: initdb with data checksums, start on a socket in $work, pgbench -i -s SCALE.
# With bench_netns set, the server runs in that network namespace and also listens on its 127.0.0.1.
start_cluster() {
	as_server initdb -D "$work/src" -k -U postgres -A trust --no-sync >/dev/null
	# PGBB_BENCH_HBA: a line added to pg_hba.conf (hosts.sh lets its other hosts in)
	[ -z "${PGBB_BENCH_HBA:-}" ] || echo "$PGBB_BENCH_HBA" >>"$work/src/pg_hba.conf"
	local opts="-p 5432 -k $work -c max_wal_size=1GB -c autovacuum=off ${PGBB_BENCH_PGOPTS:-}"
	if [ -n "${bench_netns:-}" ]; then
		ip netns exec "$bench_netns" runuser -u postgres -- pg_ctl -D "$work/src" -l "$work/src.log" -w -o "$opts -c listen_addresses=127.0.0.1" start >/dev/null
	else
		as_server pg_ctl -D "$work/src" -l "$work/src.log" -w -o "$opts -c listen_addresses='${PGBB_BENCH_LISTEN:-}'" start >/dev/null
	fi
	export PGHOST=$work PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
	DSN="host=$work port=5432 user=postgres dbname=postgres"
	pgbench -i -q -s "$1" >/dev/null 2>&1
	# settle the new cluster so every run copies the same thing: no autovacuum or hint-bit writes (which
	# the start checkpoint of each backup would flush) in the middle of the runs
	psql -X -q -c "VACUUM (FREEZE, ANALYZE)" -c CHECKPOINT
	sync
	echo "cluster: pgbench scale $1, $(du -sh "$work/src" | cut -f1) on disk" >&2
}

# seconds CMD…: run CMD, print its wall time in seconds on stdout
# (dirty pages of the run before are written out first, off the clock: twice, as the first sync of the
# loop-mounted file system leaves dirty pages of its image file on the root file system)
seconds() {
	local s e
	sync; sync
	s=$(date +%s.%N)
	"$@" >/dev/null
	e=$(date +%s.%N)
	echo "$e - $s" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# make_wrappers: $wrap holds pgbb-xlog, pgbb-list, pgbb-fetch and pgbb-pack wrappers that append a line
# "PROGRAM PEAK-RSS-KB USER-S SYS-S" per process to $PGBB_RSS_LOG; run the script with PGBB_BINDIR=$wrap.
# pgbb-xlog's figures include its children (the jobs) as wait4 reports them.
make_wrappers() {
	wrap=$work/wrap; mkdir -p "$wrap"
	export PGBB_RSS_LOG=$work/rss.log; : >"$PGBB_RSS_LOG"
	for b in pgbb-xlog pgbb-list pgbb-fetch pgbb-pack; do
		printf '#!/bin/sh\nexec /usr/bin/time -a -o "$PGBB_RSS_LOG" -f "%s %%M %%U %%S" %s "$@"\n' "$b" "$here/bin/$b" >"$wrap/$b"
		chmod +x "$wrap/$b"
	done
}

# server_cpu: the CPU seconds (user+system) the cluster has used so far: every process of the postmaster's
# tree, plus what the postmaster's reaped children (the backends that served the runs) used, which the
# kernel adds to the postmaster's cutime and cstime.
server_cpu() {
	local pm ticks
	pm=$(head -1 "$work/src/postmaster.pid")
	ticks=$(
		for p in $pm $(pgrep -P "$pm"); do
			# fields after the command name: utime stime cutime cstime are 14..17 of /proc/PID/stat
			[ -r "/proc/$p/stat" ] && sed 's/^.*) //' "/proc/$p/stat" | awk -v pm="$pm" -v p="$p" '{ t = $12 + $13; if (p == pm) t += $14 + $15; print t }'
		done | awk '{ s += $1 } END { print s + 0 }'
	)
	echo "$ticks / $(getconf CLK_TCK)" | bc -l
}

# cpu_run NAME CMD…: runs CMD (a pgbb-basebackup or pg_basebackup command line) once with every pgbb
# program under /usr/bin/time (make_wrappers first) and pg_basebackup too, and prints one line: NAME, the wall
# seconds, the server's CPU seconds, and the client's per program (pgbb-xlog's own, without its children).
cpu_run() {
	local name=$1 s e s0 s1
	shift
	: >"$PGBB_RSS_LOG"
	sync; sync
	s0=$(server_cpu)
	s=$(date +%s.%N)
	PGBB_BINDIR=$wrap "$@" >/dev/null
	e=$(date +%s.%N)
	s1=$(server_cpu)
	awk -v name="$name" -v wall="$(echo "$e - $s" | bc)" -v server="$(echo "$s1 - $s0" | bc)" '
		{ cpu[$1] += $3 + $4; n[$1]++ }
		END {
			xlog = cpu["pgbb-xlog"] - cpu["pgbb-list"] - cpu["pgbb-fetch"]
			client = cpu["pg_basebackup"] + cpu["pgbb-xlog"] + cpu["pgbb-pack"]
			printf "%-34s wall %6.2f s  server %5.2f CPU-s  client %5.2f CPU-s:", name, wall, server, client
			if (n["pg_basebackup"]) printf " pg_basebackup %.2f", cpu["pg_basebackup"]
			if (n["pgbb-fetch"]) printf " fetch %.2f (%d jobs), pack %.2f, xlog+bash+xargs %.2f, list %.2f", cpu["pgbb-fetch"], n["pgbb-fetch"], cpu["pgbb-pack"], xlog, cpu["pgbb-list"]
			printf "\n"
		}' "$PGBB_RSS_LOG"
}

# timed_basebackup ARGS…: pg_basebackup under /usr/bin/time, for cpu_run.
timed_basebackup() { /usr/bin/time -a -o "$PGBB_RSS_LOG" -f "pg_basebackup %M %U %S" pg_basebackup "$@"; }

# netns_start PROG: a network namespace for the run (root only), removed on exit; inns runs a command in it,
# and start_cluster then runs the server there. The backups reach it over that namespace's loopback, whose
# counters (wire) see only the backups' traffic.
netns_start() {
	[ "$(id -u)" -eq 0 ] || { echo "$1: needs root for ip netns" >&2; exit 2; }
	ns=pgbb-bench-$$
	ip netns add "$ns"
	trap 'bench_cleanup; ip netns delete "$ns" 2>/dev/null || true' EXIT
	ip netns exec "$ns" ip link set lo up
	bench_netns=$ns
}
inns() { ip netns exec "$ns" "$@"; }
wire() { inns cat /sys/class/net/lo/statistics/tx_bytes; }
