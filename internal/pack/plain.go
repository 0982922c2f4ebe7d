package pack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pgbb/pgbb/internal/directwrite"
	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/sink"

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
	walDirs   []string // the empty directories below pg_wal of the source's major
	dest      string
	mappings  map[string]string
	dirMode   os.FileMode
	fileMode  os.FileMode
	dirs      map[string]bool   // directories created, relative to dest
	links     map[string]string // pg_tblspc/<oid> -> target directory
	files     map[string]bool   // files written, relative to dest
	tsTargets []string          // tablespace directories filled
	disk
	open map[string]*os.File // files being written, kept open between chunks
	sums map[string]fileSum  // each complete file's size and CRC32C, as the ledger proved them
	// resume: DEST holds an earlier run's files (docs/resume.md); links and tablespace directories of
	// that run are taken as they are
	resume bool
}

// maxOpen bounds the files kept open between chunks; a file beyond it is reopened per chunk.
const maxOpen = 128

func (t *plainTarget) begin(s *chunkstream.BackupStart, major pgversion.Major, dirMode, fileMode os.FileMode) error {
	t.walDirs = major.WALDirPaths()
	t.dirMode, t.fileMode = dirMode, fileMode
	t.dirs, t.links, t.files = map[string]bool{}, map[string]string{}, map[string]bool{}
	t.open, t.sums = map[string]*os.File{}, map[string]fileSum{}
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
		if t.resume {
			// the earlier run's link, if it is one to the same directory, stays
			if got, err := os.Readlink(filepath.Join(t.dest, link)); err == nil && filepath.Clean(got) == target {
				t.links[link] = target
				continue
			}
			if err := os.RemoveAll(filepath.Join(t.dest, link)); err != nil {
				return err
			}
		}
		if err := os.Symlink(target, filepath.Join(t.dest, link)); err != nil {
			return err
		}
		t.links[link] = target
	}
	return nil
}

func (t *plainTarget) clean() {
	for p, f := range t.open {
		f.Close()
		delete(t.open, p)
	}
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
			// a job writing into DEST itself may have made it (beneath DEST, through no link): DEST was
			// empty when the backup began, so only a real directory is accepted
			fi, lerr := os.Lstat(filepath.Join(t.dest, sub))
			if !errors.Is(err, os.ErrExist) || lerr != nil || !fi.IsDir() {
				return fmt.Errorf("create directory %s: %w", sub, err)
			}
		}
		t.dirs[sub] = true
	}
	return nil
}

func (t *plainTarget) dir(path string) error { return t.mkdirs(path) }

// written records a range a job wrote itself; its directories are recorded to be synced at commit.
func (t *plainTarget) written(w *chunkstream.Written) error {
	if dir := filepath.Dir(w.Path); dir != "." {
		if err := t.mkdirs(dir); err != nil {
			return err
		}
	}
	t.files[w.Path] = true
	return nil
}

// errNoOpenat2 says the jobs cannot write beneath a descriptor here; they then stream their data.
var errNoOpenat2 = errors.New("the kernel refuses openat2, which direct writes need")

// resolved returns dir with its links resolved, or dir when that fails (the open then says why).
func resolved(dir string) string {
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return dir
}

// directOffer opens DEST and every tablespace's directory for the jobs to write beneath
// (docs/direct-write.md); the caller closes them.
func (t *plainTarget) directOffer() (sink.Offer, error) {
	o := sink.Offer{Direct: true, NoSync: t.noSync, DirMode: uint32(t.dirMode), Tablespaces: map[uint32]*os.File{}}
	var err error
	// DEST and -T directories the user named may be links to directories: the descriptors are opened on
	// what they point to
	if o.Dest, err = directwrite.OpenDir(resolved(t.dest)); err != nil {
		return sink.Offer{}, err
	}
	if err := directwrite.Supported(o.Dest); err != nil {
		o.Close()
		return sink.Offer{}, fmt.Errorf("%w: %v", errNoOpenat2, err)
	}
	for link, target := range t.links {
		oid, _ := strconv.ParseUint(strings.TrimPrefix(link, "pg_tblspc/"), 10, 32)
		f, err := directwrite.OpenDir(resolved(target))
		if err != nil {
			o.Close()
			return sink.Offer{}, err
		}
		o.Tablespaces[uint32(oid)] = f
	}
	return o, nil
}

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
	if strings.HasPrefix(c.Path, "pg_wal/") && allZero(raw) {
		err = t.zeroFill(c.Path, int64(c.Offset), int64(len(raw)))
	} else {
		err = t.writeAt(c.Path, int64(c.Offset), raw)
	}
	if err != nil {
		return err
	}
	t.files[c.Path] = true
	return nil
}

