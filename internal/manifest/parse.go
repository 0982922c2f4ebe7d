package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/pgbb/pgbb/internal/datadir"
)

// Checksum algorithms a manifest entry may name, as pg_checksum_parse_type in PostgreSQL's
// src/common/checksum_helper.c knows them, with the length of their checksums in bytes.
var checksumLengths = map[string]int{
	"NONE":   0,
	"CRC32C": 4,
	"SHA224": 28,
	"SHA256": 32,
	"SHA384": 48,
	"SHA512": 64,
}

// Manifest is a parsed backup_manifest.
type Manifest struct {
	Version   int    // 1 or 2
	SystemID  uint64 // System-Identifier; 0 in a version 1 manifest, which has none
	Files     []Entry
	WALRanges []WALRange
}

// Entry is one entry of the Files array with its checksum as the manifest states it.
type Entry struct {
	// File.CRC32C is set only when Algorithm is "CRC32C"; Build of the File writes a CRC32C entry whatever
	// the algorithm was.
	File
	// Algorithm is "NONE" (no Checksum-Algorithm key, or that name), "CRC32C", "SHA224", "SHA256", "SHA384"
	// or "SHA512", in upper case whatever the case in the manifest.
	Algorithm string
	// Checksum holds the checksum's bytes as the manifest spells them (a CRC32C's four bytes are
	// little-endian); nil for NONE.
	Checksum []byte
}

// maxDepth bounds the nesting Parse accepts: the manifest's deepest value is a field of an entry of a
// top-level array, depth 3.
const maxDepth = 3

// Parse reads a backup_manifest as PostgreSQL's src/common/parse_manifest.c does, and more strictly:
//
//   - the text must end with "}\n" and its last line must hold the "Manifest-Checksum" key, whose value (64
//     hex digits) must be the SHA-256 of every byte before that line;
//   - it must be valid UTF-8 and valid JSON (RFC 8259), with no \u0000 and no lone surrogate escapes;
//   - the top-level object starts with "PostgreSQL-Backup-Manifest-Version" (1 or 2), ends with
//     "Manifest-Checksum", and holds "Files", "WAL-Ranges" and, exactly when the version is 2,
//     "System-Identifier"; a key that is not known, appears twice, or has a value of the wrong type is an
//     error (PostgreSQL takes any scalar's text, so it would take "Size": "3");
//   - a file entry has one of "Path" or "Encoded-Path" (hex of the raw bytes), "Size", "Last-Modified" in
//     backup_manifest.c's form ("2006-01-02 15:04:05 GMT"), and optionally "Checksum-Algorithm" (any case)
//     with "Checksum" (hex, either case, of the algorithm's length; required unless the algorithm is NONE);
//   - a path must be relative, '/'-separated, without empty, "." or ".." components or NUL bytes, and no
//     path may appear twice (compared as raw bytes, whichever key spelled it);
//   - a WAL range has "Timeline" (not 0), "Start-LSN" and "End-LSN" in the %X/%X form with upper-case
//     digits and no leading zeros, the end not before the start.
//
// Numbers must be non-negative integers without sign, fraction or exponent that fit their field. Errors
// name the line and what is wrong there.
func Parse(b []byte) (*Manifest, error) {
	if !bytes.HasSuffix(b, []byte("}\n")) {
		return nil, fmt.Errorf("does not end with \"}\\n\" (cut short?)")
	}
	// the line holding the checksum starts after the second-to-last newline
	lastLine := bytes.LastIndexByte(b[:len(b)-1], '\n') + 1
	if lastLine == 0 {
		return nil, fmt.Errorf("fewer than 2 lines")
	}
	p := jsonParser{b: b}
	top, err := p.document()
	if err != nil {
		return nil, err
	}
	m, sum, err := p.manifest(top, lastLine)
	if err != nil {
		return nil, err
	}
	if got := sha256.Sum256(b[:lastLine]); !bytes.Equal(got[:], sum) {
		return nil, fmt.Errorf("line %d: manifest checksum mismatch: the manifest was changed or damaged after it was written",
			p.line(lastLine))
	}
	return m, nil
}

