package pack

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/pgbb/pgbb/internal/resume"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/verify"
	"github.com/pgbb/pgbb/internal/wal"
)

// The synthetic cluster every stream here describes.
const (
	tsOID    = 16384
	tsLink   = "pg_tblspc/16384"
	tsDir    = "pg_tblspc/16384/PG_15_202209061"
	startLSN = 0x1000028
	stopLSN  = 0x1000100
	segSize  = 1 << 20
)

// walSegName is the segment holding startLSN (and stopLSN-1) with 1 MiB segments: 0x1000028 / 1 MiB = 16.
var walSegName = wal.SegmentOf(startLSN, 1, segSize).Name()

// fitem is one work item of the fetcher's stream: a directory, a tablespace link or one range of a file.
type fitem struct {
	kind   byte // 'd', 'l', or 'f' for a file range
	path   string
	off    uint64   // first byte of the range
	chunks [][]byte // the range's data, one chunk each, written at consecutive offsets from off
	length int64    // the range's length; -1: the sum of the chunks
	final  bool
	status byte

	// tampering hooks
	chunkOffs []uint64                              // when set, the offset of each chunk instead of consecutive ones
	chunkPath string                                // when set, the path the chunks carry instead of path
	drop      map[int]bool                          // chunks not written
	outcome   func(o *chunkstream.Outcome)          // edits the outcome before it is written
	after     func(b *builder, n uint64, it *fitem) // more records after the item's own
}

func dirItem(p string) *fitem  { return &fitem{kind: 'd', path: p} }
func linkItem(p string) *fitem { return &fitem{kind: 'l', path: p} }
func fileItem(p string, off uint64, final bool, chunks ...[]byte) *fitem {
	return &fitem{kind: 'f', path: p, off: off, chunks: chunks, length: -1, final: final}
}

// pattern returns n bytes that differ with seed.
func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed ^ byte(i*7) ^ byte(i>>8)
	}
	return b
}

// streamSpec describes the stream a builder writes; validSpec is a complete, valid backup.
type streamSpec struct {
	xz            bool // every chunk compressed (the tar format requires it): xz, or zstd with zstd set
	zstd          bool
	tsLoc         string
	items         []*fitem
	trailerAdjust int    // the trailer counts len(items)+trailerAdjust items
	fetchID       string // backup id of the fetcher's stream; "" = the backup's
	twoX          bool
	noEnd         bool
	split         bool // build writes pgbb-xlog's stream only; the fetcher's goes to fetchStream
	fetchStream   []byte
	noWAL         bool
	walDamage     func(seg []byte)
}

func validSpec(tsLoc string, xz bool) *streamSpec {
	return &streamSpec{xz: xz, tsLoc: tsLoc, items: []*fitem{
		dirItem("base"), dirItem("base/5"), dirItem("global"), dirItem("pg_tblspc"), dirItem("pg_wal"),
		dirItem("pg_wal/archive_status"),
		linkItem(tsLink),
		dirItem(tsDir), dirItem(tsDir + "/5"),
		fileItem("PG_VERSION", 0, true, []byte("15\n")),
		fileItem("base/5/16384", 0, true, pattern(1, 4096), pattern(2, 4096)),
		fileItem("base/5/16390", 0, false, pattern(3, 8192)),
		fileItem("base/5/16390", 8192, false, pattern(4, 8192)),
		fileItem("base/5/16390", 16384, true, pattern(5, 8192)),
		fileItem(tsDir+"/5/16385", 0, true, pattern(6, 8192)),
		fileItem("global/1262", 0, true), // empty
		{kind: 'f', path: "base/5/99999", length: 8192, final: true, status: chunkstream.Vanished},
	}}
}

// find returns the item at path (and offset).
func (s *streamSpec) find(t *testing.T, path string, off uint64) int {
	for i, it := range s.items {
		if it.path == path && it.off == off {
			return i
		}
	}
	t.Fatalf("no item %s at %d", path, off)
	return -1
}

// add appends an item to the fetcher's list (the trailer follows every item).
func (s *streamSpec) add(it *fitem) { s.items = append(s.items, it) }

var controlImage []byte

func pgControl(t testing.TB) []byte {
	if controlImage == nil {
		b, err := os.ReadFile("../controlfile/testdata/pg_control-15")
		if err != nil {
			t.Fatal(err)
		}
		controlImage = b
	}
	return controlImage
}

func systemID(t testing.TB) uint64 { return binary.LittleEndian.Uint64(pgControl(t)) }

func backupID(t testing.TB) string { return fmt.Sprintf("%d-1-0-1000028-0000abcd", systemID(t)) }

