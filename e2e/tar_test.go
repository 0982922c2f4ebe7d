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

// archiveExt is the archives' ending of a codec.
var archiveExt = map[string]string{"xz": ".tar.xz", "zstd": ".tar.zst"}

// extractTar restores a tar backup (archives ending in ext) the way the README says: base into the data
// directory, pg_wal into pg_wal/, each tablespace into a new directory with a pg_tblspc link to it,
// backup_manifest beside; then the source major's stock pg_verifybackup, with -n and with WAL parsing; only
// then tablespace_map is edited to name the new directory (it names the source's, which recovery would
// re-point the link to). Stock tar must extract each archive silently.
func (s *source) extractTar(t *testing.T, backup, ext string) (data, tsNew string) {
	t.Helper()
	data, tsNew = s.c.TempDir(t), s.c.TempDir(t)
	os.Chmod(data, 0o700)
	flags := []string{"-xJf"}
	if ext == ".tar.zst" {
		flags = []string{"--zstd", "-xf"}
	}
	xtar := func(archive, dir string) {
		cmd := exec.Command("tar", append(flags, filepath.Join(backup, archive), "-C", dir)...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Fatalf("tar %s %s: %v %s", strings.Join(flags, " "), archive, err, stderr.String())
		}
	}
	xtar("base"+ext, data)
	xtar("pg_wal"+ext, filepath.Join(data, "pg_wal"))
	xtar(s.tsOID+ext, tsNew)
	m, err := os.ReadFile(filepath.Join(data, "tablespace_map"))
	if err != nil || !strings.HasPrefix(string(m), s.tsOID+" ") {
		t.Fatalf("tablespace_map: %q %v", m, err)
	}
	if err := os.Symlink(tsNew, filepath.Join(data, "pg_tblspc", s.tsOID)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(backup, "backup_manifest"))
	os.WriteFile(filepath.Join(data, "backup_manifest"), b, 0o600)
	s.verifyPlain(t, data, "-n")
	s.verifyPlain(t, data)
	os.WriteFile(filepath.Join(data, "tablespace_map"), []byte(s.tsOID+" "+tsNew+"\n"), 0o600)
	return data, tsNew
}

