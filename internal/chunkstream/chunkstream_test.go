package chunkstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/pgbb/pgbb/internal/crc32c"
	"io"
	"math/rand"
	"reflect"
	"strings"
	"sync"
	"testing"
)

const testID = "7312345678901234567-1-0-3000028-9f3c21ab"

// Decoded forms of the records that have no struct of their own.
type begin struct{ Producer, BackupID string }
type itemPath struct {
	Item uint64
	Path string
}
type trailer struct {
	Count    uint64
	BackupID string
}
type end struct{ Count uint64 }

// want is one record as a test expects to read it back.
type want struct {
	typ byte
	v   any
}

// decode decodes rec with its type's method (the Z body by hand: it has no method).
func decode(rec *Record) (any, error) {
	switch rec.Type {
	case TypeBegin:
		p, id, err := rec.Begin()
		return begin{p, id}, err
	case TypeBackupStart:
		return rec.BackupStart()
	case TypeDir, TypeLink:
		item, path, err := rec.ItemPath()
		return itemPath{item, path}, err
	case TypeChunk:
		c, err := rec.Chunk()
		c.Data = bytes.Clone(c.Data) // Data aliases the reader's buffer
		return c, err
	case TypeOutcome:
		return rec.Outcome()
	case TypeWritten:
		return rec.Written()
	case TypeStats:
		return rec.Stats()
	case TypeTrailer:
		n, id, err := rec.Trailer()
		return trailer{n, id}, err
	case TypeBackupEnd:
		return rec.BackupEnd()
	case TypeEnd:
		d := decoder{b: rec.Body}
		n := d.u64()
		return end{n}, d.done()
	}
	return nil, fmt.Errorf("unknown type %q", rec.Type)
}

// normalize makes empty slices nil so that DeepEqual compares contents.
func normalize(v any) any {
	nilIfEmpty := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return b
	}
	switch x := v.(type) {
	case Chunk:
		x.Data = nilIfEmpty(x.Data)
		return x
	case BackupEnd:
		x.BackupLabel, x.TablespaceMap = nilIfEmpty(x.BackupLabel), nilIfEmpty(x.TablespaceMap)
		return x
	case BackupStart:
		if len(x.Tablespaces) == 0 {
			x.Tablespaces = nil
		}
		return x
	}
	return v
}

// writeEveryType writes one record of every type (but B and Z, which the Writer writes itself) and returns
// what a reader must decode, B and Z included.
func writeEveryType(t testing.TB, sw *Writer, name string, seed int) []want {
	t.Helper()
	data := []byte(strings.Repeat(fmt.Sprintf("page %d ", seed), 40))
	ws := []want{{TypeBegin, begin{name, testID}}}
	add := func(err error, typ byte, v any) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		ws = append(ws, want{typ, v})
	}
	x := BackupStart{BackupID: testID, SystemID: 7312345678901234567, Timeline: 1, StartLSN: 0x3000028,
		WALSegmentSize: 16 << 20, ServerVersion: 150004, DirMode: 0o700,
		Label: "pgbb " + testID, Tablespaces: []Tablespace{{16384, "/srv/ts1"}, {16385, "/srv/ts\t2\n"}}}
	add(sw.WriteBackupStart(x), TypeBackupStart, x)
	add(sw.WriteDir(1, "base"), TypeDir, itemPath{1, "base"})
	add(sw.WriteLink(2, "pg_tblspc/16384"), TypeLink, itemPath{2, "pg_tblspc/16384"})
	c := Chunk{Item: 3, Offset: 0, RawLen: uint32(len(data)), RawCRC: crc32c.Checksum(data), Codec: CodecNone,
		Path: "base/1/112", Data: data}
	add(sw.WriteChunk(c), TypeChunk, c)
	cz := Chunk{Item: 3, Offset: uint64(len(data)), RawLen: 8192, RawCRC: 0xdeadbeef, Codec: CodecXZ,
		Path: "base/1/112", Data: []byte("\xfd7zXZ\x00 not really xz")}
	add(sw.WriteChunk(cz), TypeChunk, cz)
	o := Outcome{Item: 3, Status: Stored, Offset: 8192, Length: 1 << 20, Final: true, Stored: uint64(len(data)) + 8192, Path: "base/1/112"}
	add(sw.WriteOutcome(o), TypeOutcome, o)
	ov := Outcome{Item: 4, Status: Vanished, Length: 77, Stored: 0, Path: "base/1/\xff\x00gone"}
	add(sw.WriteOutcome(ov), TypeOutcome, ov)
	w := Written{Item: 5, Offset: 1 << 30, Length: 8192, CRC: 0xcafef00d, Path: "base/1/\xe9t\xe9"}
	add(sw.WriteWritten(w), TypeWritten, w)
	st := Stats{Fetched: 1 << 40, Reused: 3 << 20, Refetched: 7, Retries: 2, FetchedKind: [4]uint64{1, 2, 3, 4}, ReusedKind: [4]uint64{5, 6, 7, 1 << 33}}
	add(sw.WriteStats(st), TypeStats, st)
	add(sw.WriteTrailer(4, testID), TypeTrailer, trailer{4, testID})
	e := BackupEnd{StopLSN: 0x3000100, StopTimeline: 1, BackupLabel: []byte("START WAL LOCATION: 0/3000028\n"),
		TablespaceMap: []byte("16384 /srv/ts1\n")}
	add(sw.WriteBackupEnd(e), TypeBackupEnd, e)
	// zero values of everything
	add(sw.WriteBackupStart(BackupStart{}), TypeBackupStart, BackupStart{})
	add(sw.WriteDir(0, ""), TypeDir, itemPath{0, ""})
	add(sw.WriteLink(^uint64(0), ""), TypeLink, itemPath{^uint64(0), ""})
	add(sw.WriteChunk(Chunk{}), TypeChunk, Chunk{})
	add(sw.WriteOutcome(Outcome{}), TypeOutcome, Outcome{})
	add(sw.WriteWritten(Written{}), TypeWritten, Written{})
	add(sw.WriteStats(Stats{}), TypeStats, Stats{})
	add(sw.WriteTrailer(0, ""), TypeTrailer, trailer{0, ""})
	add(sw.WriteBackupEnd(BackupEnd{}), TypeBackupEnd, BackupEnd{})
	add(sw.Close(), TypeEnd, end{uint64(len(ws))})
	return ws
}

