package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// Issue 14: a chain of PostgreSQL 18 backups under pgbench load with a tablespace, mixing pgbb and stock
// incrementals in either order (pgbb full, pgbb incremental, stock incremental, pgbb incremental),
// combined by stock pg_combinebackup 18. Between the backups: TRUNCATE, DROP TABLE, CREATE DATABASE with
// both strategies, a VACUUM that truncates a table's end, new tables, a table moved to the other
// tablespace, and updates that clear all-visible bits. The combined cluster must pass the restore oracle,
// hold every table as the source has it, and show pg_check_visible() empty on every table.
func TestIncrementalChain18(t *testing.T) {
	tools, err := stockTools()
	if err != nil {
		t.Fatal(err)
	}
	s := newSourceOf(t, 18, 5, pgtest.Options{DataChecksums: true, Conf: []string{"summarize_wal = on"}})
	c := s.c
	c.Psql(t, "postgres", chainTables)
	full := s.backupAndRestoreKeep(t)

	// pgbb incremental on pgbb's full
	c.Psql(t, "postgres", chainChanges)
	c.Psql(t, "postgres", "VACUUM to_shrink") // truncates the table's end
	c.Psql(t, "postgres", "CREATE DATABASE db_wal STRATEGY wal_log")
	c.Psql(t, "db_wal", "CREATE TABLE w AS SELECT g FROM generate_series(1, 5000) g")
	inc1 := s.incremental(t, full.dest)
	if names := incrementalFiles(t, inc1.dest); len(names) == 0 {
		t.Fatalf("the pgbb incremental holds no INCREMENTAL file")
	} else {
		for _, n := range names {
			if strings.Contains(n, "_vm") || strings.Contains(n, "_fsm") {
				t.Fatalf("%s: visibility map and free space map forks must be copied in full", n)
			}
		}
	}

	// stock incremental on pgbb's incremental
	c.Psql(t, "postgres", "ALTER TABLE to_move SET TABLESPACE ts")
	c.Psql(t, "postgres", "CREATE DATABASE db_copy STRATEGY file_copy")
	c.Psql(t, "db_copy", "CREATE TABLE f AS SELECT g FROM generate_series(1, 5000) g")
	stop := s.load(t)
	inc2, ts2 := filepath.Join(c.TempDir(t), "stock"), c.TempDir(t)
	r := run(t, 5*time.Minute, env(), filepath.Join(tools, "pg_basebackup"), "-D", inc2, "-c", "fast", "-T", s.tsDir+"="+ts2,
		"--incremental", filepath.Join(inc1.dest, "backup_manifest"), "-d", c.DSN())
	stop()
	if r.code != 0 {
		t.Fatalf("pg_basebackup --incremental on pgbb's incremental manifest: %s", r.stderr)
	}

	// pgbb incremental on the stock incremental
	c.Psql(t, "postgres", "UPDATE vis SET v = 'again' WHERE g % 700 = 0; INSERT INTO fresh SELECT g, 'more' FROM generate_series(20001, 25000) g")
	c.Psql(t, "postgres", "DROP DATABASE db_wal")
	inc3 := s.incremental(t, inc2)

	combined, tsComb := filepath.Join(c.TempDir(t), "combined"), c.TempDir(t)
	os.Remove(tsComb)
	r = run(t, 5*time.Minute, env(), filepath.Join(tools, "pg_combinebackup"), "-o", combined, "-T", inc3.tsNew+"="+tsComb,
		full.dest, inc1.dest, inc2, inc3.dest)
	if r.code != 0 {
		t.Fatalf("pg_combinebackup: %s%s", r.stdout, r.stderr)
	}
	// the test's own combiner, the judge on 17, must agree with the stock one byte for byte
	mine, mineTs := filepath.Join(c.TempDir(t), "mine"), c.TempDir(t)
	combine(t, mine, mineTs, full.dest, inc1.dest, inc2, inc3.dest)
	if a, b := dataFiles(t, combined), dataFiles(t, mine); a != b || strings.Count(a, "\n") < 500 || !strings.Contains(a, "pg_tblspc/") {
		t.Fatalf("the test's combiner disagrees with stock pg_combinebackup (or the listing misses files):\nstock:\n%s\nmine:\n%s", a, b)
	} else {
		t.Logf("the test's combiner and stock pg_combinebackup agree on %d files", strings.Count(a, "\n")+1)
	}
	if err := pgtest.ChownToServerUser(filepath.Dir(combined)); err != nil {
		t.Fatal(err)
	}
	restored := s.checkRestore(t, combined, tsComb)
	checkChain(t, c, restored)
}