// A tar backup under pgbench writes, with a tablespace, in each codec: xz (the default) under both
// fan-outs, zstd on PostgreSQL 15 and 18. Stock tools accept every archive (xz -t, zstd -t, tar), and
// for 18 stock pg_verifybackup 18 accepts the .tar.zst set itself; pgbb-pack --verify accepts it, and
// extracted it passes the restore oracle.
func TestTarBackupUnderWriteLoad(t *testing.T) {
	for _, tc := range []struct {
		name, codec, fanout string
		major               int
	}{
		{"xz/parallel", "xz", "parallel", 15},
		{"xz/xargs", "xz", "xargs", 15},
		{"zstd/15", "zstd", "xargs", 15},
		{"zstd/18", "zstd", "xargs", 18},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSourceOf(t, tc.major, 10, pgtest.Options{DataChecksums: true})
			ext := archiveExt[tc.codec]
			stop := s.load(t)
			backup := filepath.Join(t.TempDir(), "backup")
			args := []string{"-F", "tar", "-j", "2", "--fanout", tc.fanout}
			if tc.codec != "xz" {
				args = append(args, "--compress", tc.codec)
			}
			r := run(t, 10*time.Minute, env(), script, append(args, s.c.DSN(), backup)...)
			stop()
			if r.code != 0 {
				t.Fatalf("pgbb-basebackup %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
			}
			ents, _ := os.ReadDir(backup)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			want := []string{s.tsOID + ext, "backup_manifest", "base" + ext, "pg_wal" + ext}
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Fatalf("backup holds %v, want %v (the spool must be gone)", names, want)
			}
			for _, n := range names {
				if strings.HasSuffix(n, ext) {
					if out, err := exec.Command(tc.codec, "-t", filepath.Join(backup, n)).CombinedOutput(); err != nil {
						t.Fatalf("%s -t %s: %v %s", tc.codec, n, err, out)
					}
				}
			}
			if v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", backup); v.code != 0 {
				t.Fatalf("pgbb-pack --verify: %s", v.stderr)
			}
			if tc.major == 18 {
				// stock pg_verifybackup 18 reads .tar.zst sets (it ignores .tar.xz members); -n: it parses
				// no WAL out of a tar set
				tools, err := stockTools()
				if err != nil {
					t.Fatal(err)
				}
				if v := run(t, 5*time.Minute, env(), filepath.Join(tools, "pg_verifybackup"), "-F", "t", "-n", backup); v.code != 0 {
					t.Fatalf("pg_verifybackup -F t -n: %s%s", v.stdout, v.stderr)
				}
			}
			data, tsNew := s.extractTar(t, backup, ext)
			s.checkRestore(t, data, tsNew, "-i", "tablespace_map")

			// --verify finds a flipped byte in the compressed archive
			b, _ := os.ReadFile(filepath.Join(backup, "base"+ext))
			b[len(b)/2] ^= 0x55
			os.WriteFile(filepath.Join(backup, "base"+ext), b, 0o600)
			v := run(t, 5*time.Minute, env(), bin("pgbb-pack"), "--verify", backup)
			expectFailure(t, v, time.Minute, "pgbb-pack", "base"+ext)
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
				// a cut stream is a fault (its writer died): plain keeps DEST for --resume, marked
				// incomplete (docs/resume.md); tar leaves nothing
				_, err := os.Stat(dest)
				switch {
				case format == "plain":
					if _, err := os.Stat(filepath.Join(dest, ".pgbb-incomplete")); err != nil {
						t.Errorf("plain cut at %d: DEST not kept as incomplete: %v", cut, err)
					}
				case !noClean && err == nil:
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

// tarBackup makes a tar backup of c with codec (xz or zstd) into a new directory and returns it.
func tarBackup(t *testing.T, c *pgtest.Cluster, codec string) string {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "backup")
	if r := run(t, 5*time.Minute, env(), script, "-F", "tar", "--compress", codec, "-j", "2", c.DSN(), dest); r.code != 0 {
		t.Fatalf("pgbb-basebackup -F tar --compress %s: %s", codec, r.stderr)
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

// pgbb-pack --verify finds each kind of damage in a real tar backup of each codec and names the file.
// The damaged archives are recompressed with the stock tool (xz, zstd).
func TestVerifyFindsTampering(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
	rel := c.Psql(t, "postgres", "SELECT pg_relation_filepath('t')")
	for _, codec := range []string{"xz", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			a, b := tarBackup(t, c, codec), tarBackup(t, c, codec)
			if r := run(t, time.Minute, env(), bin("pgbb-pack"), "--verify", a); r.code != 0 {
				t.Fatalf("untouched backup: %s", r.stderr)
			}
			base := "base" + archiveExt[codec]
			// unpack base's archive to b.tar, and pack b.tar back into it
			unpack := codec + " -qdc " + base + " > b.tar; rm " + base + "\n"
			repack := "\n" + codec + " -qc b.tar > " + base + "; rm b.tar"
			cases := []struct {
				name, script, want string
			}{
				{"flipped byte inside a member", unpack + `off=$(tar -tvf b.tar --block-number | awk '$NF == "` + rel + `" {print $2}' | tr -d :)
printf 'X' | dd of=b.tar bs=1 seek=$(( (off + 1) * 512 + 100 )) conv=notrunc status=none` + repack, rel},
				{"missing member", unpack + `tar --delete -f b.tar ` + rel + repack, rel},
				{"extra member", unpack + `mkdir -p x/base; echo hi > x/base/extra; tar -C x -rf b.tar base/extra; rm -r x` + repack, "base/extra"},
				{"truncated archive", `truncate -s $(( $(stat -c %s ` + base + `) / 2 )) ` + base, base},
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
		})
	}
}
