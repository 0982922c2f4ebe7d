// Package worklist reads and writes the pgbb work list, the text format specified in docs/worklist.md.
//
// It imports only the standard library and pgbb's pure packages (datadir, backupid).
package worklist

import (
	"bufio"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/incremental"
)

// Kind says what an item copies.
type Kind byte

const (
	File Kind = 'f' // a byte range of one file that ends the file's list of ranges (often the whole file)
	Part Kind = 'p' // a byte range of one file that more ranges of the same file follow
	Dir  Kind = 'd' // a directory, created empty
	Link Kind = 'l' // a tablespace link, pg_tblspc/<oid>
	// Version 2: the items of an incremental file (docs/worklist.md, "Version 2")
	Header  Kind = 'h' // an INCREMENTAL file's header, made from the line
	MoreRun Kind = 'r' // a run of blocks that more runs of the same file follow
	LastRun Kind = 't' // the run of blocks that ends the file
)

// Run is a run of blocks of a relation segment, numbered relative to the segment.
type Run struct{ First, Count uint32 }

// MaxRunList bounds an h line's run list (a bitmap of 131072 blocks is 32 KiB and one byte); pgbb-list
// sends a segment with a longer one in full.
const MaxRunList = 40 << 10

// Item is one line of the work list.
type Item struct {
	Seq    uint64
	Kind   Kind
	Offset int64
	Length int64
	Path   string // raw bytes, unescaped; for h, r and t the relation segment on the server
	// h only: the truncation length in blocks, and the blocks the file lists
	Trunc uint32
	Runs  []Run
	// r and t: where the run goes in the incremental file
	Dst int64
}

// Incremental reports whether the item belongs to an incremental file.
func (it Item) Incremental() bool {
	return it.Kind == Header || it.Kind == MoreRun || it.Kind == LastRun
}

// StoredPath is the path the item's bytes have in the backup: the incremental path
// (<dir>/INCREMENTAL.<name>) for h, r and t, else Path.
func (it Item) StoredPath() string {
	if !it.Incremental() {
		return it.Path
	}
	i := strings.LastIndexByte(it.Path, '/')
	return it.Path[:i+1] + incremental.Prefix + it.Path[i+1:]
}

// Blocks returns the block numbers an h item lists, ascending.
func (it Item) Blocks() []uint32 {
	var out []uint32
	for _, r := range it.Runs {
		for b := r.First; b < r.First+r.Count; b++ {
			out = append(out, b)
		}
	}
	return out
}

// StoredRange is the item's byte range in the stored file: [0, header size) for h, the destination for r
// and t, the source range for the other kinds.
func (it Item) StoredRange() (off, length int64) {
	switch it.Kind {
	case Header:
		n := 0
		for _, r := range it.Runs {
			n += int(r.Count)
		}
		return 0, int64(incremental.HeaderSize(n))
	case MoreRun, LastRun:
		return it.Dst, it.Length
	}
	return it.Offset, it.Length
}

// Final reports whether the item's range ends its stored file.
func (it Item) Final() bool {
	return it.Kind == File || it.Kind == LastRun || (it.Kind == Header && len(it.Runs) == 0)
}

// FormatRuns writes a run list as an h line carries it: `-` for none, else the shorter of the runs as
// `first+count` separated by `,` and, once the runs take over 256 bytes, a bitmap: `x` and lowercase hex,
// block 8j+i being bit i of byte j.
// The bitmap bounds a segment of 131072 blocks to 32 KiB of line however scattered its blocks are.
func FormatRuns(runs []Run) string {
	if len(runs) == 0 {
		return "-"
	}
	var b strings.Builder
	for i, r := range runs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d+%d", r.First, r.Count)
	}
	last := runs[len(runs)-1]
	end := uint64(last.First) + uint64(last.Count) // blocks the bitmap covers
	if b.Len() <= 256 || 1+2*(end+7)/8 >= uint64(b.Len()) {
		return b.String()
	}
	bits := make([]byte, (end+7)/8)
	for _, r := range runs {
		for blk := uint64(r.First); blk < uint64(r.First)+uint64(r.Count); blk++ {
			bits[blk/8] |= 1 << (blk % 8)
		}
	}
	return "x" + hex.EncodeToString(bits)
}

