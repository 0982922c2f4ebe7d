package directwrite

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func openDir(t *testing.T, dir string) *os.File {
	t.Helper()
	f, err := os.OpenFile(dir, oPath|syscall.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// Files and their parents are created beneath the target with the data directory's modes; tablespace
// paths land beneath their own directory.
func TestWritesBeneathTheTargetWithTheSourceModes(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dest, ts := t.TempDir(), t.TempDir()
	w := New(openDir(t, dest), map[uint32]*os.File{16384: openDir(t, ts)}, 0o750, true)
	defer w.Close()
	for _, c := range []struct {
		path string
		off  int64
		data string
	}{{"base/1/112", 0, "abc"}, {"base/1/112", 8192, "def"}, {"pg_tblspc/16384/PG_15_1/5/1259", 0, "ts"}, {"caf\xe9", 0, "latin1"}} {
		if err := w.WriteAt(c.path, c.off, []byte(c.data)); err != nil {
			t.Fatalf("WriteAt(%q): %v", c.path, err)
		}
	}
	if err := w.Mkdir("pg_wal/archive_status"); err != nil {
		t.Fatal(err)
	}
	if err := w.Mkdir("pg_wal/archive_status"); err != nil {
		t.Fatalf("an existing directory: %v", err)
	}
	w.Close()
	b, _ := os.ReadFile(filepath.Join(dest, "base/1/112"))
	if len(b) != 8195 || string(b[:3]) != "abc" || string(b[8192:]) != "def" {
		t.Fatalf("base/1/112 holds %d bytes", len(b))
	}
	if b, _ := os.ReadFile(filepath.Join(ts, "PG_15_1/5/1259")); string(b) != "ts" {
		t.Fatalf("tablespace file holds %q", b)
	}
	if b, _ := os.ReadFile(filepath.Join(dest, "caf\xe9")); string(b) != "latin1" {
		t.Fatalf("latin-1 name holds %q", b)
	}
	for p, want := range map[string]os.FileMode{"base": 0o750, "base/1": 0o750, "base/1/112": 0o640, "pg_wal/archive_status": 0o750} {
		fi, err := os.Stat(filepath.Join(dest, p))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %04o", p, fi.Mode().Perm(), err, want)
		}
	}
}

// Whatever a work line says, nothing is written outside the target: not through a link inside it (even one
// pointing back inside), not through "..", not an absolute path, not into a tablespace that was not handed over.
func TestNothingIsWrittenOutsideTheTarget(t *testing.T) {
	dest, outside := t.TempDir(), t.TempDir()
	os.Symlink(outside, filepath.Join(dest, "escape"))
	os.Mkdir(filepath.Join(dest, "inside"), 0o700)
	os.Symlink(filepath.Join(dest, "inside"), filepath.Join(dest, "loop"))
	os.Symlink(filepath.Join(outside, "file"), filepath.Join(dest, "filelink"))
	w := New(openDir(t, dest), nil, 0o700, true)
	defer w.Close()
	for _, p := range []string{"backup_manifest", "backup_label", "global/pg_control", "pg_wal/000000010000000000000001", ".pgbb-spool",
		"escape/x", "escape/sub/x", "loop/x", "filelink", "../x", "base/../../x", "/etc/x", "pg_tblspc/16384/PG_15_1/x", "pg_tblspc/x", "pg_tblspc/16384"} {
		if err := w.WriteAt(p, 0, []byte("no")); err == nil {
			t.Errorf("WriteAt(%q) wrote", p)
		}
	}
	if err := w.Mkdir("escape/d"); err == nil {
		t.Error("Mkdir through a link")
	}
	if ents, _ := os.ReadDir(outside); len(ents) != 0 {
		t.Fatalf("written outside the target: %v", ents)
	}
}

// A Reader reads beneath the reference's directories, refuses links, and never creates anything.
func TestReaderReadsBeneathAndCreatesNothing(t *testing.T) {
	old, ts, outside := t.TempDir(), t.TempDir(), t.TempDir()
	if err := os.MkdirAll(filepath.Join(old, "base/1"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(old, "base/1/112"), []byte("0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ts, "PG_15_1/5"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "PG_15_1/5/1259"), []byte("ts"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(old, "base/1/113")); err != nil {
		t.Fatal(err)
	}
	r := NewReader(openDir(t, old), map[uint32]*os.File{16384: openDir(t, ts)})
	defer r.Close()
	buf := make([]byte, 8)
	if n, err := r.ReadAt("base/1/112", 4, buf); err != nil || string(buf[:n]) != "456789" {
		t.Fatalf("ReadAt = %q, %v", buf[:n], err)
	}
	if n, err := r.ReadAt("pg_tblspc/16384/PG_15_1/5/1259", 0, buf); err != nil || string(buf[:n]) != "ts" {
		t.Fatalf("ReadAt in a tablespace = %q, %v", buf[:n], err)
	}
	for _, missing := range []string{"base/1/999", "base/2/1", "pg_tblspc/17000/PG_15_1/5/1"} {
		if n, err := r.ReadAt(missing, 0, buf); err != nil || n != 0 {
			t.Fatalf("ReadAt(%s) = %d, %v; want nothing", missing, n, err)
		}
		if size, err := r.Size(missing); err != nil || size != 0 {
			t.Fatalf("Size(%s) = %d, %v", missing, size, err)
		}
	}
	if _, err := os.Stat(filepath.Join(old, "base/2")); !os.IsNotExist(err) {
		t.Fatal("the reader created a directory")
	}
	if _, err := os.Stat(filepath.Join(old, "base/1/999")); !os.IsNotExist(err) {
		t.Fatal("the reader created a file")
	}
	for _, bad := range []string{"base/1/113", "../" + filepath.Base(outside) + "/secret"} {
		if n, err := r.ReadAt(bad, 0, buf); err == nil && n > 0 {
			t.Fatalf("ReadAt(%s) read %q through a link or out of the tree", bad, buf[:n])
		}
	}
}

// A finished file of at least earlySyncMin bytes is fsynced and closed in the background, and written
// again through a new descriptor if a later range needs it; a smaller one stays open, for pgbb-pack's fsync
// alone; a background fsync that fails fails the Writer's next Finished or Close.
func TestFinishedFilesAreSyncedAndAFailureIsReported(t *testing.T) {
	dest := t.TempDir()
	w := New(openDir(t, dest), nil, 0o700, false)
	big := make([]byte, earlySyncMin)
	for i := range 3 * syncers {
		p := filepath.Join("base/1", string(rune('a'+i)))
		if err := w.WriteAt(p, 0, big); err != nil {
			t.Fatal(err)
		}
		if err := w.Finished(p); err != nil {
			t.Fatalf("Finished(%s): %v", p, err)
		}
		if w.open[p] != nil || len(w.order) != 0 {
			t.Fatalf("Finished(%s) left it among the open files: %v", p, w.order)
		}
	}
	// a later range of a finished file, too small to be synced early
	if err := w.WriteAt("base/1/a", earlySyncMin, []byte("two")); err != nil {
		t.Fatal(err)
	}
	if err := w.Finished("base/1/a"); err != nil {
		t.Fatal(err)
	}
	if w.open["base/1/a"] == nil {
		t.Fatalf("a range of 3 bytes was synced early")
	}
	if err := w.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(dest, "base/1/a")); err != nil || string(got) != string(big)+"two" {
		t.Fatalf("base/1/a holds %d bytes (%v)", len(got), err)
	}

	// the descriptor closed under the Writer: its fsync fails with EBADF
	w = New(openDir(t, dest), nil, 0o700, false)
	if err := w.WriteAt("base/1/z", 0, big); err != nil {
		t.Fatal(err)
	}
	syscall.Close(int(w.open["base/1/z"].Fd()))
	if err := w.Finished("base/1/z"); err != nil {
		t.Logf("Finished already reported it: %v", err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "fsync base/1/z") {
		t.Fatalf("Close after a failed fsync: %v, want the fsync's error", err)
	}
}