// zeroFill stores n zero bytes at off of path. A WAL segment's tail after the stop LSN is zeros (pgbb-xlog
// pads the segment, session.copySegment): past the file's end they are allocated with fallocate, which
// reserves the blocks as pg_basebackup's zero writes would (so the restored server cannot run out of space
// writing WAL there, the reason for PostgreSQL's wal_init_zero), without writing 16 MB through the page
// cache and again at the fsync. Where the file already holds bytes (a resumed DEST), or the file system has
// no fallocate, the zeros are written.
func (t *plainTarget) zeroFill(path string, off, n int64) error {
	f, err := t.file(path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() <= off {
		err := syscall.Fallocate(int(f.Fd()), 0, off, n)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EOPNOTSUPP) {
			return fmt.Errorf("allocate %s: %w", path, err)
		}
	}
	return t.writeAt(path, off, make([]byte, n))
}

// allZero says whether b is all zero bytes (and not empty).
func allZero(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for len(b) >= len(zeroBlock) {
		if string(b[:len(zeroBlock)]) != string(zeroBlock[:]) {
			return false
		}
		b = b[len(zeroBlock):]
	}
	return string(b) == string(zeroBlock[:len(b)])
}

var zeroBlock [8192]byte

// writeAt writes into a regular file inside dest without following a final symlink.
func (t *plainTarget) writeAt(path string, off int64, data []byte) error {
	f, err := t.file(path)
	if err != nil {
		return err
	}
	if err := directwrite.WriteAt(f, data, off); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	t.startWriteback(f, off, int64(len(data)))
	return nil
}

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE of <linux/fs.h>, which package syscall does not name.
const syncFileRangeWrite = 2

// startWriteback asks the kernel to start writing a range just written, without waiting, so the fsync at
// commit finds little left to do (PostgreSQL's pg_flush_data and pre_sync_fname in fd.c do the same).
// Errors are ignored here: the fsync reports them.
func (t *plainTarget) startWriteback(f *os.File, off, n int64) {
	if !t.noSync {
		syscall.SyncFileRange(int(f.Fd()), off, n, syncFileRangeWrite)
	}
}

