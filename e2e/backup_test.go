package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// source is a cluster prepared like the acceptance case: data checksums, a tablespace, an unlogged
// table, pgbench data, and one file or directory for every rule of PostgreSQL's exclusion table.
type source struct {
	c       *pgtest.Cluster
	major   int
	tsDir   string // tablespace location on the server
	tsOID   string
	dbOID   string
	planted []string // excluded paths planted in the data directory
}

func newSource(t *testing.T, scale int) *source {
	return newSourceOf(t, 15, scale, pgtest.Options{DataChecksums: true})
}

// newSourceOf prepares a source cluster of a PostgreSQL major with the given initdb options.
func newSourceOf(t *testing.T, major, scale int, opt pgtest.Options) *source {
	bin, err := pgtest.MajorBinDir(major)
	if err != nil {
		t.Fatal(err)
	}
	opt.BinDir = bin
	opt.Conf = append([]string{"max_wal_size = 64MB", "checkpoint_timeout = 30s"}, opt.Conf...)
	c := pgtest.New(t, opt)
	s := &source{c: c, major: major, tsDir: c.TempDir(t)}
	c.Psql(t, "postgres", "CREATE TABLESPACE ts LOCATION '"+s.tsDir+"'")
	c.Psql(t, "postgres", `CREATE TABLE in_ts (id bigserial PRIMARY KEY, v text) TABLESPACE ts;
INSERT INTO in_ts (v) SELECT md5(g::text) FROM generate_series(1, 20000) g;
CREATE INDEX in_ts_v ON in_ts (v) TABLESPACE ts;
CREATE UNLOGGED TABLE ul (id int PRIMARY KEY, v text);
INSERT INTO ul SELECT g, md5(g::text) FROM generate_series(1, 20000) g;`)
	s.tsOID = c.Psql(t, "postgres", "SELECT oid FROM pg_tablespace WHERE spcname = 'ts'")
	s.dbOID = c.Psql(t, "postgres", "SELECT oid FROM pg_database WHERE datname = 'postgres'")
	if r := run(t, 5*time.Minute, c.Command("pgbench").Env, filepath.Join(pgtest.BinDir(), "pgbench"), "-i", "-q", "-s", strconv.Itoa(scale)); r.code != 0 {
		t.Fatalf("pgbench -i: %s", r.stderr)
	}
	s.plantExcluded(t)
	return s
}