// walSegment returns a whole 1 MiB segment of timeline 1 whose every page carries a valid header (as
// wal_test.go's fakeSegment).
func walSegment(t testing.TB) []byte {
	seg := wal.SegmentOf(startLSN, 1, segSize)
	buf := make([]byte, segSize)
	for p := 0; p < len(buf); p += wal.PageSize {
		binary.LittleEndian.PutUint16(buf[p:], 0xD110)
		info := uint16(0)
		if p == 0 {
			info = 0x0002 // XLP_LONG_HEADER
			binary.LittleEndian.PutUint64(buf[24:], systemID(t))
			binary.LittleEndian.PutUint32(buf[32:], segSize)
			binary.LittleEndian.PutUint32(buf[36:], wal.PageSize)
		}
		binary.LittleEndian.PutUint16(buf[p+2:], info)
		binary.LittleEndian.PutUint32(buf[p+4:], 1)
		binary.LittleEndian.PutUint64(buf[p+8:], uint64(seg.Start())+uint64(p))
	}
	return buf
}

func backupLabel() []byte {
	return []byte("START WAL LOCATION: 0/1000028 (file " + walSegName + ")\n" +
		"CHECKPOINT LOCATION: 0/1000060\nBACKUP METHOD: streamed\nBACKUP FROM: primary\n" +
		"START TIME: 2024-01-01 00:00:00 UTC\nLABEL: pgbb\nSTART TIMELINE: 1\n")
}

// builder writes a stream with the chunkstream Writer, so every record is well framed: the attacks are
// semantic.
type builder struct {
	t    testing.TB
	spec *streamSpec
	buf  bytes.Buffer
	fbuf bytes.Buffer // the fetcher's stream, when spec.split
	xw   *chunkstream.Writer
	fw   *chunkstream.Writer
}

func (b *builder) must(err error) {
	b.t.Helper()
	if err != nil {
		b.t.Fatal(err)
	}
}

func (b *builder) chunk(w *chunkstream.Writer, item, off uint64, path string, raw []byte) {
	b.t.Helper()
	c := chunkstream.Chunk{Item: item, Offset: off, RawLen: uint32(len(raw)), RawCRC: crc32c.Checksum(raw),
		Codec: chunkstream.CodecNone, Path: path, Data: raw}
	switch {
	case b.spec.zstd:
		var err error
		c.Codec, c.Data = chunkstream.CodecZstd, nil
		if c.Data, err = compress.ZstdLevel(nil, raw, 1); err != nil {
			b.t.Fatal(err)
		}
	case b.spec.xz:
		c.Codec, c.Data = chunkstream.CodecXZ, compress.XZStored(nil, raw)
	}
	b.must(w.WriteChunk(c))
}

func (it *fitem) outcomeRecord(n uint64) chunkstream.Outcome {
	var sum uint64
	for _, c := range it.chunks {
		sum += uint64(len(c))
	}
	length := uint64(it.length)
	if it.length < 0 {
		length = sum
	}
	return chunkstream.Outcome{Item: n, Status: it.status, Offset: it.off, Length: length, Final: it.final,
		Stored: sum, Path: it.path}
}

func (b *builder) item(n uint64, it *fitem) {
	b.t.Helper()
	switch it.kind {
	case 'd':
		b.must(b.fw.WriteDir(n, it.path))
	case 'l':
		b.must(b.fw.WriteLink(n, it.path))
	case 'f':
		off := it.off
		path := it.path
		if it.chunkPath != "" {
			path = it.chunkPath
		}
		for i, c := range it.chunks {
			at := off
			if it.chunkOffs != nil {
				at = it.chunkOffs[i]
			}
			off += uint64(len(c))
			if it.drop[i] {
				continue
			}
			b.chunk(b.fw, n, at, path, c)
		}
		o := it.outcomeRecord(n)
		if it.outcome != nil {
			it.outcome(&o)
		}
		b.must(b.fw.WriteOutcome(o))
	default:
		b.t.Fatalf("bad item kind %c", it.kind)
	}
	if it.after != nil {
		it.after(b, n, it)
	}
}

