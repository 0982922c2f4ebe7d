package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// extractTar restores a tar.xz backup the way the README says: base into the data directory, pg_wal into
// pg_wal/, each tablespace into a new directory with a pg_tblspc link to it, backup_manifest beside; then
// stock pg_verifybackup -n; only then tablespace_map is edited to name the new directory (it names the
// source's, which recovery would re-point the link to). Stock tar must extract each archive silently.
func extractTar(t *testing.T, c *pgtest.Cluster, backup, tsOID string) (data, tsNew string) {
	t.Helper()
	data, tsNew = c.TempDir(t), c.TempDir(t)
	os.Chmod(data, 0o700)
	xtar := func(archive, dir string) {
		cmd := exec.Command("tar", "-xJf", filepath.Join(backup, archive), "-C", dir)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Fatalf("tar -xJf %s: %v %s", archive, err, stderr.String())
		}
	}
	xtar("base.tar.xz", data)
	xtar("pg_wal.tar.xz", filepath.Join(data, "pg_wal"))
	xtar(tsOID+".tar.xz", tsNew)
	m, err := os.ReadFile(filepath.Join(data, "tablespace_map"))
	if err != nil || !strings.HasPrefix(string(m), tsOID+" ") {
		t.Fatalf("tablespace_map: %q %v", m, err)
	}
	if err := os.Symlink(tsNew, filepath.Join(data, "pg_tblspc", tsOID)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(backup, "backup_manifest"))
	os.WriteFile(filepath.Join(data, "backup_manifest"), b, 0o600)
	if v := run(t, 5*time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), "-n", data); v.code != 0 {
		t.Fatalf("pg_verifybackup -n: %s%s", v.stdout, v.stderr)
	}
	if v := run(t, 5*time.Minute, env(), filepath.Join(pgtest.BinDir(), "pg_verifybackup"), data); v.code != 0 {
		t.Fatalf("pg_verifybackup (WAL parsed): %s%s", v.stdout, v.stderr)
	}
	os.WriteFile(filepath.Join(data, "tablespace_map"), []byte(tsOID+" "+tsNew+"\n"), 0o600)
	return data, tsNew
}

func TestTarBackupUnderWriteLoad(t *testing.T) {
	for _, fanout := range []string{"parallel", "xargs"} {
		t.Run(fanout, func(t *testing.T) {
			s := newSource(t, 10)
			stop := s.load(t)
			backup := filepath.Join(t.TempDir(), "backup")
			r := run(t, 10*time.Minute, env(), script, "-F", "tar", "-j", "2", "--fanout", fanout, s.c.DSN(), backup)
			stop()
			if r.code != 0 {
				t.Fatalf("pgbb-basebackup -F tar: exit %d\n%s", r.code, r.stderr)
			}
			ents, _ := os.ReadDir(backup)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			want := []string{s.tsOID + ".tar.xz", "backup_manifest", "base.tar.xz", "pg_wal.tar.xz"}
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Fatalf("backup holds %v, want %v (the spool must be gone)", names, want)
			}
			for _, n := range names[:len(names)] {
				if strings.HasSuffix(n, ".tar.xz") {
					if out, err := exec.Command("xz", "-t", filepath.Join(backup, n)).CombinedOutput(); err != nil {
						t.Fatalf("xz -t %s: %v %s", n, err, out)
					}
				}
			}
			if v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", backup); v.code != 0 {
				t.Fatalf("pgbb-pack --verify: %s", v.stderr)
			}
			data, tsNew := extractTar(t, s.c, backup, s.tsOID)
			s.checkRestore(t, data, tsNew, "-i", "tablespace_map")

			// --verify finds a flipped byte in the compressed archive
			b, _ := os.ReadFile(filepath.Join(backup, "base.tar.xz"))
			b[len(b)/2] ^= 0x55
			os.WriteFile(filepath.Join(backup, "base.tar.xz"), b, 0o600)
			v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", backup)
			expectFailure(t, v, time.Minute, "pgbb-pack", "base.tar.xz")
		})
	}
}

