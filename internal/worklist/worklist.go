// Package worklist reads and writes the pgbb work list, the text format specified in docs/worklist.md.
//
// It imports only the standard library.
package worklist

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// Kind says what an item copies.
type Kind byte

const (
	File Kind = 'f' // a byte range of one file
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

var backupIDPattern = regexp.MustCompile(`^[0-9A-Za-z-]{1,128}$`)

// ValidBackupID reports whether id has the form a trailer may carry.
func ValidBackupID(id string) bool { return backupIDPattern.MatchString(id) }

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
		v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
		if err != nil {
			return "", fmt.Errorf("bad escape in path %q", s)
		}
		b.WriteByte(byte(v))
		i += 3
	}
	return b.String(), nil
}

// CheckPath enforces the path rule of docs/worklist.md: relative, non-empty, no empty, "." or ".."
// component, no trailing slash.
func CheckPath(p string) error {
	if p == "" {
		return errors.New("empty path")
	}
	if strings.HasPrefix(p, "/") {
		return fmt.Errorf("absolute path %q", p)
	}
	for _, c := range strings.Split(p, "/") {
		switch c {
		case "":
			return fmt.Errorf("empty component in path %q", p)
		case ".", "..":
			return fmt.Errorf("%q component in path %q", c, p)
		}
		if strings.IndexByte(c, 0) >= 0 {
			return fmt.Errorf("NUL byte in path %q", p)
		}
	}
	return nil
}

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
		n, err := strconv.ParseUint(f[1], 10, 63)
		if err != nil {
			return Line{}, fmt.Errorf("bad item count %q", f[1])
		}
		if !ValidBackupID(f[2]) {
			return Line{}, fmt.Errorf("bad backup id %q", f[2])
		}
		return Line{Trailer: &Trailer{Count: n, BackupID: f[2]}}, nil
	}
	if len(f) != 5 {
		return Line{}, fmt.Errorf("item has %d fields, want 5 (seq, kind, offset, length, path separated by tabs)", len(f))
	}
	seq, err := strconv.ParseUint(f[0], 10, 63)
	if err != nil || seq == 0 {
		return Line{}, fmt.Errorf("bad sequence number %q", f[0])
	}
	if len(f[1]) != 1 || (f[1][0] != 'f' && f[1][0] != 'd' && f[1][0] != 'l') {
		return Line{}, fmt.Errorf("bad kind %q (want f, d or l)", f[1])
	}
	off, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil || off < 0 {
		return Line{}, fmt.Errorf("bad offset %q", f[2])
	}
	length, err := strconv.ParseInt(f[3], 10, 64)
	if err != nil || length < 0 {
		return Line{}, fmt.Errorf("bad length %q", f[3])
	}
	if off > (1<<62) || length > (1<<62) {
		return Line{}, fmt.Errorf("range too large")
	}
	p, err := UnescapePath(f[4])
	if err != nil {
		return Line{}, err
	}
	if err := CheckPath(p); err != nil {
		return Line{}, err
	}
	it := Item{Seq: seq, Kind: Kind(f[1][0]), Offset: off, Length: length, Path: p}
	if it.Kind != File && (off != 0 || length != 0) {
		return Line{}, fmt.Errorf("%c item with a byte range", it.Kind)
	}
	return Line{Item: &it}, nil
}

// Reader reads a work list line by line. Errors name the line number.
type Reader struct {
	sc     *bufio.Scanner
	lineNo int
	name   string
}

// NewReader reads from r; name prefixes errors (e.g. "stdin").
func NewReader(r io.Reader, name string) *Reader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	return &Reader{sc: sc, name: name}
}

// Next returns the next item or trailer, skipping comments. It returns io.EOF at the end of input.
func (r *Reader) Next() (Line, error) {
	for r.sc.Scan() {
		r.lineNo++
		l, err := ParseLine(r.sc.Text())
		if err != nil {
			return Line{}, fmt.Errorf("%s: line %d: %w", r.name, r.lineNo, err)
		}
		if l.Item == nil && l.Trailer == nil {
			continue
		}
		return l, nil
	}
	if err := r.sc.Err(); err != nil {
		return Line{}, fmt.Errorf("%s: line %d: %w", r.name, r.lineNo+1, err)
	}
	return Line{}, io.EOF
}