// file opens path for writing, or returns it still open from an earlier chunk.
func (t *plainTarget) file(path string) (*os.File, error) {
	if f := t.open[path]; f != nil {
		return f, nil
	}
	f, err := os.OpenFile(filepath.Join(t.dest, path), os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, t.fileMode)
	if err != nil {
		return nil, err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if len(t.open) >= maxOpen {
		for p, g := range t.open {
			if err := g.Close(); err != nil {
				f.Close()
				return nil, fmt.Errorf("close %s: %w", p, err)
			}
			delete(t.open, p)
			break
		}
	}
	t.open[path] = f
	return f, nil
}

// closeFile closes path if it is open.
func (t *plainTarget) closeFile(path string) error {
	f := t.open[path]
	if f == nil {
		return nil
	}
	delete(t.open, path)
	if err := f.Close(); err != nil {
		return fmt.Errorf("close %s: %w", path, err)
	}
	return nil
}

func (t *plainTarget) fileDone(path string, sum fileSum, present bool) error {
	full := filepath.Join(t.dest, path)
	size := sum.size
	if !present {
		if err := t.closeFile(path); err != nil {
			return err
		}
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
	f, err := t.file(path)
	if err != nil {
		return err
	}
	// only cut: a file shorter than its proved bytes lost some of them (a truncate would fill zeros)
	if fi, err := f.Stat(); err != nil {
		return err
	} else if fi.Size() < size {
		return fmt.Errorf("%s: %d bytes in the target, %d were stored", path, fi.Size(), size)
	} else if fi.Size() > size {
		if err := f.Truncate(size); err != nil {
			return err
		}
	}
	if err := t.closeFile(path); err != nil {
		return err
	}
	t.files[path] = true
	t.sums[path] = sum
	return nil
}

func (t *plainTarget) writeControl(control []byte) error {
	for _, d := range append([]string{"global", "pg_wal"}, t.walDirs...) {
		if err := t.mkdirs(d); err != nil {
			return err
		}
	}
	if err := t.writeAt(controlfile.Path, 0, control); err != nil {
		return err
	}
	if err := t.closeFile(controlfile.Path); err != nil {
		return err
	}
	t.files[controlfile.Path] = true
	t.sums[controlfile.Path] = fileSum{size: int64(len(control)), crc: crc32c.Checksum(control)}
	return nil
}

// writeLabel writes backup_label; not tablespace_map (see plainTarget).
func (t *plainTarget) writeLabel(end *chunkstream.BackupEnd) error {
	if err := t.writeWhole(t.dest, "backup_label", end.BackupLabel, t.fileMode); err != nil {
		return err
	}
	t.files["backup_label"] = true
	t.sums["backup_label"] = fileSum{size: int64(len(end.BackupLabel)), crc: crc32c.Checksum(end.BackupLabel)}
	return nil
}

func (t *plainTarget) finish() ([]manifest.File, error) {
	for p := range t.open {
		if err := t.closeFile(p); err != nil {
			return nil, err
		}
	}
	paths := make([]string, 0, len(t.files))
	for f := range t.files {
		paths = append(paths, f)
	}
	sort.Strings(paths)
	// fsync from several goroutines: the device takes many requests at once
	done := make([]manifest.File, len(paths))
	errs := make([]error, len(paths))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < syncWorkers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				done[i], errs[i] = t.syncAndSum(paths[i])
			}
		}()
	}
	for i := range paths {
		next <- i
	}
	close(next)
	wg.Wait()
	var entries []manifest.File
	for i, f := range paths {
		if errs[i] != nil {
			return nil, errs[i]
		}
		if !strings.HasPrefix(f, "pg_wal/") {
			entries = append(entries, done[i])
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

// syncWorkers is how many files are fsynced at once.
const syncWorkers = 8

// syncAndSum fsyncs a written file and returns its manifest entry: the size and CRC32C the ledger proved
// from its chunks' checksums (the bytes actually stored, invariant 6), checked against the size on disk.
// It is called from several goroutines at once and only reads the target's maps.
func (t *plainTarget) syncAndSum(path string) (manifest.File, error) {
	sum, ok := t.sums[path]
	if !ok {
		return manifest.File{}, fmt.Errorf("%s: written but never proved whole", path)
	}
	if t.noSync {
		// nothing to read or sync: one lstat for the size check and the time
		fi, err := os.Lstat(filepath.Join(t.dest, path))
		if err != nil {
			return manifest.File{}, err
		}
		if !fi.Mode().IsRegular() || fi.Size() != sum.size {
			return manifest.File{}, fmt.Errorf("%s: not the regular file of %d bytes stored", path, sum.size)
		}
		return manifest.File{Path: path, Size: sum.size, Modified: fi.ModTime().Truncate(time.Second), CRC32C: sum.crc}, nil
	}
	f, err := os.OpenFile(filepath.Join(t.dest, path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return manifest.File{}, err
	}
	defer f.Close()
	if err := t.syncFile(f); err != nil {
		return manifest.File{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return manifest.File{}, err
	}
	if fi.Size() != sum.size {
		return manifest.File{}, fmt.Errorf("%s: %d bytes on disk, %d stored", path, fi.Size(), sum.size)
	}
	return manifest.File{Path: path, Size: sum.size, Modified: fi.ModTime().Truncate(time.Second), CRC32C: sum.crc}, nil
}
