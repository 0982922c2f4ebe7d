package verify

import (
	"archive/tar"
	"bufio"
	"errors"
	"io"
	"os"
	"path/filepath"

	"github.com/pgbb/pgbb/internal/compress"
)

// memberCheck checks one regular member of an archive at path (the name Verify reports it by), whose data
// r yields. It reports what it finds and returns only an error reading r: the archive is damaged there.
type memberCheck func(path string, size int64, r io.Reader) error

// errNoEndMarker is the damage of a tar archive that stops between two members, as one does whose last xz
// streams (zstd frames) are missing: the codec cannot see that cut.
var errNoEndMarker = errors.New("it ends without the tar end-of-archive marker (cut short)")

// readArchive streams the archive name of dir through its codec's decoder and tar, hands each regular member to check
// under the path pathOf gives its member name, and skips directories and symbolic links. On damage it
// reports the archive, and the member it was reading, once each, and stops: the rest of the archive
// cannot be read.
func (v *verifier) readArchive(name string, pathOf func(string) string, check memberCheck) archiveState {
	f, err := os.Open(filepath.Join(v.dir, name))
	if err != nil {
		v.report(name, "cannot open: %v", err)
		return archiveUnopened
	}
	defer f.Close()
	last := ""
	damagedAt := func(where string, err error) archiveState {
		v.report(name, "damaged %s: %v; the rest of it could not be read", where, err)
		return archiveDamaged
	}
	damaged := func(err error) archiveState {
		if last == "" {
			return damagedAt("at its start", err)
		}
		return damagedAt("after "+printable(last), err)
	}
	xr, err := compress.NewArchiveReader(v.layout.Codec(), bufio.NewReaderSize(f, 1<<20))
	if err != nil {
		return damaged(err)
	}
	defer xr.Close()
	ends := &endTracker{r: xr}
	tr := tar.NewReader(ends)
	for {
		ends.mark()
		hdr, err := tr.Next()
		if err == io.EOF {
			if !ends.endMarker() {
				return damaged(errNoEndMarker)
			}
			// the streams (frames) after the marker must be whole too; tar writers pad with zeros only
			ends.mark()
			if _, err := io.Copy(io.Discard, ends); err != nil {
				return damaged(err)
			}
			if ends.nonzero {
				v.report(name, "data after the tar end-of-archive marker")
			}
			return archiveRead
		}
		if err != nil {
			return damaged(err)
		}
		path := pathOf(hdr.Name)
		switch hdr.Typeflag {
		case tar.TypeReg:
			if err := check(path, hdr.Size, tr); err != nil {
				v.report(path, "not read whole: %s is damaged", name)
				return damagedAt("inside "+printable(path), err)
			}
		case tar.TypeDir, tar.TypeSymlink:
		default:
			v.report(path, "member of type %q is not a regular file, directory or symbolic link", hdr.Typeflag)
		}
		// what check left unread, so that Next reads only the padding and the next header (see endMarker)
		if _, err := io.Copy(io.Discard, tr); err != nil {
			return damagedAt("inside "+printable(path), err)
		}
		last = path
	}
}

// endTracker counts the decompressed bytes read since mark and whether any was not zero. tar.Reader
// takes an input that ends between members, or after one zero block, for a proper end (io.EOF); endMarker
// tells them apart.
type endTracker struct {
	r       io.Reader
	since   int64
	nonzero bool
}

func (t *endTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.since += int64(n)
	if !t.nonzero {
		for _, c := range p[:n] {
			if c != 0 {
				t.nonzero = true
				break
			}
		}
	}
	return n, err
}

func (t *endTracker) mark() { t.since, t.nonzero = 0, false }

// endMarker reports whether what tar.Reader.Next read since mark, before it returned io.EOF after a member
// read whole, is the member's zero padding (under one block) and the two zero blocks of the end marker:
// Next reads exactly those, with no read-ahead.
func (t *endTracker) endMarker() bool {
	return !t.nonzero && t.since >= 2*512 && t.since < 3*512
}
