// Package worklist reads and writes the pgbb work list, the text format specified in docs/worklist.md.
//
// It imports only the standard library and pgbb's pure packages (datadir, backupid).
package worklist

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/datadir"
)

// Kind says what an item copies.
type Kind byte

const (
	File Kind = 'f' // a byte range of one file that ends the file's list of ranges (often the whole file)
	Part Kind = 'p' // a byte range of one file that more ranges of the same file follow
	Dir  Kind = 'd' // a directory, created empty
	Link Kind = 'l' // a tablespace link, pg_tblspc/<oid>
)

// Item is one line of the work list.
type Item struct {
	Seq    uint64
	Kind   Kind
	Offset int64
	Length int64
	Path   string // raw bytes, unescaped
}

// Trailer is the last line of a work list.
type Trailer struct {
	Count    uint64
	BackupID string
}

// FormatItem returns it as one line, without the newline.
func FormatItem(it Item) string {
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