// plantExcluded puts one entry for each exclusion rule into the running cluster's data directory.
func (s *source) plantExcluded(t *testing.T) {
	d := s.c.Dir
	files := []string{
		"pg_stat_tmp/planted.stat",
		"pg_dynshmem/planted.dsm",
		"pg_notify/planted",
		"pg_serial/planted",
		"pg_snapshots/planted-snapshot",
		"postgresql.auto.conf.tmp",
		"current_logfiles.tmp",
		"backup_label",
		"tablespace_map",
		"backup_manifest",
		"base/" + s.dbOID + "/pg_internal.init.12345",
		"base/pgsql_tmp/pgsql_tmp999.0",
		"base/" + s.dbOID + "/pgsql_tmp123",
		"base/" + s.dbOID + "/t3_99999",
		"base/" + s.dbOID + "/t3_99999_fsm",
		"pg_wal/archive_status/000000010000000000000001.done",
	}
	for _, f := range files {
		p := filepath.Join(d, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("planted by the test: must not be in the backup\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		s.planted = append(s.planted, f)
	}
	// a slot directory, as a real slot would leave
	if err := os.MkdirAll(filepath.Join(d, "pg_replslot", "planted_slot"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.ChownToServerUser(d); err != nil {
		t.Fatal(err)
	}
	// pg_internal.init, postmaster.pid and postmaster.opts exist in a running cluster
	for _, f := range []string{"global/pg_internal.init", "postmaster.pid", "postmaster.opts"} {
		if _, err := os.Stat(filepath.Join(d, f)); err != nil {
			t.Fatalf("expected %s in the running cluster: %v", f, err)
		}
	}
}

// load runs pgbench -c 2 (TPC-B) and a second client writing the tablespace and unlogged tables until stop
// is called.
func (s *source) load(t *testing.T) (stop func()) {
	script := filepath.Join(t.TempDir(), "extra.sql")
	os.WriteFile(script, []byte(`INSERT INTO in_ts (v) SELECT md5(random()::text) FROM generate_series(1, 50);
INSERT INTO ul SELECT id + 1000000, v FROM ul WHERE id = (SELECT max(id) FROM ul) ON CONFLICT DO NOTHING;
`), 0o644)
	os.Chmod(filepath.Dir(script), 0o755)
	var cmds []*exec.Cmd
	for _, args := range [][]string{{"-c", "2", "-j", "2", "-T", "3600", "-n"}, {"-c", "1", "-T", "3600", "-n", "-f", script}} {
		cmd := s.c.Command("pgbench", args...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	time.Sleep(time.Second)
	return func() {
		for _, cmd := range cmds {
			cmd.Process.Signal(syscall.SIGKILL)
			cmd.Wait()
		}
	}
}

// checkRestore is the oracle: stock pg_verifybackup with WAL parsing, the restored cluster starts and
// reaches consistency, pg_amcheck passes, pgbench balances agree, the tablespace data is there through the
// mapped link, and the unlogged table is empty.
func (s *source) checkRestore(t *testing.T, dest, tsNew string, verifyArgs ...string) *pgtest.Cluster {
	t.Helper()
	s.verifyPlain(t, dest, verifyArgs...)
	return s.startAndCheck(t, dest, tsNew)
}

// startAndCheck is checkRestore after the verifier: start the restored cluster in dest (its tablespace in
// tsNew) and check the oracle.
func (s *source) startAndCheck(t *testing.T, dest, tsNew string) *pgtest.Cluster {
	t.Helper()
	link := filepath.Join(dest, "pg_tblspc", s.tsOID)
	if target, err := os.Readlink(link); err != nil || target != tsNew {
		t.Fatalf("tablespace link %s -> %q (%v), want %s", link, target, err, tsNew)
	}
	if ents, _ := os.ReadDir(tsNew); len(ents) != 1 || !strings.HasPrefix(ents[0].Name(), fmt.Sprintf("PG_%d_", s.major)) {
		t.Fatalf("mapped tablespace directory holds %v", ents)
	}
	if err := pgtest.ChownToServerUser(dest); err != nil {
		t.Fatal(err)
	}
	r := pgtest.Start(t, dest)
	s.checkRestored(t, r, tsNew)
	return r
}

// checkRestored is the oracle on a restored cluster that has started and ended its recovery.
func (s *source) checkRestored(t *testing.T, r *pgtest.Cluster, tsNew string) {
	t.Helper()
	if got := r.Psql(t, "postgres", "SELECT pg_is_in_recovery()"); got != "f" {
		t.Fatalf("restored cluster in recovery: %s", got)
	}
	sums := r.Psql(t, "postgres", `SELECT (SELECT sum(abalance) FROM pgbench_accounts) || ' ' || (SELECT sum(tbalance) FROM pgbench_tellers)
 || ' ' || (SELECT sum(bbalance) FROM pgbench_branches) || ' ' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)
 || ' ' || (SELECT count(*) FROM pgbench_history)`)
	f := strings.Fields(sums)
	if len(f) != 5 || f[0] != f[1] || f[1] != f[2] || f[2] != f[3] {
		t.Fatalf("pgbench balances disagree: accounts, tellers, branches, history = %v", f)
	}
	if f[4] == "0" {
		t.Fatalf("no pgbench transaction in the backup: the load did not run")
	}
	if n, _ := strconv.Atoi(r.Psql(t, "postgres", "SELECT count(*) FROM in_ts")); n < 20000 {
		t.Fatalf("tablespace table has %d rows, want at least 20000", n)
	}
	if got := r.Psql(t, "postgres", "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts'"); got != tsNew {
		t.Fatalf("restored tablespace location %q, want %q", got, tsNew)
	}
	if got := r.Psql(t, "postgres", "SELECT count(*) FROM ul"); got != "0" {
		t.Fatalf("unlogged table has %s rows after restore, want 0", got)
	}
	if s.major == 13 {
		// pg_amcheck needs verify_heapam, which amcheck has from 14 on: 13 checks every B-tree index
		// against its heap with amcheck's bt_index_check (heapallindexed), in every database
		for _, db := range strings.Fields(r.Psql(t, "postgres", "SELECT datname FROM pg_database WHERE datallowconn")) {
			r.Psql(t, db, `CREATE EXTENSION IF NOT EXISTS amcheck;
SELECT count(bt_index_check(c.oid, true)) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
  JOIN pg_am a ON a.oid = c.relam WHERE a.amname = 'btree' AND c.relpersistence <> 't'`)
		}
		return
	}
	am := r.Command("pg_amcheck", "--all", "--heapallindexed", "--install-missing")
	if out, err := am.CombinedOutput(); err != nil {
		t.Fatalf("pg_amcheck: %v\n%s", err, out)
	}
}

// verifyPlain runs the stock verifier of the source's major on a plain backup: pg_verifybackup 18 for 18,
// Debian's 15 for 13 to 16 (manifest version 1), each parsing WAL only of its own major (pg_waldump reads
// one major's WAL). No stock pg_verifybackup here reads a 17 backup (18's checks pg_control with 18's
// layout), so there pgbb-pack --verify stands in; the restore that follows is the oracle's other half.
func (s *source) verifyPlain(t *testing.T, dest string, args ...string) {
	t.Helper()
	tool := filepath.Join(pgtest.BinDir(), "pg_verifybackup")
	switch s.major {
	case 15:
	case 18:
		d, err := stockTools()
		if err != nil {
			t.Fatal(err)
		}
		tool = filepath.Join(d, "pg_verifybackup")
	case 17:
		if r := run(t, 5*time.Minute, env(), filepath.Join(binDir, "pgbb-pack"), "--verify", dest); r.code != 0 {
			t.Fatalf("pgbb-pack --verify failed:\n%s%s", r.stdout, r.stderr)
		}
		t.Logf("PostgreSQL 17: no stock pg_verifybackup here reads its backups; pgbb-pack --verify passed")
		return
	default:
		args = append(args, "-n")
	}
	if r := run(t, 5*time.Minute, env(), tool, append(args, dest)...); r.code != 0 {
		t.Fatalf("%s failed:\n%s%s", tool, r.stdout, r.stderr)
	}
}

// checkExcluded asserts every planted excluded entry is absent from the backup and every directory whose
// contents are excluded is present and empty.
func (s *source) checkExcluded(t *testing.T, dest string) {
	t.Helper()
	for _, f := range s.planted {
		switch f {
		case "backup_label":
			b, err := os.ReadFile(filepath.Join(dest, f))
			if err != nil || strings.Contains(string(b), "planted") || !strings.Contains(string(b), "START WAL LOCATION") {
				t.Errorf("backup_label is not the one pg_backup_stop returned: %q %v", b, err)
			}
			continue
		case "backup_manifest":
			b, _ := os.ReadFile(filepath.Join(dest, f))
			if strings.Contains(string(b), "planted") {
				t.Errorf("planted backup_manifest copied")
			}
			continue
		}
		if _, err := os.Lstat(filepath.Join(dest, f)); err == nil {
			t.Errorf("excluded %s is in the backup", f)
		}
	}
	for _, f := range []string{"postmaster.pid", "postmaster.opts", "global/pg_internal.init", "base/" + s.dbOID + "/pg_internal.init", "base/pgsql_tmp", "tablespace_map"} {
		if _, err := os.Lstat(filepath.Join(dest, f)); err == nil {
			t.Errorf("excluded %s is in the backup", f)
		}
	}
	for _, d := range []string{"pg_stat_tmp", "pg_replslot", "pg_dynshmem", "pg_notify", "pg_serial", "pg_snapshots", "pg_subtrans", "pg_wal/archive_status"} {
		ents, err := os.ReadDir(filepath.Join(dest, d))
		if err != nil {
			t.Errorf("directory %s missing from the backup: %v", d, err)
		} else if len(ents) != 0 {
			t.Errorf("directory %s should be empty, holds %d entries (%s…)", d, len(ents), ents[0].Name())
		}
	}
	// the unlogged table: only its init fork
	rel := s.c.Psql(t, "postgres", "SELECT relfilenode FROM pg_class WHERE relname = 'ul'")
	if _, err := os.Stat(filepath.Join(dest, "base", s.dbOID, rel)); err == nil {
		t.Errorf("unlogged table's main fork is in the backup")
	}
	if _, err := os.Stat(filepath.Join(dest, "base", s.dbOID, rel+"_init")); err != nil {
		ents, _ := filepath.Glob(filepath.Join(dest, "base", s.dbOID, "*_init"))
		t.Errorf("unlogged table's init fork is missing: %v (init forks: %v; source: %s)", err, ents, s.c.Psql(t, "postgres", "SELECT string_agg(relname || '=' || relfilenode, ' ') FROM pg_class WHERE relpersistence = 'u'"))
	}
	// modes of a cluster made without -g
	filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
		if err != nil || fi.Mode()&os.ModeSymlink != 0 {
			return nil
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %04o, want %04o", p, fi.Mode().Perm(), want)
			return filepath.SkipAll
		}
		return nil
	})
}

// TestPlainBackupUnderWriteLoad backs up a cluster under pgbench writes with both fan-outs and restores the
// result. PGBB_E2E_RUNS=N repeats each fan-out N times on the same cluster (the issue's "ten consecutive
// runs": PGBB_E2E_RUNS=10).
func TestPlainBackupUnderWriteLoad(t *testing.T) {
	runs := 1
	if n, err := strconv.Atoi(os.Getenv("PGBB_E2E_RUNS")); err == nil && n > 0 {
		runs = n
	}
	// the jobs write into DEST themselves (direct writes) unless --no-direct-write: then they stream their
	// data to pgbb-pack's sink
	for _, variant := range [][]string{{"parallel"}, {"xargs"}, {"xargs", "--no-direct-write"}} {
		fanout := variant[0]
		t.Run(strings.Join(variant, " "), func(t *testing.T) {
			s := newSource(t, 10)
			for i := 1; i <= runs; i++ {
				stop := s.load(t)
				dest := s.c.TempDir(t)
				tsNew := s.c.TempDir(t)
				args := append([]string{"-j", "4", "--fanout", fanout}, variant[1:]...)
				r := run(t, 10*time.Minute, env(), script, append(args, "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)...)
				stop()
				if r.code != 0 {
					t.Fatalf("run %d: pgbb-basebackup exit %d\nstderr:\n%s", i, r.code, r.stderr)
				}
				if r.stdout != "" {
					t.Errorf("pgbb-basebackup wrote to stdout: %q", r.stdout)
				}
				s.checkExcluded(t, dest)
				checkWALAllocated(t, dest)
				s.checkRestore(t, dest, tsNew)
				// nothing of the backup session is left on the server
				if n := s.c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
					t.Errorf("%s replication slots left on the server", n)
				}
				t.Logf("run %d of %d: backup took %v", i, runs, r.elapsed.Round(time.Millisecond))
			}
		})
	}
}

// checkWALAllocated checks that every WAL segment of a plain backup is whole, with every block allocated:
// the zeros after the stop LSN, sent as zstd frames (session.writeZeros), are allocated by pgbb-pack, not
// left a hole a restored server could fail to write WAL into.
func checkWALAllocated(t *testing.T, dest string) {
	t.Helper()
	segs, _ := filepath.Glob(filepath.Join(dest, "pg_wal", "[0-9A-F]*[0-9A-F]"))
	if len(segs) == 0 {
		t.Fatalf("no WAL segment in %s/pg_wal", dest)
	}
	for _, p := range segs {
		var st syscall.Stat_t
		if err := syscall.Stat(p, &st); err != nil {
			t.Fatal(err)
		}
		if st.Size != 16<<20 || st.Blocks*512 < st.Size {
			t.Errorf("%s: %d bytes, %d allocated; want a whole segment, all allocated", p, st.Size, st.Blocks*512)
		}
	}
}

// The README's pipelines, without the script: the jobs' streams go to pgbb-pack's sink (PGBB_SINK set, GNU
// parallel), or to the socket pgbb-xlog makes when PGBB_SINK is not set (xargs), which forwards them.
func TestPipelinesWithoutTheScript(t *testing.T) {
	s := newSource(t, 5)
	for name, pipeline := range map[string]string{
		"sink in pgbb-pack, parallel": `export PGBB_SINK="$SINKDIR/sink"
pgbb-xlog -- bash -c 'set -o pipefail; pgbb-list -j 4 | parallel --will-cite --pipe -N 64 -j 4 pgbb-fetch' \
  | pgbb-pack --sink "$PGBB_SINK" -T "$TSMAP" -D "$DEST"`,
		"sink in pgbb-xlog, xargs": `pgbb-xlog -- bash -c 'set -o pipefail; pgbb-list -j 4 | xargs -d "\n" -n 64 -P 4 pgbb-fetch' \
  | pgbb-pack -T "$TSMAP" -D "$DEST"`,
	} {
		t.Run(name, func(t *testing.T) {
			stop := s.load(t)
			dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
			r := run(t, 10*time.Minute, env("PGBB_DSN="+s.c.DSN(), "SINKDIR="+t.TempDir(), "TSMAP="+s.tsDir+"="+tsNew, "DEST="+dest),
				"bash", "-c", "set -o pipefail\n"+pipeline)
			stop()
			if r.code != 0 {
				t.Fatalf("exit %d\nstderr:\n%s", r.code, r.stderr)
			}
			s.checkExcluded(t, dest)
			s.checkRestore(t, dest, tsNew)
		})
	}
}

// DEST and a -T directory given as links to empty directories: the backup goes where they point, as it
// did before the jobs wrote into DEST themselves (their descriptors are opened on the link's target).
func TestLinkedTargetDirectories(t *testing.T) {
	s := newSource(t, 1)
	realDest, realTs, links := s.c.TempDir(t), s.c.TempDir(t), s.c.TempDir(t)
	dest, tsNew := filepath.Join(links, "dest"), filepath.Join(links, "ts")
	if err := os.Symlink(realDest, dest); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(realTs, tsNew); err != nil {
		t.Fatal(err)
	}
	r := run(t, 5*time.Minute, env(), script, "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(realDest, "backup_manifest")); err != nil {
		t.Fatalf("no backup_manifest where DEST points: %v", err)
	}
	if ents, _ := os.ReadDir(realTs); len(ents) != 1 {
		t.Fatalf("the tablespace's directory holds %d entries where -T points", len(ents))
	}
	s.verifyPlain(t, realDest)
}
