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
