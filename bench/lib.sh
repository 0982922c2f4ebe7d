# lib.sh: shared by the benchmark scripts. Starts a throwaway cluster as the postgres user (PostgreSQL
# refuses root), with a private socket directory; fills it with pgbench; stops it on exit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pgbin=${PGBB_PGBIN:-/usr/lib/postgresql/15/bin}
export PATH="$here/bin:$pgbin:$PATH"
as_server() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work=$(mktemp -d "${PGBB_BENCH_DIR:-/tmp}/pgbb-bench.XXXXXX")
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres "$work"
bench_cleanup() {
	[ -f "$work/src/postmaster.pid" ] && as_server pg_ctl -D "$work/src" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap bench_cleanup EXIT

# start_cluster SCALE: initdb with data checksums, start on a socket in $work, pgbench -i -s SCALE.
start_cluster() {
	as_server initdb -D "$work/src" -k -U postgres -A trust --no-sync >/dev/null
	as_server pg_ctl -D "$work/src" -l "$work/src.log" -w -o "-p 5432 -k $work -c listen_addresses='' -c max_wal_size=1GB" start >/dev/null
	export PGHOST=$work PGPORT=5432 PGUSER=postgres PGDATABASE=postgres
	DSN="host=$work port=5432 user=postgres dbname=postgres"
	pgbench -i -q -s "$1" >/dev/null 2>&1
	psql -X -q -c CHECKPOINT
	echo "cluster: pgbench scale $1, $(du -sh "$work/src" | cut -f1) on disk" >&2
}

# seconds CMD…: run CMD, print its wall time in seconds on stdout
seconds() {
	local s e
	s=$(date +%s.%N)
	"$@" >/dev/null
	e=$(date +%s.%N)
	echo "$e - $s" | bc
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