// manifest checks the document against the manifest's schema and returns it with the stated
// Manifest-Checksum.
func (p *jsonParser) manifest(top *jsonValue, lastLine int) (*Manifest, []byte, error) {
	if top.kind != jsonObject {
		return nil, nil, p.errorAt(top.off, "the manifest is not a JSON object")
	}
	m := &Manifest{}
	var sum []byte
	seen := map[string]bool{}
	for i, f := range top.members {
		if seen[f.key] {
			return nil, nil, p.errorAt(f.keyOff, "key %q appears twice", f.key)
		}
		seen[f.key] = true
		if i == 0 && f.key != "PostgreSQL-Backup-Manifest-Version" {
			return nil, nil, p.errorAt(f.keyOff, "the first key is %q, want \"PostgreSQL-Backup-Manifest-Version\"", f.key)
		}
		if f.key == "Manifest-Checksum" && i != len(top.members)-1 {
			return nil, nil, p.errorAt(f.keyOff, "\"Manifest-Checksum\" is not the last key")
		}
		var err error
		switch f.key {
		case "PostgreSQL-Backup-Manifest-Version":
			var v uint64
			if v, err = p.uint(&f.value, f.key, math.MaxInt32); err == nil && v != 1 && v != 2 {
				err = p.errorAt(f.value.off, "manifest version %d is not supported (want 1 or 2)", v)
			}
			m.Version = int(v)
		case "System-Identifier":
			m.SystemID, err = p.uint(&f.value, f.key, math.MaxUint64)
		case "Files":
			m.Files, err = p.files(&f.value)
		case "WAL-Ranges":
			m.WALRanges, err = p.walRanges(&f.value)
		case "Manifest-Checksum":
			if f.keyOff < lastLine {
				return nil, nil, p.errorAt(f.keyOff, "\"Manifest-Checksum\" is not on the last line")
			}
			sum, err = p.hex(&f.value, f.key, sha256.Size)
		default:
			err = p.errorAt(f.keyOff, "unknown key %q at the top level", f.key)
		}
		if err != nil {
			return nil, nil, err
		}
	}
	for _, k := range []string{"PostgreSQL-Backup-Manifest-Version", "Files", "WAL-Ranges", "Manifest-Checksum"} {
		if !seen[k] {
			return nil, nil, p.errorAt(top.off, "missing %q", k)
		}
	}
	switch {
	case m.Version >= 2 && !seen["System-Identifier"]:
		return nil, nil, p.errorAt(top.off, "missing \"System-Identifier\" (required in version %d)", m.Version)
	case m.Version == 1 && seen["System-Identifier"]:
		return nil, nil, p.errorAt(top.off, "\"System-Identifier\" in a version 1 manifest")
	}
	return m, sum, nil
}

func (p *jsonParser) files(v *jsonValue) ([]Entry, error) {
	if v.kind != jsonArray {
		return nil, p.errorAt(v.off, "\"Files\" is not an array")
	}
	files := make([]Entry, 0, len(v.elems))
	firstAt := map[string]int{}
	for i := range v.elems {
		e, err := p.file(&v.elems[i])
		if err != nil {
			return nil, err
		}
		if at, dup := firstAt[e.Path]; dup {
			return nil, p.errorAt(v.elems[i].off, "duplicate path %q (first on line %d)", e.Path, p.line(at))
		}
		firstAt[e.Path] = v.elems[i].off
		files = append(files, e)
	}
	return files, nil
}

