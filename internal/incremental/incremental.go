// Package incremental holds the pure rules of PostgreSQL-format incremental backups as pgbb takes them
// over SQL (docs/incremental.md): the INCREMENTAL file's layout, the table of modified blocks merged from
// the WAL summaries, and the choice per file between a full copy and an INCREMENTAL file. It talks to no
// server and touches no file but the prior manifest (ReadPrior).
package incremental

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Magic starts every INCREMENTAL file (INCREMENTAL_MAGIC, src/include/backup/basebackup_incremental.h).
const Magic uint32 = 0xd3ae1f0d

// BlockSize is the page size pgbb supports (BLCKSZ).
const BlockSize = 8192

// Prefix is what an incremental file's name starts with, in the directory of the file it stands for.
const Prefix = "INCREMENTAL."

// HeaderSize returns the bytes of the header of an INCREMENTAL file listing n blocks: magic, block count
// and truncation length, the n block numbers, all 32-bit, then, when n > 0, zeros up to a multiple of the
// block size, so that the blocks are aligned (GetIncrementalHeaderSize, basebackup_incremental.c).
func HeaderSize(n int) int {
	h := 12 + 4*n
	if n > 0 && h%BlockSize != 0 {
		h += BlockSize - h%BlockSize
	}
	return h
}

// FileSize returns the size of an INCREMENTAL file listing n blocks (GetIncrementalFileSize).
func FileSize(n int) int64 { return int64(HeaderSize(n)) + int64(n)*BlockSize }

// Header is an INCREMENTAL file's header.
type Header struct {
	Blocks      []uint32 // block numbers relative to the segment, ascending; the blocks follow in this order
	TruncBlocks uint32   // the segment's length in blocks to reconstruct (truncation_block_length)
}

// Encode returns the header's bytes, padding included, in the machine's byte order as the server writes
// them (sendFile, basebackup.c: magic, count, truncation length, block numbers).
func (h Header) Encode() []byte {
	b := make([]byte, HeaderSize(len(h.Blocks)))
	binary.NativeEndian.PutUint32(b[0:], Magic)
	binary.NativeEndian.PutUint32(b[4:], uint32(len(h.Blocks)))
	binary.NativeEndian.PutUint32(b[8:], h.TruncBlocks)
	for i, blk := range h.Blocks {
		binary.NativeEndian.PutUint32(b[12+4*i:], blk)
	}
	return b
}

// ParseHeader reads the header at the start of an INCREMENTAL file with the checks pg_combinebackup makes
// (make_incremental_rfile, reconstruct.c), given the segment size in blocks, and pgbb's own: the block
// numbers ascend, each within the segment, and the padding is zeros. It returns the header and its size.
func ParseHeader(b []byte, segBlocks uint32) (Header, int, error) {
	if len(b) < 12 {
		return Header{}, 0, errors.New("incremental file shorter than its header")
	}
	if m := binary.NativeEndian.Uint32(b); m != Magic {
		return Header{}, 0, fmt.Errorf("bad incremental magic number 0x%08x", m)
	}
	n := binary.NativeEndian.Uint32(b[4:])
	h := Header{TruncBlocks: binary.NativeEndian.Uint32(b[8:])}
	if n > segBlocks {
		return Header{}, 0, fmt.Errorf("incremental file lists %d blocks, a segment has %d", n, segBlocks)
	}
	if h.TruncBlocks > segBlocks {
		return Header{}, 0, fmt.Errorf("incremental file's truncation length %d exceeds the segment's %d blocks", h.TruncBlocks, segBlocks)
	}
	size := HeaderSize(int(n))
	if len(b) < size {
		return Header{}, 0, errors.New("incremental file shorter than its header")
	}
	h.Blocks = make([]uint32, n)
	for i := range h.Blocks {
		h.Blocks[i] = binary.NativeEndian.Uint32(b[12+4*i:])
		if h.Blocks[i] >= segBlocks || (i > 0 && h.Blocks[i] <= h.Blocks[i-1]) {
			return Header{}, 0, fmt.Errorf("incremental file's block numbers are not ascending within the segment at entry %d", i)
		}
	}
	for _, c := range b[12+4*int(n) : size] {
		if c != 0 {
			return Header{}, 0, errors.New("incremental file's header padding is not zeros")
		}
	}
	return h, size, nil
}