type got struct {
	rec Record // Body and Raw copied
	v   any
}

// readAll reads in to the end, decoding every record. It fails the test on a panic or a reader that does not
// stop.
func readAll(t testing.TB, in []byte) (recs []got, err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("panic reading %d bytes: %v", len(in), p)
		}
	}()
	rd := NewReader(bytes.NewReader(in), "test")
	for i := 0; ; i++ {
		if i > len(in)+1 {
			t.Fatalf("reader returned more records than there are bytes")
		}
		rec, err := rd.Next()
		if err != nil {
			return recs, err
		}
		v, derr := decode(rec)
		if derr != nil {
			v = derr
		}
		r := *rec
		r.Body, r.Raw = bytes.Clone(rec.Body), bytes.Clone(rec.Raw)
		recs = append(recs, got{r, v})
	}
}

// mustRead reads a stream that must be good and returns its records.
func mustRead(t testing.TB, in []byte) []got {
	t.Helper()
	recs, err := readAll(t, in)
	if err != io.EOF {
		t.Fatalf("read good stream: %v (after %d records)", err, len(recs))
	}
	return recs
}

// byProducer groups records by producer, keeping their order.
func byProducer(recs []got) map[uint64][]got {
	m := map[uint64][]got{}
	for _, r := range recs {
		m[r.rec.Producer] = append(m[r.rec.Producer], r)
	}
	return m
}

// checkProducer checks one producer's records against what was written.
func checkProducer(t *testing.T, recs []got, ws []want) {
	t.Helper()
	if len(recs) != len(ws) {
		t.Fatalf("read %d records, wrote %d", len(recs), len(ws))
	}
	for i, r := range recs {
		if r.rec.Type != ws[i].typ {
			t.Errorf("record %d: type %q, want %q", i, r.rec.Type, ws[i].typ)
		}
		if r.rec.Num != uint64(i) {
			t.Errorf("record %d: number %d", i, r.rec.Num)
		}
		if r.rec.Producer != recs[0].rec.Producer {
			t.Errorf("record %d: producer %x, want %x", i, r.rec.Producer, recs[0].rec.Producer)
		}
		if err, ok := r.v.(error); ok {
			t.Errorf("record %d (%q): decode: %v", i, r.rec.Type, err)
			continue
		}
		if g, w := normalize(r.v), normalize(ws[i].v); !reflect.DeepEqual(g, w) {
			t.Errorf("record %d (%q): decoded %+v, want %+v", i, r.rec.Type, g, w)
		}
		if !bytes.Equal(r.rec.Raw[headerSize:len(r.rec.Raw)-4], r.rec.Body) {
			t.Errorf("record %d: Body is not the body in Raw", i)
		}
	}
}

func TestRoundTripEveryRecordType(t *testing.T) {
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "pgbb-fetch", testID)
	if err != nil {
		t.Fatal(err)
	}
	ws := writeEveryType(t, sw, "pgbb-fetch", 1)
	in := buf.Bytes()
	if !bytes.Equal(in[:8], Magic[:]) || binary.BigEndian.Uint16(in[8:]) != Version || binary.BigEndian.Uint16(in[10:]) != 0 {
		t.Fatalf("prelude % x", in[:12])
	}
	recs := mustRead(t, in)
	checkProducer(t, recs, ws)
	// Raw records put back together are the stream after the prelude.
	var raw []byte
	for _, r := range recs {
		raw = append(raw, r.rec.Raw...)
	}
	if !bytes.Equal(raw, in[12:]) {
		t.Fatal("Raw of the records does not add up to the stream")
	}
	// The writer frames records as the spec says: framing them by hand gives the same bytes.
	for i, r := range recs {
		if h := mkRecord(r.rec.Type, r.rec.Producer, r.rec.Num, r.rec.Body); !bytes.Equal(h, r.rec.Raw) {
			t.Errorf("record %d: written % x, by the spec % x", i, r.rec.Raw, h)
		}
	}
}

func TestRoundTripLargestChunk(t *testing.T) {
	data := make([]byte, MaxChunk)
	rand.New(rand.NewSource(1)).Read(data)
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "p", testID)
	if err != nil {
		t.Fatal(err)
	}
	c := Chunk{Item: 1, RawLen: MaxChunk, RawCRC: crc32c.Checksum(data), Path: "base/1/1", Data: data}
	if err := sw.WriteChunk(c); err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	recs := mustRead(t, buf.Bytes())
	if len(recs) != 3 {
		t.Fatalf("%d records", len(recs))
	}
	gc, ok := recs[1].v.(Chunk)
	if !ok || !bytes.Equal(gc.Data, data) || gc.RawCRC != crc32c.Checksum(gc.Data) {
		t.Fatalf("largest chunk did not round trip: %v", recs[1].v)
	}
}

