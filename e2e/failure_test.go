package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// leftWithin is how soon after pgbb-basebackup exited no process of its run may be left.
const leftWithin = 3 * time.Second

// expectNothingLeft fails unless, within leftWithin, no process holds marker in its environment.
func expectNothingLeft(t *testing.T, marker string) {
	t.Helper()
	deadline := time.Now().Add(leftWithin)
	for len(procsWith(marker)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if left := procsWith(marker); len(left) > 0 {
		t.Fatalf("processes still running %v after the script exited: %v", leftWithin, left)
	}
}

// expectNothingOnServer fails unless the server soon holds no pgbb session and no replication slot.
func expectNothingOnServer(t *testing.T, c *pgtest.Cluster) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := c.Psql(t, "postgres", "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgbb-%') + (SELECT count(*) FROM pg_replication_slots)")
		if n == "0" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s pgbb sessions or slots left on the server", n)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// holdConnections opens n idle sessions on c until the test ends.
func holdConnections(t *testing.T, c *pgtest.Cluster, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		cmd := c.Command("psql", "-X", "-q", "-d", "postgres", "-c", "SELECT pg_sleep(600)")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	deadline := time.Now().Add(30 * time.Second)
	for c.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'") != strconv.Itoa(n) {
		if time.Now().After(deadline) {
			t.Fatalf("the %d idle sessions did not start", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// -j 8 against a server with too few free connections: the pre-flight refuses before anything starts
// (exit 2, no DEST, no backup session), says what the run needs and what is free, and suggests a -j.
func TestTooFewConnectionsRefusedBeforeStart(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{Conf: []string{"max_connections = 8"}})
	dest := filepath.Join(t.TempDir(), "dest")
	marker := "PGBB_TEST_RUN=" + dest
	r := run(t, time.Minute, env(marker), script, "-j", "8", c.DSN(), dest)
	t.Logf("stderr:\n%s", r.stderr)
	expectFailure(t, r, 10*time.Second, "pgbb-xlog", "need 9 connections")
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if last := lastLines(r.stderr, 2); !strings.Contains(last, "max_connections") || !strings.Contains(last, "-j 7") {
		t.Errorf("the last lines lack the limit and a -j that fits:\n%s", last)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("DEST was made")
	}
	if strings.Contains(r.stderr, "pgbb-pack") || strings.Contains(r.stderr, "pgbb-fetch") {
		t.Errorf("the pipeline was started:\n%s", r.stderr)
	}
	expectNothingLeft(t, marker)
	expectNothingOnServer(t, c)
	// -j 7 fits, and runs
	if r := run(t, 5*time.Minute, env(marker), script, "-j", "7", c.DSN(), dest); r.code != 0 {
		t.Fatalf("-j 7: exit %d\n%s", r.code, r.stderr)
	}
}

// The same when the server runs out of connections after the start (other clients took them, or the check
// was skipped): the run fails within seconds, every process of it is gone a few seconds after the script
// exited, and the cause ends stderr, once, with a hint.
func TestTooFewConnectionsFailsClearly(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{Conf: []string{"max_connections = 10"}})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 200000) g")
	holdConnections(t, c, 8) // two are left: the session, and pgbb-list then one job
	for _, fanout := range []string{"xargs", "parallel"} {
		t.Run(fanout, func(t *testing.T) {
			dest := filepath.Join(t.TempDir(), "dest")
			marker := "PGBB_TEST_RUN=" + dest
			r := run(t, 2*time.Minute, env(marker), script, "-j", "8", "--no-check", "--fanout", fanout, c.DSN(), dest)
			t.Logf("exit %d after %v, %d lines on stderr:\n%s", r.code, r.elapsed, strings.Count(r.stderr, "\n"), r.stderr)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1", r.code)
			}
			if r.elapsed > 20*time.Second {
				t.Errorf("took %v to fail", r.elapsed)
			}
			last := lastLines(r.stderr, 3)
			if !strings.Contains(last, "pgbb-basebackup: error: ") || !strings.Contains(last, "too many clients") || !strings.Contains(last, "pgbb-basebackup: hint: ") {
				t.Errorf("the last lines do not end with the cause and a hint:\n%s", last)
			}
			if strings.Contains(r.stderr, "pgbb-list.XXXXXX") || strings.Contains(r.stderr, "set -eo pipefail") {
				t.Errorf("the base copy's script was printed:\n%s", r.stderr)
			}
			if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
				t.Fatal("backup_manifest written")
			}
			expectNothingLeft(t, marker)
			expectNothingOnServer(t, c)
		})
	}
}

// A role that lacks a grant, and a DEST that cannot be made, are refused before anything starts (exit 2),
// naming the grant or the directory.
func TestUnusableRunRefusedBeforeStart(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", `CREATE ROLE nogrant LOGIN REPLICATION;
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO nogrant;
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO nogrant;
GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO nogrant;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO nogrant;`)
	dsn := strings.Replace(c.DSN(), "user=postgres", "user=nogrant", 1)
	dest := filepath.Join(t.TempDir(), "dest")
	r := run(t, time.Minute, env(), script, dsn, dest)
	expectFailure(t, r, 10*time.Second, "pgbb-xlog", "pg_stat_file(text, boolean)", "GRANT EXECUTE ON FUNCTION pg_stat_file(text, boolean) TO nogrant")
	if r.code != 2 {
		t.Errorf("missing grant: exit %d, want 2", r.code)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Error("DEST was made")
	}
	// the parent of DEST missing
	missing := filepath.Join(t.TempDir(), "no", "such", "dest")
	r = run(t, time.Minute, env(), script, c.DSN(), missing)
	expectFailure(t, r, 10*time.Second, "pgbb-basebackup", "does not exist", "mkdir -p")
	if r.code != 2 {
		t.Errorf("missing parent: exit %d, want 2", r.code)
	}
	if strings.Contains(r.stderr, "pgbb-xlog") {
		t.Errorf("a backup was started:\n%s", r.stderr)
	}
	if n := c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
		t.Errorf("%s slots left", n)
	}
}

// pgbb-xlog --check exits 0 when the run can start, and -j is checked against the role's own limit.
func TestCheckPassesAndHonoursRoleLimit(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", `CREATE ROLE lim LOGIN CONNECTION LIMIT 3;
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO lim;
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO lim;
GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO lim;
GRANT EXECUTE ON FUNCTION pg_stat_file(text, boolean) TO lim;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO lim;`)
	if r := run(t, time.Minute, env(), bin("pgbb-xlog"), "--check", "--jobs", "8", c.DSN()); r.code != 0 {
		t.Fatalf("superuser, -j 8: exit %d\n%s", r.code, r.stderr)
	}
	dsn := strings.Replace(c.DSN(), "user=postgres", "user=lim", 1)
	if r := run(t, time.Minute, env(), bin("pgbb-xlog"), "--check", "--jobs", "2", dsn); r.code != 0 {
		t.Fatalf("limit 3, -j 2: exit %d\n%s", r.code, r.stderr)
	}
	r := run(t, time.Minute, env(), bin("pgbb-xlog"), "--check", "--jobs", "3", dsn)
	expectFailure(t, r, 10*time.Second, "pgbb-xlog", "CONNECTION LIMIT 3 of role lim")
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	cmd := exec.Command(bin("pgbb-xlog"), "--check", c.DSN(), "--", "true")
	cmd.Env = env()
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("--check with a command succeeded: %s", out)
	}
}