// build returns the whole stream: pgbb-xlog's B and X, the fetcher's stream, then pgbb-xlog's WAL,
// pg_control and E.
func (s *streamSpec) build(t testing.TB) []byte {
	t.Helper()
	b := &builder{t: t, spec: s}
	id := backupID(t)
	var err error
	b.xw, err = chunkstream.NewWriter(&b.buf, "pgbb-xlog", id)
	b.must(err)
	start := chunkstream.BackupStart{BackupID: id, SystemID: systemID(t), Timeline: 1, StartLSN: startLSN,
		WALSegmentSize: segSize, ServerVersion: 150000, DirMode: 0o700, Label: "pgbb",
		Tablespaces: []chunkstream.Tablespace{{OID: tsOID, Location: s.tsLoc}}}
	b.must(b.xw.WriteBackupStart(start))
	if s.twoX {
		b.must(b.xw.WriteBackupStart(start))
	}
	fid := s.fetchID
	if fid == "" {
		fid = id
	}
	fout := &b.buf
	if s.split {
		fout = &b.fbuf
	}
	b.fw, err = chunkstream.NewWriter(fout, "pgbb-fetch", fid)
	b.must(err)
	for i, it := range s.items {
		b.item(uint64(i+1), it)
	}
	b.must(b.fw.WriteTrailer(uint64(len(s.items)+s.trailerAdjust), fid))
	b.must(b.fw.Close())

	if !s.noWAL {
		seg := walSegment(t)
		if s.walDamage != nil {
			s.walDamage(seg)
		}
		path := "pg_wal/" + walSegName
		b.chunk(b.xw, 0, 0, path, seg[:segSize/2])
		b.chunk(b.xw, 0, segSize/2, path, seg[segSize/2:])
		b.must(b.xw.WriteOutcome(chunkstream.Outcome{Length: segSize, Final: true, Stored: segSize, Path: path}))
	}
	ctl := pgControl(t)
	b.chunk(b.xw, 0, 0, "global/pg_control", ctl)
	b.must(b.xw.WriteOutcome(chunkstream.Outcome{Length: uint64(len(ctl)), Final: true, Stored: uint64(len(ctl)),
		Path: "global/pg_control"}))
	if !s.noEnd {
		b.must(b.xw.WriteBackupEnd(chunkstream.BackupEnd{StopLSN: stopLSN, StopTimeline: 1, BackupLabel: backupLabel(),
			TablespaceMap: []byte(fmt.Sprintf("%d %s\n", tsOID, s.tsLoc))}))
	}
	b.must(b.xw.Close())
	s.fetchStream = b.fbuf.Bytes()
	return b.buf.Bytes()
}

// env is one run's directories: everything Run may touch lies in root, which also holds a victim file
// and an outside directory that must stay as they are.
type env struct {
	root   string // the sentinel parent
	dest   string // root/dest, absent before Run
	tsLoc  string // root/server-ts: the tablespace location on the "server"; never created
	mapped string // root/mapped: where -T puts the tablespace (plain); an empty directory before Run
	victim string // root/victim
	stream string // the stream file, outside root
}

const victimContent = "victim: must stay as it is\n"

func newEnv(t *testing.T) *env {
	t.Helper()
	root := t.TempDir()
	e := &env{root: root, dest: filepath.Join(root, "dest"), tsLoc: filepath.Join(root, "server-ts"),
		mapped: filepath.Join(root, "mapped"), victim: filepath.Join(root, "victim"),
		stream: filepath.Join(t.TempDir(), "backup.stream")}
	if err := os.Mkdir(e.mapped, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.victim, []byte(victimContent), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "outside"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "outside", "keep"), []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	return e
}

// tarZstd is the tar format with zstd chunks, as the tests name it (Options.Format Tar, Compress "zstd").
const tarZstd = "tar-zstd"

func (e *env) options(format string) Options {
	o := Options{Dest: e.dest, Format: format, Inputs: []string{e.stream},
		Log: &cliapp.Logger{Prog: "pgbb-pack", W: io.Discard}}
	if format == tarZstd {
		o.Format, o.Compress = Tar, "zstd"
	}
	if format == Plain {
		o.Mappings = map[string]string{e.tsLoc: e.mapped}
	}
	return o
}

