package pack

import (
	"archive/tar"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"syscall"
	"time"

	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/tarlayout"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/recoveryconf"
)

// tarTarget writes the layout of pg_basebackup -Ft (internal/tarlayout), compressed with xz or zstd:
// base.tar.xz, <oid>.tar.xz per tablespace (its contents relative to the tablespace directory),
// pg_wal.tar.xz, or the same names ending in .tar.zst. Every archive is a concatenation of xz streams (or
// zstd frames): the fetchers' chunk data copied as they are, and small stored streams (frames) pack makes
// for tar headers, padding, the end of each archive and the files it holds itself, so pack never runs an
// encoder and never recompresses data. Every chunk must have the layout's codec.
//
// A member is written once its file is whole and its size final; until then its chunks wait in a spool file
// inside DEST (.pgbb-spool), whose space is given back as soon as a member is written and which is removed
// at the end.
type tarTarget struct {
	layout  tarlayout.Layout // the archives' names and codec
	walDirs []string         // the empty directories below pg_wal of the source's major, kept in base.tar
	disk
	dest     string
	log      *cliapp.Logger
	dirMode  os.FileMode
	fileMode os.FileMode
	archives map[string]*tarArchive
	spool    *os.File
	spoolEnd int64
	pending  map[string][]spooledChunk
	entries  []manifest.File
	dirsDone map[string]bool
	padCache map[int][]byte
	hdr      tar.Header
	now      time.Time
	zbuf     []byte
	// recoveryConf, for -R, is appended to postgresql.auto.conf in base.tar, and standby.signal is added
	// (docs/toolbox.md, section 2); autoDone says the server's postgresql.auto.conf was written.
	recoveryConf []byte
	autoDone     bool
}

// tarLayout returns the tar layout of a --compress name: xz (the default) or zstd.
func tarLayout(name string) (tarlayout.Layout, error) {
	if name == "" {
		name = "xz"
	}
	if codec, err := compress.ParseCodec(name); err == nil {
		if l, err := tarlayout.New(codec); err == nil {
			return l, nil
		}
	}
	return tarlayout.Layout{}, cliapp.Usage("use --compress xz (the default) or --compress zstd", "-F tar takes no chunks of compression %q", name)
}

type tarArchive struct {
	name string
	f    *os.File
	w    *bufio.Writer
}

type spooledChunk struct {
	off    uint64
	rawLen uint32
	rawCRC uint32
	pos    int64
	n      int64
}

const spoolName = ".pgbb-spool"

func (t *tarTarget) begin(s *chunkstream.BackupStart, major pgversion.Major, dirMode, fileMode os.FileMode) error {
	t.walDirs = major.WALDirPaths()
	t.dirMode, t.fileMode = dirMode, fileMode
	t.archives, t.pending, t.dirsDone, t.padCache = map[string]*tarArchive{}, map[string][]spooledChunk{}, map[string]bool{}, map[int][]byte{}
	t.now = time.Now().Truncate(time.Second)
	t.hdr = tar.Header{ModTime: t.now, Uid: os.Getuid(), Gid: os.Getgid()}
	if u, err := user.Current(); err == nil {
		t.hdr.Uname = u.Username
	}
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		t.hdr.Gname = g.Name
	}
	if err := os.Chmod(t.dest, dirMode); err != nil {
		return err
	}
	names := []string{t.layout.Base(), t.layout.WAL()}
	for _, ts := range s.Tablespaces {
		names = append(names, t.layout.Tablespace(ts.OID))
	}
	for _, n := range names {
		f, err := os.OpenFile(filepath.Join(t.dest, n+".tmp"), os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, fileMode)
		if err != nil {
			return err
		}
		t.archives[n] = &tarArchive{name: n, f: f, w: bufio.NewWriterSize(f, 1<<20)}
	}
	f, err := os.OpenFile(filepath.Join(t.dest, spoolName), os.O_RDWR|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	t.spool = f
	return nil
}

func (t *tarTarget) clean() {
	for _, a := range t.archives {
		a.f.Close()
		os.Remove(a.f.Name())
	}
	if t.spool != nil {
		t.spool.Close()
		os.Remove(t.spool.Name())
	}
}

// member maps a data-directory path to its archive and member name.
func (t *tarTarget) member(path string) (*tarArchive, string, error) {
	name, member, err := t.layout.Place(path, t.walDirs)
	if err != nil {
		return nil, "", err
	}
	a := t.archives[name]
	if a == nil {
		return nil, "", fmt.Errorf("%q belongs to no archive of this backup", path)
	}
	return a, member, nil
}

