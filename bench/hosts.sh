#!/usr/bin/env bash
# hosts.sh [SCALE] [RUNS] [JOBS]: fetch jobs on 1, 2 and 4 other hosts (docs/continuous-wal.md, section 2).
# Each host is a network namespace joined to this one by a veth pair, with Debian's sshd on its address
# and keys made here; the server runs in this namespace, listens on 10.215.1.1, and every host reaches it
# over its own link. Each host's link is capped per TCP flow from the server as bench/capped.sh caps its
# loopback (HTB, one class per low byte of the client port, ${PGBB_BENCH_RATE:-100mbit} each), so a host's
# JOBS jobs (default 2) take JOBS flows. Native pg_basebackup -Fp -Xstream runs on host 1 over its link
# (one flow). pgbb-basebackup runs here (pgbb-xlog, pgbb-pack, the work list) with --ssh-host for each
# host. Prints the wall time of each run and each host's bytes (its link's counters, both directions).
# The jobs log in as pgbbbench, a system user with /bin/sh and no home (made here if missing): every job
# is one ssh login, and a login shell's rc files would be timed with it (root's .bashrc on this machine
# takes 0.55 s, which each job would pay before its first byte).
# Default scale 10, 1 run. Needs root (ip netns, tc) and /usr/sbin/sshd (scripts/install-deps).
source "$(dirname "$0")/lib.sh"
scale=${1:-10} runs=${2:-1} jobs=${3:-2}
rate=${PGBB_BENCH_RATE:-100mbit}
[ "$(id -u)" -eq 0 ] || { echo "hosts.sh: needs root for ip netns and tc" >&2; exit 2; }
[ -x /usr/sbin/sshd ] || { echo "hosts.sh: no /usr/sbin/sshd: run scripts/install-deps" >&2; exit 2; }
n=4
cleanup() {
	for i in $(seq $n); do
		[ -f "$work/sshd$i.pid" ] && kill "$(cat "$work/sshd$i.pid")" 2>/dev/null
		ip netns delete "pgbbb$i" 2>/dev/null || true
	done
	bench_cleanup
}
trap cleanup EXIT
ssh-keygen -q -t ed25519 -N '' -f "$work/host_key"
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
id pgbbbench >/dev/null 2>&1 || useradd --system --no-create-home --home-dir / --shell /bin/sh --password '*' pgbbbench
chmod 755 "$work" && chmod 644 "$work/authorized_keys" # sshd reads it as pgbbbench
mkdir -p /run/sshd
: >"$work/known_hosts"
for i in $(seq $n); do
	ns=pgbbb$i veth=pgbbbv$i
	ip netns delete "$ns" 2>/dev/null || true
	ip netns add "$ns"
	ip link add "$veth" type veth peer name eth0 netns "$ns"
	ip addr add "10.215.$i.1/24" dev "$veth"
	ip link set "$veth" up
	ip -n "$ns" addr add "10.215.$i.2/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	ip -n "$ns" route add default via "10.215.$i.1"
	# the server's packets to the host, capped per flow by the destination port's low byte
	{
		echo "qdisc add dev $veth root handle 1: htb default 1 r2q 100"
		echo "class add dev $veth parent 1: classid 1:1 htb rate 40gbit quantum 200000"
		echo "filter add dev $veth parent 1:0 prio 1 handle 2: protocol ip u32 divisor 256"
		for b in $(seq 0 255); do
			c=$(printf '%x' $((0x100 + b)))
			echo "class add dev $veth parent 1: classid 1:$c htb rate $rate ceil $rate burst 256k cburst 256k quantum 65536"
			echo "filter add dev $veth parent 1:0 prio 1 protocol ip u32 ht 2:$(printf '%x' "$b"): match ip sport 5432 0xffff flowid 1:$c"
		done
		echo "filter add dev $veth parent 1:0 prio 1 protocol ip u32 ht 800:: match ip protocol 6 0xff match ip sport 5432 0xffff hashkey mask 0x000000ff at 20 link 2:"
	} | tc -batch -
	cat >"$work/sshd$i.conf" <<EOF
ListenAddress 10.215.$i.2
HostKey $work/host_key
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
PidFile $work/sshd$i.pid
EOF
	ip netns exec "$ns" /usr/sbin/sshd -f "$work/sshd$i.conf"
	echo "10.215.$i.2 $(cat "$work/host_key.pub")" >>"$work/known_hosts"
done
ssh="ssh -i $work/client_key -o UserKnownHostsFile=$work/known_hosts -o BatchMode=yes -o LogLevel=ERROR"
PGBB_BENCH_LISTEN=10.215.1.1 PGBB_BENCH_HBA="host all all 10.215.0.0/16 trust" start_cluster "$scale"
PGBB_BENCH_HBA= # start_cluster's only
echo "host replication all 10.215.0.0/16 trust" >>"$work/src/pg_hba.conf"
psql -X -q -c "SELECT pg_reload_conf()" >/dev/null
tcp="host=10.215.1.1 port=5432 user=postgres dbname=postgres sslmode=disable"
out=$dst/out
counters() { for i in $(seq $n); do echo "$(cat /sys/class/net/pgbbbv$i/statistics/tx_bytes) $(cat /sys/class/net/pgbbbv$i/statistics/rx_bytes)"; done; }
# bytes BEFORE AFTER K: host i's bytes from the server side and back, in MB, for the first K hosts
bytes() { paste -d' ' <(echo "$1") <(echo "$2") | head -"$3" | awk '{ printf "%s host %d: %.1f MB in, %.1f MB out", (NR > 1 ? ";" : ""), NR, ($3 - $1) / 1e6, ($4 - $2) / 1e6 }'; }
native() { rm -rf "$out"; ip netns exec pgbbb1 pg_basebackup -d "$tcp" -D "$out" -Fp -Xstream -c fast; }
pgbb() {
	local k=$1 a=() i
	for i in $(seq "$k"); do a+=(--ssh-host "pgbbbench@10.215.$i.2"); done
	rm -rf "$out"
	PGBB_DSN=$tcp "$here/scripts/pgbb-basebackup" -j "$jobs" --ssh "$ssh" --remote-fetch "$here/bin/pgbb-fetch" "${a[@]}" "" "$out" 2>/dev/null
}
for r in $(seq "$runs"); do
	b=$(counters); s=$(seconds native); a=$(counters)
	echo "run $r: native pg_basebackup on host 1: $s s ($(bytes "$b" "$a" 1))" >&2
	for k in 1 2 4; do
		b=$(counters); s=$(seconds pgbb "$k"); a=$(counters)
		pg_verifybackup -q "$out" >/dev/null || { echo "hosts.sh: pg_verifybackup failed on the backup from $k host(s)" >&2; exit 1; }
		echo "run $r: pgbb -j $jobs on $k host(s): $s s ($(bytes "$b" "$a" "$k"); verified)" >&2
	done
done