func TestWriterLimits(t *testing.T) {
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "p", testID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.WriteChunk(Chunk{Item: 1, RawLen: MaxChunk + 1}); err == nil {
		t.Error("WriteChunk accepted a chunk above MaxChunk")
	}
	if err := sw.WriteBackupEnd(BackupEnd{BackupLabel: make([]byte, MaxBody)}); err == nil {
		t.Error("WriteBackupEnd accepted a body above MaxBody")
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sw.WriteDir(1, "base"); err == nil {
		t.Error("write after Close accepted")
	}
	if err := sw.Close(); err == nil {
		t.Error("second Close accepted")
	}
	// The refused records left no trace: the stream is B, Z.
	recs := mustRead(t, buf.Bytes())
	if len(recs) != 2 || recs[1].v != (end{1}) {
		t.Fatalf("stream after refused writes: %d records", len(recs))
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after <= 0 {
		return 0, errors.New("disk full")
	}
	f.after--
	return len(p), nil
}

func TestWriterStickyError(t *testing.T) {
	if _, err := NewWriter(&failWriter{0}, "p", testID); err == nil {
		t.Error("NewWriter ignored a failed prelude write")
	}
	if _, err := NewWriter(&failWriter{1}, "p", testID); err == nil {
		t.Error("NewWriter ignored a failed B write")
	}
	sw, err := NewWriter(&failWriter{3}, "p", testID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.WriteDir(1, "a"); err != nil {
		t.Fatal(err)
	}
	if err := sw.WriteDir(2, "b"); err == nil {
		t.Fatal("write error lost")
	}
	if err := sw.Close(); err == nil {
		t.Fatal("write error not sticky")
	}
	if err := sw.WriteRaw([]byte{1}); err == nil {
		t.Fatal("write error not sticky for WriteRaw")
	}
}

func TestSeveralStreamsBackToBack(t *testing.T) {
	var in []byte
	wants := map[string][]want{}
	for i := 0; i < 3; i++ {
		var buf bytes.Buffer
		name := fmt.Sprintf("fetch-%d", i)
		sw, err := NewWriter(&buf, name, testID)
		if err != nil {
			t.Fatal(err)
		}
		wants[name] = writeEveryType(t, sw, name, i)
		in = append(in, buf.Bytes()...)
	}
	// a minimal stream (B, Z) too
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "empty", testID)
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	wants["empty"] = []want{{TypeBegin, begin{"empty", testID}}, {TypeEnd, end{1}}}
	in = append(in, buf.Bytes()...)

	recs := mustRead(t, in)
	groups := byProducer(recs)
	if len(groups) != len(wants) {
		t.Fatalf("%d producers, want %d", len(groups), len(wants))
	}
	for _, g := range groups {
		name := g[0].v.(begin).Producer
		t.Run(name, func(t *testing.T) { checkProducer(t, g, wants[name]) })
	}
	// back to back means one after the other: no interleaving
	for i := 1; i < len(recs); i++ {
		if recs[i].rec.Producer != recs[i-1].rec.Producer && recs[i].rec.Type != TypeBegin {
			t.Fatalf("record %d changes producer without a B", i)
		}
	}
}

func TestTwoProducersInterleaved(t *testing.T) {
	var buf bytes.Buffer
	a, err := NewWriter(&buf, "pgbb-xlog", testID)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewWriter(&buf, "pgbb-fetch", testID)
	if err != nil {
		t.Fatal(err)
	}
	wa := []want{{TypeBegin, begin{"pgbb-xlog", testID}}}
	wb := []want{{TypeBegin, begin{"pgbb-fetch", testID}}}
	x := BackupStart{BackupID: testID, SystemID: 1, Timeline: 1}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.WriteBackupStart(x))
	wa = append(wa, want{TypeBackupStart, x})
	for i := uint64(1); i <= 20; i++ {
		w, ws := a, &wa
		if i%3 != 0 {
			w, ws = b, &wb
		}
		p := fmt.Sprintf("base/%d", i)
		must(w.WriteDir(i, p))
		*ws = append(*ws, want{TypeDir, itemPath{i, p}})
		if i%5 == 0 {
			c := Chunk{Item: 0, Offset: i, RawLen: 3, RawCRC: crc32c.Checksum([]byte("wal")), Path: "pg_wal/x", Data: []byte("wal")}
			must(a.WriteChunk(c))
			wa = append(wa, want{TypeChunk, c})
		}
	}
	must(b.WriteTrailer(20, testID))
	wb = append(wb, want{TypeTrailer, trailer{20, testID}})
	must(b.Close())
	wb = append(wb, want{TypeEnd, end{uint64(len(wb))}})
	e := BackupEnd{StopLSN: 9, StopTimeline: 1, BackupLabel: []byte("label")}
	must(a.WriteBackupEnd(e))
	wa = append(wa, want{TypeBackupEnd, e})
	must(a.Close())
	wa = append(wa, want{TypeEnd, end{uint64(len(wa))}})

	recs := mustRead(t, buf.Bytes())
	groups := byProducer(recs)
	if len(groups) != 2 {
		t.Fatalf("%d producers", len(groups))
	}
	for _, g := range groups {
		switch g[0].v.(begin).Producer {
		case "pgbb-xlog":
			t.Run("a", func(t *testing.T) { checkProducer(t, g, wa) })
		case "pgbb-fetch":
			t.Run("b", func(t *testing.T) { checkProducer(t, g, wb) })
		}
	}
}

// pgbb-xlog forwards its child's records with WriteRaw between its own.
func TestForwardedRecordsInterleaved(t *testing.T) {
	var child bytes.Buffer
	cw, err := NewWriter(&child, "pgbb-fetch", testID)
	if err != nil {
		t.Fatal(err)
	}
	wc := writeEveryType(t, cw, "pgbb-fetch", 7)

	var out bytes.Buffer
	pw, err := NewWriter(&out, "pgbb-xlog", testID)
	if err != nil {
		t.Fatal(err)
	}
	wp := []want{{TypeBegin, begin{"pgbb-xlog", testID}}}
	rd := NewReader(bytes.NewReader(child.Bytes()), "child")
	for i := uint64(1); ; i++ {
		rec, err := rd.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := pw.WriteRaw(rec.Raw); err != nil {
			t.Fatal(err)
		}
		if err := pw.WriteDir(1000+i, "own"); err != nil {
			t.Fatal(err)
		}
		wp = append(wp, want{TypeDir, itemPath{1000 + i, "own"}})
	}
	if err := pw.Close(); err != nil {
		t.Fatal(err)
	}
	wp = append(wp, want{TypeEnd, end{uint64(len(wp))}})

	groups := byProducer(mustRead(t, out.Bytes()))
	if len(groups) != 2 {
		t.Fatalf("%d producers", len(groups))
	}
	for _, g := range groups {
		if g[0].v.(begin).Producer == "pgbb-xlog" {
			checkProducer(t, g, wp)
		} else {
			checkProducer(t, g, wc)
		}
	}
}

func TestWriterConcurrentUse(t *testing.T) {
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "p", testID)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				data := bytes.Repeat([]byte{byte(g)}, i)
				c := Chunk{Item: uint64(g + 1), Offset: uint64(i), RawLen: uint32(i), RawCRC: crc32c.Checksum(data), Path: "f", Data: data}
				if err := sw.WriteChunk(c); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	recs := mustRead(t, buf.Bytes())
	if len(recs) != 2+8*200 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs[1 : len(recs)-1] {
		c := r.v.(Chunk)
		if len(c.Data) != int(c.Offset) || (len(c.Data) > 0 && c.Data[0] != byte(c.Item-1)) {
			t.Fatalf("chunk mixed up: %+v", c)
		}
	}
}

