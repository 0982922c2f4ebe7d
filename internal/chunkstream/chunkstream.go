// Package chunkstream writes and reads the pgbb chunk stream specified in docs/chunk-stream.md.
//
// It imports only the standard library. The Writer is safe for concurrent use; the Reader is not.
package chunkstream

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/pgbb/pgbb/internal/crc32c"
	"io"
	"sync"
)

// Version is the format version this package writes and reads.
const Version = 1

// Limits from docs/chunk-stream.md.
const (
	MaxBody  = 64 << 20
	MaxChunk = 16 << 20
)

const headerSize = 24

// Magic starts every stream.
var Magic = [8]byte{0x89, 'P', 'G', 'B', 'B', '\r', '\n', 0x1a}

// Record types.
const (
	TypeBegin       byte = 'B'
	TypeBackupStart byte = 'X'
	TypeDir         byte = 'D'
	TypeLink        byte = 'L'
	TypeChunk       byte = 'C'
	TypeOutcome     byte = 'O'
	TypeTrailer     byte = 'T'
	TypeBadPage     byte = 'K'
	TypeWritten     byte = 'W'
	TypeStats       byte = 'S'
	TypeBackupEnd   byte = 'E'
	TypeEnd         byte = 'Z'
)

// Codecs of chunk data.
const (
	CodecNone byte = 0
	CodecXZ   byte = 1
	CodecZstd byte = 2 // one zstd frame (RFC 8878)
)

// Outcome statuses.
const (
	Stored   byte = 0
	Vanished byte = 1
)

// Writer writes one producer's stream: the prelude and B record on creation, Z on Close. All methods are safe
// for concurrent use; records are written whole. A Writer does not close the underlying writer.
type Writer struct {
	mu       sync.Mutex
	w        io.Writer
	producer uint64
	next     uint64
	buf      []byte
	closed   bool
	err      error
}

// NewWriter writes the prelude and the B record for a new producer with a random id.
func NewWriter(w io.Writer, producerName, backupID string) (*Writer, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	sw := &Writer{w: w, producer: binary.BigEndian.Uint64(id[:])}
	pre := make([]byte, 12)
	copy(pre, Magic[:])
	binary.BigEndian.PutUint16(pre[8:], Version)
	if _, err := w.Write(pre); err != nil {
		return nil, err
	}
	var b body
	b.str(producerName)
	b.str(backupID)
	if err := sw.write(TypeBegin, b); err != nil {
		return nil, err
	}
	return sw, nil
}

type body []byte

func (b *body) u8(v byte)    { *b = append(*b, v) }
func (b *body) u32(v uint32) { *b = binary.BigEndian.AppendUint32(*b, v) }
func (b *body) u64(v uint64) { *b = binary.BigEndian.AppendUint64(*b, v) }
func (b *body) str(s string) {
	if len(s) > 0xffff {
		s = s[:0xffff] // callers validate paths; this only keeps the frame well-formed
	}
	*b = binary.BigEndian.AppendUint16(*b, uint16(len(s)))
	*b = append(*b, s...)
}
func (b *body) blob(p []byte) {
	*b = binary.BigEndian.AppendUint32(*b, uint32(len(p)))
	*b = append(*b, p...)
}

func (sw *Writer) write(typ byte, b body) error { return sw.writeRecord(typ, b, nil, 0, false) }

