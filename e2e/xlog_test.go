package e2e

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// startDetachedXlog runs pgbb-xlog without a child command, writing its stream to a file, and returns the
// backup id it prints, its stdin, and the command.
func startDetachedXlog(t *testing.T, c *pgtest.Cluster, out string) (string, io.WriteCloser, *exec.Cmd) {
	t.Helper()
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin("pgbb-xlog"), "-D", "200ms", c.DSN())
	cmd.Env = env()
	cmd.Stdout = f
	stdin, _ := cmd.StdinPipe()
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f.Close()
	sc := bufio.NewScanner(stderr)
	for sc.Scan() {
		if id, ok := strings.CutPrefix(sc.Text(), "PGBB_BACKUP_ID="); ok {
			go io.Copy(io.Discard, stderr)
			return id, stdin, cmd
		}
		t.Logf("pgbb-xlog: %s", sc.Text())
	}
	cmd.Wait()
	t.Fatalf("pgbb-xlog printed no backup id")
	return "", nil, nil
}

// Without a child, pgbb-xlog finishes the backup on a "stop" line and abandons it on SIGTERM; the parts of
// the backup can then be run by hand and packed from files.
func TestDetachedXlogStopAndAbandon(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{DataChecksums: true})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g")
	dir := t.TempDir()
	xlogOut := filepath.Join(dir, "xlog.stream")
	id, stdin, cmd := startDetachedXlog(t, c, xlogOut)
	e := env("PGBB_BACKUP_ID="+id, "PGBB_DSN="+c.DSN())
	list := run(t, time.Minute, e, bin("pgbb-list"))
	if list.code != 0 {
		t.Fatalf("pgbb-list: %s", list.stderr)
	}
	fetch := exec.Command(bin("pgbb-fetch"), "-o", filepath.Join(dir, "fetch.stream"))
	fetch.Env = e
	fetch.Stdin = strings.NewReader(list.stdout)
	if out, err := fetch.CombinedOutput(); err != nil {
		t.Fatalf("pgbb-fetch: %v %s", err, out)
	}
	io.WriteString(stdin, "stop\n")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("pgbb-xlog after stop: %v", err)
	}
	dest := filepath.Join(t.TempDir(), "dest")
	p := run(t, time.Minute, env(), bin("pgbb-pack"), "-D", dest, xlogOut, filepath.Join(dir, "fetch.stream"))
	if p.code != 0 {
		t.Fatalf("pgbb-pack: %s", p.stderr)
	}
	if v := run(t, time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), dest); v.code != 0 {
		t.Fatalf("pg_verifybackup: %s%s", v.stdout, v.stderr)
	}

	// SIGTERM abandons: non-zero exit, a stream without end record, which pgbb-pack refuses
	xlogOut2 := filepath.Join(dir, "xlog2.stream")
	_, _, cmd2 := startDetachedXlog(t, c, xlogOut2)
	cmd2.Process.Signal(syscall.SIGTERM)
	if err := cmd2.Wait(); err == nil {
		t.Fatal("pgbb-xlog exited 0 after SIGTERM")
	}
	dest2 := filepath.Join(t.TempDir(), "dest")
	p = run(t, time.Minute, env(), bin("pgbb-pack"), "-D", dest2, xlogOut2)
	expectFailure(t, p, 10*time.Second, "pgbb-pack")
	if _, err := os.Stat(filepath.Join(dest2, "backup_manifest")); err == nil {
		t.Fatal("backup_manifest written for an abandoned backup")
	}
	// a fetch stream of the first backup is refused in another backup's pack
	p = run(t, time.Minute, env(), bin("pgbb-pack"), "-D", dest2, filepath.Join(dir, "fetch.stream"))
	expectFailure(t, p, 10*time.Second, "pgbb-pack")
}