// Decoding: a record with good framing but a body that does not fit its layout is refused by its decode
// method, never read past its end.
func TestDecodeRejectsBadBodies(t *testing.T) {
	u16 := func(v uint16) []byte { return binary.BigEndian.AppendUint16(nil, v) }
	u32 := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	u64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	cat := func(p ...[]byte) body { return body(bytes.Join(p, nil)) }
	str := func(s string) []byte { return append(u16(uint16(len(s))), s...) }
	xHead := cat(str(testID), u64(1), u32(1), u64(2), u32(3), u32(4), u32(5), str("label"))
	chunkHead := func(rawLen uint32, codec byte) []byte {
		return cat(u64(1), u64(0), u32(rawLen), u32(0), []byte{codec}, str("p"))
	}
	tests := []struct {
		name string
		typ  byte
		body body
		want string
	}{
		{"B empty", TypeBegin, nil, "cut short"},
		{"B one string", TypeBegin, cat(str("p")), "cut short"},
		{"B string longer than body", TypeBegin, cat(str("p"), u16(10), []byte("abc")), "cut short"},
		{"B extra byte", TypeBegin, cat(str("p"), str(testID), []byte{0}), "unexpected bytes"},
		{"X no tablespace count", TypeBackupStart, xHead, "cut short"},
		{"X too many tablespaces", TypeBackupStart, cat(xHead, u32(65536)), "too many tablespaces"},
		{"X huge tablespace count", TypeBackupStart, cat(xHead, u32(0xffffffff)), "too many tablespaces"},
		{"X fewer tablespaces than counted", TypeBackupStart, cat(xHead, u32(2), u32(1), str("/a")), "cut short"},
		{"X extra byte", TypeBackupStart, cat(xHead, u32(0), []byte{0}), "unexpected bytes"},
		{"D no path", TypeDir, cat(u64(1)), "cut short"},
		{"D short item", TypeDir, cat(u32(1)), "cut short"},
		{"L extra bytes", TypeLink, cat(u64(1), str("pg_tblspc/1"), u32(0)), "unexpected bytes"},
		{"C cut in header", TypeChunk, cat(u64(1), u64(0), u32(1)), "cut short"},
		{"C fewer bytes than raw length", TypeChunk, cat(chunkHead(4, CodecNone), []byte("abc")), "header says 4"},
		{"C more bytes than raw length", TypeChunk, cat(chunkHead(2, CodecNone), []byte("abc")), "header says 2"},
		{"C raw length above limit", TypeChunk, cat(chunkHead(MaxChunk+1, CodecXZ), []byte("abc")), "exceeds the limit"},
		{"C unknown codec", TypeChunk, cat(chunkHead(3, 3), []byte("abc")), "unknown codec"},
		{"O unknown status", TypeOutcome, cat(u64(1), []byte{2}, u64(0), u64(0), []byte{1}, u64(0), str("p")), "unknown outcome status"},
		{"O bad final flag", TypeOutcome, cat(u64(1), []byte{0}, u64(0), u64(0), []byte{2}, u64(0), str("p")), "bad final flag"},
		{"O stores more than its range", TypeOutcome, cat(u64(1), []byte{0}, u64(0), u64(5), []byte{1}, u64(6), str("p")), "6 bytes of a 5-byte range"},
		{"O cut short", TypeOutcome, cat(u64(1), []byte{0}, u64(0)), "cut short"},
		{"O extra byte", TypeOutcome, cat(u64(1), []byte{1}, u64(0), u64(0), []byte{1}, u64(0), str("p"), []byte{0}), "unexpected bytes"},
		{"T cut short", TypeTrailer, cat(u64(1)), "cut short"},
		{"T extra byte", TypeTrailer, cat(u64(1), str(testID), []byte{0}), "unexpected bytes"},
		{"E blob longer than limit", TypeBackupEnd, cat(u64(1), u32(1), u32(MaxBody+1)), "blob too long"},
		{"E blob longer than body", TypeBackupEnd, cat(u64(1), u32(1), u32(10), []byte("abc")), "cut short"},
		{"E no tablespace map", TypeBackupEnd, cat(u64(1), u32(1), u32(3), []byte("abc")), "cut short"},
		{"E extra byte", TypeBackupEnd, cat(u64(1), u32(1), u32(0), u32(0), []byte{0}), "unexpected bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var bodies []body
			if tc.typ != TypeBegin {
				bodies = append(bodies, cat(str("p"), str(testID)))
			}
			bodies = append(bodies, tc.body)
			in := append(bytes.Clone(Magic[:]), 0, 1, 0, 0)
			for i, b := range bodies {
				typ := TypeBegin
				if i > 0 {
					typ = tc.typ
				}
				in = append(in, mkRecord(typ, 7, uint64(i), b)...)
			}
			in = append(in, mkRecord(TypeEnd, 7, uint64(len(bodies)), cat(u64(uint64(len(bodies)))))...)
			recs := mustRead(t, in) // framing is fine
			bad := recs[len(recs)-2]
			err, _ := bad.v.(error)
			if bad.rec.Type != tc.typ || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("decode %q: %v, want an error mentioning %q", bad.rec.Type, bad.v, tc.want)
			}
		})
	}
}