// incremental takes a pgbb incremental backup of s against prior under load, checks it with the stock
// verifier (or pgbb-pack --verify on 17) and that it sent less than the whole.
func (s *source) incremental(t *testing.T, prior string) keptBackup {
	t.Helper()
	stop := s.load(t)
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-v", "-j", "2", "--incremental", prior, "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	stop()
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup --incremental exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	m := regexp.MustCompile(`incremental: (\d+) bytes of changed blocks and (\d+) bytes of whole files to send; (\d+) bytes taken from the prior backups`).FindStringSubmatch(r.stderr)
	if m == nil || m[3] == "0" {
		t.Fatalf("no incremental summary, or nothing taken from the prior:\n%s", r.stderr)
	}
	t.Logf("%s", m[0])
	// the prior is here: the changed blocks were compared with its files, and what matched stayed here
	if p := regexp.MustCompile(`fetched (\d+) bytes, took (\d+) bytes from the prior backup after a digest match`).FindStringSubmatch(r.stderr); p == nil || p[2] == "0" {
		t.Fatalf("pgbb-pack took nothing from the prior backup's files:\n%s", r.stderr)
	} else {
		t.Logf("pgbb-pack: fetched %s bytes, took %s from the prior's files", p[1], p[2])
	}
	label, err := os.ReadFile(filepath.Join(dest, "backup_label"))
	if err != nil || !strings.Contains(string(label), "\nINCREMENTAL FROM LSN: ") || !strings.Contains(string(label), "\nINCREMENTAL FROM TLI: ") {
		t.Fatalf("backup_label without the INCREMENTAL FROM lines (%v):\n%s", err, label)
	}
	s.verifyPlain(t, dest)
	return keptBackup{dest, tsNew}
}