func (e *env) writeStream(t *testing.T, b []byte) {
	t.Helper()
	if err := os.WriteFile(e.stream, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// snapshot describes every entry under root but dest and mapped and what they hold: type, permissions,
// size, link target and a content hash.
func (e *env) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(e.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			desc += " -> " + l
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %s", len(b), hex.EncodeToString(h[:8]))
		}
		if p == e.dest || p == e.mapped {
			return fs.SkipDir
		}
		rel, _ := filepath.Rel(e.root, p)
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func diffSnapshots(before, after map[string]string) []string {
	var d []string
	for k, v := range after {
		if w, ok := before[k]; !ok {
			d = append(d, "created "+k+" ("+v+")")
		} else if w != v {
			d = append(d, "changed "+k+": "+w+" => "+v)
		}
	}
	for k := range before {
		if _, ok := after[k]; !ok {
			d = append(d, "removed "+k)
		}
	}
	return d
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestPackValidStreamPlain(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	e.writeStream(t, spec.build(t))
	before := e.snapshot(t)
	if err := Run(e.options(Plain), nil); err != nil {
		t.Fatalf("valid stream refused: %v", err)
	}
	if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
		t.Fatalf("Run touched files outside DEST and the mapped tablespace:\n%s", strings.Join(d, "\n"))
	}
	if _, err := os.Stat(filepath.Join(e.dest, "backup_manifest")); err != nil {
		t.Fatal(err)
	}
	l, err := os.Readlink(filepath.Join(e.dest, tsLink))
	if err != nil || l != e.mapped {
		t.Fatalf("%s -> %q (%v), want a link to %s", tsLink, l, err, e.mapped)
	}
	want := map[string][]byte{
		"PG_VERSION":           []byte("15\n"),
		"base/5/16384":         append(pattern(1, 4096), pattern(2, 4096)...),
		"base/5/16390":         bytes.Join([][]byte{pattern(3, 8192), pattern(4, 8192), pattern(5, 8192)}, nil),
		tsDir + "/5/16385":     pattern(6, 8192),
		"global/1262":          {},
		"global/pg_control":    pgControl(t),
		"backup_label":         backupLabel(),
		"pg_wal/" + walSegName: walSegment(t),
	}
	for p, w := range want {
		got, err := os.ReadFile(filepath.Join(e.dest, p))
		if err != nil || !bytes.Equal(got, w) {
			t.Errorf("%s: %d bytes (%v), want %d bytes as sent", p, len(got), err, len(w))
		}
	}
	// the tablespace's files are in the mapped directory, not at the server's location
	if _, err := os.Stat(filepath.Join(e.mapped, "PG_15_202209061/5/16385")); err != nil {
		t.Error(err)
	}
	if _, err := os.Lstat(e.tsLoc); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the server's tablespace location %s was created", e.tsLoc)
	}
	for _, absent := range []string{"base/5/99999", "tablespace_map", spoolName} {
		if _, err := os.Lstat(filepath.Join(e.dest, absent)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s exists", absent)
		}
	}
	var report bytes.Buffer
	if n, err := verify.Verify(e.dest, &report); n != 0 || err != nil {
		t.Fatalf("verify: %d problems, %v\n%s", n, err, report.String())
	}
}

// tarMembers reads every member of one .tar.xz or .tar.zst of the tar format.
func tarMembers(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	codec := chunkstream.CodecXZ
	if strings.HasSuffix(path, ".tar.zst") {
		codec = chunkstream.CodecZstd
	}
	xr, err := compress.NewArchiveReader(codec, f)
	if err != nil {
		t.Fatal(err)
	}
	defer xr.Close()
	tr := tar.NewReader(xr)
	out := map[string][]byte{}
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out[h.Name] = b
	}
}

func TestPackValidStreamTar(t *testing.T) {
	for _, format := range []string{Tar, tarZstd} {
		t.Run(format, func(t *testing.T) { testPackValidStreamTar(t, format) })
	}
}

func testPackValidStreamTar(t *testing.T, format string) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, true)
	spec.zstd = format == tarZstd
	e.writeStream(t, spec.build(t))
	before := e.snapshot(t)
	if err := Run(e.options(format), nil); err != nil {
		t.Fatalf("valid stream refused: %v", err)
	}
	if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
		t.Fatalf("Run touched files outside DEST:\n%s", strings.Join(d, "\n"))
	}
	ext := ".tar.xz"
	if format == tarZstd {
		ext = ".tar.zst"
	}
	got := strings.Join(listDir(t, e.dest), " ")
	if want := "16384" + ext + " backup_manifest base" + ext + " pg_wal" + ext; got != want {
		t.Fatalf("DEST holds %s, want %s", got, want)
	}
	if n := listDir(t, e.mapped); len(n) != 0 {
		t.Fatalf("tar format wrote into %s: %v", e.mapped, n)
	}
	if format == tarZstd {
		// stock zstd accepts every archive: the fetchers' frames and pack's stored ones
		for _, n := range []string{"base", "16384", "pg_wal"} {
			if out, err := exec.Command("zstd", "-t", filepath.Join(e.dest, n+ext)).CombinedOutput(); err != nil {
				t.Fatalf("zstd -t %s%s: %v %s", n, ext, err, out)
			}
		}
	}
	base := tarMembers(t, filepath.Join(e.dest, "base"+ext))
	for p, w := range map[string][]byte{
		"base/5/16390":      bytes.Join([][]byte{pattern(3, 8192), pattern(4, 8192), pattern(5, 8192)}, nil),
		"global/pg_control": pgControl(t),
		"backup_label":      backupLabel(),
		"tablespace_map":    []byte(fmt.Sprintf("%d %s\n", tsOID, e.tsLoc)),
	} {
		if !bytes.Equal(base[p], w) {
			t.Errorf("base%s: %s differs (%d bytes)", ext, p, len(base[p]))
		}
	}
	if ts := tarMembers(t, filepath.Join(e.dest, "16384"+ext)); !bytes.Equal(ts["PG_15_202209061/5/16385"], pattern(6, 8192)) {
		t.Errorf("16384%s lacks its file: %v", ext, ts)
	}
	if w := tarMembers(t, filepath.Join(e.dest, "pg_wal"+ext)); !bytes.Equal(w[walSegName], walSegment(t)) {
		t.Errorf("pg_wal%s lacks %s", ext, walSegName)
	}
	var report bytes.Buffer
	if n, err := verify.Verify(e.dest, &report); n != 0 || err != nil {
		t.Fatalf("verify: %d problems, %v\n%s", n, err, report.String())
	}
}