// mkRecord frames a record by hand, after the layout of docs/chunk-stream.md.
func mkRecord(typ byte, producer, num uint64, b []byte) []byte {
	r := binary.BigEndian.AppendUint32(nil, uint32(len(b)))
	r = append(r, typ, 0, 0, 0)
	r = binary.BigEndian.AppendUint64(r, producer)
	r = binary.BigEndian.AppendUint64(r, num)
	r = append(r, b...)
	return binary.BigEndian.AppendUint32(r, crc32c.Checksum(r))
}

// --- tampering ---

// segment is a prelude or a record of a raw stream.
type segment struct {
	prelude bool
	b       []byte
}

// split cuts a good stream into preludes and records using the layout of docs/chunk-stream.md.
func split(t testing.TB, in []byte) []segment {
	t.Helper()
	var segs []segment
	for p := 0; p < len(in); {
		if in[p] == Magic[0] {
			segs = append(segs, segment{true, bytes.Clone(in[p : p+12])})
			p += 12
			continue
		}
		n := int(binary.BigEndian.Uint32(in[p:]))
		total := headerSize + n + 4
		if p+total > len(in) {
			t.Fatalf("split: record at %d runs past the end", p)
		}
		segs = append(segs, segment{false, bytes.Clone(in[p : p+total])})
		p += total
	}
	return segs
}

func join(segs []segment) []byte {
	var b []byte
	for _, s := range segs {
		b = append(b, s.b...)
	}
	return b
}

// reseal recomputes a record's CRC after the test changed it.
func reseal(rec []byte) []byte {
	n := len(rec) - 4
	binary.BigEndian.PutUint32(rec[n:], crc32c.Checksum(rec[:n]))
	return rec
}

// setBody replaces a record's body, fixing the length and the CRC.
func setBody(rec []byte, b []byte) []byte {
	r := append(bytes.Clone(rec[:headerSize]), b...)
	binary.BigEndian.PutUint32(r, uint32(len(b)))
	return reseal(append(r, 0, 0, 0, 0))
}

func num(rec []byte) uint64 { return binary.BigEndian.Uint64(rec[16:]) }

func setNum(rec []byte, n uint64) []byte {
	r := bytes.Clone(rec)
	binary.BigEndian.PutUint64(r[16:], n)
	return reseal(r)
}

