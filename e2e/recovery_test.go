package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/pgtest"
)

// Issue 15, -R (docs/toolbox.md, section 2): a plain backup under load with -R starts as a streaming
// standby of its source: standby.signal, primary_conninfo without the DSN's password (with it only when
// asked), the source's pg_stat_replication shows it streaming, and a row written on the source after the
// backup reaches the copy. It passes the stock verifier, which skips postgresql.auto.conf. -R -F tar
// puts both into base.tar, and the extracted copy streams as well.
func TestWriteRecoveryConf(t *testing.T) {
	s := newSource(t, 5)
	c := s.c
	c.Psql(t, "postgres", "CREATE TABLE after_backup (x int)")
	const secret = "notsecret4711"
	dsn := c.DSN() + " password=" + secret // trust: the server ignores it, -R must not copy it

	stop := s.load(t)
	dest, tsNew := c.TempDir(t), c.TempDir(t)
	r := run(t, 10*time.Minute, env(), script, "-j", "2", "-R", "-T", s.tsDir+"="+tsNew, dsn, dest)
	stop()
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup -R: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	s.verifyPlain(t, dest)
	auto, err := os.ReadFile(filepath.Join(dest, "postgresql.auto.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dest, "standby.signal")); err != nil {
		t.Fatalf("no standby.signal: %v", err)
	}
	want := "primary_conninfo = 'user=" + c.User + " host=" + c.Host
	if !strings.Contains(string(auto), want) || strings.Contains(string(auto), secret) || strings.Contains(string(auto), "dbname") {
		t.Fatalf("postgresql.auto.conf, want %q, no password and no dbname:\n%s", want, auto)
	}
	t.Logf("postgresql.auto.conf ends:\n%s", lastLines(string(auto), 2))

	if err := pgtest.ChownToServerUser(dest); err != nil {
		t.Fatal(err)
	}
	standby := pgtest.Start(t, dest)
	if got := standby.Psql(t, "postgres", "SELECT pg_is_in_recovery()"); got != "t" {
		t.Fatalf("the copy is not a standby: pg_is_in_recovery() = %s", got)
	}
	c.Psql(t, "postgres", "INSERT INTO after_backup VALUES (42)")
	deadline := time.Now().Add(60 * time.Second)
	for standby.Psql(t, "postgres", "SELECT count(*) FROM after_backup") != "1" {
		if time.Now().After(deadline) {
			t.Fatalf("the row written on the source after the backup never reached the copy; source's pg_stat_replication: %s",
				c.Psql(t, "postgres", "SELECT string_agg(state, ',') FROM pg_stat_replication"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if got := c.Psql(t, "postgres", "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'"); got != "1" {
		t.Fatalf("the source shows %s streaming standbys, want 1", got)
	}
	if got := standby.Psql(t, "postgres", "SELECT status FROM pg_stat_wal_receiver"); got != "streaming" {
		t.Fatalf("the copy's WAL receiver is %q, want streaming", got)
	}

	// the password only when asked for
	dest2, tsNew2 := c.TempDir(t), c.TempDir(t)
	r = run(t, 10*time.Minute, env(), script, "-j", "2", "-R", "--write-recovery-conf-password", "-T", s.tsDir+"="+tsNew2, dsn, dest2)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup -R --write-recovery-conf-password: exit %d\nstderr:\n%s", r.code, r.stderr)
	}
	if auto, _ := os.ReadFile(filepath.Join(dest2, "postgresql.auto.conf")); !strings.Contains(string(auto), "password="+secret) {
		t.Fatalf("--write-recovery-conf-password: no password in postgresql.auto.conf:\n%s", auto)
	}

	// -F tar: the lines go into base.tar's postgresql.auto.conf, after the server's own (an ALTER SYSTEM
	// setting made for the test), with standby.signal beside; extracted, the copy streams too
	c.Psql(t, "postgres", "ALTER SYSTEM SET work_mem = '7MB'")
	stop = s.load(t)
	d := filepath.Join(c.TempDir(t), "tar")
	r = run(t, 10*time.Minute, env(), script, "-j", "2", "-R", "-F", "tar", "--compress", "zstd", dsn, d)
	stop()
	if r.code != 0 {
		t.Fatalf("-R -F tar: exit %d\n%s", r.code, r.stderr)
	}
	if v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", d); v.code != 0 {
		t.Fatalf("pgbb-pack --verify of the -R tar set: %s", v.stderr)
	}
	data, _ := s.extractTar(t, d, ".tar.zst")
	auto, _ = os.ReadFile(filepath.Join(data, "postgresql.auto.conf"))
	if i, j := strings.Index(string(auto), "work_mem = '7MB'"), strings.Index(string(auto), want); i < 0 || j < i || strings.Contains(string(auto), secret) {
		t.Fatalf("-R -F tar: postgresql.auto.conf, want the server's settings, then %q, and no password:\n%s", want, auto)
	}
	if _, err := os.Stat(filepath.Join(data, "standby.signal")); err != nil {
		t.Fatalf("-R -F tar: no standby.signal in base.tar: %v", err)
	}
	if err := pgtest.ChownToServerUser(data); err != nil {
		t.Fatal(err)
	}
	standby2 := pgtest.Start(t, data)
	if got := standby2.Psql(t, "postgres", "SELECT pg_is_in_recovery(), current_setting('work_mem')"); got != "t|7MB" {
		t.Fatalf("the tar copy: pg_is_in_recovery(), work_mem = %s, want t|7MB", got)
	}
	c.Psql(t, "postgres", "INSERT INTO after_backup VALUES (43)")
	deadline = time.Now().Add(60 * time.Second)
	for standby2.Psql(t, "postgres", "SELECT count(*) FROM after_backup") != "2" {
		if time.Now().After(deadline) {
			t.Fatalf("the row written after the tar backup never reached the tar copy")
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Issue 15, --version (docs/toolbox.md, section 1): every program and the script print one line on
// stdout, "<name> (pgbb) <release>", and exit 0; -v stays --verbose.
func TestVersion(t *testing.T) {
	for _, name := range []string{"pgbb-list", "pgbb-fetch", "pgbb-xlog", "pgbb-pack", "pgbb-basebackup"} {
		path := filepath.Join(binDir, name)
		if name == "pgbb-basebackup" {
			path = script
		}
		r := run(t, time.Minute, env(), path, "--version")
		want := name + " (pgbb) " + cliapp.Release
		if r.code != 0 || !strings.HasPrefix(r.stdout, want) || strings.Count(r.stdout, "\n") != 1 || r.stderr != "" {
			t.Errorf("%s --version: exit %d, stdout %q, stderr %q; want one line starting %q", name, r.code, r.stdout, r.stderr, want)
		}
	}
	if r := run(t, time.Minute, env(), filepath.Join(binDir, "pgbb-pack"), "-v", "--verify", t.TempDir()); strings.Contains(r.stdout, "(pgbb)") {
		t.Errorf("-v printed the version: %q", r.stdout)
	}
}

// Issue 15, --debug (docs/toolbox.md, section 3): every program of a run prints the statements it sends,
// and the DSN's password appears nowhere in the output.
func TestDebugShowsStatementsWithoutSecrets(t *testing.T) {
	s := newSource(t, 1)
	const secret = "debugsecret0815"
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 5*time.Minute, env(), script, "--debug", "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN()+" password="+secret, dest)
	if r.code != 0 {
		t.Fatalf("pgbb-basebackup --debug: exit %d\nstderr:\n%s", r.code, tail(r.stderr, 3000))
	}
	for _, want := range []string{"pgbb-xlog: debug: SQL: SELECT pg_backup_start", "pgbb-list: debug: SQL: ", "pgbb-fetch: debug: SQL: ", "FROM pg_backup_stop(false)"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("no %q in the debug output:\n%s", want, tail(r.stderr, 3000))
		}
	}
	if strings.Contains(r.stderr+r.stdout, secret) {
		t.Errorf("the password is in the output")
	}
	if n := strings.Count(r.stderr, ": debug: SQL: "); n < 10 {
		t.Errorf("%d statements in the debug output", n)
	}
	s.verifyPlain(t, dest)
}
