// Package verify checks a finished backup directory against its backup_manifest, as PostgreSQL's
// pg_verifybackup does, for both of pgbb's formats, and never writes to the directory.
//
// A plain backup is a data directory with backup_manifest at its top; its tablespaces are links
// pg_tblspc/<oid> and its WAL is in pg_wal. A tar backup (internal/tarlayout) holds base.tar.xz (the data
// directory), one <oid>.tar.xz per tablespace (the tablespace directory's contents), pg_wal.tar.xz (WAL
// segments and timeline history files at its top) and backup_manifest, or the same archives as .tar.zst;
// each archive is a concatenation of complete xz streams (zstd frames) whose decompressed concatenation is
// one tar archive, every stream's check (frame's content checksum) verified.
//
// The file checks mirror pg_verifybackup of PostgreSQL 15 (src/bin/pg_verifybackup/pg_verifybackup.c): the
// plain walk follows links (stat, not lstat) and skips its default ignore list; every file on disk must be
// in the manifest with the stated size and checksum, and every file of the manifest must be on disk. Where
// pg_verifybackup runs pg_waldump over the WAL ranges, Verify checks that every segment of each range is
// there, whole, and carries page headers of this segment (internal/wal CheckPages). Two checks catch a
// manifest that belongs to another backup: backup_label's START WAL LOCATION must be where the first WAL
// range starts, and, in a version 2 manifest, global/pg_control's system identifier must be the manifest's.
package verify

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/tarlayout"
	"github.com/pgbb/pgbb/internal/wal"
)

// ManifestName is the manifest's file name at the top of a backup.
const ManifestName = "backup_manifest"

// linePrefix starts every problem line.
const linePrefix = "pgbb-pack: verify: "

// ignoredPaths are pg_verifybackup's default ignore list (pg_verifybackup.c, main): a plain backup's files
// that are not checked, and everything under them. The manifest is not in itself; the WAL is checked
// against the WAL ranges instead; the configuration and signal files are the ones a restore may write
// (pg_basebackup -R, a restore script).
var ignoredPaths = []string{ManifestName, "pg_wal", "postgresql.auto.conf", "recovery.signal", "standby.signal"}

// Paths whose content Verify reads beyond the checksum.
const (
	backupLabelPath = "backup_label"
	controlPath     = "global/pg_control"
)

// Verify checks the backup in dir against dir/backup_manifest and writes one line per problem to w, like
//
//	pgbb-pack: verify: base/5/16384: checksum mismatch
//
// naming the file (a path as the manifest spells it, pg_wal/<segment> for WAL, or an archive's name for a
// tar archive's own trouble), at most one line per name. problems is the number of lines written; 0 means
// the backup is complete and matches its manifest. err is set, with problems counted so far, when the
// manifest cannot be read or parsed, the directory cannot be listed, or writing to w fails: then the
// backup was not verified. Verify reads dir and what its links point to, and writes nothing there.
//
// A tar backup is one whose dir holds base.tar.xz or base.tar.zst (all its archives then have that codec);
// otherwise dir is taken for a plain backup.
func Verify(dir string, w io.Writer) (problems int, err error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return 0, fmt.Errorf("read manifest: %w", err)
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", filepath.Join(dir, ManifestName), err)
	}
	v := newVerifier(dir, m, w)
	var statErr error
	layout, isTar := tarlayout.Detect(func(name string) bool {
		_, err := os.Stat(filepath.Join(dir, name))
		if err != nil && !errors.Is(err, fs.ErrNotExist) && statErr == nil {
			statErr = err
		}
		return err == nil
	})
	switch {
	case isTar:
		v.layout = layout
		err = v.verifyTar()
	case statErr != nil:
		err = statErr
	default:
		err = v.verifyPlain()
	}
	if err == nil {
		err = v.writeErr
	}
	return v.problems, err
}