// A cut or damaged stream leaves neither a .tar.xz that looks complete nor a backup_manifest, in either
// format, and --no-clean keeps the pieces under names that say they are unfinished.
func TestDamagedStreamLeavesNothingComplete(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 50000) g")
	dir := t.TempDir()
	stream := filepath.Join(dir, "all.stream")
	f, _ := os.Create(stream)
	cmd := exec.Command(bin("pgbb-xlog"), "--compress", "xz", "--", "bash", "-c", "set -o pipefail; pgbb-list | pgbb-fetch --compress xz")
	cmd.Env = env("PGBB_DSN=" + c.DSN())
	cmd.Stdout = f
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("pgbb-xlog: %v %s", err, stderr.String())
	}
	f.Close()
	good, _ := os.ReadFile(stream)
	for _, format := range []string{"plain", "tar"} {
		for _, cut := range []int{len(good) / 3, len(good) - 100, len(good) - 1} {
			bad := filepath.Join(dir, "bad.stream")
			os.WriteFile(bad, good[:cut], 0o600)
			for _, noClean := range []bool{false, true} {
				dest := filepath.Join(t.TempDir(), "dest")
				args := []string{"-F", format, "-D", dest, bad}
				if noClean {
					args = append([]string{"--no-clean"}, args...)
				}
				r := run(t, time.Minute, env(), bin("pgbb-pack"), args...)
				expectFailure(t, r, time.Minute, "pgbb-pack", "cut short")
				filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
					if err == nil && (strings.HasSuffix(p, ".tar.xz") || strings.HasSuffix(p, "backup_manifest")) {
						t.Errorf("%s cut at %d (no-clean %v): %s looks complete", format, cut, noClean, p)
					}
					return nil
				})
				if _, err := os.Stat(dest); !noClean && err == nil {
					t.Errorf("%s cut at %d: %s left behind", format, cut, dest)
				}
			}
		}
		// and the whole stream packs
		dest := filepath.Join(t.TempDir(), "dest")
		if r := run(t, time.Minute, env(), bin("pgbb-pack"), "-F", format, "-D", dest, stream); r.code != 0 {
			t.Fatalf("%s: good stream refused: %s", format, r.stderr)
		}
		if r := run(t, time.Minute, env(), bin("pgbb-pack"), "--verify", dest); r.code != 0 {
			t.Fatalf("%s: --verify: %s", format, r.stderr)
		}
	}
}

// tarBackup makes a tar.xz backup of c into a new directory and returns it.
func tarBackup(t *testing.T, c *pgtest.Cluster) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "backup")
	if r := run(t, 5*time.Minute, env(), script, "-F", "tar", "-j", "2", c.DSN(), dest); r.code != 0 {
		t.Fatalf("pgbb-basebackup -F tar: %s", r.stderr)
	}
	return dest
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), "copy")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	return dst
}

func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("bash", "-euc", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", script, err, out)
	}
}

// pgbb-pack --verify finds each kind of damage in a real tar.xz backup and names the file.
func TestVerifyFindsTampering(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	rel := c.Psql(t, "postgres", "SELECT pg_relation_filepath('t')")
	a, b := tarBackup(t, c), tarBackup(t, c)
	if r := run(t, time.Minute, env(), bin("pgbb-pack"), "--verify", a); r.code != 0 {
		t.Fatalf("untouched backup: %s", r.stderr)
	}
	cases := []struct {
		name, script, want string
	}{
		{"flipped byte inside a member", `xz -dc base.tar.xz > b.tar; rm base.tar.xz
off=$(tar -tvf b.tar --block-number | awk '$NF == "` + rel + `" {print $2}' | tr -d :)
printf 'X' | dd of=b.tar bs=1 seek=$(( (off + 1) * 512 + 100 )) conv=notrunc status=none
xz -z b.tar; mv b.tar.xz base.tar.xz`, rel},
		{"missing member", `xz -dc base.tar.xz > b.tar; rm base.tar.xz; tar --delete -f b.tar ` + rel + `; xz -z b.tar; mv b.tar.xz base.tar.xz`, rel},
		{"extra member", `xz -dc base.tar.xz > b.tar; rm base.tar.xz; mkdir -p x/base; echo hi > x/base/extra
tar -C x -rf b.tar base/extra; xz -z b.tar; mv b.tar.xz base.tar.xz; rm -r x`, "base/extra"},
		{"truncated archive", `truncate -s $(( $(stat -c %s base.tar.xz) / 2 )) base.tar.xz`, "base.tar.xz"},
		{"manifest from another backup", `cp ` + filepath.Join(b, "backup_manifest") + ` backup_manifest`, "backup_label"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := copyDir(t, a)
			sh(t, d, tc.script)
			r := run(t, time.Minute, env(), bin("pgbb-pack"), "--verify", d)
			expectFailure(t, r, time.Minute, "pgbb-pack", tc.want)
		})
	}
}
