package pack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/manifest"
)

// plainTarget writes a data directory that starts as is: files at their offsets as chunks arrive, tablespace
// links pg_tblspc/<oid> to their (mapped) locations, and at commit pg_control and backup_label. It does not
// write tablespace_map, as pg_basebackup -Fp does not: the map names the source's locations, and recovery
// would re-point the links there.
type plainTarget struct {
	dest      string
	mappings  map[string]string
	dirMode   os.FileMode
	fileMode  os.FileMode
	dirs      map[string]bool   // directories created, relative to dest
	links     map[string]string // pg_tblspc/<oid> -> target directory
	files     map[string]bool   // files written, relative to dest
	tsTargets []string          // tablespace directories filled
	buf       []byte
	disk
}

func (t *plainTarget) begin(s *chunkstream.BackupStart, dirMode, fileMode os.FileMode) error {
	t.dirMode, t.fileMode = dirMode, fileMode
	t.dirs, t.links, t.files = map[string]bool{}, map[string]string{}, map[string]bool{}
	if err := os.Chmod(t.dest, dirMode); err != nil {
		return err
	}
	// Tablespace links are made now, before any file under them can arrive.
	for _, ts := range s.Tablespaces {
		target := filepath.Clean(ts.Location)
		if m, ok := t.mappings[target]; ok {
			target = m
		} else if err := CheckDest(target, false); err != nil {
			return cliapp.WithHint(fmt.Errorf("tablespace %d: %w", ts.OID, err),
				fmt.Sprintf("map it to a new directory with -T %s=NEWDIR", ts.Location))
		}
		if err := os.MkdirAll(target, dirMode); err != nil {
			return err
		}
		if err := os.Chmod(target, dirMode); err != nil {
			return err
		}
		t.tsTargets = append(t.tsTargets, target)
		if err := t.mkdirs("pg_tblspc"); err != nil {
			return err
		}
		link := "pg_tblspc/" + strconv.FormatUint(uint64(ts.OID), 10)
		if err := os.Symlink(target, filepath.Join(t.dest, link)); err != nil {
			return err
		}
		t.links[link] = target
	}
	return nil
}

func (t *plainTarget) clean() {
	for _, d := range t.tsTargets {
		emptyDir(d)
	}
}

// mkdirs creates path's directories inside dest, one component at a time. An existing component must be one
// this target created (or a tablespace link it made), so nothing is written through a foreign link.
func (t *plainTarget) mkdirs(path string) error {
	parts := strings.Split(path, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		if t.dirs[sub] {
			continue
		}
		if _, ok := t.links[sub]; ok {
			if i == len(parts)-1 {
				return fmt.Errorf("%q is a tablespace link, not a directory", sub)
			}
			continue
		}
		if err := os.Mkdir(filepath.Join(t.dest, sub), t.dirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", sub, err)
		}
		t.dirs[sub] = true
	}
	return nil
}

func (t *plainTarget) dir(path string) error { return t.mkdirs(path) }

func (t *plainTarget) chunk(c *chunkstream.Chunk) error {
	raw, err := rawData(c)
	if err != nil {
		return err
	}
	if dir := filepath.Dir(c.Path); dir != "." {
		if err := t.mkdirs(dir); err != nil {
			return err
		}
	}
	if err := t.writeAt(c.Path, int64(c.Offset), raw); err != nil {
		return err
	}
	t.files[c.Path] = true
	return nil
}

// writeAt writes into a regular file inside dest without following a final symlink.
func (t *plainTarget) writeAt(path string, off int64, data []byte) error {
	f, err := os.OpenFile(filepath.Join(t.dest, path), os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, t.fileMode)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("%s is not a regular file", path)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func (t *plainTarget) fileDone(path string, size int64, present bool) error {
	full := filepath.Join(t.dest, path)
	if !present {
		if t.files[path] {
			delete(t.files, path)
			return os.Remove(full)
		}
		return nil
	}
	if dir := filepath.Dir(path); dir != "." {
		if err := t.mkdirs(dir); err != nil {
			return err
		}
	}
	// create an empty file, or cut one whose later ranges outlived a short one
	f, err := os.OpenFile(full, os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, t.fileMode)
	if err != nil {
		return err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", path)
	} else if fi.Size() != size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	t.files[path] = true
	return nil
}

func (t *plainTarget) commit(control []byte, end *chunkstream.BackupEnd) ([]manifest.File, error) {
	for _, d := range []string{"global", "pg_wal", "pg_wal/archive_status"} {
		if err := t.mkdirs(d); err != nil {
			return nil, err
		}
	}
	// pg_control after every other data file (invariant 5)
	if err := t.writeAt(controlfile.Path, 0, control); err != nil {
		return nil, err
	}
	t.files[controlfile.Path] = true
	// backup_label exactly as pg_backup_stop returned it (invariant 4)
	if err := t.writeWhole(t.dest, "backup_label", end.BackupLabel, t.fileMode); err != nil {
		return nil, err
	}
	t.files["backup_label"] = true
	paths := make([]string, 0, len(t.files))
	for f := range t.files {
		paths = append(paths, f)
	}
	sort.Strings(paths)
	var entries []manifest.File
	for _, f := range paths {
		mf, err := t.syncAndSum(f)
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(f, "pg_wal/") {
			entries = append(entries, mf)
		}
	}
	for d := range t.dirs {
		if err := t.syncDir(filepath.Join(t.dest, d)); err != nil {
			return nil, err
		}
	}
	for _, d := range t.tsTargets {
		if err := t.syncDir(d); err != nil {
			return nil, err
		}
	}
	return entries, t.syncDir(t.dest)
}

// syncAndSum reads a written file back for its CRC32C and size (the bytes actually stored, invariant 6) and
// fsyncs it.
func (t *plainTarget) syncAndSum(path string) (manifest.File, error) {
	f, err := os.OpenFile(filepath.Join(t.dest, path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return manifest.File{}, err
	}
	defer f.Close()
	if t.buf == nil {
		t.buf = make([]byte, 1<<20)
	}
	var crc uint32
	var size int64
	for {
		n, err := f.Read(t.buf)
		crc = crc32c.Update(crc, t.buf[:n])
		size += int64(n)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return manifest.File{}, err
		}
	}
	if err := t.syncFile(f); err != nil {
		return manifest.File{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return manifest.File{}, err
	}
	return manifest.File{Path: path, Size: size, Modified: fi.ModTime().Truncate(time.Second), CRC32C: crc}, nil
}