type tamperCase struct {
	name      string
	tamper    func(t *testing.T, e *env, s *streamSpec)
	want      []string // every one of these is in the error
	anyOf     []string // and one of these
	plainOnly bool     // the tar format does not check this (see the case)
	skip      string   // a known bug: the case is skipped with this reason
}

func tamperCases(t testing.TB) []tamperCase {
	data := []byte("attacker's bytes\n")
	addFile := func(path string) func(t *testing.T, e *env, s *streamSpec) {
		return func(t *testing.T, e *env, s *streamSpec) { s.add(fileItem(path, 0, true, data)) }
	}
	return []tamperCase{
		{name: "dot-dot path", tamper: addFile("base/../../victim"),
			want: []string{`".." component`, "base/../../victim"}},
		{name: "dot-dot path in a directory item", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(dirItem("base/../../evil-dir"))
		}, want: []string{`".." component`, "base/../../evil-dir"}},
		{name: "absolute path", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(fileItem(filepath.Join(e.root, "abs-x"), 0, true, data))
		}, want: []string{"absolute path", "abs-x"}},
		{name: "absolute path /tmp/x", tamper: addFile("/tmp/x"), want: []string{`absolute path "/tmp/x"`}},
		{name: "link that is not a tablespace", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(linkItem("pg_tblspc/1"))
		}, want: []string{`link "pg_tblspc/1" is not a tablespace of this backup`}},
		{name: "chunk in an unknown tablespace", tamper: addFile("pg_tblspc/1/f"),
			want: []string{`"pg_tblspc/1/f" is not inside a tablespace of this backup`}},
		{name: "chunk at the tablespace link itself", tamper: addFile(tsLink),
			// plain: the O_NOFOLLOW open of the link fails; tar: no archive member for it
			want: []string{tsLink}},
		{name: "directory at the tablespace link", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(dirItem(tsLink))
		}, want: []string{`"pg_tblspc/16384" is a tablespace link, not a directory`}},
		{name: "backup_label from a fetcher", tamper: addFile("backup_label"),
			want: []string{`work item writes "backup_label"`}},
		{name: "tablespace_map from a fetcher", tamper: addFile("tablespace_map"),
			want: []string{`work item writes "tablespace_map"`}},
		{name: "backup_manifest from a fetcher", tamper: addFile("backup_manifest"),
			want: []string{`work item writes "backup_manifest"`}},
		{name: "pg_control from a fetcher item", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(fileItem("global/pg_control", 0, true, pgControl(t)))
		}, want: []string{`work item writes "global/pg_control"`}},
		{name: "WAL segment from a fetcher item", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(fileItem("pg_wal/"+walSegName, 0, true, walSegment(t)[:wal.PageSize]))
		}, want: []string{`work item writes "pg_wal/` + walSegName + `" inside pg_wal`}},
		{name: "WAL segment 000000010000000000000001 from a fetcher item", tamper: addFile("pg_wal/000000010000000000000001"),
			want: []string{"pg_wal/000000010000000000000001", "inside pg_wal"}},
		{name: "file in archive_status", tamper: addFile("pg_wal/archive_status/" + walSegName + ".done"),
			want: []string{"inside pg_wal"}},
		{name: "spool name as a path", tamper: addFile(spoolName),
			want: []string{`work item writes ".pgbb-spool", a name pgbb-pack reserves`}},
		{name: "dropped chunk", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5/16384", 0)].drop = map[int]bool{1: true}
		}, want: []string{"(base/5/16384): 4096 bytes arrived, its outcome says 8192"}},
		{name: "duplicated outcome", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5/16384", 0)].after = func(b *builder, n uint64, it *fitem) {
				b.must(b.fw.WriteOutcome(it.outcomeRecord(n)))
			}
		}, want: []string{"item 11 arrived twice"}},
		{name: "duplicated directory item", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5", 0)].after = func(b *builder, n uint64, it *fitem) { b.must(b.fw.WriteDir(n, it.path)) }
		}, want: []string{"item 2 arrived twice"}},
		{name: "item missing", tamper: func(t *testing.T, e *env, s *streamSpec) { s.trailerAdjust = 1 },
			want: []string{"1 of 18 work items never arrived (first: 18)"}},
		{name: "item beyond the trailer's count", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(fileItem("base/5/16400", 0, true, data))
			s.trailerAdjust = -1
		}, want: []string{"item 18 is not in the work list of 17 items"}},
		{name: "no backup end record", tamper: func(t *testing.T, e *env, s *streamSpec) { s.noEnd = true },
			want: []string{"no backup end record"}},
		{name: "missing WAL segment", tamper: func(t *testing.T, e *env, s *streamSpec) { s.noWAL = true },
			want: []string{"WAL segment " + walSegName + " is missing"}},
		{name: "WAL page with a bad address", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.walDamage = func(seg []byte) { binary.LittleEndian.PutUint64(seg[3*wal.PageSize+8:], 0x5000000) }
		}, want: []string{walSegName, "page at offset 24576", "page address 0/5000000"},
			// pack checks only uncompressed WAL; compressed WAL (the tar format's) is left to --verify
			plainOnly: true},
		{name: "fetcher stream of another backup", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.fetchID = fmt.Sprintf("%d-1-0-1000028-0000abce", systemID(t))
		}, want: []string{"stream of backup " + fmt.Sprintf("%d", systemID(t)) + "-1-0-1000028-0000abce mixed into backup " +
			fmt.Sprintf("%d", systemID(t)) + "-1-0-1000028-0000abcd"}},
		{name: "two backup start records", tamper: func(t *testing.T, e *env, s *streamSpec) { s.twoX = true },
			want: []string{"second backup start record"}},
		{name: "outcome stores more than its range", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5/16384", 0)].outcome = func(o *chunkstream.Outcome) { o.Length = 4096 }
		}, want: []string{"outcome stores 8192 bytes of a 4096-byte range"}},
		{name: "middle range missing", tamper: func(t *testing.T, e *env, s *streamSpec) {
			i := s.find(t, "base/5/16390", 8192)
			s.items = append(s.items[:i], s.items[i+1:]...)
		}, want: []string{"base/5/16390: some of its ranges never arrived"}},
		{name: "chunk after its item's outcome", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5/16384", 0)].after = func(b *builder, n uint64, it *fitem) {
				b.chunk(b.fw, n, 8192, it.path, data)
			}
		}, want: []string{"chunk of item 11 after its outcome"}},
		{name: "range after the final one", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.add(fileItem("base/5/16384", 8192, true, data))
		}, want: []string{"base/5/16384"}},

		// Chunks that do not fill their item's range: the ledger counts an item's chunk bytes, but
		// neither where the chunks lie nor which path they carry.
		{name: "chunks not contiguous in their range", tamper: func(t *testing.T, e *env, s *streamSpec) {
			// both chunks of base/5/16384 [0, 8192) at offset 0: bytes 4096..8191 never arrive
			s.items[s.find(t, "base/5/16384", 0)].chunkOffs = []uint64{0, 0}
		}, want: []string{"base/5/16384"}},
		{name: "chunk outside its item's range", tamper: func(t *testing.T, e *env, s *streamSpec) {
			// item base/5/16390 [0, 8192) sends its chunk at 8192, inside the next range, whose own chunk
			// overwrites it: range [0, 8192) never arrives
			s.items[s.find(t, "base/5/16390", 0)].chunkOffs = []uint64{8192}
		}, want: []string{"base/5/16390"}},
		// A W record claims bytes were written into DEST by the job itself: only a job that pgbb-pack
		// offered direct writes on its sink may send one (docs/direct-write.md).
		{name: "written range on an input offered no direct writes", tamper: func(t *testing.T, e *env, s *streamSpec) {
			it := s.items[s.find(t, "base/5/16384", 0)]
			it.after = func(b *builder, n uint64, it *fitem) {
				b.must(b.fw.WriteWritten(chunkstream.Written{Item: n, Offset: it.off, Length: uint32(len(it.chunks[0])),
					CRC: crc32c.Checksum(it.chunks[0]), Path: it.path}))
			}
		}, want: []string{"offered no direct writes"}},
		{name: "chunk path differs from its outcome's", tamper: func(t *testing.T, e *env, s *streamSpec) {
			s.items[s.find(t, "base/5/16384", 0)].chunkPath = "base/5/16999"
		}, anyOf: []string{"base/5/16999", "base/5/16384"}},
	}
}

