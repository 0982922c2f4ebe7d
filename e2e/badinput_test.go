package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

func bin(name string) string { return filepath.Join(binDir, name) }

func expectFailure(t *testing.T, r result, within time.Duration, prog string, want ...string) {
	t.Helper()
	if r.code == 0 {
		t.Fatalf("%s exited 0; stderr:\n%s", prog, r.stderr)
	}
	if r.elapsed > within {
		t.Errorf("%s took %v to fail, want under %v", prog, r.elapsed, within)
	}
	if !strings.Contains(r.stderr, prog+": error: ") {
		t.Errorf("stderr lacks %q:\n%s", prog+": error: ", r.stderr)
	}
	for _, w := range want {
		if !strings.Contains(r.stderr, w) {
			t.Errorf("stderr lacks %q:\n%s", w, r.stderr)
		}
	}
}

func TestBadDSNFailsFast(t *testing.T) {
	port, _ := pgtest.FreePort()
	cases := map[string]string{
		"unparseable":                 "host=127.0.0.1 port=notaport",
		"unreachable":                 "host=127.0.0.1 port=" + strconv.Itoa(port) + " user=postgres",
		"bad URI":                     "postgres://[::1",
		"unparseable with a password": "host=127.0.0.1 port=notaport password=Parse-Secret-7",
		"bad URI with a password":     "postgres://u:Parse-Secret-7@127.0.0.1:badport/db",
		"unreachable with a password": "host=127.0.0.1 port=" + strconv.Itoa(port) + " user=postgres password=Parse-Secret-7",
	}
	for name, dsn := range cases {
		t.Run(name, func(t *testing.T) {
			for _, prog := range []string{"pgbb-xlog", "pgbb-list", "pgbb-fetch"} {
				args := []string{dsn}
				e := env()
				switch prog {
				case "pgbb-list":
					args = []string{"--inspect", dsn}
				case "pgbb-fetch":
					args = []string{"--dsn", dsn, "1\td\t0\t0\tbase"}
					e = env("PGBB_BACKUP_ID=1-1-0-1-aa")
				}
				cmd := exec.Command(bin(prog), args...)
				cmd.Env = e
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				cmd.Stdout = new(bytes.Buffer)
				start := time.Now()
				err := cmd.Run()
				r := result{code: cmd.ProcessState.ExitCode(), stderr: stderr.String(), elapsed: time.Since(start)}
				if err == nil {
					t.Fatalf("%s succeeded", prog)
				}
				expectFailure(t, r, 15*time.Second, prog)
				if strings.Contains(r.stderr, "Parse-Secret-7") {
					t.Errorf("%s printed the password:\n%s", prog, r.stderr)
				}
			}
		})
	}
}

func TestWrongPasswordIsRefusedAndNeverPrinted(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{AuthMethod: "scram-sha-256", Password: "right-Secret-1"})
	dsn := "host=127.0.0.1 port=" + strconv.Itoa(c.Port) + " user=postgres dbname=postgres password=wrong-Secret-2"
	dest := filepath.Join(t.TempDir(), "dest")
	r := run(t, time.Minute, env(), script, dsn, dest)
	expectFailure(t, r, 20*time.Second, "pgbb-xlog", "password authentication failed")
	if strings.Contains(r.stderr+r.stdout, "wrong-Secret-2") {
		t.Fatalf("password printed:\n%s", r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
		t.Fatal("backup_manifest written")
	}
}

