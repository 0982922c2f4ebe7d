// Package directwrite writes a fetch job's file ranges into the backup's target itself (docs/direct-write.md):
// beneath the directory descriptors pgbb-pack handed over the sink, never by a path name from the root. It
// imports only the standard library.
//
// Every file is opened with openat2 and RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
// RESOLVE_NO_XDEV, so the kernel refuses a path that would leave its directory or pass through any link,
// whatever a work line says (invariant 9). pg_tblspc/<oid>/rest is written as rest beneath the tablespace's
// descriptor, never through the pg_tblspc/<oid> link. The names no work item may write are refused before
// anything is written (datadir.CheckWorkItemPath). It imports only the standard library and pgbb's pure
// rule packages.
package directwrite

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/pgversion"
)

// Writer writes ranges of files. It is not safe for concurrent use.
type Writer struct {
	dest        *os.File
	tablespaces map[uint32]*os.File
	dirMode     uint32
	fileMode    uint32
	noSync      bool
	walDirs     []string            // the empty directories below pg_wal a work item may make
	open        map[string]*os.File // files being written, kept open between ranges
	order       []string            // open files, oldest first
	written     map[string]int64    // bytes written into each open file since it was opened

	// the early fsync of finished files (Finished), in syncers goroutines started on first use
	syncQueue chan *os.File
	syncWG    sync.WaitGroup
	syncMu    sync.Mutex
	syncErr   error
}

// maxOpen bounds the files a Writer keeps open.
const maxOpen = 64

// New returns a Writer beneath dest and the tablespace directories (by oid). dirMode is the data
// directory's mode (0700 or 0750); files get it without execute bits. noSync skips the early writeback.
// The Writer does not own the descriptors.
func New(dest *os.File, tablespaces map[uint32]*os.File, dirMode uint32, noSync bool) *Writer {
	return &Writer{dest: dest, tablespaces: tablespaces, dirMode: dirMode, fileMode: dirMode &^ 0o111, noSync: noSync,
		walDirs: pgversion.AnyWALDirPaths(), open: map[string]*os.File{}, written: map[string]int64{}}
}

// resolve returns the directory descriptor and the path beneath it for a data-directory path. It refuses
// the paths no work item may write (datadir.CheckWorkItemPath) before anything is written.
func (w *Writer) resolve(path string) (int, string, error) {
	if err := datadir.CheckWorkItemPath(path, w.walDirs); err != nil {
		return 0, "", err
	}
	return beneath(w.dest, w.tablespaces, path)
}

// beneath returns the directory descriptor and the path beneath it for a data-directory path in the tree
// of dest and its tablespace directories: pg_tblspc/<oid>/rest is rest beneath the tablespace's
// directory.
func beneath(dest *os.File, tablespaces map[uint32]*os.File, path string) (int, string, error) {
	if rest, ok := strings.CutPrefix(path, "pg_tblspc/"); ok {
		oid, sub, ok := strings.Cut(rest, "/")
		n, err := strconv.ParseUint(oid, 10, 32)
		if !ok || err != nil || sub == "" {
			return 0, "", fmt.Errorf("%q is not inside a tablespace", path)
		}
		f := tablespaces[uint32(n)]
		if f == nil {
			return 0, "", fmt.Errorf("%q is not inside a tablespace of this backup", path)
		}
		return int(f.Fd()), sub, nil
	}
	return int(dest.Fd()), path, nil
}

// WriteAt writes data at off into the file at path (relative to the data directory), creating it and its
// missing parent directories. Unless noSync, it starts the writeback of what it wrote without waiting
// (as PostgreSQL's pg_flush_data), so that pgbb-pack's fsync at commit finds little left.
func (w *Writer) WriteAt(path string, off int64, data []byte) error {
	f, err := w.file(path)
	if err != nil {
		return err
	}
	if err := WriteAt(f, data, off); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	w.written[path] += int64(len(data))
	if !w.noSync {
		syscall.SyncFileRange(int(f.Fd()), off, int64(len(data)), syncFileRangeWrite)
	}
	return nil
}

// ReadAt reads what the target holds of the file at path from off into buf, as WriteAt would find it: it
// returns the bytes there, fewer than len(buf) where the file ends (none when the file did not exist; it
// is then created empty, as WriteAt would). A resuming job compares them with the server's digests.
func (w *Writer) ReadAt(path string, off int64, buf []byte) (int, error) {
	f, err := w.file(path)
	if err != nil {
		return 0, err
	}
	return readAt(f, off, buf, "target")
}

// readAt reads f from off into buf until buf is full or f ends; where names the tree in an error.
func readAt(f *os.File, off int64, buf []byte, where string) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := f.ReadAt(buf[n:], off+int64(n))
		n += m
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return n, fmt.Errorf("read %s in the %s: %w", f.Name(), where, err)
		}
	}
	return n, nil
}