// Fork numbers (common/relpath.h).
const (
	MainFork = 0
	FSMFork  = 1
	VMFork   = 2
	InitFork = 3
)

// RelFile is a relation segment file as named in a database directory: <relfilenode>[_<fork>][.<segno>].
type RelFile struct {
	Number uint32 // relfilenode
	Fork   int
	Segno  uint32
}

// ParseRelFile parses a file name in a database or global directory as a non-temporary relation segment
// (parse_filename_for_nontemp_relation, src/backend/storage/file/reinit.c). ok is false for every other
// name: temporary relations (t<backend>_<n>), INCREMENTAL files, anything else.
func ParseRelFile(name string) (RelFile, bool) {
	var r RelFile
	base, seg, hasSeg := strings.Cut(name, ".")
	if hasSeg {
		n, ok := canonical(seg)
		if !ok || n == 0 {
			return RelFile{}, false
		}
		r.Segno = n
	}
	num, fork, hasFork := strings.Cut(base, "_")
	n, ok := canonical(num)
	if !ok || n == 0 {
		return RelFile{}, false
	}
	r.Number = n
	if hasFork {
		switch fork {
		case "fsm":
			r.Fork = FSMFork
		case "vm":
			r.Fork = VMFork
		case "init":
			r.Fork = InitFork
		default:
			return RelFile{}, false
		}
	}
	return r, true
}

// canonical parses a decimal without sign or leading zero that fits in 32 bits.
func canonical(s string) (uint32, bool) {
	if s == "" || len(s) > 10 || (len(s) > 1 && s[0] == '0') || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	return uint32(n), err == nil
}

// Key names a relation fork in the WAL summaries (a BlockRefTable entry, blkreftable.c).
type Key struct {
	Tablespace, Database, Number uint32
	Fork                         int
}

// entry is what the merged summaries say of one relation fork.
type entry struct {
	limit    uint32 // blocks at and beyond it were removed (truncated) since the prior; valid when hasLimit
	hasLimit bool
	blocks   map[uint32]struct{}
}

// Table is the merge of the WAL summaries from the prior backup's start to this one's: per relation fork,
// the modified blocks and the lowest limit block. Feed it the summaries in ascending LSN order, each
// summary's limit before its blocks, as pg_wal_summary_contents returns them.
type Table struct{ m map[Key]*entry }

// NewTable returns an empty table.
func NewTable() *Table { return &Table{m: map[Key]*entry{}} }

func (t *Table) get(k Key) *entry {
	e := t.m[k]
	if e == nil {
		e = &entry{blocks: map[uint32]struct{}{}}
		t.m[k] = e
	}
	return e
}

// SetLimit records a truncation at block limit: the lowest limit is kept, and blocks marked so far at or
// beyond it are forgotten (they were removed), while blocks marked later stay (BlockRefTableSetLimitBlock).
func (t *Table) SetLimit(k Key, limit uint32) {
	e := t.get(k)
	if e.hasLimit && e.limit <= limit {
		return
	}
	e.limit, e.hasLimit = limit, true
	for b := range e.blocks {
		if b >= limit {
			delete(e.blocks, b)
		}
	}
}

// Mark records a modified block (BlockRefTableMarkBlockModified).
func (t *Table) Mark(k Key, block uint32) { t.get(k).blocks[block] = struct{}{} }

// Method is how one file goes into an incremental backup.
type Method struct {
	Full   bool   // copy the whole file
	Header Header // else: the INCREMENTAL file's header (blocks relative to the segment)
}