// The password given in the DSN never shows in output, in files written, or in the command line of any
// process of the run.
func TestPasswordStaysOffCommandLines(t *testing.T) {
	secret := "pw-Secret-" + strconv.Itoa(os.Getpid())
	c := pgtest.New(t, pgtest.Options{AuthMethod: "scram-sha-256", Password: secret})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g")
	dsn := "host=127.0.0.1 port=" + strconv.Itoa(c.Port) + " user=postgres dbname=postgres password=" + secret
	for _, fanout := range []string{"parallel", "xargs"} {
		dest := filepath.Join(t.TempDir(), "dest")
		var seen atomic.Value
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		cmd := exec.Command(script, "-j", "2", "--fanout", fanout, dsn, dest)
		cmd.Env = env()
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		scriptPID := cmd.Process.Pid
		go func() {
			defer wg.Done()
			// the script re-executes itself without the DSN at once; give it that moment
			time.Sleep(50 * time.Millisecond)
			for {
				select {
				case <-stop:
					return
				default:
				}
				procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
				for _, p := range procs {
					b, err := os.ReadFile(p)
					if err == nil && bytes.Contains(b, []byte(secret)) && p != "/proc/self/cmdline" {
						pid, _ := strconv.Atoi(strings.Split(p, "/")[2])
						if pid != os.Getpid() {
							seen.Store(p + ": " + strings.ReplaceAll(string(b), "\x00", " ") + " (script pid " + strconv.Itoa(scriptPID) + ")")
						}
					}
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		err := cmd.Wait()
		close(stop)
		wg.Wait()
		if err != nil {
			t.Fatalf("%s: backup failed: %v\n%s", fanout, err, errb.String())
		}
		if v := seen.Load(); v != nil {
			t.Errorf("%s: password on a command line: %s", fanout, v)
		}
		if strings.Contains(out.String()+errb.String(), secret) {
			t.Errorf("%s: password in output", fanout)
		}
		filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && !strings.Contains(p, "/pg_wal/") {
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(secret)) {
					t.Errorf("%s: password in %s", fanout, p)
				}
			}
			return nil
		})
	}
}

func TestNonEmptyDestRefusedBeforeBackupStarts(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	dest := t.TempDir()
	keep := filepath.Join(dest, "precious")
	os.WriteFile(keep, []byte("keep me"), 0o600)
	r := run(t, time.Minute, env(), script, c.DSN(), dest)
	expectFailure(t, r, 10*time.Second, "pgbb-basebackup", "not empty")
	if r.code != 2 {
		t.Errorf("exit %d, want 2", r.code)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep me" {
		t.Fatalf("existing file changed: %q %v", b, err)
	}
	if strings.Contains(r.stderr, "pgbb-xlog") {
		t.Fatalf("a backup was started:\n%s", r.stderr)
	}
	// pgbb-pack refuses too, on its own
	r = run(t, time.Minute, env(), bin("pgbb-pack"), "-D", dest)
	expectFailure(t, r, 10*time.Second, "pgbb-pack", "not empty")
	if b, err := os.ReadFile(keep); err != nil || string(b) != "keep me" {
		t.Fatalf("existing file changed: %q %v", b, err)
	}
}

func TestListRefusesWithoutBackup(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	r := run(t, time.Minute, env(), bin("pgbb-list"), c.DSN())
	expectFailure(t, r, 10*time.Second, "pgbb-list", "PGBB_BACKUP_ID", "--inspect")
	if r.stdout != "" {
		t.Fatalf("listed without a backup: %q", r.stdout[:min(200, len(r.stdout))])
	}
	r = run(t, time.Minute, env(), bin("pgbb-list"), "--inspect", c.DSN())
	if r.code != 0 || !strings.Contains(r.stdout, "\tPG_VERSION\n") || !strings.Contains(r.stdout, "end\t") {
		t.Fatalf("--inspect: exit %d\n%s", r.code, r.stderr)
	}
}

