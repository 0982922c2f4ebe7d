package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// procsWith returns the pids of processes whose environment holds marker.
func procsWith(marker string) map[int]string {
	out := map[int]string{}
	envs, _ := filepath.Glob("/proc/[0-9]*/environ")
	for _, e := range envs {
		b, err := os.ReadFile(e)
		if err != nil || !bytes.Contains(b, []byte(marker)) {
			continue
		}
		pid, _ := strconv.Atoi(strings.Split(e, "/")[2])
		if pid == os.Getpid() {
			continue
		}
		cmd, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		out[pid] = strings.ReplaceAll(strings.TrimRight(string(cmd), "\x00"), "\x00", " ")
	}
	return out
}

func arg0(cmd string) string {
	f := strings.Fields(cmd)
	if len(f) == 0 {
		return ""
	}
	return filepath.Base(f[0])
}

// killTheOne SIGKILLs the one process of the run named prog.
func killTheOne(prog string) func(t *testing.T, c *pgtest.Cluster, marker string) {
	return func(t *testing.T, c *pgtest.Cluster, marker string) {
		killed := 0
		for pid, cmd := range procsWith(marker) {
			if arg0(cmd) == prog {
				syscall.Kill(pid, syscall.SIGKILL)
				killed++
			}
		}
		if killed != 1 {
			t.Fatalf("killed %d %s processes: %v", killed, prog, procsWith(marker))
		}
	}
}

// The backup session dies, the server restarts, or a process of the pipeline is killed: the run exits
// non-zero, no process of it is left a few seconds after the script exited, no backup_manifest is written,
// the server keeps no backup session or slot of it, and the last lines printed name the cause.
func TestDeathOfAnyPartFailsTheRun(t *testing.T) {
	cases := []struct {
		name  string
		cause string // in the last three lines of stderr
		kill  func(t *testing.T, c *pgtest.Cluster, marker string)
	}{
		{"pg_terminate_backend on the session", "terminating connection due to administrator command", func(t *testing.T, c *pgtest.Cluster, marker string) {
			if n := c.Psql(t, "postgres", "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgbb-xlog'"); n != "1" {
				t.Fatalf("terminated %s sessions", n)
			}
		}},
		{"pg_ctl restart -m fast", "terminating connection due to administrator command", func(t *testing.T, c *pgtest.Cluster, marker string) {
			c.Restart(t)
		}},
		{"SIGKILL of pgbb-pack", "pgbb-pack was killed by SIGKILL", killTheOne("pgbb-pack")},
		{"SIGKILL of pgbb-xlog", "pgbb-xlog was killed by SIGKILL", killTheOne("pgbb-xlog")},
		{"SIGKILL of one fetcher", "pgbb-fetch: terminated by signal 9", func(t *testing.T, c *pgtest.Cluster, marker string) {
			for pid, cmd := range procsWith(marker) {
				if arg0(cmd) == "pgbb-fetch" {
					syscall.Kill(pid, syscall.SIGKILL)
					return
				}
			}
			t.Fatal("no pgbb-fetch running")
		}},
	}
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 100000) g")
	// both data paths: the jobs writing into DEST themselves, and streaming to pgbb-pack
	for _, path := range [][]string{{"-j", "2"}, {"-j", "2", "--no-direct-write"}} {
		for _, tc := range cases {
			t.Run(strings.TrimSpace(strings.Join(path[2:], " ")+" "+tc.name), func(t *testing.T) {
				h := newHooks(t)
				h.pass("stop")
				marker := "PGBB_TEST_HOOKS=" + h.dir
				dest := filepath.Join(t.TempDir(), "dest")
				done := make(chan result, 1)
				go func() { done <- run(t, 5*time.Minute, env(marker), script, append(path, c.DSN(), dest)...) }()
				var killedAt time.Time
				h.at("fetch", done, func() {
					time.Sleep(200 * time.Millisecond) // let every job reach the hook
					tc.kill(t, c, marker)
					killedAt = time.Now()
				})
				r := <-done
				if r.code == 0 {
					t.Fatalf("exit 0 after the failure\n%s", r.stderr)
				}
				t.Logf("exit %d %v after the failure; stderr:\n%s", r.code, time.Since(killedAt), r.stderr)
				expectNothingLeft(t, marker)
				if last := lastLines(r.stderr, 3); !strings.Contains(last, tc.cause) {
					t.Errorf("the last lines do not name the cause %q:\n%s", tc.cause, last)
				}
				// the server ending the session is the run's cause, not a job's stream that pgbb-xlog cut
				// when it stopped the base copy
				if strings.Contains(tc.cause, "administrator command") {
					if first := lastLines(r.stderr, 2); !strings.Contains(first, "first error: pgbb-xlog: ") || !strings.Contains(first, tc.cause) {
						t.Errorf("the summary does not name pgbb-xlog's %q first:\n%s", tc.cause, first)
					}
				}
				if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
					t.Fatal("backup_manifest written")
				}
				deadline := time.Now().Add(10 * time.Second)
				for {
					n := c.Psql(t, "postgres", "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgbb-%') + (SELECT count(*) FROM pg_replication_slots)")
					if n == "0" {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s pgbb sessions or slots left on the server", n)
					}
					time.Sleep(200 * time.Millisecond)
				}
				// the server can take the next backup
				dest2 := filepath.Join(t.TempDir(), "dest")
				if r := run(t, 5*time.Minute, env(), script, c.DSN(), dest2); r.code != 0 {
					t.Fatalf("next backup: %s", r.stderr)
				}
			})
		}
	}
}