// File is what Decide needs to know of one file of the listing.
type File struct {
	Tablespace, Database uint32 // as the summaries name them: 1663 (pg_default) and the database's oid for base/<db>, 1664 (pg_global) and 0 for global, the tablespace's oid for pg_tblspc/<oid>/…/<db>
	Name                 string // the file name in its database directory
	Size                 int64
	InPrior              bool // the prior manifest lists this path or its INCREMENTAL path
}

// Decide chooses full or incremental for one file, as the server's GetFileBackupMethod
// (basebackup_incremental.c), except that pgbb copies every visibility-map fork in full: clearing a VM
// bit is not registered in the WAL summaries, so an incremental VM can restore stale all-visible bits.
// segBlocks is the segment size in blocks (RELSEG_SIZE).
func (t *Table) Decide(f File, segBlocks uint32) Method {
	full := Method{Full: true}
	r, ok := ParseRelFile(f.Name)
	if !ok || f.Size%BlockSize != 0 || f.Size/BlockSize > int64(segBlocks) {
		return full
	}
	if r.Fork == FSMFork || r.Fork == VMFork || !f.InPrior {
		return full
	}
	// a database created or dropped since the prior: its directory's entry with relfilenode 0
	if _, changed := t.m[Key{f.Tablespace, f.Database, 0, MainFork}]; changed {
		return full
	}
	size := uint32(f.Size / BlockSize)
	e := t.m[Key{f.Tablespace, f.Database, r.Number, r.Fork}]
	if e == nil {
		if f.Size == 0 {
			return full
		}
		return Method{Header: Header{TruncBlocks: size}}
	}
	first := r.Segno * segBlocks
	if e.hasLimit && e.limit <= first {
		return full
	}
	var blocks []uint32
	for b := range e.blocks {
		if b >= first && b < first+size {
			blocks = append(blocks, b-first)
		}
	}
	if float64(len(blocks))*BlockSize > 0.9*float64(f.Size) {
		return full
	}
	slices.Sort(blocks)
	trunc := size
	if e.hasLimit && e.limit-first > trunc {
		trunc = e.limit - first
	}
	trunc = min(trunc, segBlocks)
	return Method{Header: Header{Blocks: blocks, TruncBlocks: trunc}}
}

// Summaries name files outside tablespaces with these tablespace oids (DEFAULTTABLESPACE_OID and
// GLOBALTABLESPACE_OID, pg_tablespace.dat).
const (
	DefaultTablespace = 1663
	GlobalTablespace  = 1664
)

// Locate names a data directory path as the summaries do: base/<db>/<name> is (1663, db), global/<name>
// is (1664, 0), pg_tblspc/<oid>/<version dir>/<db>/<name> is (oid, db). ok is false for every other path:
// such files are not candidates for an incremental copy (sendDir, basebackup.c).
func Locate(path string) (spc, db uint32, name string, ok bool) {
	f := strings.Split(path, "/")
	switch {
	case len(f) == 3 && f[0] == "base":
		d, ok := canonical(f[1])
		return DefaultTablespace, d, f[2], ok
	case len(f) == 2 && f[0] == "global":
		return GlobalTablespace, 0, f[1], true
	case len(f) == 5 && f[0] == "pg_tblspc" && strings.HasPrefix(f[2], "PG_"):
		s, ok1 := canonical(f[1])
		d, ok2 := canonical(f[3])
		return s, d, f[4], ok1 && ok2
	}
	return 0, 0, "", false
}

// KindNames are the file kinds of the counters (docs/incremental.md, section 6), by FileKind.
var KindNames = [4]string{"relation", "fsm", "vm", "other"}

// FileKind is the counter index (KindNames) of a data-directory path.
func FileKind(path string) int {
	_, _, name, ok := Locate(path)
	if r, rel := ParseRelFile(name); ok && rel {
		switch r.Fork {
		case FSMFork:
			return 1
		case VMFork:
			return 2
		}
		return 0
	}
	return 3
}
