package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// The grants the README lists are enough; without REPLICATION the backup still works and the risk is named.
func TestLeastPrivilegeRole(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{DataChecksums: true})
	ts := c.TempDir(t)
	c.Psql(t, "postgres", `CREATE TABLESPACE ts LOCATION '`+ts+`';
CREATE TABLE t1 TABLESPACE ts AS SELECT g FROM generate_series(1, 10000) g;
CREATE ROLE bk LOGIN REPLICATION;
CREATE ROLE bk_norepl LOGIN;
GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean) TO bk, bk_norepl;
GRANT EXECUTE ON FUNCTION pg_backup_stop(boolean) TO bk, bk_norepl;
GRANT EXECUTE ON FUNCTION pg_ls_dir(text, boolean, boolean) TO bk, bk_norepl;
GRANT EXECUTE ON FUNCTION pg_stat_file(text, boolean) TO bk, bk_norepl;
GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO bk, bk_norepl;`)
	for _, role := range []string{"bk", "bk_norepl"} {
		dest := filepath.Join(t.TempDir(), "dest")
		tsNew := filepath.Join(t.TempDir(), "ts")
		dsn := strings.Replace(c.DSN(), "user=postgres", "user="+role, 1)
		r := run(t, 5*time.Minute, env(), script, "-j", "2", "-T", ts+"="+tsNew, dsn, dest)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", role, r.code, r.stderr)
		}
		warned := strings.Contains(r.stderr, "pgbb-xlog: warning: role \""+role+"\" lacks REPLICATION")
		if warned != (role == "bk_norepl") {
			t.Errorf("%s: REPLICATION warning shown: %v\n%s", role, warned, r.stderr)
		}
		if v := run(t, 5*time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), dest); v.code != 0 {
			t.Fatalf("%s: pg_verifybackup:\n%s%s", role, v.stdout, v.stderr)
		}
	}
	// a role lacking a grant gets a hint naming it
	c.Psql(t, "postgres", "REVOKE EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) FROM bk")
	dsn := strings.Replace(c.DSN(), "user=postgres", "user=bk", 1)
	r := run(t, time.Minute, env(), script, "-T", ts+"="+filepath.Join(t.TempDir(), "ts"), dsn, filepath.Join(t.TempDir(), "dest"))
	expectFailure(t, r, 30*time.Second, "pgbb-xlog", "GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean)")
	if n := c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
		t.Errorf("%s replication slots left", n)
	}
}

// A cluster made with initdb -g is backed up with 0750/0640, whatever the umask of the run; a default cluster
// with 0700/0600 even under a permissive umask.
func TestModesFollowTheSource(t *testing.T) {
	for _, group := range []bool{true, false} {
		c := pgtest.New(t, pgtest.Options{GroupReadable: group})
		c.Psql(t, "postgres", "CREATE TABLE t AS SELECT 1 AS a")
		dest := filepath.Join(t.TempDir(), "dest")
		umask := "077"
		wantDir, wantFile := os.FileMode(0o750), os.FileMode(0o640)
		if !group {
			umask, wantDir, wantFile = "000", 0o700, 0o600
		}
		r := run(t, 5*time.Minute, env(), "bash", "-c", "umask "+umask+"; exec \"$0\" \"$@\"", script, c.DSN(), dest)
		if r.code != 0 {
			t.Fatalf("exit %d\n%s", r.code, r.stderr)
		}
		n := 0
		filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			want := wantFile
			if fi.IsDir() {
				want = wantDir
			}
			if fi.Mode().Perm() != want {
				t.Errorf("group-readable=%v: %s has mode %04o, want %04o", group, p, fi.Mode().Perm(), want)
				return filepath.SkipAll
			}
			n++
			return nil
		})
		if n < 100 {
			t.Fatalf("only %d entries checked", n)
		}
	}
}