// keptForResume are the cases that look like a run that died (something never arrived) rather than input
// pgbb does not write: a plain DEST is then kept for --resume, not removed (docs/resume.md).
var keptForResume = map[string]bool{"item missing": true, "middle range missing": true, "missing WAL segment": true, "no backup end record": true}

func TestPackRefusesTamperedStreams(t *testing.T) {
	for _, format := range []string{Plain, Tar, tarZstd} {
		for _, tc := range tamperCases(t) {
			t.Run(format+"/"+tc.name, func(t *testing.T) {
				if tc.skip != "" && format == Plain {
					t.Skip(tc.skip)
				}
				if tc.plainOnly && format != Plain {
					t.Skip("the tar format does not check this in pack")
				}
				e := newEnv(t)
				spec := validSpec(e.tsLoc, format != Plain)
				spec.zstd = format == tarZstd
				tc.tamper(t, e, spec)
				e.writeStream(t, spec.build(t))
				before := e.snapshot(t)
				err := Run(e.options(format), nil)
				if err == nil {
					t.Fatalf("tampered stream packed; DEST holds %v", listDir(t, e.dest))
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				if len(tc.anyOf) > 0 {
					found := false
					for _, w := range tc.anyOf {
						found = found || strings.Contains(err.Error(), w)
					}
					if !found {
						t.Errorf("error %q mentions none of %q", err, tc.anyOf)
					}
				}
				if _, serr := os.Lstat(filepath.Join(e.dest, "backup_manifest")); !errors.Is(serr, fs.ErrNotExist) {
					t.Errorf("backup_manifest left in DEST (%v)", serr)
				}
				if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
					t.Errorf("Run touched files outside DEST and the mapped tablespace:\n%s", strings.Join(d, "\n"))
				}
				if b, _ := os.ReadFile(e.victim); string(b) != victimContent {
					t.Errorf("victim changed: %q", b)
				}
				// a stream that only lacks something (a job or pgbb-xlog died) leaves DEST kept for --resume:
				// marked incomplete, and nothing in it that would start or pass for complete
				if keptForResume[tc.name] && format == Plain {
					if _, err := os.Stat(filepath.Join(e.dest, resume.StateName)); err != nil {
						t.Errorf("an incomplete run's DEST is not kept for --resume: %v", err)
					}
					for _, name := range []string{"backup_label", "global/pg_control", "backup_manifest.tmp"} {
						if _, err := os.Lstat(filepath.Join(e.dest, name)); err == nil {
							t.Errorf("kept DEST holds %s", name)
						}
					}
					return
				}
				// and what Run wrote is gone: DEST (which it created) and the mapped directory are empty
				if n := listDir(t, e.dest); len(n) != 0 {
					t.Errorf("DEST not cleaned after the failure: %v", n)
				}
				if n := listDir(t, e.mapped); len(n) != 0 {
					t.Errorf("mapped tablespace directory not cleaned after the failure: %v", n)
				}
			})
		}
	}
}