// Size returns the size of the file at path in the target, 0 when it is not there; it creates nothing.
func (w *Writer) Size(path string) (int64, error) {
	if f := w.open[path]; f != nil {
		fi, err := f.Stat()
		if err != nil {
			return 0, err
		}
		return fi.Size(), nil
	}
	dirfd, rel, err := w.resolve(path)
	if err != nil {
		return 0, err
	}
	fd, err := openBeneath(dirfd, rel, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open %s in the target: %w", path, err)
	}
	var st syscall.Stat_t
	err = syscall.Fstat(fd, &st)
	syscall.Close(fd)
	if err != nil {
		return 0, err
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return 0, fmt.Errorf("%s in the target is not a regular file", path)
	}
	return st.Size, nil
}

// writePiece is the most WriteAt hands the kernel at once. Measured on this machine's journaled ext4 (a
// loop device; docs/BENCHMARKS.md, "Writing into the page cache"): 1 MiB writes into new files cost the
// writer 0.7 to 3.3 CPU-seconds for 800 MB, most of it in copy_folio_from_iter_atomic, 32 KiB writes 0.6
// to 1.5, as pg_basebackup's own writes of 32 KiB cost it 0.6; on tmpfs the size makes no difference.
const writePiece = 32 << 10

// WriteAt writes data at off in f in pieces of at most writePiece bytes (pgbb-pack's plain format writes
// through it too).
func WriteAt(f *os.File, data []byte, off int64) error {
	for o := 0; o < len(data); o += writePiece {
		if _, err := f.WriteAt(data[o:min(o+writePiece, len(data))], off+int64(o)); err != nil {
			return err
		}
	}
	return nil
}

// Mkdir creates the directory at path and its missing parents; an existing directory is fine.
func (w *Writer) Mkdir(path string) error {
	dirfd, rel, err := w.resolve(path)
	if err != nil {
		return err
	}
	return w.mkdirs(dirfd, rel)
}

// syncers is how many fsyncs of finished files a Writer runs at once. The device takes many at once (and
// ext4 joins concurrent fsyncs into one journal commit); a job's reads from the server go on meanwhile.
const syncers = 4

// earlySyncMin is the least a Finished file must have had written to be fsynced at once. What the commit's
// fsync waits for is the data to reach the disk, so the big files are worth syncing early; a small file's
// fsync is mostly a journal commit, which pgbb-pack's fsync would pay again on the clean file (measured,
// docs/BENCHMARKS.md: 40,000 files of 8 KiB took 1.7 s longer when every file was synced twice).
const earlySyncMin = 1 << 20

// Finished says that the job has written all it will of its current range of the file at path. Unless
// noSync, a file with at least earlySyncMin bytes written is fsynced in the background and closed
// (docs/direct-write.md, "Early fsync"): on a link that bounds the copy, the device's work is then done
// during the copy instead of at pgbb-pack's commit, whose own fsync finds the file clean. It returns the
// error of an earlier background fsync, if any.
func (w *Writer) Finished(path string) error {
	if w.noSync {
		return nil
	}
	if f := w.open[path]; f != nil && w.written[path] >= earlySyncMin {
		w.forget(path)
		if w.syncQueue == nil {
			w.syncQueue = make(chan *os.File, 2*maxOpen)
			for range syncers {
				w.syncWG.Add(1)
				go w.syncer(w.syncQueue)
			}
		}
		w.syncQueue <- f
	}
	return w.syncFailure()
}

// syncer fsyncs and closes the files Finished queued. The first error is kept: it fails the job, since a
// writeback error is reported once, to the descriptors open when it happened (Linux's errseq, PostgreSQL's
// "fsyncgate"), and pgbb-pack's fsync at commit, on a descriptor of its own, would not see it.
func (w *Writer) syncer(queue <-chan *os.File) {
	defer w.syncWG.Done()
	for f := range queue {
		err := f.Sync()
		if err != nil {
			err = fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("close %s: %w", f.Name(), cerr)
		}
		if err != nil {
			w.syncMu.Lock()
			if w.syncErr == nil {
				w.syncErr = err
			}
			w.syncMu.Unlock()
		}
	}
}

func (w *Writer) syncFailure() error {
	w.syncMu.Lock()
	defer w.syncMu.Unlock()
	return w.syncErr
}

// forget drops path from the open files, without closing it.
func (w *Writer) forget(path string) {
	delete(w.open, path)
	delete(w.written, path)
	for i, p := range w.order {
		if p == path {
			w.order = append(w.order[:i], w.order[i+1:]...)
			break
		}
	}
}