// verifier holds one run's state.
type verifier struct {
	dir      string
	layout   tarlayout.Layout // a tar backup's archives
	m        *manifest.Manifest
	entries  map[string]*entry
	w        io.Writer
	reported map[string]bool
	problems int
	writeErr error
	wal      walChecker

	controlSysID     uint64 // from global/pg_control, when read
	haveControlSys   bool
	sawBackupLabel   bool
	sawControlFile   bool
	tablespaceMapped map[string]bool // OIDs tablespace_map names (tar format)
}

// entry is a manifest file and whether a file on disk or in an archive was matched to it.
type entry struct {
	manifest.Entry
	found bool
}

func newVerifier(dir string, m *manifest.Manifest, w io.Writer) *verifier {
	v := &verifier{dir: dir, m: m, w: w, entries: map[string]*entry{}, reported: map[string]bool{},
		tablespaceMapped: map[string]bool{}}
	for _, e := range m.Files {
		v.entries[e.Path] = &entry{Entry: e}
	}
	v.wal = walChecker{v: v, found: map[string]bool{}}
	if m.Version >= 2 {
		v.wal.sysID, v.wal.haveSysID = m.SystemID, true
	}
	return v
}

// report writes the problem line for name unless one was written already.
func (v *verifier) report(name, format string, a ...any) {
	if v.reported[name] {
		return
	}
	v.reported[name] = true
	v.problems++
	if v.writeErr != nil {
		return
	}
	if _, err := fmt.Fprintf(v.w, "%s%s: %s\n", linePrefix, printable(name), fmt.Sprintf(format, a...)); err != nil {
		v.writeErr = fmt.Errorf("write report: %w", err)
	}
}

// printable quotes a name that would break the one-line-per-problem output.
func printable(name string) string {
	if !utf8.ValidString(name) || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return strconv.Quote(name)
	}
	return name
}

// checkFile compares the content of the manifest file e, read from r, with the manifest. size is the size
// on disk or in the archive. It reports what it finds and returns only an error reading r.
func (v *verifier) checkFile(e *entry, size int64, r io.Reader) error {
	e.found = true
	switch e.Path {
	case backupLabelPath:
		v.sawBackupLabel = true
	case controlPath:
		v.sawControlFile = true
	}
	if size != e.Size {
		v.report(e.Path, "size %d, the manifest says %d", size, e.Size)
		return nil
	}
	var h hash.Hash
	switch e.Algorithm {
	case "CRC32C":
		h = crc32.New(crc32.MakeTable(crc32.Castagnoli))
	case "SHA224":
		h = sha256.New224()
	case "SHA256":
		h = sha256.New()
	case "SHA384":
		h = sha512.New384()
	case "SHA512":
		h = sha512.New()
	}
	// backup_label and the head of pg_control are kept for the checks that catch another backup's manifest
	var keep prefixWriter
	switch e.Path {
	case backupLabelPath:
		keep.limit = 64 << 10
	case controlPath:
		keep.limit = 8
	}
	dst := io.Writer(&keep)
	if h != nil {
		dst = io.MultiWriter(h, &keep)
	}
	if _, err := io.CopyN(dst, r, size); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	switch e.Path {
	case backupLabelPath:
		v.checkBackupLabel(keep.b)
	case controlPath:
		v.checkControlFile(keep.b)
	}
	if h == nil {
		return nil
	}
	sum := h.Sum(nil)
	if e.Algorithm == "CRC32C" {
		// the manifest holds the pg_crc32c's bytes in little-endian order; Sum gives them big-endian
		sum = binary.LittleEndian.AppendUint32(nil, binary.BigEndian.Uint32(sum))
	}
	if string(sum) != string(e.Checksum) {
		v.report(e.Path, "checksum mismatch")
	}
	return nil
}

// prefixWriter keeps the first limit bytes written to it.
type prefixWriter struct {
	b     []byte
	limit int
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	if n := min(len(b), p.limit-len(p.b)); n > 0 {
		p.b = append(p.b, b[:n]...)
	}
	return len(b), nil
}

