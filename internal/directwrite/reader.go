package directwrite

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// Reader reads files of a reference backup (docs/incremental.md, section 5) beneath its directory
// descriptors, with the same resolution rules as a Writer (openat2 beneath, no links). It only ever opens
// files read-only: it has no way to create, change or remove anything. It is not safe for concurrent use.
type Reader struct {
	dir         *os.File
	tablespaces map[uint32]*os.File
	open        map[string]*os.File // nil entry: the file is not there
	order       []string
}

// NewReader returns a Reader beneath dir and its tablespace directories (by oid); it does not own them.
func NewReader(dir *os.File, tablespaces map[uint32]*os.File) *Reader {
	return &Reader{dir: dir, tablespaces: tablespaces, open: map[string]*os.File{}}
}

// file returns the open file at path, nil when the reference has no regular file there.
func (r *Reader) file(path string) (*os.File, error) {
	if f, ok := r.open[path]; ok {
		return f, nil
	}
	var f *os.File
	dirfd, rel, err := beneath(r.dir, r.tablespaces, path)
	if err != nil {
		// a tablespace the reference does not have: nothing to compare with
		dirfd = -1
	}
	if dirfd >= 0 {
		fd, err := openBeneath(dirfd, rel, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NOCTTY|syscall.O_NONBLOCK, 0)
		switch {
		case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ENOTDIR):
		case err != nil:
			return nil, fmt.Errorf("open %s in the reference: %w", path, err)
		default:
			f = os.NewFile(uintptr(fd), path)
			if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
				f.Close()
				return nil, fmt.Errorf("%s in the reference is not a regular file", path)
			}
		}
	}
	if len(r.order) >= maxOpen {
		old := r.order[0]
		r.order = r.order[1:]
		if of := r.open[old]; of != nil {
			of.Close()
		}
		delete(r.open, old)
	}
	r.open[path] = f
	r.order = append(r.order, path)
	return f, nil
}

// Size returns the size of the file at path in the reference, 0 when it is not there.
func (r *Reader) Size(path string) (int64, error) {
	f, err := r.file(path)
	if err != nil || f == nil {
		return 0, err
	}
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// ReadAt reads what the reference holds of the file at path from off into buf: the bytes there, fewer
// than len(buf) where the file ends, none when it is not there.
func (r *Reader) ReadAt(path string, off int64, buf []byte) (int, error) {
	f, err := r.file(path)
	if err != nil || f == nil {
		return 0, err
	}
	return readAt(f, off, buf, "reference")
}

// Close closes the files still open.
func (r *Reader) Close() {
	for _, p := range r.order {
		if f := r.open[p]; f != nil {
			f.Close()
		}
	}
	r.open, r.order = map[string]*os.File{}, nil
}