// writeRecord writes one record whose body is b followed by data. With known set, dataCRC is data's CRC-32C
// and the record's checksum is combined from it rather than computed over data again.
func (sw *Writer) writeRecord(typ byte, b body, data []byte, dataCRC uint32, known bool) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.err != nil {
		return sw.err
	}
	if sw.closed {
		return errors.New("chunkstream: write after close")
	}
	n := len(b) + len(data)
	if n > MaxBody {
		return fmt.Errorf("chunkstream: record body of %d bytes exceeds the limit", n)
	}
	need := headerSize + n + 4
	if cap(sw.buf) < need {
		sw.buf = make([]byte, need)
	}
	buf := sw.buf[:need]
	binary.BigEndian.PutUint32(buf[0:], uint32(n))
	buf[4] = typ
	buf[5], buf[6], buf[7] = 0, 0, 0
	binary.BigEndian.PutUint64(buf[8:], sw.producer)
	binary.BigEndian.PutUint64(buf[16:], sw.next)
	if typ == TypeEnd {
		binary.BigEndian.PutUint64(b, sw.next)
	}
	p := headerSize + copy(buf[headerSize:], b)
	p += copy(buf[p:], data)
	if known {
		binary.BigEndian.PutUint32(buf[p:], crc32c.Combine(crc32c.Checksum(buf[:p-len(data)]), dataCRC, int64(len(data))))
	} else {
		binary.BigEndian.PutUint32(buf[p:], crc32c.Checksum(buf[:p]))
	}
	if _, err := sw.w.Write(buf); err != nil {
		sw.err = err
		return err
	}
	sw.next++
	if typ == TypeEnd {
		sw.closed = true
	}
	return nil
}

// BackupStart describes the backup pgbb-xlog holds (record X).
type BackupStart struct {
	BackupID       string
	SystemID       uint64
	Timeline       uint32
	StartLSN       uint64
	WALSegmentSize uint32
	ServerVersion  uint32
	DirMode        uint32
	Label          string
	Tablespaces    []Tablespace
}

// Tablespace is one tablespace of the source cluster.
type Tablespace struct {
	OID      uint32
	Location string
}

// BackupEnd is what pg_backup_stop returned (record E).
type BackupEnd struct {
	StopLSN       uint64
	StopTimeline  uint32
	BackupLabel   []byte
	TablespaceMap []byte
}

// Chunk is one piece of a file (record C). Data is Raw when Codec is CodecNone, else Raw compressed.
type Chunk struct {
	Item   uint64
	Offset uint64
	RawLen uint32
	RawCRC uint32
	Codec  byte
	Path   string
	Data   []byte
}

// Outcome closes an item (record O). Offset and Length are the byte range the item asked for; Final says it
// is the file's last range (work-list kind f, and every xlog file).
type Outcome struct {
	Item   uint64
	Status byte
	Offset uint64
	Length uint64
	Final  bool
	Stored uint64
	Path   string
}

// WriteBackupStart writes an X record.
func (sw *Writer) WriteBackupStart(s BackupStart) error {
	var b body
	b.str(s.BackupID)
	b.u64(s.SystemID)
	b.u32(s.Timeline)
	b.u64(s.StartLSN)
	b.u32(s.WALSegmentSize)
	b.u32(s.ServerVersion)
	b.u32(s.DirMode)
	b.str(s.Label)
	b.u32(uint32(len(s.Tablespaces)))
	for _, t := range s.Tablespaces {
		b.u32(t.OID)
		b.str(t.Location)
	}
	return sw.write(TypeBackupStart, b)
}

// WriteDir writes a D record.
func (sw *Writer) WriteDir(item uint64, path string) error {
	var b body
	b.u64(item)
	b.str(path)
	return sw.write(TypeDir, b)
}

// WriteLink writes an L record.
func (sw *Writer) WriteLink(item uint64, path string) error {
	var b body
	b.u64(item)
	b.str(path)
	return sw.write(TypeLink, b)
}

// WriteChunk writes a C record; c.Data is copied before WriteChunk returns.
func (sw *Writer) WriteChunk(c Chunk) error {
	if c.RawLen > MaxChunk {
		return fmt.Errorf("chunkstream: chunk of %d bytes exceeds the limit", c.RawLen)
	}
	var b body
	b.u64(c.Item)
	b.u64(c.Offset)
	b.u32(c.RawLen)
	b.u32(c.RawCRC)
	b.u8(c.Codec)
	b.str(c.Path)
	if c.Codec == CodecNone {
		// c.RawCRC is the data's checksum: a wrong one makes the record's wrong, and readers refuse it
		return sw.writeRecord(TypeChunk, b, c.Data, c.RawCRC, true)
	}
	return sw.writeRecord(TypeChunk, b, c.Data, 0, false)
}

// Written is a W record: a range of a file that the producer wrote into the target itself (direct writes,
// docs/direct-write.md), in place of a chunk carrying the bytes.
type Written struct {
	Item   uint64
	Offset uint64
	Length uint32
	CRC    uint32 // CRC-32C of the bytes written
	Path   string
}

