package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// hooks drives the PGBB_TEST_HOOKS points of a running pipeline.
type hooks struct {
	t   *testing.T
	dir string
}

func newHooks(t *testing.T) *hooks {
	d := t.TempDir()
	os.Chmod(d, 0o777)
	return &hooks{t: t, dir: d}
}

// hold makes the pipeline stop at a point of testhook.PauseIfHeld, which it passes unless held.
func (h *hooks) hold(point string) {
	os.WriteFile(filepath.Join(h.dir, point+".hold"), nil, 0o644)
}

// pass lets the pipeline through point without stopping.
func (h *hooks) pass(point string) {
	os.WriteFile(filepath.Join(h.dir, point+".release"), nil, 0o644)
}

// at waits until the pipeline reaches point, runs f, and lets the pipeline go on.
func (h *hooks) at(point string, done <-chan result, f func()) {
	h.t.Helper()
	deadline := time.After(3 * time.Minute)
	for {
		if _, err := os.Stat(filepath.Join(h.dir, point+".reached")); err == nil {
			break
		}
		select {
		case r := <-done:
			h.t.Fatalf("pipeline ended before %q: exit %d\n%s", point, r.code, r.stderr)
		case <-deadline:
			h.t.Fatalf("pipeline never reached %q", point)
		case <-time.After(20 * time.Millisecond):
		}
	}
	f()
	os.WriteFile(filepath.Join(h.dir, point+".release"), nil, 0o644)
}

// Files truncated, extended, removed and created between the listing and their copy, databases dropped,
// and tables made unlogged: every case restores clean, with the data as it was at the end of the backup.
func TestChangesBetweenListingAndCopyRestoreClean(t *testing.T) {
	for _, format := range []string{"plain", "tar"} {
		t.Run(format, func(t *testing.T) {
			c := pgtest.New(t, pgtest.Options{DataChecksums: true})
			c.Psql(t, "postgres", `CREATE TABLE shrink AS SELECT g, md5(g::text) AS v FROM generate_series(1, 300000) g;
CREATE TABLE grow AS SELECT g, md5(g::text) AS v FROM generate_series(1, 1000) g;
CREATE TABLE gone AS SELECT g FROM generate_series(1, 100000) g;
CREATE TABLE tolog AS SELECT g FROM generate_series(1, 50000) g;
CREATE TABLE late (g int);
CREATE DATABASE dropme;`)
			c.Psql(t, "dropme", "CREATE TABLE x AS SELECT g FROM generate_series(1, 100000) g")
			h := newHooks(t)
			dest := filepath.Join(t.TempDir(), "dest")
			if format == "plain" {
				dest = c.TempDir(t) // the restored cluster runs in it
			}
			done := make(chan result, 1)
			go func() {
				done <- run(t, 10*time.Minute, env("PGBB_TEST_HOOKS="+h.dir), script, "-F", format, "-j", "2", c.DSN(), dest)
			}()
			h.at("fetch", done, func() {
				c.Psql(t, "postgres", `DELETE FROM shrink WHERE g > 1000;
VACUUM shrink;
INSERT INTO grow SELECT g, md5(g::text) FROM generate_series(1001, 400000) g;
DROP TABLE gone;
CREATE TABLE newt AS SELECT g FROM generate_series(1, 10000) g;
CREATE UNLOGGED TABLE newu AS SELECT g FROM generate_series(1, 10000) g;
ALTER TABLE tolog SET UNLOGGED;
DROP DATABASE dropme;`)
			})
			h.at("stop", done, func() {
				c.Psql(t, "postgres", "INSERT INTO late SELECT g FROM generate_series(1, 5000) g")
			})
			r := <-done
			if r.code != 0 {
				t.Fatalf("backup: exit %d\n%s", r.code, r.stderr)
			}
			data := dest
			if format == "tar" {
				data = c.TempDir(t)
				for _, a := range [][2]string{{"base.tar.xz", data}, {"pg_wal.tar.xz", filepath.Join(data, "pg_wal")}} {
					if out, err := exec.Command("tar", "-xJf", filepath.Join(dest, a[0]), "-C", a[1]).CombinedOutput(); err != nil {
						t.Fatalf("tar: %v %s", err, out)
					}
				}
				b, _ := os.ReadFile(filepath.Join(dest, "backup_manifest"))
				os.WriteFile(filepath.Join(data, "backup_manifest"), b, 0o600)
			}
			if v := run(t, 5*time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), data); v.code != 0 {
				t.Fatalf("pg_verifybackup: %s%s", v.stdout, v.stderr)
			}
			pgtest.ChownToServerUser(data)
			os.Chmod(data, 0o700)
			rc := pgtest.Start(t, data)
			want := map[string]string{
				"SELECT count(*) FROM shrink":                                 "1000",
				"SELECT count(*) FROM grow":                                   "400000",
				"SELECT count(*) FROM newt":                                   "10000",
				"SELECT count(*) FROM newu":                                   "0",
				"SELECT count(*) FROM tolog":                                  "0",
				"SELECT count(*) FROM late":                                   "5000",
				"SELECT count(*) FROM pg_class WHERE relname = 'gone'":        "0",
				"SELECT count(*) FROM pg_database WHERE datname = 'dropme'":   "0",
				"SELECT relpersistence FROM pg_class WHERE relname = 'tolog'": "u",
				"SELECT sum(g) FROM grow":                                     strconv.Itoa(400000 * 400001 / 2),
				"SELECT count(*) FROM shrink WHERE v = md5(g::text)":          "1000",
				"SELECT count(*) FROM grow WHERE v = md5(g::text)":            "400000",
			}
			for q, w := range want {
				if got := rc.Psql(t, "postgres", q); got != w {
					t.Errorf("%s: %s, want %s", q, got, w)
				}
			}
			am := rc.Command("pg_amcheck", "--all", "--heapallindexed", "--install-missing")
			if out, err := am.CombinedOutput(); err != nil {
				t.Fatalf("pg_amcheck: %v\n%s", err, out)
			}
		})
	}
}
