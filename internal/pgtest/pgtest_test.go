package pgtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// requireAvailable fails the test when PostgreSQL is not usable, unless
// PGBB_ALLOW_SKIP=1 is set, in which case it skips.
func requireAvailable(t *testing.T) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("PGBB_ALLOW_SKIP") == "1" {
			t.Skipf("PostgreSQL not available (PGBB_ALLOW_SKIP=1): %v", err)
		}
		t.Fatalf("PostgreSQL not available (set PGBB_ALLOW_SKIP=1 to skip): %v", err)
	}
}

func TestClusterStartsAndAnswers(t *testing.T) {
	requireAvailable(t)
	t.Parallel()
	c := New(t, Options{DataChecksums: true})
	if got := c.Psql(t, "postgres", "SELECT 1"); got != "1" {
		t.Fatalf("SELECT 1 = %q, want 1", got)
	}
	if got := c.Psql(t, "", "SHOW data_checksums"); got != "on" {
		t.Fatalf("data_checksums = %q, want on", got)
	}
	if got := c.Psql(t, "", "SHOW fsync"); got != "on" {
		t.Fatalf("fsync = %q, want on", got)
	}
	if got := c.Psql(t, "", "SHOW wal_level"); got != "replica" {
		t.Fatalf("wal_level = %q, want replica", got)
	}
	if !strings.Contains(c.DSN(), "port=") || strings.Contains(c.DSN(), "password") {
		t.Fatalf("unexpected DSN %q", c.DSN())
	}
	// Client tool over TCP with the DSN (trust).
	out, err := c.Command("psql", "-X", "-A", "-t", "-d", c.DSN(), "-c", "SELECT inet_server_addr()").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "127.0.0.1" {
		t.Fatalf("psql over TCP: %v: %s", err, out)
	}
	// Several statements, including one that cannot run in a transaction block.
	if got := c.Psql(t, "", "CREATE DATABASE d1; SELECT datname FROM pg_database WHERE datname = 'd1';"); got != "d1" {
		t.Fatalf("multi-statement psql = %q", got)
	}
}

func TestGroupReadable(t *testing.T) {
	requireAvailable(t)
	t.Parallel()
	c := New(t, Options{GroupReadable: true, Conf: []string{"work_mem = '7MB'"}})
	if got := c.Psql(t, "", "SHOW data_directory_mode"); got != "0750" {
		t.Fatalf("data_directory_mode = %q, want 0750", got)
	}
	if got := c.Psql(t, "", "SHOW work_mem"); got != "7MB" {
		t.Fatalf("work_mem = %q, want 7MB (Options.Conf)", got)
	}
}

func TestScramAuth(t *testing.T) {
	requireAvailable(t)
	t.Parallel()
	const pw = `s3cr et'\x`
	c := New(t, Options{AuthMethod: "scram-sha-256", Password: pw})
	if !strings.Contains(c.DSN(), "password=") {
		t.Fatalf("DSN without password: %q", c.DSN())
	}
	// Local socket stays trust.
	if got := c.Psql(t, "", "SELECT current_user"); got != "postgres" {
		t.Fatalf("current_user = %q", got)
	}
	// TCP with the right password (from DSN; drop PGPASSWORD to be sure the DSN carries it).
	cmd := c.Command("psql", "-X", "-A", "-t", "-w", "-d", c.DSN(), "-c", "SELECT 42")
	cmd.Env = append(cmd.Env, "PGPASSWORD=")
	if out, err := cmd.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "42" {
		t.Fatalf("psql with password over TCP: %v: %s", err, out)
	}
	// TCP with a wrong password fails.
	cmd = c.Command("psql", "-X", "-A", "-t", "-w", "-d", c.DSN()+" password=wrong", "-c", "SELECT 1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "password authentication failed") {
		t.Fatalf("wrong password: err=%v out=%s", err, out)
	}
}