// WriteWritten writes a W record.
func (sw *Writer) WriteWritten(w Written) error {
	if w.Length > MaxChunk {
		return fmt.Errorf("chunkstream: written range of %d bytes exceeds the limit", w.Length)
	}
	var b body
	b.u64(w.Item)
	b.u64(w.Offset)
	b.u32(w.Length)
	b.u32(w.CRC)
	b.str(w.Path)
	return sw.write(TypeWritten, b)
}

// Stats is an S record: what one fetch job did (docs/resume.md, "Counters").
type Stats struct {
	Fetched   uint64 // bytes read from the server for work items
	Reused    uint64 // bytes already in the target, proved equal to the server's by digest
	Refetched uint64 // runs of pages fetched after a digest mismatch or a short stored range
	Retries   uint64 // reconnections after a dropped connection
	// FetchedKind and ReusedKind split Fetched and Reused by file kind (incremental.KindNames: relation
	// main fork, FSM, VM, other).
	FetchedKind, ReusedKind [4]uint64
}

// WriteStats writes an S record.
func (sw *Writer) WriteStats(s Stats) error {
	var b body
	b.u64(s.Fetched)
	b.u64(s.Reused)
	b.u64(s.Refetched)
	b.u64(s.Retries)
	for _, k := range [][4]uint64{s.FetchedKind, s.ReusedKind} {
		for _, n := range k {
			b.u64(n)
		}
	}
	return sw.write(TypeStats, b)
}

// WriteOutcome writes an O record.
func (sw *Writer) WriteOutcome(o Outcome) error {
	var b body
	b.u64(o.Item)
	b.u8(o.Status)
	b.u64(o.Offset)
	b.u64(o.Length)
	final := byte(0)
	if o.Final {
		final = 1
	}
	b.u8(final)
	b.u64(o.Stored)
	b.str(o.Path)
	return sw.write(TypeOutcome, b)
}

// WriteBadPage writes a K record: block of the file at path failed its page checksum twice.
func (sw *Writer) WriteBadPage(item, block uint64, path string) error {
	var b body
	b.u64(item)
	b.u64(block)
	b.str(path)
	return sw.write(TypeBadPage, b)
}

// WriteTrailer writes a T record.
func (sw *Writer) WriteTrailer(count uint64, backupID string) error {
	var b body
	b.u64(count)
	b.str(backupID)
	return sw.write(TypeTrailer, b)
}

// WriteBackupEnd writes an E record.
func (sw *Writer) WriteBackupEnd(e BackupEnd) error {
	var b body
	b.u64(e.StopLSN)
	b.u32(e.StopTimeline)
	b.blob(e.BackupLabel)
	b.blob(e.TablespaceMap)
	return sw.write(TypeBackupEnd, b)
}

// Close writes the Z record. It does not close the underlying writer.
func (sw *Writer) Close() error {
	// write fills in the count under its lock, so a concurrent record cannot slip in between
	return sw.write(TypeEnd, make(body, 8))
}

// WriteRaw writes a record read by a Reader unchanged (for forwarding another producer's records). It is
// serialised with this writer's own records.
func (sw *Writer) WriteRaw(raw []byte) error {
	sw.mu.Lock()
	defer sw.mu.Unlock()
	if sw.err != nil {
		return sw.err
	}
	if _, err := sw.w.Write(raw); err != nil {
		sw.err = err
		return err
	}
	return nil
}

// Record is one record read by a Reader. Raw and Body alias the Reader's buffer and are valid only until the
// next call to Next.
type Record struct {
	Type     byte
	Producer uint64
	Num      uint64
	Body     []byte
	Raw      []byte
}

// Reader reads records from one input holding one or more complete streams, checking framing, CRCs and each
// producer's record numbering. Next returns io.EOF only at a clean end where every producer has ended.
type Reader struct {
	r      *bufio.Reader
	name   string
	buf    []byte
	open   map[uint64]uint64 // producer -> next record number
	ended  map[uint64]bool
	off    int64
	inBody bool // a prelude has been read
	bare   bool // the last prelude has no record after it yet
}