// parseRuns reads a run list: ascending, without overlap or adjacency to the previous run's end being
// required, each count at least 1, within 32 bits.
func parseRuns(s string) ([]Run, error) {
	if s == "-" {
		return nil, nil
	}
	if len(s) > MaxRunList {
		return nil, fmt.Errorf("run list longer than %d bytes", MaxRunList)
	}
	if hx, ok := strings.CutPrefix(s, "x"); ok {
		bits, err := hex.DecodeString(hx)
		if err != nil || strings.ToLower(hx) != hx {
			return nil, fmt.Errorf("bad block bitmap (want x and lowercase hex)")
		}
		var out []Run
		for blk := uint64(0); blk < uint64(len(bits))*8; blk++ {
			if bits[blk/8]&(1<<(blk%8)) == 0 {
				continue
			}
			if n := len(out); n > 0 && uint64(out[n-1].First)+uint64(out[n-1].Count) == blk {
				out[n-1].Count++
			} else {
				out = append(out, Run{First: uint32(blk), Count: 1})
			}
		}
		if len(out) == 0 {
			return nil, errors.New("block bitmap with no block (write - for none)")
		}
		return out, nil
	}
	var out []Run
	next := uint64(0)
	for _, f := range strings.Split(s, ",") {
		a, c, ok := strings.Cut(f, "+")
		first, ok1 := parseDecimal(a, 1<<32-1)
		count, ok2 := parseDecimal(c, 1<<32-1)
		if !ok || !ok1 || !ok2 || count == 0 || first+count > 1<<32-1 {
			return nil, fmt.Errorf("bad run %q (want first+count)", f)
		}
		if first < next {
			return nil, fmt.Errorf("run %q does not come after the one before it", f)
		}
		next = first + count
		out = append(out, Run{First: uint32(first), Count: uint32(count)})
	}
	return out, nil
}

// Trailer is the last line of a work list.
type Trailer struct {
	Count    uint64
	BackupID string
}

// FormatItem returns it as one line, without the newline.
func FormatItem(it Item) string {
	switch it.Kind {
	case Header:
		return fmt.Sprintf("%d\th\t%d\t%s\t0\t%s", it.Seq, it.Trunc, FormatRuns(it.Runs), EscapePath(it.Path))
	case MoreRun, LastRun:
		return fmt.Sprintf("%d\t%c\t%d\t%d\t%d\t%s", it.Seq, it.Kind, it.Offset, it.Length, it.Dst, EscapePath(it.Path))
	}
	return fmt.Sprintf("%d\t%c\t%d\t%d\t%s", it.Seq, it.Kind, it.Offset, it.Length, EscapePath(it.Path))
}

// FormatTrailer returns t as one line, without the newline.
func FormatTrailer(t Trailer) string {
	return fmt.Sprintf("end\t%d\t%s", t.Count, t.BackupID)
}

// EscapePath escapes a path as docs/worklist.md says: control bytes, 0x7F, bytes ≥ 0x80 and backslash
// become \xHH.
func EscapePath(p string) string {
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		c := p[i]
		if c < 0x20 || c >= 0x7f || c == '\\' {
			fmt.Fprintf(&b, "\\x%02x", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// UnescapePath reverses EscapePath; any other backslash sequence is an error.
func UnescapePath(s string) (string, error) {
	if !strings.Contains(s, "\\") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			b.WriteByte(c)
			continue
		}
		if i+4 > len(s) || s[i+1] != 'x' {
			return "", fmt.Errorf("bad escape in path %q", s)
		}
		hi, ok1 := lowerHex(s[i+2])
		lo, ok2 := lowerHex(s[i+3])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad escape in path %q (want \\x and two lowercase hex digits)", s)
		}
		b.WriteByte(hi<<4 | lo)
		i += 3
	}
	return b.String(), nil
}

func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// parseDecimal parses a canonical non-negative decimal: digits only, no sign, no leading zero.
func parseDecimal(s string, max uint64) (uint64, bool) {
	if s == "" || len(s) > 19 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil && v <= max
}

// CheckPath enforces the path rule of docs/worklist.md; the rule itself lives in datadir.CheckPath.
func CheckPath(p string) error { return datadir.CheckPath(p) }

// Line is one parsed line: exactly one of Item and Trailer is set, or neither for a comment or empty line.
type Line struct {
	Item    *Item
	Trailer *Trailer
}

// ParseLine parses one line (without its newline). The error does not carry a line number; Reader adds it.
func ParseLine(s string) (Line, error) {
	s = strings.TrimSuffix(s, "\r")
	if s == "" || s[0] == '#' {
		return Line{}, nil
	}
	f := strings.Split(s, "\t")
	if f[0] == "end" {
		if len(f) != 3 {
			return Line{}, fmt.Errorf("trailer has %d fields, want 3", len(f))
		}
		n, ok := parseDecimal(f[1], 1<<63-1)
		if !ok {
			return Line{}, fmt.Errorf("bad item count %q", f[1])
		}
		if !backupid.Valid(f[2]) {
			return Line{}, fmt.Errorf("bad backup id %q", f[2])
		}
		return Line{Trailer: &Trailer{Count: n, BackupID: f[2]}}, nil
	}
	if len(f) == 6 {
		return parseV2(f)
	}
	if len(f) != 5 {
		return Line{}, fmt.Errorf("item has %d fields, want 5 (seq, kind, offset, length, path separated by tabs)", len(f))
	}
	seq, ok := parseDecimal(f[0], 1<<63-1)
	if !ok || seq == 0 {
		return Line{}, fmt.Errorf("bad sequence number %q", f[0])
	}
	if len(f[1]) != 1 || (f[1][0] != 'f' && f[1][0] != 'p' && f[1][0] != 'd' && f[1][0] != 'l') {
		return Line{}, fmt.Errorf("bad kind %q (want f, p, d or l)", f[1])
	}
	off, ok := parseDecimal(f[2], 1<<60)
	if !ok {
		return Line{}, fmt.Errorf("bad offset %q", f[2])
	}
	length, ok := parseDecimal(f[3], 1<<60)
	if !ok {
		return Line{}, fmt.Errorf("bad length %q", f[3])
	}
	p, err := UnescapePath(f[4])
	if err != nil {
		return Line{}, err
	}
	if err := CheckPath(p); err != nil {
		return Line{}, err
	}
	it := Item{Seq: seq, Kind: Kind(f[1][0]), Offset: int64(off), Length: int64(length), Path: p}
	if it.Kind == Part && length == 0 {
		return Line{}, errors.New("p item with an empty range")
	}
	if (it.Kind == Dir || it.Kind == Link) && (off != 0 || length != 0) {
		return Line{}, fmt.Errorf("%c item with a byte range", it.Kind)
	}
	return Line{Item: &it}, nil
}