// smallStream is one producer's stream holding every record type once, kept small so that the loops over
// every offset stay fast.
func smallStream(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	sw, err := NewWriter(&buf, "f", "id-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		sw.WriteBackupStart(BackupStart{BackupID: "id-1", SystemID: 1, Timeline: 1, Label: "l", Tablespaces: []Tablespace{{1, "/t"}}}),
		sw.WriteDir(1, "base"),
		sw.WriteLink(2, "pg_tblspc/1"),
		sw.WriteChunk(Chunk{Item: 3, RawLen: 3, RawCRC: crc32c.Checksum([]byte("abc")), Path: "f", Data: []byte("abc")}),
		sw.WriteOutcome(Outcome{Item: 3, Stored: 3, Path: "f"}),
		sw.WriteTrailer(3, "id-1"),
		sw.WriteBackupEnd(BackupEnd{StopLSN: 2, StopTimeline: 1, BackupLabel: []byte("b"), TablespaceMap: []byte("t")}),
		sw.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// interleavedStream is two producers' small streams interleaved record by record.
func interleavedStream(t testing.TB) []byte {
	t.Helper()
	a, b := split(t, smallStream(t)), split(t, smallStream(t))
	// one prelude, then both producers' records alternating, as pgbb-xlog forwards them (it drops the
	// child's prelude): a prelude directly followed by another is refused as a cut stream
	segs := []segment{a[0]}
	for i := 1; i < len(a); i++ {
		segs = append(segs, a[i], b[i])
	}
	return join(segs)
}

// barePreludes reports whether b is one or more whole preludes and nothing else.
func barePreludes(b []byte) bool {
	if len(b) == 0 || len(b)%12 != 0 {
		return false
	}
	for p := 0; p < len(b); p += 12 {
		if !bytes.Equal(b[p:p+8], Magic[:]) {
			return false
		}
	}
	return true
}

// mustFail reads in and requires an error that is not io.EOF, and no panic.
func mustFail(t *testing.T, what string, in []byte) {
	t.Helper()
	recs, err := readAll(t, in)
	if err == nil || errors.Is(err, io.EOF) {
		t.Fatalf("%s: read %d records and got %v, want an error", what, len(recs), err)
	}
	if !strings.HasPrefix(err.Error(), "test: offset ") {
		t.Fatalf("%s: error %q does not name the input and offset", what, err)
	}
}

func TestGoodStreamsReadCleanly(t *testing.T) {
	s := smallStream(t)
	mustRead(t, s)
	mustRead(t, interleavedStream(t))
	mustRead(t, append(bytes.Clone(s), smallStream(t)...))
	// Records of different producers may be interleaved in any order: swapping neighbours of two producers
	// is still a good stream.
	segs := split(t, interleavedStream(t))
	for i := 1; i+1 < len(segs); i += 2 {
		sw := append([]segment(nil), segs...)
		sw[i], sw[i+1] = sw[i+1], sw[i]
		if sw[i].prelude || sw[i+1].prelude {
			continue
		}
		mustRead(t, join(sw))
	}
}

func TestTamperFlipEveryByte(t *testing.T) {
	for name, s := range map[string][]byte{"one producer": smallStream(t), "interleaved": interleavedStream(t)} {
		t.Run(name, func(t *testing.T) {
			for off := range s {
				for _, mask := range []byte{0x01, 0x80, 0xff} {
					b := bytes.Clone(s)
					b[off] ^= mask
					mustFail(t, fmt.Sprintf("byte %d ^ 0x%02x", off, mask), b)
				}
			}
		})
	}
}

func TestTamperTruncateEveryOffset(t *testing.T) {
	for name, s := range map[string][]byte{"one producer": smallStream(t), "interleaved": interleavedStream(t)} {
		for cut := 0; cut < len(s); cut++ {
			if barePreludes(s[:cut]) {
				continue // see TestKnownBugBarePreludeIsAcceptedAsAStream
			}
			mustFail(t, fmt.Sprintf("%s: cut at %d of %d", name, cut, len(s)), s[:cut])
		}
	}
}

func TestTamperTrailingGarbage(t *testing.T) {
	s := smallStream(t)
	first := split(t, s)[1].b
	tail := map[string][]byte{
		"lone zero byte":       {0},
		"lone 0x89":            {0x89},
		"zero header":          make([]byte, headerSize),
		"zero record":          reseal(make([]byte, headerSize+4)),
		"newline":              {'\n'},
		"prelude of version 2": append(bytes.Clone(Magic[:]), 0, 2, 0, 0),
		"bad magic":            []byte("\x89PNG\r\n\x1a\n\x00\x01\x00\x00"),
		"header of a record":   s[12 : 12+headerSize],
		"record without CRC":   first[:len(first)-4],
	}
	for k := 1; k < 12; k++ {
		pre := append(bytes.Clone(Magic[:]), 0, 1, 0, 0)
		tail[fmt.Sprintf("partial prelude of %d bytes", k)] = pre[:k]
	}
	rng := rand.New(rand.NewSource(42))
	for i := 0; i < 50; i++ {
		b := make([]byte, 1+rng.Intn(100))
		rng.Read(b)
		tail[fmt.Sprintf("random %d", i)] = b
	}
	for name, g := range tail {
		mustFail(t, name, append(bytes.Clone(s), g...))
	}
	// A complete prelude followed by a partial record.
	next := smallStream(t)
	for k := 13; k < len(next)-1; k += 7 {
		mustFail(t, fmt.Sprintf("next stream cut at %d", k), append(bytes.Clone(s), next[:k]...))
	}
}

func TestTamperDropRecord(t *testing.T) {
	segs := split(t, smallStream(t))
	for i := range segs {
		d := append(append([]segment(nil), segs[:i]...), segs[i+1:]...)
		mustFail(t, fmt.Sprintf("drop segment %d", i), join(d))
	}
	// Dropped, later records renumbered with good CRCs: the Z count still gives it away.
	for i := 2; i < len(segs)-1; i++ {
		var d []segment
		for j, s := range segs {
			switch {
			case j == i:
			case j > i:
				d = append(d, segment{false, setNum(s.b, num(s.b)-1)})
			default:
				d = append(d, s)
			}
		}
		mustFail(t, fmt.Sprintf("drop record %d and renumber", i), join(d))
	}
}

func TestTamperDuplicateRecord(t *testing.T) {
	segs := split(t, smallStream(t))
	for i := 1; i < len(segs); i++ {
		for _, at := range []int{i, i + 1, len(segs)} { // before itself, after itself, at the end
			d := append([]segment(nil), segs[:at]...)
			d = append(d, segs[i])
			d = append(d, segs[at:]...)
			mustFail(t, fmt.Sprintf("record %d again at %d", i, at), join(d))
		}
	}
	// The whole stream twice (same producer id).
	s := smallStream(t)
	mustFail(t, "stream twice", append(bytes.Clone(s), s...))
	mustFail(t, "stream twice, second without prelude", append(bytes.Clone(s), s[12:]...))
}

func TestTamperSwapRecords(t *testing.T) {
	segs := split(t, smallStream(t))
	for i := 0; i < len(segs); i++ {
		for j := i + 1; j < len(segs); j++ {
			d := append([]segment(nil), segs...)
			d[i], d[j] = d[j], d[i]
			mustFail(t, fmt.Sprintf("swap %d and %d", i, j), join(d))
		}
	}
	// Swapping two records of one producer in an interleaved stream.
	segs = split(t, interleavedStream(t))
	for i := 2; i+2 < len(segs); i++ {
		d := append([]segment(nil), segs...)
		d[i], d[i+2] = d[i+2], d[i]
		mustFail(t, fmt.Sprintf("interleaved, swap %d and %d", i, i+2), join(d))
	}
}

func TestTamperHeaderFields(t *testing.T) {
	s := smallStream(t)
	segs := split(t, s)
	recIdx := []int{}
	for i, sg := range segs {
		if !sg.prelude {
			recIdx = append(recIdx, i)
		}
	}
	with := func(i int, f func(r []byte) []byte) []byte {
		d := append([]segment(nil), segs...)
		d[i] = segment{false, f(bytes.Clone(segs[i].b))}
		return join(d)
	}
	for _, i := range recIdx {
		i := i
		cases := map[string]func(r []byte) []byte{
			"length MaxBody+1":  func(r []byte) []byte { binary.BigEndian.PutUint32(r, MaxBody+1); return r },
			"length 0xffffffff": func(r []byte) []byte { binary.BigEndian.PutUint32(r, 0xffffffff); return r },
			"length 0x7fffffff": func(r []byte) []byte { binary.BigEndian.PutUint32(r, 0x7fffffff); return r },
			"length MaxBody, not that many bytes": func(r []byte) []byte {
				binary.BigEndian.PutUint32(r, MaxBody)
				return reseal(r)
			},
			"length one more, resealed": func(r []byte) []byte {
				binary.BigEndian.PutUint32(r, binary.BigEndian.Uint32(r)+1)
				return reseal(r)
			},
			"type unknown Q":     func(r []byte) []byte { r[4] = 'Q'; return reseal(r) },
			"type zero":          func(r []byte) []byte { r[4] = 0; return reseal(r) },
			"type lowercase":     func(r []byte) []byte { r[4] |= 0x20; return reseal(r) },
			"flags 1":            func(r []byte) []byte { r[5] = 1; return reseal(r) },
			"flags 0x80":         func(r []byte) []byte { r[5] = 0x80; return reseal(r) },
			"reserved high":      func(r []byte) []byte { r[6] = 1; return reseal(r) },
			"reserved low":       func(r []byte) []byte { r[7] = 0x80; return reseal(r) },
			"other producer":     func(r []byte) []byte { r[8] ^= 1; return reseal(r) },
			"number plus one":    func(r []byte) []byte { return setNum(r, num(r)+1) },
			"number minus one":   func(r []byte) []byte { return setNum(r, num(r)-1) },
			"number huge":        func(r []byte) []byte { return setNum(r, ^uint64(0)) },
			"CRC off by one bit": func(r []byte) []byte { r[len(r)-1] ^= 1; return r },
			"CRC zero":           func(r []byte) []byte { binary.BigEndian.PutUint32(r[len(r)-4:], 0); return r },
		}
		for name, f := range cases {
			mustFail(t, fmt.Sprintf("record %d: %s", i, name), with(i, f))
		}
	}
	last := recIdx[len(recIdx)-1] // Z
	zcases := map[string]func(r []byte) []byte{
		"Z count wrong":   func(r []byte) []byte { return setBody(r, binary.BigEndian.AppendUint64(nil, num(r)+1)) },
		"Z count zero":    func(r []byte) []byte { return setBody(r, make([]byte, 8)) },
		"Z body short":    func(r []byte) []byte { return setBody(r, binary.BigEndian.AppendUint32(nil, uint32(num(r)))) },
		"Z body empty":    func(r []byte) []byte { return setBody(r, nil) },
		"Z body too long": func(r []byte) []byte { return setBody(r, append(binary.BigEndian.AppendUint64(nil, num(r)), 0)) },
	}
	for name, f := range zcases {
		mustFail(t, name, with(last, f))
	}
	mustFail(t, "B numbered 1", with(recIdx[0], func(r []byte) []byte { return setNum(r, 1) }))

	// Records added with good CRCs and fitting numbers.
	b := segs[recIdx[0]].b
	d := segs[recIdx[1]].b
	z := segs[last].b
	mustFail(t, "second B", join(append(append([]segment(nil), segs[:2]...), append([]segment{{false, setNum(b, 1)}}, segs[2:]...)...)))
	mustFail(t, "record after Z", append(bytes.Clone(s), setNum(d, num(z)+1)...))
	mustFail(t, "Z after Z", append(bytes.Clone(s), setBody(setNum(z, num(z)+1), binary.BigEndian.AppendUint64(nil, num(z)+1))...))
	mustFail(t, "B after Z", append(bytes.Clone(s), b...))
	zOnly := setNum(z, 0)
	zOnly = setBody(zOnly, make([]byte, 8))
	mustFail(t, "producer that starts with Z", append(bytes.Clone(s[:12]), zOnly...))
}

func TestTamperPrelude(t *testing.T) {
	s := smallStream(t)
	pre := func(f func(p []byte)) []byte {
		b := bytes.Clone(s)
		f(b[:12])
		return b
	}
	cases := map[string][]byte{
		"empty input":          {},
		"version 2":            pre(func(p []byte) { binary.BigEndian.PutUint16(p[8:], 2) }),
		"version 0":            pre(func(p []byte) { binary.BigEndian.PutUint16(p[8:], 0) }),
		"version 0x0101":       pre(func(p []byte) { binary.BigEndian.PutUint16(p[8:], 0x0101) }),
		"flags 1":              pre(func(p []byte) { binary.BigEndian.PutUint16(p[10:], 1) }),
		"flags 0x8000":         pre(func(p []byte) { binary.BigEndian.PutUint16(p[10:], 0x8000) }),
		"magic CR LF as LF":    pre(func(p []byte) { p[5] = '\n' }),
		"no prelude":           s[12:],
		"prelude only partly":  s[:11],
		"second prelude bad":   append(bytes.Clone(s), pre(func(p []byte) { binary.BigEndian.PutUint16(p[8:], 2) })...),
		"prelude twice, flags": append(bytes.Clone(s[:12]), pre(func(p []byte) { p[11] = 1 })...),
	}
	for name, in := range cases {
		mustFail(t, name, in)
	}
}

// A prelude with no record after it (a stream cut right after its prelude, or an extra prelude after the
// last record) is an error: docs/chunk-stream.md says a cut at any offset is one, and bytes after the last
// record that are not a complete stream are rejected.
func TestBarePreludeIsRejected(t *testing.T) {
	s := smallStream(t)
	mustFail(t, "cut right after the prelude", s[:12])
	mustFail(t, "prelude after the last record", append(bytes.Clone(s), s[:12]...))
	mustFail(t, "next stream cut right after its prelude", append(bytes.Clone(s), smallStream(t)[:12]...))
}

// --- fuzzing ---

// encode builds the body of a decoded value again, for the round-trip check of FuzzReader.
func encode(v any) body {
	var b body
	switch x := v.(type) {
	case begin:
		b.str(x.Producer)
		b.str(x.BackupID)
	case BackupStart:
		b.str(x.BackupID)
		b.u64(x.SystemID)
		b.u32(x.Timeline)
		b.u64(x.StartLSN)
		b.u32(x.WALSegmentSize)
		b.u32(x.ServerVersion)
		b.u32(x.DirMode)
		b.str(x.Label)
		b.u32(uint32(len(x.Tablespaces)))
		for _, t := range x.Tablespaces {
			b.u32(t.OID)
			b.str(t.Location)
		}
	case itemPath:
		b.u64(x.Item)
		b.str(x.Path)
	case Chunk:
		b.u64(x.Item)
		b.u64(x.Offset)
		b.u32(x.RawLen)
		b.u32(x.RawCRC)
		b.u8(x.Codec)
		b.str(x.Path)
		b = append(b, x.Data...)
	case Outcome:
		b.u64(x.Item)
		b.u8(x.Status)
		b.u64(x.Stored)
		b.str(x.Path)
	case Written:
		b.u64(x.Item)
		b.u64(x.Offset)
		b.u32(x.Length)
		b.u32(x.CRC)
		b.str(x.Path)
	case trailer:
		b.u64(x.Count)
		b.str(x.BackupID)
	case BackupEnd:
		b.u64(x.StopLSN)
		b.u32(x.StopTimeline)
		b.blob(x.BackupLabel)
		b.blob(x.TablespaceMap)
	case end:
		b.u64(x.Count)
	}
	return b
}

func FuzzReader(f *testing.F) {
	s := smallStream(f)
	f.Add(s)
	f.Add(interleavedStream(f))
	f.Add(append(bytes.Clone(s), smallStream(f)...))
	f.Add(s[:len(s)-1])
	f.Add(s[:12])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		rd := NewReader(bytes.NewReader(in), "fuzz")
		type state struct {
			next  uint64
			ended bool
		}
		producers := map[uint64]*state{}
		for i := 0; ; i++ {
			if i > len(in) {
				t.Fatal("more records than bytes")
			}
			rec, err := rd.Next()
			if err != nil {
				if err != io.EOF {
					return
				}
				break
			}
			// Framing of an accepted record.
			raw := rec.Raw
			if len(raw) != headerSize+len(rec.Body)+4 || int(binary.BigEndian.Uint32(raw)) != len(rec.Body) ||
				crc32c.Checksum(raw[:len(raw)-4]) != binary.BigEndian.Uint32(raw[len(raw)-4:]) ||
				raw[4] != rec.Type || raw[5] != 0 || raw[6] != 0 || raw[7] != 0 || len(rec.Body) > MaxBody {
				t.Fatalf("accepted a badly framed record % x", raw[:min(len(raw), 64)])
			}
			// Numbering, checked independently of the reader.
			st := producers[rec.Producer]
			switch {
			case st == nil && (rec.Type != TypeBegin || rec.Num != 0):
				t.Fatalf("accepted %q record %d of a producer without B", rec.Type, rec.Num)
			case st == nil:
				st = &state{}
				producers[rec.Producer] = st
			case st.ended:
				t.Fatalf("accepted a record after Z")
			case rec.Type == TypeBegin:
				t.Fatalf("accepted a second B")
			}
			if rec.Num != st.next {
				t.Fatalf("accepted record %d where %d was due", rec.Num, st.next)
			}
			st.next++
			// Every record decodes without panicking, and what decodes re-encodes to the same body.
			v, err := decode(rec)
			if err == nil && !bytes.Equal(encode(v), rec.Body) {
				t.Fatalf("%q record decodes to %+v, which encodes differently", rec.Type, v)
			}
			if rec.Type == TypeEnd {
				if err != nil || v.(end).Count != rec.Num {
					t.Fatalf("accepted Z %d with body %v, %v", rec.Num, v, err)
				}
				st.ended = true
			}
		}
		for p, st := range producers {
			if !st.ended {
				t.Fatalf("io.EOF with producer %x open", p)
			}
		}
	})
}

// The Writer is safe for concurrent use, Close included: a write racing Close lands before Z, whose count
// then includes it, or fails with "write after close"; the stream stays readable.
func TestCloseRacingWritesKeepsTheStreamReadable(t *testing.T) {
	for iter := 0; iter < 2000; iter++ {
		var buf bytes.Buffer
		sw, err := NewWriter(&buf, "p", testID)
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := 0; g < 4; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i := 0; i < 50; i++ {
					if sw.WriteDir(1, "x") != nil {
						return // after Close: fine
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := sw.Close(); err != nil {
				t.Error(err)
			}
		}()
		close(start)
		wg.Wait()
		if recs, err := readAll(t, buf.Bytes()); err != io.EOF {
			t.Fatalf("iteration %d: read %d records, then %v", iter, len(recs), err)
		}
	}
}
