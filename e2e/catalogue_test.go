package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/pgtest"
)

// The bad-input catalogue of docs/bad-input.md that the other tests do not already cover.

func TestMalformedWorkLineNamesItsLine(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	cmd := exec.Command(bin("pgbb-fetch"), "--dsn", c.DSN(), "-o", filepath.Join(t.TempDir(), "out.stream"))
	cmd.Env = env("PGBB_BACKUP_ID=1-1-0-1-aa")
	cmd.Stdin = strings.NewReader("1\td\t0\t0\tbase\n2\tf\t0\tten\tPG_VERSION\n")
	out, err := cmd.CombinedOutput()
	if err == nil || cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "stdin: line 2: bad length") {
		t.Fatalf("exit %d: %s", cmd.ProcessState.ExitCode(), out)
	}
	for _, bad := range []string{"1\tf\t0\t8\t../etc/passwd", "1\tf\t0\t8\t/etc/passwd"} {
		cmd := exec.Command(bin("pgbb-fetch"), "--dsn", c.DSN(), bad)
		cmd.Env = env("PGBB_BACKUP_ID=1-1-0-1-aa")
		if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "argument 1:") {
			t.Fatalf("%q accepted: %s", bad, out)
		}
	}
}

func mountTmpfs(t *testing.T, opts string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a tmpfs and needs root (CI runs as root)")
	}
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", opts, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dir).Run() })
	return dir
}

func TestFullDiskFailsCleanly(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	c.Psql(t, "postgres", "CREATE TABLE big AS SELECT g, md5(g::text) FROM generate_series(1, 300000) g")
	small := mountTmpfs(t, "size=16m")
	// a plain run keeps what it copied for --resume (docs/resume.md), marked incomplete; with --no-keep,
	// and in tar format, nothing is left
	for _, variant := range [][]string{{"-F", "plain"}, {"-F", "plain", "--no-keep"}, {"-F", "tar"}} {
		name := strings.Join(variant, " ")
		dest := filepath.Join(small, "dest")
		r := run(t, 5*time.Minute, env(), script, append(variant, c.DSN(), dest)...)
		expectFailure(t, r, 2*time.Minute, "pgbb-pack", "no space left on device")
		if _, err := os.Stat(filepath.Join(dest, "backup_manifest")); err == nil {
			t.Fatalf("%s: backup_manifest on a full disk", name)
		}
		if name == "-F plain" {
			if _, err := os.Stat(filepath.Join(dest, ".pgbb-incomplete")); err != nil {
				t.Fatalf("%s: DEST not kept as incomplete: %v", name, err)
			}
			for _, f := range []string{"global/pg_control", "backup_label"} {
				if _, err := os.Stat(filepath.Join(dest, f)); err == nil {
					t.Errorf("%s: the kept DEST holds %s", name, f)
				}
			}
			if !strings.Contains(lastLines(r.stderr, 2), "--resume") {
				t.Errorf("%s: the last lines do not say the DEST is kept for --resume:\n%s", name, lastLines(r.stderr, 2))
			}
			os.RemoveAll(dest)
			continue
		}
		if ents, _ := os.ReadDir(small); len(ents) != 0 {
			t.Fatalf("%s: left %v on the full file system", name, ents)
		}
	}
	if n := c.Psql(t, "postgres", "SELECT count(*) FROM pg_replication_slots"); n != "0" {
		t.Fatalf("%s slots left", n)
	}
}

func TestUnwritableDestFails(t *testing.T) {
	c := pgtest.New(t, pgtest.Options{})
	ro := mountTmpfs(t, "size=1m,ro")
	r := run(t, 2*time.Minute, env(), script, c.DSN(), filepath.Join(ro, "dest"))
	// refused before anything starts
	expectFailure(t, r, 10*time.Second, "pgbb-basebackup", "read-only file system")
	if r.code != 2 || strings.Contains(r.stderr, "pgbb-xlog") {
		t.Errorf("exit %d, want 2 before a backup starts:\n%s", r.code, r.stderr)
	}
	// and by pgbb-pack, on its own
	p := run(t, time.Minute, env(), bin("pgbb-pack"), "-D", filepath.Join(ro, "dest"), os.DevNull)
	expectFailure(t, p, 10*time.Second, "pgbb-pack", "read-only file system")
}

// A password from PGPASSWORD or ~/.pgpass never appears in output, files or command lines either.
func TestPasswordFromEnvironmentOrPgpassStaysSecret(t *testing.T) {
	secret := "envSecret-42"
	c := pgtest.New(t, pgtest.Options{AuthMethod: "scram-sha-256", Password: secret})
	dsn := strings.Replace(c.DSN(), " password="+secret, "", 1)
	dsn = strings.Replace(dsn, "password="+secret, "", 1)
	if strings.Contains(dsn, secret) {
		t.Fatalf("DSN still holds the password: %s", dsn)
	}
	home := t.TempDir()
	pgpass := filepath.Join(home, ".pgpass")
	os.WriteFile(pgpass, []byte("127.0.0.1:*:*:postgres:"+secret+"\n"), 0o600)
	for name, extra := range map[string][]string{"PGPASSWORD": {"PGPASSWORD=" + secret}, ".pgpass": {"HOME=" + home, "PGPASSFILE=" + pgpass}} {
		dest := filepath.Join(t.TempDir(), "dest")
		r := run(t, 5*time.Minute, env(extra...), script, dsn, dest)
		if r.code != 0 {
			t.Fatalf("%s: %s", name, r.stderr)
		}
		if strings.Contains(r.stdout+r.stderr, secret) {
			t.Errorf("%s: password in output", name)
		}
		filepath.Walk(dest, func(p string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() && !strings.Contains(p, "/pg_wal/") {
				if b, _ := os.ReadFile(p); strings.Contains(string(b), secret) {
					t.Errorf("%s: password in %s", name, p)
				}
			}
			return nil
		})
		// a wrong one is refused without being printed
		bad := run(t, time.Minute, env("PGPASSWORD=wrong-"+secret), script, dsn, filepath.Join(t.TempDir(), "d2"))
		if bad.code == 0 || strings.Contains(bad.stderr, "wrong-"+secret) {
			t.Errorf("wrong PGPASSWORD: exit %d\n%s", bad.code, bad.stderr)
		}
	}
}