// checkBackupLabel compares START WAL LOCATION with the start of the first WAL range: pg_backup_stop's
// label and the manifest's ranges come from the same backup, so a difference is a manifest (or a label) of
// another backup.
func (v *verifier) checkBackupLabel(label []byte) {
	if len(v.m.WALRanges) == 0 {
		return // the WAL check reports a manifest without ranges
	}
	for _, line := range strings.Split(string(label), "\n") {
		rest, ok := strings.CutPrefix(line, "START WAL LOCATION: ")
		if !ok {
			continue
		}
		field, _, _ := strings.Cut(rest, " ")
		lsn, err := wal.ParseLSN(field)
		if err != nil {
			v.report(backupLabelPath, "bad START WAL LOCATION %q", rest)
			return
		}
		if want := wal.LSN(v.m.WALRanges[0].Start); lsn != want {
			v.report(backupLabelPath, "START WAL LOCATION %s, but the manifest's WAL range starts at %s (a manifest of another backup?)",
				lsn, want)
		}
		return
	}
	v.report(backupLabelPath, "no START WAL LOCATION line")
}

// checkControlFile keeps pg_control's system identifier (its first 8 bytes) and, for a version 2
// manifest, compares it with System-Identifier.
func (v *verifier) checkControlFile(head []byte) {
	if len(head) < 8 {
		return // the size check against the manifest reports a short file
	}
	v.controlSysID, v.haveControlSys = binary.LittleEndian.Uint64(head), true
	if v.m.Version >= 2 && v.controlSysID != v.m.SystemID {
		v.report(controlPath, "system identifier %d, the manifest's is %d (a manifest of another cluster?)", v.controlSysID, v.m.SystemID)
	}
}

// finish reports what no file matched and the files every backup has. missing says why a manifest file
// was not found.
func (v *verifier) finish(missing func(path string) string) {
	for _, e := range v.m.Files {
		if en := v.entries[e.Path]; !en.found {
			if why := missing(e.Path); why != "" {
				v.report(e.Path, "%s", why)
			}
		}
	}
	// a data directory without them is no base backup, whatever its manifest says
	if !v.sawBackupLabel {
		v.report(backupLabelPath, "%s", orDefault(missing(backupLabelPath), "missing (every base backup has one)"))
	}
	if !v.sawControlFile {
		v.report(controlPath, "%s", orDefault(missing(controlPath), "missing (every base backup has one)"))
	}
}