func (p *jsonParser) file(v *jsonValue) (Entry, error) {
	if v.kind != jsonObject {
		return Entry{}, p.errorAt(v.off, "file entry is not an object")
	}
	var e Entry
	fields := map[string]*jsonValue{}
	for i := range v.members {
		f := &v.members[i]
		switch f.key {
		case "Path", "Encoded-Path", "Size", "Last-Modified", "Checksum-Algorithm", "Checksum":
		default:
			return e, p.errorAt(f.keyOff, "unknown key %q in a file entry", f.key)
		}
		if fields[f.key] != nil {
			return e, p.errorAt(f.keyOff, "key %q appears twice in a file entry", f.key)
		}
		fields[f.key] = &f.value
	}
	// the path first, so that later errors can name the file
	path, encoded := fields["Path"], fields["Encoded-Path"]
	switch {
	case path != nil && encoded != nil:
		return e, p.errorAt(v.off, "file entry has both \"Path\" and \"Encoded-Path\"")
	case path != nil:
		if path.kind != jsonString {
			return e, p.errorAt(path.off, "\"Path\" is not a string")
		}
		e.Path = path.text
	case encoded != nil:
		raw, err := p.hex(encoded, "Encoded-Path", -1)
		if err != nil {
			return e, err
		}
		e.Path = string(raw)
	default:
		return e, p.errorAt(v.off, "file entry has neither \"Path\" nor \"Encoded-Path\"")
	}
	if err := checkPath(e.Path); err != nil {
		return e, p.errorAt(v.off, "%v", err)
	}
	named := func(err error) error { return fmt.Errorf("%w (file %q)", err, e.Path) }
	for _, k := range []string{"Size", "Last-Modified"} {
		if fields[k] == nil {
			return e, named(p.errorAt(v.off, "missing %q", k))
		}
	}
	size, err := p.uint(fields["Size"], "Size", math.MaxInt64)
	if err != nil {
		return e, named(err)
	}
	e.Size = int64(size)
	if e.Modified, err = p.modified(fields["Last-Modified"]); err != nil {
		return e, named(err)
	}
	e.Algorithm = "NONE"
	if a := fields["Checksum-Algorithm"]; a != nil {
		if a.kind != jsonString {
			return e, named(p.errorAt(a.off, "\"Checksum-Algorithm\" is not a string"))
		}
		e.Algorithm = strings.ToUpper(a.text)
		if _, ok := checksumLengths[e.Algorithm]; !ok {
			return e, named(p.errorAt(a.off, "unknown checksum algorithm %q", a.text))
		}
	}
	c := fields["Checksum"]
	switch {
	case c != nil && fields["Checksum-Algorithm"] == nil:
		return e, named(p.errorAt(c.off, "\"Checksum\" without \"Checksum-Algorithm\""))
	case c != nil && e.Algorithm == "NONE":
		return e, named(p.errorAt(c.off, "\"Checksum\" with algorithm NONE"))
	case c == nil && e.Algorithm != "NONE":
		return e, named(p.errorAt(v.off, "missing \"Checksum\" for algorithm %s", e.Algorithm))
	case c != nil:
		if e.Checksum, err = p.hex(c, "Checksum", checksumLengths[e.Algorithm]); err != nil {
			return e, named(err)
		}
		if e.Algorithm == "CRC32C" {
			// backup_manifest.c writes the pg_crc32c's bytes in host (little-endian) order
			e.CRC32C = uint32(e.Checksum[0]) | uint32(e.Checksum[1])<<8 | uint32(e.Checksum[2])<<16 | uint32(e.Checksum[3])<<24
		}
	}
	return e, nil
}

// checkPath accepts the relative, clean, '/'-separated paths a data directory listing produces.
func checkPath(p string) error { return datadir.CheckPath(p) }

// lastModifiedLayout is how backup_manifest.c writes Last-Modified (pg_strftime "%Y-%m-%d %H:%M:%S %Z" of
// the UTC time).
const lastModifiedLayout = "2006-01-02 15:04:05 GMT"

func (p *jsonParser) modified(v *jsonValue) (time.Time, error) {
	if v.kind != jsonString {
		return time.Time{}, p.errorAt(v.off, "\"Last-Modified\" is not a string")
	}
	t, err := time.Parse(lastModifiedLayout, v.text)
	// time.Parse takes one-digit hours; the writer's form is fixed
	if err != nil || t.Format(lastModifiedLayout) != v.text {
		return time.Time{}, p.errorAt(v.off, "bad \"Last-Modified\" %q (want like \"2006-01-02 15:04:05 GMT\")", v.text)
	}
	return t, nil
}