// small writes bytes pack made itself (headers, padding, archive ends, pg_control, backup_label,
// tablespace_map) as one stored xz stream or zstd frame: no encoder runs in pack.
func (t *tarTarget) small(a *tarArchive, raw []byte) error {
	var err error
	if t.zbuf, err = compress.Stored(t.layout.Codec(), t.zbuf[:0], raw); err != nil {
		return err
	}
	_, err = a.w.Write(t.zbuf)
	return err
}

func (t *tarTarget) header(a *tarArchive, h *tar.Header) error {
	if !isASCII(h.Name) {
		// File names are bytes. archive/tar would put a name that is not ASCII in a pax "path" record,
		// which POSIX defines as UTF-8 (without hdrcharset=BINARY) and which GNU tar converts to the locale's
		// charset on extraction; a GNU header holds the raw bytes (in the name field, or a ././@LongLink
		// member for a long name), as pg_basebackup's tar members do (src/port/tar.c copies the name as is),
		// and every tar extracts it byte for byte.
		h.Format = tar.FormatGNU
	}
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	if err := tw.WriteHeader(h); err != nil {
		return err
	}
	// tw is dropped without Close: only the header blocks are wanted
	return t.small(a, b.Bytes())
}

func (t *tarTarget) dir(path string) error {
	if t.dirsDone[path] {
		return nil
	}
	t.dirsDone[path] = true
	a, member, err := t.member(path)
	if err != nil {
		return err
	}
	h := t.hdr
	h.Typeflag, h.Name, h.Mode = tar.TypeDir, member+"/", int64(t.dirMode)
	return t.header(a, &h)
}

func (t *tarTarget) chunk(c *chunkstream.Chunk) error {
	if want := t.layout.Codec(); c.Codec != want {
		got := compress.CodecName(c.Codec)
		hint := fmt.Sprintf("run pgbb-fetch and pgbb-xlog with --compress %s for this tar set, or give pgbb-pack --compress %s", compress.CodecName(want), got)
		if c.Codec == chunkstream.CodecNone {
			hint = fmt.Sprintf("run pgbb-fetch and pgbb-xlog with --compress %s for -F tar", compress.CodecName(want))
		}
		what := "a chunk compressed with " + got
		if c.Codec == chunkstream.CodecNone {
			what = "an uncompressed chunk"
		}
		return cliapp.WithHint(fmt.Errorf("%s: %s in a %s backup (a tar set is all one codec)", c.Path, what, t.layout.Suffix()), hint)
	}
	n, err := t.spool.WriteAt(c.Data, t.spoolEnd)
	if err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	t.pending[c.Path] = append(t.pending[c.Path], spooledChunk{off: c.Offset, rawLen: c.RawLen, rawCRC: c.RawCRC, pos: t.spoolEnd, n: int64(n)})
	t.spoolEnd += int64(n)
	return nil
}

func (t *tarTarget) fileDone(path string, sum fileSum, present bool) error {
	size := sum.size
	chunks := t.pending[path]
	delete(t.pending, path)
	defer t.release(chunks)
	if !present {
		return nil
	}
	sort.Slice(chunks, func(i, j int) bool { return chunks[i].off < chunks[j].off })
	if t.recoveryConf != nil && path == recoveryconf.AutoConf {
		return t.autoConf(chunks, sum)
	}
	a, member, err := t.member(path)
	if err != nil {
		return err
	}
	h := t.hdr
	h.Typeflag, h.Name, h.Mode, h.Size = tar.TypeReg, member, int64(t.fileMode), size
	if err := t.header(a, &h); err != nil {
		return err
	}
	// the ledger proved that the chunks before size tile the file
	for _, c := range chunks {
		if c.off >= uint64(size) {
			break // a range after one that came back short: the file ends before it
		}
		if _, err := io.Copy(a.w, io.NewSectionReader(t.spool, c.pos, c.n)); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
	}
	if err := t.pad(a, size); err != nil {
		return err
	}
	if t.layout.InManifest(a.name) {
		t.entries = append(t.entries, manifest.File{Path: path, Size: size, Modified: t.now, CRC32C: sum.crc})
	}
	return nil
}

// pad ends a member's data on a 512-byte boundary.
func (t *tarTarget) pad(a *tarArchive, size int64) error {
	n := int((512 - size%512) % 512)
	if n == 0 {
		return nil
	}
	z, ok := t.padCache[n]
	if !ok {
		var err error
		if z, err = compress.Stored(t.layout.Codec(), nil, make([]byte, n)); err != nil {
			return err
		}
		t.padCache[n] = z
	}
	_, err := a.w.Write(z)
	return err
}

// release gives the spool space of written chunks back to the file system.
func (t *tarTarget) release(chunks []spooledChunk) {
	for _, c := range chunks {
		// FALLOC_FL_PUNCH_HOLE|FALLOC_FL_KEEP_SIZE; where unsupported the spool only grows until removed
		syscall.Fallocate(int(t.spool.Fd()), 0x02|0x01, c.pos, c.n)
	}
}