// crossCheck compares, after the data files and the WAL were read, pg_control's system identifier with the
// WAL's when no System-Identifier in the manifest (version 1) already bound both.
func (v *verifier) crossCheck() {
	if v.m.Version == 1 && v.haveControlSys && v.wal.haveSysID && v.controlSysID != v.wal.sysID {
		v.report(controlPath, "system identifier %d, the WAL's is %d (WAL of another cluster?)", v.controlSysID, v.wal.sysID)
	}
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// isIgnored reports whether a plain backup's path is on the ignore list or under one of its entries.
func isIgnored(path string) bool {
	for _, p := range ignoredPaths {
		if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}

// verifyPlain walks the data directory, then checks the WAL in pg_wal.
func (v *verifier) verifyPlain() error {
	top, err := os.Stat(v.dir)
	if err != nil {
		return err
	}
	if !top.IsDir() {
		return fmt.Errorf("%s is not a directory", v.dir)
	}
	if err := v.walkPlain("", v.dir, []os.FileInfo{top}); err != nil {
		return err
	}
	v.finish(func(path string) string {
		if isIgnored(path) {
			return ""
		}
		return "missing"
	})
	v.walPlain()
	v.crossCheck()
	return nil
}

// walkPlain checks the directory full (rel in the backup) and what is below it. ancestors are the
// directories from the top down to full, to refuse a link loop. Only a failure to read the top directory
// is returned; everything else is reported.
func (v *verifier) walkPlain(rel, full string, ancestors []os.FileInfo) error {
	des, err := os.ReadDir(full)
	if err != nil {
		if rel == "" {
			return err
		}
		v.report(rel, "cannot read the directory: %v", err)
		return nil
	}
	for _, de := range des {
		path := de.Name()
		if rel != "" {
			path = rel + "/" + de.Name()
		}
		if isIgnored(path) {
			continue
		}
		fullPath := filepath.Join(full, de.Name())
		// stat follows links, pg_tblspc/<oid> first among them, as pg_verifybackup does
		fi, err := os.Stat(fullPath)
		switch {
		case err != nil:
			v.report(path, "cannot stat: %v", err)
		case fi.IsDir():
			if loops(fi, ancestors) {
				v.report(path, "a link back to a directory above it")
				continue
			}
			_ = v.walkPlain(path, fullPath, append(ancestors[:len(ancestors):len(ancestors)], fi)) // reports, never fails below the top
		case fi.Mode().IsRegular():
			v.plainFile(path, fullPath, fi.Size())
		default:
			v.report(path, "not a regular file or directory")
		}
	}
	return nil
}

func loops(fi os.FileInfo, ancestors []os.FileInfo) bool {
	for _, a := range ancestors {
		if os.SameFile(fi, a) {
			return true
		}
	}
	return false
}

func (v *verifier) plainFile(path, fullPath string, size int64) {
	e := v.entries[path]
	if e == nil {
		v.report(path, "not in the manifest")
		return
	}
	f, err := os.Open(fullPath)
	if err != nil {
		e.found = true
		v.report(path, "cannot read: %v", err)
		return
	}
	defer f.Close()
	if err := v.checkFile(e, size, f); err != nil {
		v.report(path, "cannot read: %v", err)
	}
}

// walPlain checks dir/pg_wal.
func (v *verifier) walPlain() {
	walDir := filepath.Join(v.dir, "pg_wal")
	des, err := os.ReadDir(walDir)
	if err != nil {
		v.report("pg_wal", "cannot read the directory: %v", err)
	}
	for _, de := range des {
		fullPath := filepath.Join(walDir, de.Name())
		fi, err := os.Stat(fullPath)
		if err != nil {
			v.report("pg_wal/"+de.Name(), "cannot stat: %v", err)
			continue
		}
		if fi.IsDir() {
			continue // archive_status
		}
		if !fi.Mode().IsRegular() {
			v.report("pg_wal/"+de.Name(), "not a regular file or directory")
			continue
		}
		v.walPlainFile(de.Name(), fullPath, fi.Size())
	}
	v.wal.finish("missing")
}

func (v *verifier) walPlainFile(name, fullPath string, size int64) {
	f, err := os.Open(fullPath)
	if err != nil {
		v.report("pg_wal/"+name, "cannot read: %v", err)
		return
	}
	defer f.Close()
	if err := v.wal.file(name, size, f); err != nil {
		v.report("pg_wal/"+name, "cannot read: %v", err)
	}
}

// archiveState is what became of one expected archive.
type archiveState int

const (
	archiveAbsent archiveState = iota
	archiveRead
	archiveDamaged
	archiveUnopened
)

// verifyTar reads the base archive, the tablespace archives and the WAL archive, in that order.
func (v *verifier) verifyTar() error {
	des, err := os.ReadDir(v.dir)
	if err != nil {
		return err
	}
	l := v.layout
	base, walArchive := l.Base(), l.WAL()
	pathOf := func(archive string) func(string) string {
		return func(member string) string { return l.PathOf(archive, member) }
	}
	state := map[string]archiveState{}
	state[base] = v.readArchive(base, pathOf(base), v.dataMember)
	// a tablespace has an archive when the manifest has files in it or tablespace_map names it
	expected := map[string]string{} // archive name -> oid
	for oid := range v.tablespaceMapped {
		n, _ := strconv.ParseUint(oid, 10, 32)
		expected[l.Tablespace(uint32(n))] = oid
	}
	for _, e := range v.m.Files {
		if a := l.ArchiveOf(e.Path); a != base {
			_, expected[a] = l.Parse(a)
		}
	}
	var tablespaces []string
	for _, de := range des {
		name := de.Name()
		kind, oid := l.Parse(name)
		switch {
		case name == ManifestName || kind == tarlayout.Base || kind == tarlayout.WAL:
		case expected[name] != "":
			tablespaces = append(tablespaces, name)
		case kind == tarlayout.Tablespace:
			v.report(name, "unexpected archive: neither the manifest nor tablespace_map has tablespace %s", oid)
		default:
			if suffix, ok := tarlayout.IsArchiveName(name); ok && suffix != l.Suffix() {
				v.report(name, "unexpected archive: a %s in a %s backup (a tar set is all one codec)", suffix, l.Suffix())
			} else if ok {
				v.report(name, "unexpected archive in a tar-format backup")
			} else {
				v.report(name, "unexpected file in a tar-format backup")
			}
		}
	}
	sort.Slice(tablespaces, func(i, j int) bool {
		a, _ := strconv.ParseUint(expected[tablespaces[i]], 10, 32)
		b, _ := strconv.ParseUint(expected[tablespaces[j]], 10, 32)
		return a < b
	})
	for _, name := range tablespaces {
		state[name] = v.readArchive(name, pathOf(name), v.dataMember)
	}
	for name, oid := range expected {
		if _, ok := state[name]; !ok {
			v.report(name, "missing (tablespace %s)", oid)
		}
	}
	why := func(archive string) string {
		switch state[archive] {
		case archiveDamaged:
			return "not reached: " + archive + " is damaged"
		case archiveUnopened:
			return "not reached: " + archive + " could not be opened"
		case archiveAbsent:
			return "missing: there is no " + archive
		}
		return "missing from " + archive
	}
	v.finish(func(path string) string {
		if isIgnored(path) {
			return ""
		}
		return why(l.ArchiveOf(path))
	})

	if _, err := os.Stat(filepath.Join(v.dir, walArchive)); err != nil {
		v.report(walArchive, "missing")
	} else {
		state[walArchive] = v.readArchive(walArchive, pathOf(walArchive), v.walMember)
	}
	v.wal.finish(why(walArchive))
	v.crossCheck()
	return nil
}

// dataMember checks a member of base.tar or of a tablespace's archive; path is the manifest path the
// member's name maps to.
func (v *verifier) dataMember(path string, size int64, r io.Reader) error {
	if isIgnored(path) {
		// as in a plain backup: astreamer_verify.c skips the members on the ignore list (-R's files)
		return nil
	}
	e := v.entries[path]
	if e == nil {
		v.report(path, "not in the manifest")
		return nil
	}
	if e.found {
		v.report(path, "in the archives twice")
		return nil
	}
	if path == "tablespace_map" {
		keep := prefixWriter{limit: 1 << 20}
		r = io.TeeReader(r, &keep)
		defer func() { v.readTablespaceMap(keep.b) }()
	}
	return v.checkFile(e, size, r)
}

// readTablespaceMap notes the OIDs of tablespace_map's lines ("<oid> <path>").
func (v *verifier) readTablespaceMap(b []byte) {
	for _, line := range strings.Split(string(b), "\n") {
		if oid, _, ok := strings.Cut(line, " "); ok && tarlayout.IsOID(oid) {
			v.tablespaceMapped[oid] = true
		}
	}
}

// walMember checks a member of pg_wal.tar; path is "pg_wal/" and the member's name.
func (v *verifier) walMember(path string, size int64, r io.Reader) error {
	return v.wal.file(strings.TrimPrefix(path, "pg_wal/"), size, r)
}