// NewReader reads from r; name prefixes errors.
func NewReader(r io.Reader, name string) *Reader {
	return &Reader{r: bufio.NewReaderSize(r, 1<<20), name: name, open: map[uint64]uint64{}, ended: map[uint64]bool{}}
}

// ErrCut marks a reader's error that says the input ended early (a cut stream, a failed read), as when its
// writer died; every other error of a Reader says the bytes are not a valid stream (damage or tampering).
var ErrCut = errors.New("the input ended early")

func (rd *Reader) errf(format string, a ...any) error {
	return fmt.Errorf("%s: offset %d: %s", rd.name, rd.off, fmt.Sprintf(format, a...))
}

// cutf is errf for an input that ended early (ErrCut).
func (rd *Reader) cutf(format string, a ...any) error {
	return fmt.Errorf("%s: offset %d: %s%w", rd.name, rd.off, fmt.Sprintf(format, a...), cutMark{})
}

// cutMark makes an error match ErrCut without changing its text.
type cutMark struct{}

func (cutMark) Error() string        { return "" }
func (cutMark) Is(target error) bool { return target == ErrCut }

// Next returns the next record.
func (rd *Reader) Next() (*Record, error) {
	for {
		first, err := rd.r.Peek(1)
		if err == io.EOF {
			if !rd.inBody {
				return nil, rd.cutf("empty input: no stream")
			}
			if rd.bare {
				return nil, rd.cutf("stream cut short: a prelude without records")
			}
			for p := range rd.open {
				return nil, rd.cutf("stream cut short: producer %016x has no end record", p)
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, rd.cutf("read: %v", err)
		}
		if first[0] != Magic[0] {
			break
		}
		var pre [12]byte
		if _, err := io.ReadFull(rd.r, pre[:]); err != nil {
			return nil, rd.cutf("stream prelude cut short")
		}
		if rd.bare {
			return nil, rd.errf("a prelude without records")
		}
		if [8]byte(pre[:8]) != Magic {
			return nil, rd.errf("not a pgbb chunk stream (bad magic)")
		}
		if v := binary.BigEndian.Uint16(pre[8:]); v != Version {
			return nil, rd.errf("chunk stream version %d is not supported (this pgbb reads version %d)", v, Version)
		}
		if binary.BigEndian.Uint16(pre[10:]) != 0 {
			return nil, rd.errf("unknown stream flags")
		}
		rd.off += 12
		rd.inBody = true
		rd.bare = true
	}
	if !rd.inBody {
		return nil, rd.errf("not a pgbb chunk stream (no prelude)")
	}
	hdr, err := rd.r.Peek(headerSize)
	if err != nil {
		return nil, rd.cutf("record header cut short")
	}
	n := binary.BigEndian.Uint32(hdr)
	if n > MaxBody {
		return nil, rd.errf("record length %d exceeds the limit (garbage or damage)", n)
	}
	total := headerSize + int(n) + 4
	if cap(rd.buf) < total {
		rd.buf = make([]byte, total)
	}
	buf := rd.buf[:total]
	if _, err := io.ReadFull(rd.r, buf); err != nil {
		return nil, rd.cutf("record cut short")
	}
	if got, want := crc32c.Checksum(buf[:total-4]), binary.BigEndian.Uint32(buf[total-4:]); got != want {
		return nil, rd.errf("record checksum mismatch (damaged stream)")
	}
	rec := &Record{
		Type:     buf[4],
		Producer: binary.BigEndian.Uint64(buf[8:]),
		Num:      binary.BigEndian.Uint64(buf[16:]),
		Body:     buf[headerSize : total-4],
		Raw:      buf,
	}
	if buf[5] != 0 || buf[6] != 0 || buf[7] != 0 {
		return nil, rd.errf("record flags set")
	}
	if err := rd.sequence(rec); err != nil {
		return nil, err
	}
	rd.bare = false
	rd.off += int64(total)
	return rec, nil
}

func (rd *Reader) sequence(rec *Record) error {
	if rd.ended[rec.Producer] {
		return rd.errf("record of producer %016x after its end record (duplicated data)", rec.Producer)
	}
	next, ok := rd.open[rec.Producer]
	switch {
	case !ok && rec.Type != TypeBegin:
		return rd.errf("record %d of unknown producer %016x (a stream's beginning is missing)", rec.Num, rec.Producer)
	case !ok:
		if rec.Num != 0 {
			return rd.errf("begin record numbered %d", rec.Num)
		}
	case rec.Type == TypeBegin:
		return rd.errf("second begin record of producer %016x", rec.Producer)
	case rec.Num != next:
		return rd.errf("record %d of producer %016x where %d was due (dropped, duplicated or reordered record)", rec.Num, rec.Producer, next)
	}
	switch rec.Type {
	case TypeBegin, TypeBackupStart, TypeDir, TypeLink, TypeChunk, TypeOutcome, TypeTrailer, TypeBackupEnd, TypeBadPage, TypeWritten, TypeStats:
	case TypeEnd:
		d := decoder{b: rec.Body}
		cnt := d.u64()
		if err := d.done(); err != nil {
			return rd.errf("end record: %v", err)
		}
		if cnt != rec.Num {
			return rd.errf("end record counts %d records, %d were read", cnt, rec.Num)
		}
		delete(rd.open, rec.Producer)
		rd.ended[rec.Producer] = true
		return nil
	default:
		return rd.errf("unknown record type 0x%02x", rec.Type)
	}
	rd.open[rec.Producer] = rec.Num + 1
	return nil
}

// decoder reads a body with bounds checks; the first error sticks.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) need(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || len(d.b) < n {
		d.err = errors.New("record body cut short")
		return nil
	}
	p := d.b[:n]
	d.b = d.b[n:]
	return p
}
func (d *decoder) u8() byte {
	if p := d.need(1); p != nil {
		return p[0]
	}
	return 0
}
func (d *decoder) u32() uint32 {
	if p := d.need(4); p != nil {
		return binary.BigEndian.Uint32(p)
	}
	return 0
}
func (d *decoder) u64() uint64 {
	if p := d.need(8); p != nil {
		return binary.BigEndian.Uint64(p)
	}
	return 0
}
func (d *decoder) str() string {
	n := d.need(2)
	if n == nil {
		return ""
	}
	return string(d.need(int(binary.BigEndian.Uint16(n))))
}
func (d *decoder) blob() []byte {
	n := d.need(4)
	if n == nil {
		return nil
	}
	l := binary.BigEndian.Uint32(n)
	if l > MaxBody {
		d.err = errors.New("blob too long")
		return nil
	}
	return append([]byte(nil), d.need(int(l))...)
}
func (d *decoder) done() error {
	if d.err != nil {
		return d.err
	}
	if len(d.b) != 0 {
		return fmt.Errorf("%d unexpected bytes at the end of the record body", len(d.b))
	}
	return nil
}

