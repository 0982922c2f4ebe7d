// Package tarlayout is the one home of pgbb's tar format layout, which pgbb-pack writes (internal/pack) and
// pgbb-pack --verify reads (internal/verify): the layout of pg_basebackup -Ft, compressed.
//
//   - base.tar.<ext> holds the data directory (with backup_label and tablespace_map), its members named by
//     their path in it, except what goes to the next two;
//   - <oid>.tar.<ext> per tablespace holds what is below pg_tblspc/<oid>/, named relative to it (the
//     tablespace directory's contents, as pg_basebackup names them);
//   - pg_wal.tar.<ext> holds the files below pg_wal/ (WAL segments and timeline history files), named
//     relative to it; the directories below pg_wal that the server needs (archive_status, summaries) stay in
//     base.tar as empty directories;
//   - backup_manifest lists every file of the base and tablespace archives by its data-directory path, and
//     none of pg_wal.tar (its WAL ranges cover the WAL, as pg_basebackup's do).
//
// <ext> is the codec's: xz (.tar.xz) or zstd (.tar.zst), one codec for a whole set. The package imports only
// the standard library and the chunk stream's codec numbers.
package tarlayout

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

// Layout is the tar layout of one codec.
type Layout struct {
	codec  byte
	suffix string
}

// suffixes are the archive name endings of each codec, as pg_basebackup names its compressed archives
// (pg_basebackup.c: .tar.gz, .tar.lz4, .tar.zst; xz is pgbb's own).
var suffixes = []struct {
	codec  byte
	suffix string
}{{chunkstream.CodecXZ, ".tar.xz"}, {chunkstream.CodecZstd, ".tar.zst"}}

// New returns the layout of codec (xz or zstd).
func New(codec byte) (Layout, error) {
	for _, s := range suffixes {
		if s.codec == codec {
			return Layout{codec: codec, suffix: s.suffix}, nil
		}
	}
	return Layout{}, fmt.Errorf("no tar layout for codec %d", codec)
}

// All returns the layout of every codec, xz first.
func All() []Layout {
	var all []Layout
	for _, s := range suffixes {
		all = append(all, Layout{codec: s.codec, suffix: s.suffix})
	}
	return all
}

// Detect returns the layout whose base archive exists (as exists says of a name in the backup directory),
// trying xz first; ok is false when there is none: the backup is not in tar format.
func Detect(exists func(name string) bool) (l Layout, ok bool) {
	for _, l := range All() {
		if exists(l.Base()) {
			return l, true
		}
	}
	return Layout{}, false
}

// Codec returns the layout's codec.
func (l Layout) Codec() byte { return l.codec }

// Suffix returns the archives' name ending, ".tar.xz" or ".tar.zst".
func (l Layout) Suffix() string { return l.suffix }

// Base returns the data directory's archive name.
func (l Layout) Base() string { return "base" + l.suffix }

// WAL returns the WAL archive's name.
func (l Layout) WAL() string { return "pg_wal" + l.suffix }

// Tablespace returns the archive name of tablespace oid.
func (l Layout) Tablespace(oid uint32) string { return strconv.FormatUint(uint64(oid), 10) + l.suffix }

// Kind is what an archive holds.
type Kind int

const (
	NotArchive Kind = iota // a name that is no archive of this layout
	Base
	WAL
	Tablespace
)

// Parse says what the archive called name holds, and for a tablespace its oid (canonical decimal, not 0).
func (l Layout) Parse(name string) (kind Kind, oid string) {
	switch name {
	case l.Base():
		return Base, ""
	case l.WAL():
		return WAL, ""
	}
	if s, ok := strings.CutSuffix(name, l.suffix); ok && IsOID(s) {
		return Tablespace, s
	}
	return NotArchive, ""
}

// IsArchiveName reports whether name ends like an archive of any codec (base.tar.zst in a tar.xz set is an
// archive, but of another codec); it returns the ending.
func IsArchiveName(name string) (suffix string, ok bool) {
	for _, s := range suffixes {
		if strings.HasSuffix(name, s.suffix) {
			return s.suffix, true
		}
	}
	return "", false
}

// Place returns the archive and member name of a data-directory path. walDirs are the directories below
// pg_wal that stay in base.tar (pgversion.Major.WALDirPaths). A path below pg_tblspc must be
// pg_tblspc/<oid>/something: the link itself has no member (tablespace_map stands for it).
func (l Layout) Place(path string, walDirs []string) (archive, member string, err error) {
	if rest, ok := strings.CutPrefix(path, "pg_wal/"); ok && !slices.Contains(walDirs, path) {
		return l.WAL(), rest, nil
	}
	if rest, ok := strings.CutPrefix(path, "pg_tblspc/"); ok {
		oid, sub, ok := strings.Cut(rest, "/")
		if !ok || sub == "" || !IsOID(oid) {
			return "", "", fmt.Errorf("%q has no place in a tar backup", path)
		}
		return oid + l.suffix, sub, nil
	}
	return l.Base(), path, nil
}

// PathOf returns the data-directory path of member in archive (the inverse of Place), or "" when archive
// is none of this layout's.
func (l Layout) PathOf(archive, member string) string {
	switch kind, oid := l.Parse(archive); kind {
	case Base:
		return member
	case WAL:
		return "pg_wal/" + member
	case Tablespace:
		return "pg_tblspc/" + oid + "/" + member
	}
	return ""
}

// InManifest reports whether the files of archive are listed in backup_manifest: all but the WAL's.
func (l Layout) InManifest(archive string) bool { return archive != l.WAL() }

// ArchiveOf returns the archive that holds a path backup_manifest lists (never WAL): the tablespace's
// for pg_tblspc/<oid>/…, else base.
func (l Layout) ArchiveOf(path string) string {
	if rest, ok := strings.CutPrefix(path, "pg_tblspc/"); ok {
		if oid, _, ok := strings.Cut(rest, "/"); ok && IsOID(oid) {
			return oid + l.suffix
		}
	}
	return l.Base()
}

// IsOID reports whether s is a tablespace oid as the server writes it: decimal, no leading zero, not 0, at
// most 2^32-1.
func IsOID(s string) bool {
	n, err := strconv.ParseUint(s, 10, 32)
	return err == nil && n != 0 && strconv.FormatUint(n, 10) == s
}