// Close closes the files still open and waits for the background fsyncs; it returns the first error.
// It may be called again: it then does nothing more.
func (w *Writer) Close() error {
	var first error
	for _, p := range w.order {
		if err := w.open[p].Close(); err != nil && first == nil {
			first = fmt.Errorf("close %s: %w", p, err)
		}
	}
	w.open, w.order, w.written = map[string]*os.File{}, nil, map[string]int64{}
	if w.syncQueue != nil {
		close(w.syncQueue)
		w.syncQueue = nil
		w.syncWG.Wait()
	}
	if err := w.syncFailure(); err != nil && first == nil {
		first = err
	}
	return first
}

// syncFileRangeWrite is SYNC_FILE_RANGE_WRITE of <linux/fs.h>.
const syncFileRangeWrite = 2

func (w *Writer) file(path string) (*os.File, error) {
	if f := w.open[path]; f != nil {
		return f, nil
	}
	dirfd, rel, err := w.resolve(path)
	if err != nil {
		return nil, err
	}
	// read and write: a resuming job reads back what an earlier run stored (ReadAt)
	fd, err := openBeneath(dirfd, rel, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, w.fileMode)
	if errors.Is(err, syscall.ENOENT) {
		if i := strings.LastIndexByte(rel, '/'); i > 0 {
			if err := w.mkdirs(dirfd, rel[:i]); err != nil {
				return nil, err
			}
		}
		fd, err = openBeneath(dirfd, rel, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC, w.fileMode)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s in the target: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), path)
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s in the target is not a regular file", path)
	}
	if len(w.order) >= maxOpen {
		old := w.order[0]
		w.order = w.order[1:]
		if err := w.open[old].Close(); err != nil {
			f.Close()
			return nil, fmt.Errorf("close %s: %w", old, err)
		}
		delete(w.open, old)
		delete(w.written, old)
	}
	w.open[path] = f
	w.order = append(w.order, path)
	return f, nil
}

// mkdirs creates rel beneath dirfd one component at a time, each beneath the one before it, so no component
// is reached through a link.
func (w *Writer) mkdirs(dirfd int, rel string) error {
	parts := strings.Split(rel, "/")
	cur := dirfd
	defer func() {
		if cur != dirfd {
			syscall.Close(cur)
		}
	}()
	for _, p := range parts {
		if p == "" || p == "." || p == ".." {
			return fmt.Errorf("bad path component %q in %q", p, rel)
		}
		err := syscall.Mkdirat(cur, p, w.dirMode)
		if err != nil && !errors.Is(err, syscall.EEXIST) {
			return fmt.Errorf("create directory %s in the target: %w", rel, err)
		}
		next, err := openBeneath(cur, p, oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open directory %s in the target: %w", rel, err)
		}
		if cur != dirfd {
			syscall.Close(cur)
		}
		cur = next
	}
	return nil
}

// oPath is O_PATH of <fcntl.h>, which package syscall does not name: a descriptor that only locates a
// directory.
const oPath = 0x200000

// openHow is struct open_how of <linux/openat2.h>.
type openHow struct {
	flags   uint64
	mode    uint64
	resolve uint64
}

// RESOLVE_* of <linux/openat2.h>.
const (
	resolveNoXdev       = 0x01
	resolveNoMagiclinks = 0x02
	resolveNoSymlinks   = 0x04
	resolveBeneath      = 0x08
)

// sysOpenat2 is the openat2 system call's number on the architectures of the common system call table
// (x86-64, arm64 and most others; not MIPS), since Linux 5.6.
const sysOpenat2 = 437

// openBeneath opens path beneath dirfd, refusing any path that leaves it or passes through a link.
func openBeneath(dirfd int, path string, flags int, mode uint32) (int, error) {
	p, err := syscall.BytePtrFromString(path)
	if err != nil {
		return -1, err
	}
	how := openHow{flags: uint64(flags), mode: uint64(mode), resolve: resolveBeneath | resolveNoSymlinks | resolveNoMagiclinks | resolveNoXdev}
	for {
		fd, _, errno := syscall.Syscall6(sysOpenat2, uintptr(dirfd), uintptr(unsafe.Pointer(p)), uintptr(unsafe.Pointer(&how)), unsafe.Sizeof(how), 0, 0)
		if errno == syscall.EINTR || errno == syscall.EAGAIN {
			continue // EAGAIN: a concurrent rename raced the lookup (openat2(2))
		}
		if errno != 0 {
			return -1, errno
		}
		return int(fd), nil
	}
}

// Supported checks that the kernel lets this process open files beneath dir with openat2 (Linux 5.6; a
// seccomp profile may refuse it): without it, jobs must stream their data instead.
func Supported(dir *os.File) error {
	fd, err := openBeneath(int(dir.Fd()), ".", oPath|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("openat2: %w", err)
	}
	syscall.Close(fd)
	return nil
}

// OpenDir opens a directory to hand to a Writer: O_PATH, refusing a link.
func OpenDir(path string) (*os.File, error) {
	return os.OpenFile(path, oPath|syscall.O_DIRECTORY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
}