// Begin decodes a B record: producer name and backup id.
func (r *Record) Begin() (producer, backupID string, err error) {
	d := decoder{b: r.Body}
	producer, backupID = d.str(), d.str()
	return producer, backupID, d.done()
}

// BackupStart decodes an X record.
func (r *Record) BackupStart() (BackupStart, error) {
	d := decoder{b: r.Body}
	s := BackupStart{BackupID: d.str(), SystemID: d.u64(), Timeline: d.u32(), StartLSN: d.u64(),
		WALSegmentSize: d.u32(), ServerVersion: d.u32(), DirMode: d.u32(), Label: d.str()}
	n := d.u32()
	if n > 65535 {
		return s, errors.New("too many tablespaces")
	}
	for i := uint32(0); i < n && d.err == nil; i++ {
		s.Tablespaces = append(s.Tablespaces, Tablespace{OID: d.u32(), Location: d.str()})
	}
	return s, d.done()
}

// ItemPath decodes a D or L record.
func (r *Record) ItemPath() (item uint64, path string, err error) {
	d := decoder{b: r.Body}
	item, path = d.u64(), d.str()
	return item, path, d.done()
}

// dataCRC returns the CRC-32C of the last n bytes of the body. For a record a Reader returned, whose
// checksum it verified, that follows from the record's checksum and the CRC of the bytes before them,
// without reading the n bytes again; otherwise they are read.
func (r *Record) dataCRC(n int) uint32 {
	body := len(r.Body)
	if n > body || len(r.Raw) != headerSize+body+4 {
		return crc32c.Checksum(r.Body[body-min(n, body):])
	}
	total := len(r.Raw) - 4
	whole := binary.BigEndian.Uint32(r.Raw[total:])
	return whole ^ crc32c.Combine(crc32c.Checksum(r.Raw[:total-n]), 0, int64(n))
}

