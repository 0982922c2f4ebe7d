package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// With max_wal_size=32MB and wal_keep_size=0, heavy writes and checkpoints while the copy is held up and
// pgbb-xlog copies WAL only every 30 s: the slot keeps the WAL and the backup restores; without the slot the
// WAL is gone and the run fails; a slot invalidated by max_slot_wal_keep_size fails the run.
func TestWALSafety(t *testing.T) {
	cases := []struct {
		name     string
		conf     string
		xlogArgs []string
		wantOK   bool
		want     string
	}{
		{"slot keeps the WAL", "", nil, true, ""},
		{"no slot, WAL removed", "", []string{"--no-slot"}, false, "removed before it was copied"},
		{"slot invalidated", "max_slot_wal_keep_size = 32MB", nil, false, "replication slot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conf := []string{"max_wal_size = 32MB", "min_wal_size = 32MB", "wal_keep_size = 0", "checkpoint_timeout = 30s"}
			if tc.conf != "" {
				conf = append(conf, tc.conf)
			}
			c := pgtest.New(t, pgtest.Options{DataChecksums: true, Conf: conf})
			c.Psql(t, "postgres", "CREATE TABLE w (g int, v text); CREATE TABLE base_data AS SELECT g FROM generate_series(1, 10000) g")
			h := newHooks(t)
			h.pass("stop")
			dest := c.TempDir(t)
			pipeline := "set -o pipefail; pgbb-xlog -D 30s " + strings.Join(tc.xlogArgs, " ") +
				" -- bash -c 'set -o pipefail; pgbb-list | pgbb-fetch' | pgbb-pack -D " + dest
			done := make(chan result, 1)
			go func() {
				done <- run(t, 10*time.Minute, env("PGBB_TEST_HOOKS="+h.dir, "PGBB_DSN="+c.DSN()), "bash", "-c", pipeline)
			}()
			h.at("fetch", done, func() {
				// about 150 MB of WAL, with checkpoints that recycle whatever no slot holds
				for i := 0; i < 6; i++ {
					c.Psql(t, "postgres", "INSERT INTO w SELECT g, repeat(md5(g::text), 8) FROM generate_series(1, 60000) g; CHECKPOINT")
				}
				c.Psql(t, "postgres", "SELECT pg_switch_wal(); CHECKPOINT")
			})
			r := <-done
			if !tc.wantOK {
				if r.code == 0 {
					t.Fatalf("exit 0 although the WAL was lost\n%s", r.stderr)
				}
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("stderr lacks %q:\n%s", tc.want, r.stderr)
				}
				if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
					t.Fatal("backup_manifest written")
				}
				return
			}
			if r.code != 0 {
				t.Fatalf("exit %d\n%s", r.code, r.stderr)
			}
			if v := run(t, 5*time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), dest); v.code != 0 {
				t.Fatalf("pg_verifybackup: %s%s", v.stdout, v.stderr)
			}
			segs, _ := filepath.Glob(filepath.Join(dest, "pg_wal", "0000000*"))
			if len(segs) < 8 {
				t.Fatalf("only %d WAL segments copied: the load did not write enough WAL to test anything", len(segs))
			}
			pgtest.ChownToServerUser(dest)
			rc := pgtest.Start(t, dest)
			if n := rc.Psql(t, "postgres", "SELECT count(*) FROM w"); n != "360000" {
				t.Fatalf("restored w has %s rows, want 360000", n)
			}
		})
	}
}
