package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// A page corrupted on disk is reported with its file and block and a total; the backup is kept without
// backup_manifest and the run exits 3. --no-verify-checksums takes the backup anyway.
func TestCorruptPageIsReported(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{DataChecksums: true})
	c.Psql(t, "postgres", "CREATE TABLE victim AS SELECT g, md5(g::text) AS v FROM generate_series(1, 10000) g; CHECKPOINT")
	rel := c.Psql(t, "postgres", "SELECT pg_relation_filepath('victim')")
	// damage block 2 in the middle of its tuples; the clean page is not in shared buffers' dirty set, so the
	// server will not write over the damage
	f, err := os.OpenFile(filepath.Join(c.Dir, rel), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt([]byte("CORRUPTED BY THE TEST"), 2*8192+4000)
	f.Close()
	for _, format := range []string{"plain", "tar"} {
		dest := filepath.Join(t.TempDir(), "dest")
		r := run(t, 5*time.Minute, env(), script, "-F", format, "-j", "2", c.DSN(), dest)
		if r.code != 3 {
			t.Fatalf("%s: exit %d, want 3\n%s", format, r.code, r.stderr)
		}
		for _, want := range []string{`checksum verification failed in file "` + rel + `", blocks 2`, "1 pages in 1 files", "kept"} {
			if !strings.Contains(r.stderr, want) {
				t.Errorf("%s: stderr lacks %q:\n%s", format, want, r.stderr)
			}
		}
		if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
			t.Errorf("%s: backup_manifest written", format)
		}
		ents, _ := os.ReadDir(dest)
		if len(ents) < 2 {
			t.Errorf("%s: backup not kept: %v", format, ents)
		}
	}
	dest := filepath.Join(t.TempDir(), "dest")
	r := run(t, 5*time.Minute, env(), script, "--no-verify-checksums", c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("--no-verify-checksums: exit %d\n%s", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err != nil {
		t.Fatal("no backup_manifest with --no-verify-checksums")
	}
}