// panicReader fails the test when Run reads its input.
type panicReader struct{ t *testing.T }

func (r panicReader) Read([]byte) (int, error) {
	r.t.Errorf("Run read its input before refusing DEST")
	return 0, io.EOF
}

func TestPackRefusesNonEmptyDest(t *testing.T) {
	for _, format := range []string{Plain, Tar} {
		t.Run(format+"/file", func(t *testing.T) {
			e := newEnv(t)
			if err := os.Mkdir(e.dest, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(e.dest, "old"), []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := e.snapshot(t)
			o := e.options(format)
			o.Inputs = nil // stdin
			err := Run(o, panicReader{t})
			if err == nil || !strings.Contains(err.Error(), "exists and is not empty") || !strings.Contains(err.Error(), e.dest) {
				t.Fatalf("non-empty DEST: %v", err)
			}
			if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
				t.Errorf("Run touched files outside DEST:\n%s", strings.Join(d, "\n"))
			}
			if b, err := os.ReadFile(filepath.Join(e.dest, "old")); err != nil || string(b) != "old" {
				t.Errorf("DEST's file changed: %q %v", b, err)
			}
		})
		t.Run(format+"/planted symlink", func(t *testing.T) {
			e := newEnv(t)
			if err := os.Mkdir(e.dest, 0o700); err != nil {
				t.Fatal(err)
			}
			outside := filepath.Join(e.root, "outside")
			// links named as what pack writes first, pointing outside
			for _, name := range []string{"base", "global", "backup_manifest", "base.tar.xz.tmp", spoolName} {
				if err := os.Symlink(outside, filepath.Join(e.dest, name)); err != nil {
					t.Fatal(err)
				}
			}
			before := e.snapshot(t)
			o := e.options(format)
			o.Inputs = nil
			err := Run(o, panicReader{t})
			if err == nil || !strings.Contains(err.Error(), "exists and is not empty") {
				t.Fatalf("DEST with planted links: %v", err)
			}
			if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
				t.Errorf("Run touched files outside DEST:\n%s", strings.Join(d, "\n"))
			}
			if n := listDir(t, e.dest); len(n) != 5 {
				t.Errorf("DEST changed: %v", n)
			}
		})
	}
	t.Run("non-empty mapped directory", func(t *testing.T) {
		e := newEnv(t)
		if err := os.WriteFile(filepath.Join(e.mapped, "old"), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
		o := e.options(Plain)
		o.Inputs = nil
		err := Run(o, panicReader{t})
		if err == nil || !strings.Contains(err.Error(), "tablespace mapping") || !strings.Contains(err.Error(), e.mapped) {
			t.Fatalf("non-empty mapped directory: %v", err)
		}
		if _, err := os.Lstat(e.dest); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("DEST created before the refusal")
		}
	})
	t.Run("tar with mappings", func(t *testing.T) {
		e := newEnv(t)
		o := e.options(Tar)
		o.Mappings = map[string]string{e.tsLoc: e.mapped}
		o.Inputs = nil
		err := Run(o, panicReader{t})
		if err == nil || !strings.Contains(err.Error(), "-T applies to the plain format only") {
			t.Fatalf("tar with -T: %v", err)
		}
	})
}