// parseV2 parses the six fields of an h, r or t line (docs/worklist.md, "Version 2").
func parseV2(f []string) (Line, error) {
	seq, ok := parseDecimal(f[0], 1<<63-1)
	if !ok || seq == 0 {
		return Line{}, fmt.Errorf("bad sequence number %q", f[0])
	}
	if len(f[1]) != 1 || (f[1][0] != 'h' && f[1][0] != 'r' && f[1][0] != 't') {
		return Line{}, fmt.Errorf("item has 6 fields, want 5 (seq, kind, offset, length, path separated by tabs; 6 only for kinds h, r and t)")
	}
	p, err := UnescapePath(f[5])
	if err != nil {
		return Line{}, err
	}
	if err := CheckPath(p); err != nil {
		return Line{}, err
	}
	name := p[strings.LastIndexByte(p, '/')+1:]
	if _, ok := incremental.ParseRelFile(name); !ok || !strings.Contains(p, "/") {
		return Line{}, fmt.Errorf("%c item for %q, which is not a relation segment in a database directory", f[1][0], p)
	}
	it := Item{Seq: seq, Kind: Kind(f[1][0]), Path: p}
	if it.Kind == Header {
		trunc, ok := parseDecimal(f[2], 1<<32-1)
		if !ok {
			return Line{}, fmt.Errorf("bad truncation length %q", f[2])
		}
		if it.Runs, err = parseRuns(f[3]); err != nil {
			return Line{}, err
		}
		if f[4] != "0" {
			return Line{}, fmt.Errorf("h item with destination %q, want 0", f[4])
		}
		it.Trunc = uint32(trunc)
		return Line{Item: &it}, nil
	}
	off, ok1 := parseDecimal(f[2], 1<<60)
	length, ok2 := parseDecimal(f[3], 1<<60)
	dst, ok3 := parseDecimal(f[4], 1<<60)
	if !ok1 || !ok2 || !ok3 {
		return Line{}, fmt.Errorf("bad offset, length or destination %q, %q, %q", f[2], f[3], f[4])
	}
	if length == 0 || off%incremental.BlockSize != 0 || length%incremental.BlockSize != 0 || dst%incremental.BlockSize != 0 || dst == 0 {
		return Line{}, fmt.Errorf("%c item: offset, length and destination must be whole blocks, the length and destination not 0", it.Kind)
	}
	it.Offset, it.Length, it.Dst = int64(off), int64(length), int64(dst)
	return Line{Item: &it}, nil
}

// Reader reads a work list line by line. Errors name the line number. A last line without its newline is
// an error: a list cut inside a line must not yield a shorter, valid-looking item.
type Reader struct {
	br     *bufio.Reader
	lineNo int
	name   string
}

// maxLine bounds one line; paths are at most MAXPGPATH bytes, escaped four times.
const maxLine = 64 << 10

// NewReader reads from r; name prefixes errors (e.g. "stdin").
func NewReader(r io.Reader, name string) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, 64<<10), name: name}
}

// Next returns the next item or trailer, skipping comments. It returns io.EOF at the end of input.
func (r *Reader) Next() (Line, error) {
	for {
		s, err := r.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull || len(s) > maxLine {
			return Line{}, fmt.Errorf("%s: line %d: longer than %d bytes", r.name, r.lineNo+1, maxLine)
		}
		if err == io.EOF {
			if len(s) == 0 {
				return Line{}, io.EOF
			}
			return Line{}, fmt.Errorf("%s: line %d: cut short (no newline at the end of the input)", r.name, r.lineNo+1)
		}
		if err != nil {
			return Line{}, fmt.Errorf("%s: line %d: %w", r.name, r.lineNo+1, err)
		}
		r.lineNo++
		l, err := ParseLine(string(s[:len(s)-1]))
		if err != nil {
			return Line{}, fmt.Errorf("%s: line %d: %w", r.name, r.lineNo, err)
		}
		if l.Item == nil && l.Trailer == nil {
			continue
		}
		return l, nil
	}
}
