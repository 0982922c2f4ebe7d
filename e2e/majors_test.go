package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// The version tests run on every major of PGBB_MAJORS (15 and 18 in make test, 13 to 18 in make
// test-matrix): a primary under pgbench writes, a hot standby under its primary's writes, and the restore
// oracle with the stock verifier of each major (verifyPlain).

// TestEveryMajorUnderLoad backs up a primary of each major with a tablespace and an unlogged table under
// pgbench writes and restores it.
func TestEveryMajorUnderLoad(t *testing.T) {
	for _, major := range majors {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			s := newSourceOf(t, major, 5, pgtest.Options{DataChecksums: true})
			s.backupAndRestore(t, s, "primary")
		})
	}
}

// backupAndRestore backs up from (the source itself, or its standby) while s takes writes, and restores
// the result with the oracle. It returns the backup directory.
func (s *source) backupAndRestore(t *testing.T, from *source, what string) string {
	t.Helper()
	stop := s.load(t)
	if from != s {
		// the load's writes have reached the standby before its backup starts
		for i := 0; from.c.Psql(t, "postgres", "SELECT count(*) > 0 FROM pgbench_history") != "t"; i++ {
			if i > 300 {
				t.Fatal("no pgbench transaction replayed on the standby within 30 s")
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	dest, tsNew := from.c.TempDir(t), from.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-v", "-T", from.tsDir+"="+tsNew, from.c.DSN(), dest)
	stop()
	if r.code != 0 {
		t.Fatalf("%s: pgbb-basebackup exit %d\nstderr:\n%s", what, r.code, r.stderr)
	}
	label, err := os.ReadFile(filepath.Join(dest, "backup_label"))
	if err != nil {
		t.Fatal(err)
	}
	wantFrom := "BACKUP FROM: primary"
	if from != s {
		wantFrom = "BACKUP FROM: standby"
		// a standby's backup holds its standby.signal, as pg_basebackup's does; the restore check
		// starts it as a primary
		if _, err := os.Stat(filepath.Join(dest, "standby.signal")); err != nil {
			t.Errorf("the standby's backup has no standby.signal: %v", err)
		}
		os.Remove(filepath.Join(dest, "standby.signal"))
	}
	if from.major == 13 {
		wantFrom = strings.Replace(wantFrom, "primary", "master", 1) // 13's word for it (xlog.c)
	}
	if !strings.Contains(string(label), wantFrom) {
		t.Fatalf("%s: backup_label says\n%s\nwant %q", what, label, wantFrom)
	}
	from.checkExcludedDirs(t, dest)
	from.checkRestore(t, dest, tsNew)
	for _, c := range []*pgtest.Cluster{s.c, from.c} {
		if n := c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'pgbb%'"); n != "0" {
			t.Errorf("%s replication slots of pgbb left on the server", n)
		}
	}
	t.Logf("PostgreSQL %d %s: backup took %v", from.major, what, r.elapsed.Round(time.Millisecond))
	return dest
}

// checkExcludedDirs checks the empty directories of the source's major below pg_wal.
func (s *source) checkExcludedDirs(t *testing.T, dest string) {
	t.Helper()
	dirs := []string{"pg_wal/archive_status"}
	if s.major >= 17 {
		dirs = append(dirs, "pg_wal/summaries")
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(filepath.Join(dest, d))
		if err != nil || len(ents) != 0 {
			t.Errorf("PostgreSQL %d: %s should be an empty directory (%d entries, %v)", s.major, d, len(ents), err)
		}
	}
}

// stockBasebackup is the pg_basebackup that makes the test standbys: the stock 18 one reads every
// supported major; Debian's 15 where the 18 tools are missing and the source is 15.
func stockBasebackup(t *testing.T, major int) string {
	if d, err := stockTools(); err == nil {
		return filepath.Join(d, "pg_basebackup")
	} else if major != 15 {
		t.Fatal(err)
	}
	return filepath.Join(pgtest.BinDir(), "pg_basebackup")
}

// newStandby makes a hot standby of s with stock pg_basebackup (streaming, its own tablespace directory)
// and starts it. primary_conninfo is written here rather than by -R, whose 18 client writes options an
// older server's libpq refuses.
func (s *source) newStandby(t *testing.T) *source {
	t.Helper()
	dir := filepath.Join(s.c.TempDir(t), "data")
	tsDir := s.c.TempDir(t)
	r := run(t, 5*time.Minute, env(), stockBasebackup(t, s.major), "-D", dir, "-X", "stream", "-c", "fast",
		"-T", s.tsDir+"="+tsDir, "-d", s.c.DSN())
	if r.code != 0 {
		t.Fatalf("pg_basebackup of the primary: %s", r.stderr)
	}
	conf := fmt.Sprintf("primary_conninfo = 'host=%s port=%d user=%s'\n", s.c.Host, s.c.Port, s.c.User)
	if err := os.WriteFile(filepath.Join(dir, "postgresql.auto.conf"), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "standby.signal"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.ChownToServerUser(filepath.Dir(dir)); err != nil {
		t.Fatal(err)
	}
	if err := pgtest.ChownToServerUser(tsDir); err != nil {
		t.Fatal(err)
	}
	c := pgtest.Start(t, dir)
	if got := c.Psql(t, "postgres", "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("the standby is not in recovery: %s", got)
	}
	return &source{c: c, major: s.major, tsDir: tsDir, tsOID: s.tsOID, dbOID: s.dbOID}
}

// promote promotes a standby with pg_ctl promote, which waits for the end of recovery (a pg_promote()
// query may be cancelled by a recovery conflict).
func (s *source) promote(t *testing.T) {
	t.Helper()
	if out, err := s.c.ServerCommand("pg_ctl", "promote", "-w", "-D", s.c.Dir).CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl promote: %v\n%s", err, out)
	}
}

// TestStandbyUnderPrimaryLoad backs up a hot standby of each major while its primary takes pgbench
// writes: BACKUP FROM: standby, the restore oracle, nothing left on either server.
func TestStandbyUnderPrimaryLoad(t *testing.T) {
	for _, major := range majors {
		t.Run(fmt.Sprintf("pg%d", major), func(t *testing.T) {
			s := newSourceOf(t, major, 5, pgtest.Options{DataChecksums: true})
			sb := s.newStandby(t)
			s.backupAndRestore(t, sb, "standby")
		})
	}
}

// TestStandbyPromotedDuringBackup promotes the standby while its backup runs: non-zero exit, no
// backup_manifest, no process of the run left, no slot left, and the cause in the last lines.
func TestStandbyPromotedDuringBackup(t *testing.T) {
	s := newSourceOf(t, majors[len(majors)-1], 5, pgtest.Options{DataChecksums: true})
	sb := s.newStandby(t)
	stop := s.load(t)
	defer stop()
	dest, tsNew := sb.c.TempDir(t), sb.c.TempDir(t)
	// the backup pauses before pg_control is copied (testhook "stop") while the standby is promoted
	h := newHooks(t)
	h.pass("fetch")
	done := make(chan result, 1)
	go func() {
		done <- run(t, 5*time.Minute, env("PGBB_TEST_HOOKS="+h.dir), script, "-j", "2", "-T", sb.tsDir+"="+tsNew, sb.c.DSN(), dest)
	}()
	h.at("stop", done, func() { sb.promote(t) })
	r := <-done
	if r.code == 0 {
		t.Fatalf("backup of a standby promoted during it exited 0\nstderr:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
		t.Fatalf("backup_manifest written for a backup whose standby was promoted")
	}
	expectNothingLeft(t, "PGBB_TEST_HOOKS="+h.dir)
	if last := lastLines(r.stderr, 3); !strings.Contains(last, "promoted") {
		t.Errorf("the last lines do not say the standby was promoted:\n%s", last)
	}
	if n := sb.c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
		t.Errorf("%s replication slots left on the promoted standby", n)
	}
}

// TestOtherClusterShapes: a cluster on timeline 2 (history file in the backup), WAL segments of 1 MB and
// 64 MB, and a cluster without data checksums, each under load and through the oracle.
func TestOtherClusterShapes(t *testing.T) {
	major := 15
	t.Run("timeline 2", func(t *testing.T) {
		s := newSourceOf(t, major, 5, pgtest.Options{DataChecksums: true})
		sb := s.newStandby(t)
		sb.promote(t)
		if tli := sb.c.Psql(t, "postgres", "SELECT timeline_id FROM pg_control_checkpoint()"); tli != "2" {
			sb.c.Psql(t, "postgres", "CHECKPOINT")
		}
		dest := sb.backupAndRestore(t, sb, "primary on timeline 2")
		if _, err := os.Stat(filepath.Join(dest, "pg_wal", "00000002.history")); err != nil {
			t.Errorf("timeline 2's history file is not in the backup: %v", err)
		}
		m, _ := os.ReadFile(filepath.Join(dest, "backup_manifest"))
		if !strings.Contains(string(m), `"Timeline": 2`) {
			t.Errorf("WAL-Ranges do not name timeline 2:\n%s", tail(string(m), 400))
		}
	})
	for _, segMB := range []int{1, 64} {
		t.Run(fmt.Sprintf("WAL segments of %d MB", segMB), func(t *testing.T) {
			s := newSourceOf(t, major, 5, pgtest.Options{DataChecksums: true, InitArgs: []string{"--wal-segsize=" + strconv.Itoa(segMB)},
				Conf: []string{fmt.Sprintf("min_wal_size = %dMB", 2*segMB), fmt.Sprintf("max_wal_size = %dMB", max(64, 4*segMB))}})
			if got := s.c.Psql(t, "postgres", "SHOW wal_segment_size"); got != fmt.Sprintf("%dMB", segMB) {
				t.Fatalf("wal_segment_size %s", got)
			}
			s.backupAndRestore(t, s, "primary")
		})
	}
	t.Run("no data checksums", func(t *testing.T) {
		s := newSourceOf(t, major, 5, pgtest.Options{})
		if got := s.c.Psql(t, "postgres", "SHOW data_checksums"); got != "off" {
			t.Fatalf("data_checksums %s", got)
		}
		s.backupAndRestore(t, s, "primary")
	})
}

// TestIncrementalOnTopOfPgbb18: a pgbb backup of PostgreSQL 18 is a valid reference for stock
// pg_basebackup --incremental, and pg_combinebackup makes a cluster that passes the oracle from the two.
func TestIncrementalOnTopOfPgbb18(t *testing.T) {
	tools, err := stockTools()
	if err != nil {
		t.Fatal(err)
	}
	s := newSourceOf(t, 18, 5, pgtest.Options{DataChecksums: true, Conf: []string{"summarize_wal = on"}})
	full := s.backupAndRestoreKeep(t)
	// more writes, then the incremental backup against pgbb's manifest
	stop := s.load(t)
	time.Sleep(2 * time.Second)
	stop()
	inc, tsInc := filepath.Join(s.c.TempDir(t), "inc"), s.c.TempDir(t)
	if r := run(t, 5*time.Minute, env(), filepath.Join(tools, "pg_basebackup"), "-D", inc, "-c", "fast", "-T", s.tsDir+"="+tsInc,
		"--incremental", filepath.Join(full.dest, "backup_manifest"), "-d", s.c.DSN()); r.code != 0 {
		t.Fatalf("pg_basebackup --incremental on pgbb's manifest: %s", r.stderr)
	}
	combined, tsComb := filepath.Join(s.c.TempDir(t), "combined"), s.c.TempDir(t)
	os.Remove(tsComb)
	if r := run(t, 5*time.Minute, env(), filepath.Join(tools, "pg_combinebackup"), "-o", combined, "-T", tsInc+"="+tsComb, full.dest, inc); r.code != 0 {
		t.Fatalf("pg_combinebackup: %s%s", r.stdout, r.stderr)
	}
	if err := pgtest.ChownToServerUser(filepath.Dir(combined)); err != nil {
		t.Fatal(err)
	}
	s.checkRestore(t, combined, tsComb)
}

type keptBackup struct{ dest, tsNew string }

// backupAndRestoreKeep backs s up under load and checks the backup with the stock verifier, without
// starting it (a full backup kept as the reference of an incremental one).
func (s *source) backupAndRestoreKeep(t *testing.T) keptBackup {
	t.Helper()
	stop := s.load(t)
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	stop()
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	s.verifyPlain(t, dest)
	return keptBackup{dest, tsNew}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