// TestPackForceDoesNotFollowPlantedLinks: --force empties a DEST holding links to outside by removing the
// links, never what they point to, and the backup then packs.
func TestPackForceDoesNotFollowPlantedLinks(t *testing.T) {
	for _, format := range []string{Plain, Tar} {
		t.Run(format, func(t *testing.T) {
			e := newEnv(t)
			if err := os.Mkdir(e.dest, 0o700); err != nil {
				t.Fatal(err)
			}
			outside := filepath.Join(e.root, "outside")
			for _, name := range []string{"base", "global", "pg_wal", "backup_label", spoolName} {
				if err := os.Symlink(outside, filepath.Join(e.dest, name)); err != nil {
					t.Fatal(err)
				}
			}
			e.writeStream(t, validSpec(e.tsLoc, format == Tar).build(t))
			before := e.snapshot(t)
			o := e.options(format)
			o.Force = true
			if err := Run(o, nil); err != nil {
				t.Fatalf("valid stream into a forced DEST: %v", err)
			}
			if d := diffSnapshots(before, e.snapshot(t)); len(d) > 0 {
				t.Errorf("Run touched files outside DEST:\n%s", strings.Join(d, "\n"))
			}
			if fi, err := os.Lstat(filepath.Join(e.dest, "backup_manifest")); err != nil || !fi.Mode().IsRegular() {
				t.Fatalf("backup_manifest: %v", err)
			}
		})
	}
}

// TestPackTarLeavesCompressedWALToVerify documents why "WAL page with a bad address" is plain only: pack
// checks page headers only of uncompressed WAL (xlogChunk), so a tar backup with a recycled page packs, and
// it is verify (pgbb-pack --verify) that reports it.
func TestPackTarLeavesCompressedWALToVerify(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, true)
	spec.walDamage = func(seg []byte) { binary.LittleEndian.PutUint64(seg[3*wal.PageSize+8:], 0x5000000) }
	e.writeStream(t, spec.build(t))
	if err := Run(e.options(Tar), nil); err != nil {
		t.Fatalf("pack now checks compressed WAL too (%v): make the tamper case run in tar format", err)
	}
	var report bytes.Buffer
	n, err := verify.Verify(e.dest, &report)
	if err != nil || n != 1 || !strings.Contains(report.String(), "page address 0/5000000") {
		t.Fatalf("verify: %d problems, %v\n%s", n, err, report.String())
	}
}

// A resume whose input is refused keeps the DEST it was given: what the earlier run stored is not lost
// with the bad stream (a next resume proves every byte again).
func TestResumeKeepsDestOnRefusedInput(t *testing.T) {
	cases := map[string]func(*testing.T, *env, *streamSpec){}
	for _, tc := range tamperCases(t) {
		cases[tc.name] = tc.tamper
	}
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	cases["no backup end record"](t, e, spec)
	e.writeStream(t, spec.build(t))
	if err := Run(e.options(Plain), nil); err == nil {
		t.Fatal("a stream without its end packed")
	}
	kept := listDir(t, e.dest)
	if _, err := os.Stat(filepath.Join(e.dest, resume.StateName)); err != nil || len(kept) < 2 {
		t.Fatalf("the first run's DEST was not kept: %v %v", kept, err)
	}
	spec = validSpec(e.tsLoc, false)
	cases["chunk path differs from its outcome's"](t, e, spec)
	e.writeStream(t, spec.build(t))
	o := e.options(Plain)
	o.Resume = true
	if err := Run(o, nil); err == nil || !errors.As(err, new(refusedInput)) {
		t.Fatalf("a resume with a tampered stream: %v, want it refused", err)
	}
	if _, err := os.Stat(filepath.Join(e.dest, resume.StateName)); err != nil {
		t.Fatalf("the refused resume removed the state file: %v (DEST holds %v)", err, listDir(t, e.dest))
	}
	for _, name := range kept {
		if name == "global" || name == "backup_label" {
			continue // pg_control and the label are never reused, and go first
		}
		if _, err := os.Lstat(filepath.Join(e.dest, name)); err != nil {
			t.Errorf("the refused resume removed %s of the earlier run: %v", name, err)
		}
	}
}