// A fetch job killed mid-run fails the whole run and leaves no backup_manifest.
func TestKilledFetchJobFailsTheRun(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE big AS SELECT g, md5(g::text) AS v FROM generate_series(1, 2000000) g")
	big := c.Psql(t, "postgres", "SELECT pg_relation_filepath('big')")
	// a pgbb-fetch that, for the first job given a range of the big table, is SIGKILLed once it has joined
	// the run (connected to the sink and the server, held at its "fetch" test hook before its first item):
	// timing alone would let a fast job finish first
	wrapDir := t.TempDir()
	os.Chmod(wrapDir, 0o755)
	mark := filepath.Join(wrapDir, "killed")
	wrapper := `#!/bin/bash
args=0; for a; do [[ $a == *$'\t'* ]] && args=1; done
if [ $args = 0 ]; then input=$(cat); else input="$*"; fi
if [[ "$input" == *"	` + big + `"* ]] && mkdir ` + mark + ` 2>/dev/null; then
  export PGBB_TEST_HOOKS=` + mark + `
  if [ $args = 0 ]; then
    ` + bin("pgbb-fetch") + ` "$@" <<<"$input" & pid=$!
  else
    ` + bin("pgbb-fetch") + ` "$@" & pid=$!
  fi
  while [ ! -e ` + mark + `/fetch.reached ] && kill -0 $pid 2>/dev/null; do sleep 0.02; done
  kill -9 $pid; wait $pid; exit $?
fi
if [ $args = 0 ]; then exec ` + bin("pgbb-fetch") + ` "$@" <<<"$input"; else exec ` + bin("pgbb-fetch") + ` "$@"; fi
`
	os.WriteFile(filepath.Join(wrapDir, "pgbb-fetch"), []byte(wrapper), 0o755)
	for _, bn := range []string{"pgbb-list", "pgbb-xlog", "pgbb-pack"} {
		os.Symlink(bin(bn), filepath.Join(wrapDir, bn))
	}
	os.Symlink(script, filepath.Join(wrapDir, "pgbb-basebackup"))
	for _, fanout := range []string{"parallel", "xargs"} {
		os.RemoveAll(mark)
		dest := filepath.Join(t.TempDir(), "dest")
		e := env()
		for i, kv := range e {
			if strings.HasPrefix(kv, "PATH=") {
				e[i] = "PATH=" + wrapDir + ":" + strings.TrimPrefix(kv, "PATH=")
			}
			if strings.HasPrefix(kv, "PGBB_BINDIR=") {
				e[i] = "PGBB_BINDIR=" + wrapDir
			}
		}
		r := run(t, 3*time.Minute, e, filepath.Join(wrapDir, "pgbb-basebackup"), "-j", "2", "--fanout", fanout, c.DSN(), dest)
		if _, err := os.Stat(mark); err != nil {
			t.Fatalf("%s: the wrapper never killed a job", fanout)
		}
		if r.code == 0 {
			t.Fatalf("%s: run with a killed fetch job exited 0\n%s", fanout, r.stderr)
		}
		if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
			t.Fatalf("%s: backup_manifest written", fanout)
		}
		if n := c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
			t.Errorf("%s: %s replication slots left", fanout, n)
		}
	}
}

// As pg_basebackup does, a tablespace whose original location is not empty needs a -T mapping; the run
// fails, says so, and leaves the live tablespace and DEST as they were.
func TestTablespaceWithoutMappingRefused(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ts := c.TempDir(t)
	c.Psql(t, "postgres", "CREATE TABLESPACE ts LOCATION '"+ts+"'; CREATE TABLE t1 TABLESPACE ts AS SELECT 1 AS a")
	before, _ := os.ReadDir(ts)
	dest := filepath.Join(t.TempDir(), "dest")
	r := run(t, time.Minute, env(), script, c.DSN(), dest)
	expectFailure(t, r, 30*time.Second, "pgbb-pack", "not empty", "-T "+ts+"=")
	after, _ := os.ReadDir(ts)
	if len(before) != len(after) {
		t.Fatalf("live tablespace directory changed: %v -> %v", before, after)
	}
	if _, err := os.Stat(dest); err == nil {
		t.Fatalf("DEST left behind after a failed run")
	}
	// a mapping that matches no tablespace is an error too
	r = run(t, time.Minute, env(), script, "-T", "/nonexistent/ts=/tmp/x", c.DSN(), dest)
	expectFailure(t, r, 30*time.Second, "pgbb-pack", "matches no tablespace")
}