// autoConf writes the server's postgresql.auto.conf with -R's lines appended. The manifest lists the
// server's file, as in plain format: pg_verifybackup skips this file.
func (t *tarTarget) autoConf(chunks []spooledChunk, sum fileSum) error {
	var raw []byte
	for _, c := range chunks {
		if c.off >= uint64(sum.size) {
			break
		}
		data := make([]byte, c.n)
		if _, err := t.spool.ReadAt(data, c.pos); err != nil {
			return fmt.Errorf("spool: %w", err)
		}
		piece, err := rawData(&chunkstream.Chunk{Path: recoveryconf.AutoConf, Offset: c.off, Codec: t.layout.Codec(), RawLen: c.rawLen, RawCRC: c.rawCRC, Data: data})
		if err != nil {
			return err
		}
		raw = append(raw, piece...)
	}
	raw = raw[:min(int64(len(raw)), sum.size)]
	if len(raw) > 0 && raw[len(raw)-1] != '\n' {
		raw = append(raw, '\n')
	}
	t.autoDone = true
	return t.wholeAs(recoveryconf.AutoConf, append(raw, t.recoveryConf...), &manifest.File{Path: recoveryconf.AutoConf, Size: sum.size, Modified: t.now, CRC32C: sum.crc})
}

// whole writes a member pack holds in memory, listed in the manifest.
func (t *tarTarget) whole(path string, raw []byte) error {
	return t.wholeAs(path, raw, &manifest.File{Path: path, Size: int64(len(raw)), Modified: t.now, CRC32C: crc32c.Checksum(raw)})
}

// wholeAs writes a member pack holds in memory, listed in the manifest as entry (nil: not listed).
func (t *tarTarget) wholeAs(path string, raw []byte, entry *manifest.File) error {
	a, member, err := t.member(path)
	if err != nil {
		return err
	}
	h := t.hdr
	h.Typeflag, h.Name, h.Mode, h.Size = tar.TypeReg, member, int64(t.fileMode), int64(len(raw))
	if err := t.header(a, &h); err != nil {
		return err
	}
	if err := t.small(a, raw); err != nil {
		return err
	}
	if err := t.pad(a, int64(len(raw))); err != nil {
		return err
	}
	if entry != nil {
		t.entries = append(t.entries, *entry)
	}
	return nil
}

func (t *tarTarget) writeControl(control []byte) error {
	for p := range t.pending {
		return fmt.Errorf("%s: chunks of a file that never completed", p)
	}
	for _, d := range append([]string{"pg_wal"}, t.walDirs...) {
		if err := t.dir(d); err != nil {
			return err
		}
	}
	return t.whole(controlfile.Path, control)
}

func (t *tarTarget) writeLabel(end *chunkstream.BackupEnd) error {
	if err := t.whole("backup_label", end.BackupLabel); err != nil {
		return err
	}
	if len(end.TablespaceMap) > 0 {
		if err := t.whole("tablespace_map", end.TablespaceMap); err != nil {
			return err
		}
	}
	if t.recoveryConf != nil {
		// as in plain format, neither file the source did not have is in the manifest
		if !t.autoDone {
			if err := t.wholeAs(recoveryconf.AutoConf, t.recoveryConf, nil); err != nil {
				return err
			}
		}
		if err := t.wholeAs(recoveryconf.StandbySignal, nil, nil); err != nil {
			return err
		}
		t.log.Info("-R: standby.signal and primary_conninfo in postgresql.auto.conf written into %s", t.layout.Base())
	}
	return nil
}

func (t *tarTarget) finish() ([]manifest.File, error) {
	for _, a := range t.archives {
		// the end of an archive: two zero blocks
		if err := t.small(a, make([]byte, 1024)); err != nil {
			return nil, err
		}
		if err := a.w.Flush(); err != nil {
			return nil, err
		}
		if err := t.syncFile(a.f); err != nil {
			return nil, err
		}
		if err := a.f.Close(); err != nil {
			return nil, err
		}
	}
	for _, a := range t.archives {
		if err := os.Rename(a.f.Name(), filepath.Join(t.dest, a.name)); err != nil {
			return nil, err
		}
	}
	t.spool.Close()
	os.Remove(t.spool.Name())
	t.spool = nil
	t.archives = nil
	return t.entries, t.syncDir(t.dest)
}

// isASCII reports whether s has no byte of 0x80 or above.
func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

func (t *tarTarget) written(w *chunkstream.Written) error {
	return fmt.Errorf("%s: a written range in a tar backup, which offers no direct writes", w.Path)
}