func TestBackupRestoreStartWithTablespace(t *testing.T) {
	requireAvailable(t)
	t.Parallel()
	c := New(t, Options{DataChecksums: true})
	ts := c.TempDir(t)
	c.Psql(t, "", "CREATE TABLESPACE ts1 LOCATION '"+ts+"';\n"+
		"CREATE TABLE t1 (i int) TABLESPACE ts1;\n"+
		"INSERT INTO t1 SELECT generate_series(1, 1000);\n")

	backup := c.TempDir(t)
	tsNew := c.TempDir(t)
	cmd := c.Command("pg_basebackup", "-D", backup, "-Fp", "-X", "stream", "-c", "fast", "-T", ts+"="+tsNew)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_basebackup: %v\n%s", err, out)
	}
	if err := ChownToServerUser(backup); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		su, err := lookupServerUser()
		if err != nil {
			t.Fatal(err)
		}
		// Every file in the mapped tablespace must now belong to the server user.
		err = filepath.Walk(tsNew, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if uid := int(fi.Sys().(*syscall.Stat_t).Uid); uid != su.uid {
				t.Errorf("%s owned by %d, want %d", p, uid, su.uid)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	r := Start(t, backup)
	if r.Port == c.Port || r.SocketDir == c.SocketDir {
		t.Fatalf("restored cluster shares port/socket with source")
	}
	if got := r.Psql(t, "", "SELECT count(*) FROM t1"); got != "1000" {
		t.Fatalf("count in restored cluster = %q", got)
	}
	if got := r.Psql(t, "", "SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'ts1'"); got != tsNew {
		t.Fatalf("tablespace location = %q, want %q", got, tsNew)
	}
	// amcheck as a client tool.
	if out, err := r.Command("pg_amcheck", "--install-missing", "-d", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("pg_amcheck: %v\n%s", err, out)
	}
	r.Stop(t)
	if _, err := os.Stat(filepath.Join(backup, "PG_VERSION")); err != nil {
		t.Fatalf("Start's data directory must not be removed by Stop: %v", err)
	}
	// A stopped server can be checked by a server-side tool.
	if out, err := r.ServerCommand("pg_checksums", "--check", "-D", backup).CombinedOutput(); err != nil {
		t.Fatalf("pg_checksums: %v\n%s", err, out)
	}
}

func TestRestartStopAndPgCtl(t *testing.T) {
	requireAvailable(t)
	t.Parallel()
	c := New(t, Options{})
	port := c.Port
	c.Psql(t, "", "CREATE TABLE keep (i int); INSERT INTO keep VALUES (7);")
	c.Restart(t)
	if c.Port != port {
		t.Fatalf("port changed on restart: %d -> %d", port, c.Port)
	}
	if got := c.Psql(t, "", "SELECT i FROM keep"); got != "7" {
		t.Fatalf("after restart: %q", got)
	}
	c.Stop(t)
	if err := c.Command("pg_isready", "-t", "1").Run(); err == nil {
		t.Fatal("pg_isready succeeded after Stop")
	}
	c.Stop(t) // idempotent

	// A server started by the test itself through pg_ctl is stopped by cleanup/Stop too.
	opts := "-p " + strconv.Itoa(c.Port) + " -k " + c.SocketDir + " -c listen_addresses=127.0.0.1"
	if out, err := c.ServerCommand("pg_ctl", "start", "-w", "-t", "60", "-D", c.Dir, "-l", c.LogFile, "-o", opts).CombinedOutput(); err != nil {
		t.Fatalf("pg_ctl start: %v\n%s", err, out)
	}
	if got := c.Psql(t, "", "SELECT i FROM keep"); got != "7" {
		t.Fatalf("after pg_ctl start: %q", got)
	}
	c.Stop(t)
	if _, err := os.Stat(filepath.Join(c.Dir, "postmaster.pid")); !os.IsNotExist(err) {
		t.Fatalf("postmaster.pid still present after Stop: %v", err)
	}
	c.Restart(t) // restart from stopped state
	if got := c.Psql(t, "", "SELECT i FROM keep"); got != "7" {
		t.Fatalf("after restart from stopped: %q", got)
	}
}

func TestChownToServerUserNoFollow(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only meaningful as root")
	}
	requireAvailable(t)
	su, err := lookupServerUser()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	outside := t.TempDir()
	if err := os.WriteFile(filepath.Join(outside, "f"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	if err := ChownToServerUser(root); err != nil {
		t.Fatal(err)
	}
	owner := func(p string) int {
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			t.Fatal(err)
		}
		return int(st.Uid)
	}
	if owner(filepath.Join(root, "sub")) != su.uid || owner(filepath.Join(root, "sub", "link")) != su.uid {
		t.Fatal("tree not chowned")
	}
	if owner(filepath.Join(outside, "f")) != 0 {
		t.Fatal("followed a non-tablespace symlink")
	}
}