// Chunk decodes a C record; Data aliases the record buffer. For an uncompressed chunk, RawCRC is checked
// against the data.
func (r *Record) Chunk() (Chunk, error) {
	d := decoder{b: r.Body}
	c := Chunk{Item: d.u64(), Offset: d.u64(), RawLen: d.u32(), RawCRC: d.u32(), Codec: d.u8(), Path: d.str()}
	if d.err != nil {
		return c, d.err
	}
	c.Data = d.b
	d.b = nil
	if c.RawLen > MaxChunk {
		return c, fmt.Errorf("chunk of %d bytes exceeds the limit", c.RawLen)
	}
	switch c.Codec {
	case CodecNone:
		if uint32(len(c.Data)) != c.RawLen {
			return c, fmt.Errorf("chunk holds %d bytes, header says %d", len(c.Data), c.RawLen)
		}
		if r.dataCRC(len(c.Data)) != c.RawCRC {
			return c, fmt.Errorf("chunk at offset %d of %s: data checksum mismatch", c.Offset, c.Path)
		}
	case CodecXZ, CodecZstd:
	default:
		return c, fmt.Errorf("unknown codec %d", c.Codec)
	}
	return c, nil
}

// Written decodes a W record.
func (r *Record) Written() (Written, error) {
	d := decoder{b: r.Body}
	w := Written{Item: d.u64(), Offset: d.u64(), Length: d.u32(), CRC: d.u32(), Path: d.str()}
	if d.err == nil && w.Length > MaxChunk {
		return w, fmt.Errorf("written range of %d bytes exceeds the limit", w.Length)
	}
	return w, d.done()
}

// Outcome decodes an O record.
func (r *Record) Outcome() (Outcome, error) {
	d := decoder{b: r.Body}
	o := Outcome{Item: d.u64(), Status: d.u8(), Offset: d.u64(), Length: d.u64()}
	final := d.u8()
	o.Final = final == 1
	o.Stored, o.Path = d.u64(), d.str()
	if d.err == nil && o.Status != Stored && o.Status != Vanished {
		return o, fmt.Errorf("unknown outcome status %d", o.Status)
	}
	if d.err == nil && final > 1 {
		return o, fmt.Errorf("bad final flag %d", final)
	}
	if d.err == nil && o.Stored > o.Length {
		return o, fmt.Errorf("outcome stores %d bytes of a %d-byte range", o.Stored, o.Length)
	}
	return o, d.done()
}

// Stats decodes an S record.
func (r *Record) Stats() (Stats, error) {
	d := decoder{b: r.Body}
	s := Stats{Fetched: d.u64(), Reused: d.u64(), Refetched: d.u64(), Retries: d.u64()}
	for _, k := range []*[4]uint64{&s.FetchedKind, &s.ReusedKind} {
		for i := range k {
			k[i] = d.u64()
		}
	}
	return s, d.done()
}

// BadPage decodes a K record.
func (r *Record) BadPage() (item, block uint64, path string, err error) {
	d := decoder{b: r.Body}
	item, block, path = d.u64(), d.u64(), d.str()
	return item, block, path, d.done()
}

// Trailer decodes a T record.
func (r *Record) Trailer() (count uint64, backupID string, err error) {
	d := decoder{b: r.Body}
	count, backupID = d.u64(), d.str()
	return count, backupID, d.done()
}

// BackupEnd decodes an E record.
func (r *Record) BackupEnd() (BackupEnd, error) {
	d := decoder{b: r.Body}
	e := BackupEnd{StopLSN: d.u64(), StopTimeline: d.u32(), BackupLabel: d.blob(), TablespaceMap: d.blob()}
	return e, d.done()
}