// incrementalFiles lists the INCREMENTAL files of a backup, by path.
func incrementalFiles(t *testing.T, dir string) []string {
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), "INCREMENTAL.") {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// ensureMajor installs the server binaries of a major the default list (PGBB_MAJORS) leaves out, once
// (scripts/install-pg-majors caches them), and points PGBB_PGBIN_<major> at them.
func ensureMajor(t *testing.T, major int) {
	t.Helper()
	name := "PGBB_PGBIN_" + strconv.Itoa(major)
	if os.Getenv(name) != "" {
		return
	}
	out, err := exec.Command(filepath.Join(repoDir, "scripts", "install-pg-majors"), strconv.Itoa(major)).Output()
	if err != nil {
		t.Fatalf("scripts/install-pg-majors %d: %v", major, err)
	}
	_, dir, ok := strings.Cut(strings.TrimSpace(string(out)), "\t")
	if !ok {
		t.Fatalf("scripts/install-pg-majors printed %q", out)
	}
	os.Setenv(name, dir)
}

// Issue 14 on PostgreSQL 17, where no stock pg_combinebackup here reads the backups (18's refuses 17's
// pg_control): a pgbb full and two pgbb incrementals under pgbench load with a tablespace, with a
// TRUNCATE, a DROP TABLE, a new table, a VACUUM that truncates, CREATE DATABASE with both strategies and a
// table moved between them. Each incremental passes pgbb-pack --verify; the chain is combined by the
// test's own combiner (combine, the rules of reconstruct.c) and must start and hold the restore oracle,
// every table as on the source, and pg_check_visible() empty.
func TestIncrementalChain17(t *testing.T) {
	ensureMajor(t, 17)
	s := newSourceOf(t, 17, 5, pgtest.Options{DataChecksums: true, Conf: []string{"summarize_wal = on"}})
	c := s.c
	c.Psql(t, "postgres", chainTables)
	full := s.backupAndRestoreKeep(t)
	c.Psql(t, "postgres", chainChanges)
	c.Psql(t, "postgres", "VACUUM to_shrink")
	c.Psql(t, "postgres", "CREATE DATABASE db_wal STRATEGY wal_log")
	c.Psql(t, "db_wal", "CREATE TABLE w AS SELECT g FROM generate_series(1, 5000) g")
	inc1 := s.incremental(t, full.dest)
	if len(incrementalFiles(t, inc1.dest)) == 0 {
		t.Fatalf("the pgbb incremental holds no INCREMENTAL file")
	}
	c.Psql(t, "postgres", "ALTER TABLE to_move SET TABLESPACE ts")
	c.Psql(t, "postgres", "CREATE DATABASE db_copy STRATEGY file_copy")
	c.Psql(t, "db_copy", "CREATE TABLE f AS SELECT g FROM generate_series(1, 5000) g")
	c.Psql(t, "postgres", "UPDATE vis SET v = 'again' WHERE g % 700 = 0; INSERT INTO fresh SELECT g, 'more' FROM generate_series(20001, 25000) g")
	c.Psql(t, "postgres", "DROP DATABASE db_wal")
	inc2 := s.incremental(t, inc1.dest)

	combined, tsRoot := filepath.Join(c.TempDir(t), "combined"), c.TempDir(t)
	combine(t, combined, tsRoot, full.dest, inc1.dest, inc2.dest)
	if err := pgtest.ChownToServerUser(filepath.Dir(combined)); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.ChownToServerUser(tsRoot); err != nil {
		t.Fatal(err)
	}
	restored := s.startAndCheck(t, combined, filepath.Join(tsRoot, s.tsOID))
	checkChain(t, c, restored)
}

// The tables of the chain tests, made before the full backup, and the changes before the first
// incremental.
const (
	chainTables = `CREATE EXTENSION pg_visibility;
CREATE TABLE to_truncate AS SELECT g, md5(g::text) v FROM generate_series(1, 30000) g;
CREATE TABLE to_drop AS SELECT g FROM generate_series(1, 30000) g;
CREATE TABLE to_shrink AS SELECT g, md5(g::text) v FROM generate_series(1, 60000) g;
CREATE TABLE to_move AS SELECT g, md5(g::text) v FROM generate_series(1, 30000) g;
CREATE TABLE vis AS SELECT g, md5(g::text) v FROM generate_series(1, 60000) g;
VACUUM (FREEZE) to_truncate, to_drop, to_shrink, to_move, vis;`
	chainChanges = `TRUNCATE to_truncate;
DROP TABLE to_drop;
CREATE TABLE fresh AS SELECT g, md5(g::text) v FROM generate_series(1, 20000) g;
DELETE FROM to_shrink WHERE g > 20000;
UPDATE vis SET v = 'changed' WHERE g % 1000 = 0;`
)

// checkChain checks a restored chain against its source c: the tables the load does not write read back
// as on the source, the dropped table and database stay gone, the moved table is in ts, and
// pg_check_visible() is empty on every table.
func checkChain(t *testing.T, c, restored *pgtest.Cluster) {
	t.Helper()
	tables := map[string]string{
		"postgres": "to_truncate to_shrink to_move vis fresh",
		"db_copy":  "f",
	}
	for db, list := range tables {
		for _, tbl := range strings.Fields(list) {
			q := "SELECT count(*) || ' ' || coalesce(md5(string_agg(t::text, ',' ORDER BY t::text)), '-') FROM " + tbl + " t"
			// the load does not write these tables: they read back as on the source
			want, got := c.Psql(t, db, q), restored.Psql(t, db, q)
			if got != want {
				t.Errorf("%s.%s: restored %q, source %q", db, tbl, got, want)
			}
		}
	}
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM pg_class WHERE relname = 'to_drop'"); got != "0" {
		t.Errorf("dropped table is back: %s", got)
	}
	if got := restored.Psql(t, "postgres", "SELECT count(*) FROM pg_database WHERE datname = 'db_wal'"); got != "0" {
		t.Errorf("dropped database is back: %s", got)
	}
	if got := restored.Psql(t, "postgres", "SELECT spcname FROM pg_class c JOIN pg_tablespace s ON s.oid = c.reltablespace WHERE relname = 'to_move'"); got != "ts" {
		t.Errorf("moved table is in tablespace %q, want ts", got)
	}
	for _, db := range []string{"postgres", "db_copy"} {
		restored.Psql(t, db, "CREATE EXTENSION IF NOT EXISTS pg_visibility")
		bad := restored.Psql(t, db, `SELECT string_agg(c.relname || ':' || (SELECT count(*) FROM pg_check_visible(c.oid)), ' ')
FROM pg_class c WHERE c.relkind IN ('r', 'm', 't') AND (SELECT count(*) FROM pg_check_visible(c.oid)) > 0`)
		if bad != "" {
			t.Errorf("%s: pg_check_visible() finds tuples wrongly marked all-visible: %s", db, bad)
		}
	}
}
