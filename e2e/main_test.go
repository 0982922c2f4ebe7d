// Package e2e tests the pgbb commands as pipelines against real PostgreSQL servers started by pgtest: it
// builds the binaries once, runs scripts/pgbb-basebackup with GNU parallel and xargs under pgbench writes,
// and restores the result (pg_verifybackup, start, pg_amcheck, pgbench balances).
package e2e

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

var (
	binDir  string // the built pgbb binaries
	script  string // scripts/pgbb-basebackup
	repoDir string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	_, file, _, _ := runtime.Caller(0)
	repoDir = filepath.Dir(filepath.Dir(file))
	script = filepath.Join(repoDir, "scripts", "pgbb-basebackup")
	var missing []string
	if err := pgtest.Available(); err != nil {
		missing = append(missing, err.Error())
	}
	for _, tool := range []string{"parallel", "xargs", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	for _, tool := range []string{"pgbench", "pg_verifybackup", "pg_amcheck", "psql"} {
		if _, err := os.Stat(filepath.Join(pgtest.BinDir(), tool)); err != nil {
			missing = append(missing, filepath.Join(pgtest.BinDir(), tool))
		}
	}
	if len(missing) > 0 {
		if os.Getenv("PGBB_ALLOW_SKIP") == "1" {
			fmt.Println("e2e: skipped, missing:", strings.Join(missing, ", "))
			return 0
		}
		fmt.Fprintln(os.Stderr, "e2e: FAIL: missing", strings.Join(missing, ", "), "(install them, or set PGBB_ALLOW_SKIP=1 to skip on purpose)")
		return 1
	}
	if err := installMajors(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: FAIL:", err)
		return 1
	}
	dir, err := os.MkdirTemp("", "pgbb-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	build := exec.Command("go", "build", "-o", dir, "./cmd/...")
	build.Dir = repoDir
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: build failed: %v\n%s", err, out)
		return 1
	}
	binDir = dir
	return m.Run()
}

// majors are the PostgreSQL majors the version tests run against: PGBB_MAJORS ("13 14 15 16 17 18" in
// make test-matrix), else 15 and 18.
var majors []int

// installMajors makes the server binaries of every major in PGBB_MAJORS available through
// scripts/install-pg-majors (fetched once, then cached) and exports PGBB_PGBIN_<major> for pgtest.
func installMajors() error {
	list := os.Getenv("PGBB_MAJORS")
	if list == "" {
		list = "15 18"
	}
	args := strings.Fields(list)
	for _, a := range args {
		m, err := strconv.Atoi(a)
		if err != nil {
			return fmt.Errorf("PGBB_MAJORS: %q is not a major version", a)
		}
		majors = append(majors, m)
	}
	cmd := exec.Command(filepath.Join(repoDir, "scripts", "install-pg-majors"), args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("scripts/install-pg-majors %s: %v", list, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		major, dir, ok := strings.Cut(line, "\t")
		if !ok {
			return fmt.Errorf("scripts/install-pg-majors printed %q", line)
		}
		if os.Getenv("PGBB_PGBIN_"+major) == "" {
			os.Setenv("PGBB_PGBIN_"+major, dir)
		}
	}
	return nil
}

// stockTools is the directory of the stock PostgreSQL 18 client tools (pg_verifybackup, pg_basebackup,
// pg_combinebackup, pg_waldump): PGBB_PG18BIN, else ../shared/pg18/bin beside the repository.
func stockTools() (string, error) {
	dirs := []string{os.Getenv("PGBB_PG18BIN")}
	if dirs[0] == "" {
		// beside the repository, else Debian's postgresql-client-18 (scripts/install-deps installs it where
		// the PostgreSQL project's apt repository is configured)
		dirs = []string{filepath.Join(repoDir, "..", "shared", "pg18", "bin"), "/usr/lib/postgresql/18/bin"}
	}
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_verifybackup")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("no stock PostgreSQL 18 client tools (pg_verifybackup, pg_combinebackup, pg_basebackup 18) in %s: "+
		"install postgresql-client-18 from the PostgreSQL project's apt repository (scripts/install-deps does where that repository is configured), "+
		"or set PGBB_PG18BIN to a directory that holds them", strings.Join(dirs, " or "))
}

// result is a finished command.
type result struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
}

// env returns the environment for pgbb commands: the built binaries and the PostgreSQL tools first on PATH.
func env(extra ...string) []string {
	var e []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PATH=") || strings.HasPrefix(kv, "PGBB_") || strings.HasPrefix(kv, "PG") {
			continue
		}
		e = append(e, kv)
	}
	// PGBB_BINDIR makes scripts/pgbb-basebackup use the binaries built for this test run, not a stale bin/
	e = append(e, "PATH="+binDir+":"+pgtest.BinDir()+":"+os.Getenv("PATH"), "PGBB_BINDIR="+binDir)
	return append(e, extra...)
}

// run runs a command to completion with a timeout.
func run(t *testing.T, timeout time.Duration, environ []string, name string, args ...string) result {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = environ
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s %v did not finish within %v\nstderr:\n%s", name, args, timeout, e.String())
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: o.String(), stderr: e.String(), elapsed: time.Since(start)}
}