func (p *jsonParser) walRanges(v *jsonValue) ([]WALRange, error) {
	if v.kind != jsonArray {
		return nil, p.errorAt(v.off, "\"WAL-Ranges\" is not an array")
	}
	ranges := make([]WALRange, 0, len(v.elems))
	for i := range v.elems {
		r, err := p.walRange(&v.elems[i])
		if err != nil {
			return nil, err
		}
		ranges = append(ranges, r)
	}
	return ranges, nil
}

func (p *jsonParser) walRange(v *jsonValue) (WALRange, error) {
	var r WALRange
	if v.kind != jsonObject {
		return r, p.errorAt(v.off, "WAL range is not an object")
	}
	seen := map[string]bool{}
	for i := range v.members {
		f := &v.members[i]
		if seen[f.key] {
			return r, p.errorAt(f.keyOff, "key %q appears twice in a WAL range", f.key)
		}
		seen[f.key] = true
		var err error
		switch f.key {
		case "Timeline":
			var tli uint64
			if tli, err = p.uint(&f.value, f.key, math.MaxUint32); err == nil && tli == 0 {
				err = p.errorAt(f.value.off, "timeline 0")
			}
			r.Timeline = uint32(tli)
		case "Start-LSN":
			r.Start, err = p.lsn(&f.value, f.key)
		case "End-LSN":
			r.End, err = p.lsn(&f.value, f.key)
		default:
			err = p.errorAt(f.keyOff, "unknown key %q in a WAL range", f.key)
		}
		if err != nil {
			return r, err
		}
	}
	for _, k := range []string{"Timeline", "Start-LSN", "End-LSN"} {
		if !seen[k] {
			return r, p.errorAt(v.off, "missing %q in a WAL range", k)
		}
	}
	if r.End < r.Start {
		return r, p.errorAt(v.off, "WAL range ends before it starts")
	}
	return r, nil
}

// lsn parses the %X/%X form backup_manifest.c writes: upper-case hex, no leading zeros.
func (p *jsonParser) lsn(v *jsonValue, key string) (uint64, error) {
	bad := func() error { return p.errorAt(v.off, "bad %q %q (want like \"16/B374D848\")", key, v.text) }
	if v.kind != jsonString {
		return 0, bad()
	}
	hi, lo, ok := strings.Cut(v.text, "/")
	if !ok {
		return 0, bad()
	}
	var halves [2]uint64
	for i, h := range []string{hi, lo} {
		n, err := strconv.ParseUint(h, 16, 32)
		if err != nil || strings.ToUpper(h) != h || strconv.FormatUint(n, 16) != strings.ToLower(h) {
			return 0, bad()
		}
		halves[i] = n
	}
	return halves[0]<<32 | halves[1], nil
}

// uint parses a JSON number that must be a non-negative integer of at most limit.
func (p *jsonParser) uint(v *jsonValue, key string, limit uint64) (uint64, error) {
	if v.kind != jsonNumber {
		return 0, p.errorAt(v.off, "%q is not a number", key)
	}
	n, err := strconv.ParseUint(v.text, 10, 64)
	if err != nil || n > limit {
		return 0, p.errorAt(v.off, "%q is %s, want an integer from 0 to %d", key, v.text, limit)
	}
	return n, nil
}

// hex decodes a string of hex digits (either case) that must give want bytes, or any number if want < 0.
func (p *jsonParser) hex(v *jsonValue, key string, want int) ([]byte, error) {
	if v.kind != jsonString {
		return nil, p.errorAt(v.off, "%q is not a string", key)
	}
	b, err := hex.DecodeString(v.text)
	if err != nil {
		return nil, p.errorAt(v.off, "%q is not hex: %q", key, v.text)
	}
	if want >= 0 && len(b) != want {
		return nil, p.errorAt(v.off, "%q has %d hex digits, want %d", key, len(v.text), 2*want)
	}
	return b, nil
}
