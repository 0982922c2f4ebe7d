// Package pack assembles chunk streams (docs/chunk-stream.md) into a backup — a plain data directory or a
// tar.xz set — proves the backup complete, and writes backup_manifest last as the commit marker
// (invariant 10).
//
// Contract: Run reads its inputs one after another, each holding one or more complete streams. The stream of
// pgbb-xlog (records X … E) must be read before or interleaved with the fetchers' streams, as the pipeline
// delivers it; X must arrive before any data record. The ledger in this file validates every record and
// tracks every item, file range and WAL segment; a target (plain.go, tar.go) stores what the ledger passed.
// Run writes only inside DEST and the mapped tablespace directories, never through a link it did not create,
// and on failure removes what it wrote unless NoClean is set.
package pack

import (
	"errors"
	"fmt"
	"github.com/pgbb/pgbb/internal/sink"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/wal"
	"github.com/pgbb/pgbb/internal/worklist"
)

// Formats.
const (
	Plain = "plain"
	Tar   = "tar"
)

// Options for Run.
type Options struct {
	Dest     string
	Format   string            // Plain (default) or Tar
	Force    bool              // empty a non-empty Dest first
	Mappings map[string]string // tablespace location on the server -> directory here (-T OLD=NEW), plain only
	NoClean  bool              // keep what was written when the run fails
	NoSync   bool              // do not fsync (pg_basebackup --no-sync): faster, not safe against a crash of this host
	Inputs   []string          // files, directories (their *.stream files, read when reached) or "-"
	Sink     string            // a Unix socket to create and take fetch streams on while the inputs are read
	Log      *cliapp.Logger
}

// target stores what the ledger validated. Calls arrive in this order: begin once; then dir, chunk and
// fileDone in any interleaving (every chunk of a path before that path's fileDone, which comes once);
// then commit once, or clean after any error.
type target interface {
	// begin prepares the output for a backup of a server of the given major; dirMode and fileMode are the
	// source cluster's.
	begin(s *chunkstream.BackupStart, major pgversion.Major, dirMode, fileMode os.FileMode) error
	// dir records a directory of the data directory (it may come more than once).
	dir(path string) error
	// chunk stores one piece of a file; raw is the uncompressed data when the target asked for it.
	chunk(c *chunkstream.Chunk) error
	// fileDone says the file at path is whole: size bytes from offset 0, or absent when present is false.
	fileDone(path string, size int64, present bool) error
	// commit writes pg_control, backup_label (and tablespace_map where the format keeps it), syncs
	// everything, and returns the manifest entries of every file but WAL.
	commit(control []byte, end *chunkstream.BackupEnd) ([]manifest.File, error)
	// clean removes what the target wrote.
	clean()
}

// ParseMapping parses one -T OLD=NEW argument; "\=" stands for a literal "=" as in pg_basebackup.
func ParseMapping(s string) (string, string, error) {
	var old, cur strings.Builder
	seen := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '=':
			cur.WriteByte('=')
			i++
		case s[i] == '=':
			if seen {
				return "", "", fmt.Errorf("multiple \"=\" signs in tablespace mapping %q", s)
			}
			seen = true
			old.WriteString(cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if !seen || old.Len() == 0 || cur.Len() == 0 {
		return "", "", fmt.Errorf("invalid tablespace mapping %q: want OLDDIR=NEWDIR", s)
	}
	o, n := filepath.Clean(old.String()), filepath.Clean(cur.String())
	if !filepath.IsAbs(o) || !filepath.IsAbs(n) {
		return "", "", fmt.Errorf("tablespace mapping %q: both directories must be absolute paths", s)
	}
	return o, n, nil
}

// CheckDest returns an error unless dir is absent or an empty directory (or force is set).
func CheckDest(dir string, force bool) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) > 0 && !force {
		return cliapp.Usage("choose an empty or new directory, or pass --force to empty it first", "directory %q exists and is not empty", dir)
	}
	return nil
}

// fileProgress collects the outcomes of one data file's ranges.
type fileProgress struct {
	ranges map[uint64]chunkstream.Outcome // by offset
	done   bool
}

// itemState follows one work item: its chunks must carry one path and follow each other from the item's
// offset, and its outcome must name that path and cover exactly the bytes that came.
type itemState struct {
	chunkBytes uint64
	path       string
	start      uint64 // offset of the first chunk
	next       uint64 // offset the next chunk must have
	done       bool
}

type walState struct {
	bytes    uint64
	complete bool
}

type packer struct {
	mu      sync.Mutex    // the ledger and the target take one record at a time
	started chan struct{} // closed once the backup start record is in
	quit    chan struct{} // closed (under mu) when the run ends: streams still being read are refused
	o       Options
	disk
	dest      string
	createdD  bool
	out       target
	start     *chunkstream.BackupStart
	end       *chunkstream.BackupEnd
	trailer   *uint64
	magic     uint16
	major     pgversion.Major // the source server's row of the version table
	items     map[uint64]*itemState
	files     map[string]*fileProgress
	links     map[string]bool
	walFiles  map[string]*walState
	history   map[string]bool
	control   []byte
	producers map[uint64]string   // producer id -> backup id
	xlogProds map[uint64]bool     // producers named pgbb-xlog
	badPages  map[string][]uint64 // path -> blocks that failed their checksum
}

// errBadPages ends a run whose copy is complete but holds pages that failed checksum verification: the
// backup is kept (as pg_basebackup keeps it) but gets no backup_manifest, so it never passes for good.
var errBadPages = errors.New("page checksum failures")

// Run assembles the backup. It returns nil only after backup_manifest is durably in place.
func Run(o Options, stdin io.Reader) (err error) {
	if o.Dest == "" {
		return cliapp.Usage("give the target with -D DIR", "no target directory")
	}
	dest, err := filepath.Abs(o.Dest)
	if err != nil {
		return err
	}
	switch o.Format {
	case "", "p", Plain:
		o.Format = Plain
	case "t", Tar:
		o.Format = Tar
		if len(o.Mappings) > 0 {
			return cliapp.Usage("in tar format, tablespaces are archives <oid>.tar.xz; relocate them when extracting by editing tablespace_map", "-T applies to the plain format only")
		}
	default:
		return cliapp.Usage("use -F plain or -F tar", "unknown format %q", o.Format)
	}
	if err := CheckDest(dest, o.Force); err != nil {
		return err
	}
	for old, nw := range o.Mappings {
		if err := CheckDest(nw, false); err != nil {
			return cliapp.Usage("tablespace directories must be new or empty", "tablespace mapping %s=%s: %v", old, nw, err)
		}
	}
	if len(o.Inputs) == 0 {
		o.Inputs = []string{"-"}
	}
	p := &packer{o: o, dest: dest, items: map[uint64]*itemState{}, files: map[string]*fileProgress{}, links: map[string]bool{},
		walFiles: map[string]*walState{}, history: map[string]bool{}, producers: map[uint64]string{}, badPages: map[string][]uint64{},
		xlogProds: map[uint64]bool{}, started: make(chan struct{}), quit: make(chan struct{})}
	// The sink listens first, before DEST is prepared (emptying a large DEST with --force takes time, and
	// jobs wait only so long for the socket), and under the caller's umask until its own chmod to 0600.
	var k *sink.Sink
	if o.Sink != "" {
		if k, err = sink.Listen(o.Sink, func(c net.Conn, n int) error {
			// a job may connect before pgbb-xlog's backup start record has been read
			select {
			case <-p.started:
			case <-p.quit:
				return nil
			}
			return p.readStream(c, fmt.Sprintf("sink stream %d", n), true)
		}); err != nil {
			return err
		}
		defer os.Remove(o.Sink)
	}
	// stopSink ends every sink stream and waits for them; it runs before any clean-up, so that no stream
	// still writes.
	stopSink := func() {
		if k == nil {
			return
		}
		p.mu.Lock()
		close(p.quit)
		p.mu.Unlock()
		k.Stop()
		k = nil
	}
	defer stopSink()
	syscall.Umask(0)
	if o.Format == Tar {
		p.out = &tarTarget{dest: dest, log: o.Log, disk: disk{noSync: o.NoSync}}
	} else {
		p.out = &plainTarget{dest: dest, mappings: o.Mappings, disk: disk{noSync: o.NoSync}}
	}
	p.disk = disk{noSync: o.NoSync}
	if _, err := os.Stat(dest); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return err
		}
		p.createdD = true
	} else if o.Force {
		if err := emptyDir(dest); err != nil {
			return fmt.Errorf("empty %s: %w", dest, err)
		}
	}
	defer func() {
		if err != nil && !o.NoClean && !errors.Is(err, errBadPages) {
			stopSink()
			p.out.clean()
			if p.createdD {
				os.RemoveAll(dest)
			} else {
				emptyDir(dest)
			}
		}
	}()
	readInputs := func() error {
		for _, in := range o.Inputs {
			if err := p.readInput(in, stdin); err != nil {
				return err
			}
		}
		return nil
	}
	if k == nil {
		if err := readInputs(); err != nil {
			return err
		}
		return p.commit()
	}
	// A failing stream on the sink (a full disk, say) is the cause of what follows: its job dies, the base
	// copy fails and pgbb-xlog's stream is cut. Report it, without waiting for the inputs to end.
	inputs := make(chan error, 1)
	go func() { inputs <- readInputs() }()
	select {
	case err = <-inputs:
	case <-k.Failed():
	}
	if kerr := k.Err(); kerr != nil {
		return kerr
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	started := p.start != nil
	p.mu.Unlock()
	if !started {
		// sink streams would wait for it for ever
		return errors.New("the inputs ended without pgbb-xlog's backup start record")
	}
	if err := k.Finish(); err != nil {
		return err
	}
	return p.commit()
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func (p *packer) readInput(in string, stdin io.Reader) error {
	if in == "-" {
		return p.readStream(stdin, "stdin", false)
	}
	fi, err := os.Stat(in)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		return p.readStream(f, in, false)
	}
	ents, err := os.ReadDir(in)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			return fmt.Errorf("%s: unfinished stream file %s (its writer did not finish)", in, e.Name())
		}
		if !strings.HasSuffix(e.Name(), ".stream") || !e.Type().IsRegular() {
			continue
		}
		if err := p.readInput(filepath.Join(in, e.Name()), nil); err != nil {
			return err
		}
	}
	return nil
}

// readStream reads one input into the ledger. Records are checked (framing, CRC, numbering) outside the
// ledger's lock, so the streams of a sink are decoded in parallel. A stream from the sink may hold only
// fetch records.
func (p *packer) readStream(r io.Reader, name string, fromSink bool) error {
	rd := chunkstream.NewReader(r, name)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		p.mu.Lock()
		select {
		case <-p.quit:
			p.mu.Unlock()
			return errors.New("stopped")
		default:
		}
		if fromSink && rec.Type == chunkstream.TypeBegin {
			if producer, _, err := rec.Begin(); err == nil && producer == "pgbb-xlog" {
				err = errors.New("pgbb-xlog's stream on the sink: it belongs on pgbb-pack's input")
				p.mu.Unlock()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		err = p.record(rec)
		p.mu.Unlock()
		if err != nil {
			return fmt.Errorf("%s: record %d of producer %016x: %w", name, rec.Num, rec.Producer, err)
		}
	}
}

func (p *packer) record(rec *chunkstream.Record) error {
	switch rec.Type {
	case chunkstream.TypeBegin:
		if _, seen := p.producers[rec.Producer]; seen {
			return errors.New("a producer's stream appears twice")
		}
		name, id, err := rec.Begin()
		if err != nil {
			return err
		}
		p.xlogProds[rec.Producer] = name == "pgbb-xlog"
		if p.start != nil && id != p.start.BackupID {
			return fmt.Errorf("stream of backup %s mixed into backup %s", id, p.start.BackupID)
		}
		p.producers[rec.Producer] = id
		return nil
	case chunkstream.TypeEnd:
		return nil
	case chunkstream.TypeBackupStart:
		if !p.xlogProds[rec.Producer] {
			return errors.New("backup start record from a producer that is not pgbb-xlog")
		}
		return p.backupStart(rec)
	case chunkstream.TypeBackupEnd:
		if !p.xlogProds[rec.Producer] {
			return errors.New("backup end record from a producer that is not pgbb-xlog")
		}
	}
	if p.start == nil {
		return errors.New("data before the backup start record: read pgbb-xlog's stream first")
	}
	if p.producers[rec.Producer] != p.start.BackupID {
		return fmt.Errorf("stream of backup %s mixed into backup %s", p.producers[rec.Producer], p.start.BackupID)
	}
	switch rec.Type {
	case chunkstream.TypeDir:
		item, path, err := rec.ItemPath()
		if err != nil {
			return err
		}
		if err := p.checkItemPath(item, path); err != nil {
			return err
		}
		if p.links[path] {
			return fmt.Errorf("%q is a tablespace link, not a directory", path)
		}
		if err := p.out.dir(path); err != nil {
			return err
		}
		return p.itemDone(item)
	case chunkstream.TypeLink:
		item, path, err := rec.ItemPath()
		if err != nil {
			return err
		}
		if !p.links[path] {
			return fmt.Errorf("link %q is not a tablespace of this backup", path)
		}
		return p.itemDone(item)
	case chunkstream.TypeChunk:
		return p.chunk(rec)
	case chunkstream.TypeOutcome:
		return p.outcome(rec)
	case chunkstream.TypeBadPage:
		item, blk, path, err := rec.BadPage()
		if err != nil {
			return err
		}
		if err := p.checkItemPath(item, path); err != nil {
			return err
		}
		p.badPages[path] = append(p.badPages[path], blk)
		return nil
	case chunkstream.TypeTrailer:
		n, id, err := rec.Trailer()
		if err != nil {
			return err
		}
		if id != p.start.BackupID {
			return fmt.Errorf("work list of backup %s in backup %s", id, p.start.BackupID)
		}
		if p.trailer != nil {
			return errors.New("work-list trailer appears twice")
		}
		p.trailer = &n
		return nil
	case chunkstream.TypeBackupEnd:
		if p.end != nil {
			return errors.New("second backup end record")
		}
		e, err := rec.BackupEnd()
		if err != nil {
			return err
		}
		p.end = &e
		return nil
	}
	return fmt.Errorf("unexpected record type %q", rec.Type)
}

func (p *packer) backupStart(rec *chunkstream.Record) error {
	if p.start != nil {
		return errors.New("second backup start record: streams of two backups are mixed")
	}
	s, err := rec.BackupStart()
	if err != nil {
		return err
	}
	if p.producers[rec.Producer] != s.BackupID {
		return errors.New("backup start record of another backup")
	}
	for prod, id := range p.producers {
		if id != s.BackupID {
			return fmt.Errorf("stream %016x of backup %s mixed into backup %s", prod, id, s.BackupID)
		}
	}
	if !worklist.ValidBackupID(s.BackupID) {
		return fmt.Errorf("bad backup id %q", s.BackupID)
	}
	if p.major, err = pgversion.ForServer(int(s.ServerVersion)); err != nil {
		return err
	}
	p.magic = p.major.WALPageMagic
	if !wal.ValidSegmentSize(uint64(s.WALSegmentSize)) {
		return fmt.Errorf("bad WAL segment size %d", s.WALSegmentSize)
	}
	dirMode, fileMode := os.FileMode(0o700), os.FileMode(0o600)
	switch s.DirMode {
	case 0o700:
	case 0o750:
		dirMode, fileMode = 0o750, 0o640
	default:
		return fmt.Errorf("unexpected data directory mode %04o", s.DirMode)
	}
	for _, t := range s.Tablespaces {
		if t.Location == "" || !filepath.IsAbs(t.Location) {
			return fmt.Errorf("tablespace %d has location %q: only tablespaces outside the data directory are supported", t.OID, t.Location)
		}
		p.links["pg_tblspc/"+strconv.FormatUint(uint64(t.OID), 10)] = true
	}
	for old := range p.o.Mappings {
		found := false
		for _, t := range s.Tablespaces {
			found = found || filepath.Clean(t.Location) == old
		}
		if !found {
			return cliapp.Usage("check -T OLD: it must be a tablespace location on the server", "tablespace mapping for %s matches no tablespace", old)
		}
	}
	p.start = &s
	if err := p.out.begin(&s, p.major, dirMode, fileMode); err != nil {
		return err
	}
	close(p.started)
	return nil
}

var walPath = regexp.MustCompile(`^pg_wal/([0-9A-F]{24}|[0-9A-F]{8}\.history)$`)

// checkItemPath rejects paths a work item may not write: not relative and clean, reserved names, pg_wal
// contents, pg_control, or anything under pg_tblspc that is not inside a tablespace of this backup.
func (p *packer) checkItemPath(item uint64, path string) error {
	if item == 0 {
		return fmt.Errorf("item number 0 on %q", path)
	}
	if err := worklist.CheckPath(path); err != nil {
		return err
	}
	switch path {
	case "backup_label", "tablespace_map", "backup_manifest", controlfile.Path:
		return fmt.Errorf("work item writes %q, which only pgbb-xlog's records or pgbb-pack provide", path)
	}
	if strings.HasPrefix(path, ".pgbb") {
		return fmt.Errorf("work item writes %q, a name pgbb-pack reserves", path)
	}
	if strings.HasPrefix(path, "pg_wal/") && !slices.Contains(p.major.WALDirPaths(), path) {
		return fmt.Errorf("work item writes %q inside pg_wal", path)
	}
	if strings.HasPrefix(path, "pg_tblspc/") {
		parts := strings.SplitN(path, "/", 3)
		if !p.links[parts[0]+"/"+parts[1]] {
			return fmt.Errorf("%q is not inside a tablespace of this backup", path)
		}
	}
	return nil
}

func (p *packer) itemDone(item uint64) error {
	st := p.items[item]
	if st == nil {
		st = &itemState{}
		p.items[item] = st
	}
	if st.done {
		return fmt.Errorf("item %d arrived twice", item)
	}
	st.done = true
	return nil
}

func (p *packer) chunk(rec *chunkstream.Record) error {
	c, err := rec.Chunk()
	if err != nil {
		return err
	}
	if c.Offset > 1<<40 || c.Offset+uint64(c.RawLen) > 1<<40 {
		return fmt.Errorf("%s: offset %d out of range", c.Path, c.Offset)
	}
	if c.Item == 0 {
		if !p.xlogProds[rec.Producer] {
			return fmt.Errorf("%s: item 0 from a producer that is not pgbb-xlog", c.Path)
		}
		return p.xlogChunk(&c)
	}
	if err := p.checkItemPath(c.Item, c.Path); err != nil {
		return err
	}
	st := p.items[c.Item]
	if st == nil {
		st = &itemState{}
		p.items[c.Item] = st
	}
	if st.done {
		return fmt.Errorf("chunk of item %d after its outcome", c.Item)
	}
	if fp := p.files[c.Path]; fp != nil && fp.done {
		return fmt.Errorf("chunk of %s after the file was complete", c.Path)
	}
	if st.path == "" {
		st.path, st.start, st.next = c.Path, c.Offset, c.Offset
	}
	if c.Path != st.path {
		return fmt.Errorf("item %d: chunk for %s after chunks for %s", c.Item, c.Path, st.path)
	}
	if c.Offset != st.next {
		return fmt.Errorf("item %d (%s): chunk at offset %d where %d was due", c.Item, c.Path, c.Offset, st.next)
	}
	st.next += uint64(c.RawLen)
	st.chunkBytes += uint64(c.RawLen)
	return p.out.chunk(&c)
}

func (p *packer) xlogChunk(c *chunkstream.Chunk) error {
	if c.Path == controlfile.Path {
		if c.Offset != 0 || p.control != nil {
			return errors.New("pg_control in more than one piece")
		}
		raw, err := rawData(c)
		if err != nil {
			return err
		}
		if _, err := controlfile.Parse(raw); err != nil {
			return err
		}
		p.control = append([]byte(nil), raw...)
		return nil
	}
	m := walPath.FindStringSubmatch(c.Path)
	if m == nil {
		return fmt.Errorf("item 0 on %q, which is not WAL or pg_control", c.Path)
	}
	name := m[1]
	if wal.IsHistoryFileName(name) {
		if c.Offset != 0 || p.history[name] {
			return fmt.Errorf("history file %s in more than one piece", name)
		}
		p.history[name] = true
		return p.out.chunk(c)
	}
	segSize := uint64(p.start.WALSegmentSize)
	seg, err := wal.ParseSegmentName(name, segSize)
	if err != nil {
		return err
	}
	ws := p.walFiles[name]
	if ws == nil {
		ws = &walState{}
		p.walFiles[name] = ws
	}
	if ws.complete || c.Offset != ws.bytes || c.Offset+uint64(c.RawLen) > segSize {
		return fmt.Errorf("WAL segment %s: piece at offset %d out of order", name, c.Offset)
	}
	if c.Codec == chunkstream.CodecNone {
		// pgbb-xlog checked the page headers; check again where it costs nothing. Compressed WAL is
		// checked by pgbb-pack --verify and by pg_verifybackup after extraction.
		if err := wal.CheckPages(c.Data, c.Offset, wal.Expect{Magic: p.magic, SystemID: p.start.SystemID, Segment: seg}); err != nil {
			return err
		}
	}
	ws.bytes += uint64(c.RawLen)
	return p.out.chunk(c)
}

// rawData returns a chunk's uncompressed bytes, checked against its CRC.
func rawData(c *chunkstream.Chunk) ([]byte, error) {
	raw := c.Data
	if c.Codec == chunkstream.CodecNone {
		return raw, nil // Record.Chunk checked RawCRC
	}
	if c.Codec == chunkstream.CodecXZ {
		var err error
		if raw, err = compress.UnXZ(c.Data, int(c.RawLen)); err != nil {
			return nil, fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	if crc32c.Checksum(raw) != c.RawCRC {
		return nil, fmt.Errorf("%s at offset %d: chunk checksum mismatch", c.Path, c.Offset)
	}
	return raw, nil
}

func (p *packer) outcome(rec *chunkstream.Record) error {
	o, err := rec.Outcome()
	if err != nil {
		return err
	}
	if o.Item == 0 {
		if !p.xlogProds[rec.Producer] {
			return fmt.Errorf("%s: item 0 from a producer that is not pgbb-xlog", o.Path)
		}
		return p.xlogOutcome(o)
	}
	if err := p.checkItemPath(o.Item, o.Path); err != nil {
		return err
	}
	st := p.items[o.Item]
	if st == nil {
		st = &itemState{}
		p.items[o.Item] = st
	}
	if st.done {
		return fmt.Errorf("item %d arrived twice", o.Item)
	}
	if st.chunkBytes != o.Stored {
		return fmt.Errorf("item %d (%s): %d bytes arrived, its outcome says %d", o.Item, o.Path, st.chunkBytes, o.Stored)
	}
	if st.path != "" && (st.path != o.Path || st.start != o.Offset || st.next != o.Offset+o.Stored) {
		return fmt.Errorf("item %d: chunks for %s at %d to %d do not make the range %s at %d of %d bytes", o.Item,
			st.path, st.start, st.next, o.Path, o.Offset, o.Stored)
	}
	if o.Status == chunkstream.Vanished && o.Stored != 0 {
		return fmt.Errorf("item %d: vanished with bytes", o.Item)
	}
	st.done = true
	fp := p.files[o.Path]
	if fp == nil {
		fp = &fileProgress{ranges: map[uint64]chunkstream.Outcome{}}
		p.files[o.Path] = fp
	}
	if fp.done {
		return fmt.Errorf("range of %s after the file was complete", o.Path)
	}
	if _, dup := fp.ranges[o.Offset]; dup {
		return fmt.Errorf("two ranges of %s at offset %d", o.Path, o.Offset)
	}
	fp.ranges[o.Offset] = o
	return p.fileMaybeDone(o.Path, fp)
}

// fileMaybeDone hands a file to the target once its ranges are contiguous from 0 through a final one. The
// file ends at the first range that came back short (it shrank while copied; WAL replay restores the rest)
// and is absent when its first range found it gone.
func (p *packer) fileMaybeDone(path string, fp *fileProgress) error {
	var at uint64
	for {
		r, ok := fp.ranges[at]
		if !ok {
			return nil
		}
		if r.Final {
			break
		}
		if r.Length == 0 {
			return fmt.Errorf("%s: empty range at %d that is not the last", path, at)
		}
		at += r.Length
	}
	offsets := make([]uint64, 0, len(fp.ranges))
	for off := range fp.ranges {
		offsets = append(offsets, off)
	}
	sort.Slice(offsets, func(i, j int) bool { return offsets[i] < offsets[j] })
	if last := fp.ranges[offsets[len(offsets)-1]]; !last.Final {
		return fmt.Errorf("%s: a range after the final one", path)
	}
	fp.done = true
	if fp.ranges[0].Status == chunkstream.Vanished {
		return p.out.fileDone(path, 0, false)
	}
	var size int64
	for _, off := range offsets {
		r := fp.ranges[off]
		size = int64(off + r.Stored)
		if r.Stored < r.Length {
			break
		}
	}
	return p.out.fileDone(path, size, true)
}

func (p *packer) xlogOutcome(o chunkstream.Outcome) error {
	if o.Path == controlfile.Path {
		if p.control == nil || o.Stored != uint64(len(p.control)) {
			return errors.New("pg_control outcome without its data")
		}
		return nil
	}
	m := walPath.FindStringSubmatch(o.Path)
	if m == nil {
		return fmt.Errorf("item 0 outcome on %q", o.Path)
	}
	if wal.IsHistoryFileName(m[1]) {
		if !p.history[m[1]] && o.Stored != 0 {
			return fmt.Errorf("history file %s: outcome without data", o.Path)
		}
		p.history[m[1]] = true
		return p.out.fileDone(o.Path, int64(o.Stored), true)
	}
	ws := p.walFiles[m[1]]
	if ws == nil || ws.complete || o.Stored != uint64(p.start.WALSegmentSize) || ws.bytes != o.Stored {
		got := uint64(0)
		if ws != nil {
			got = ws.bytes
		}
		return fmt.Errorf("WAL segment %s: %d of %d bytes arrived", o.Path, got, p.start.WALSegmentSize)
	}
	ws.complete = true
	return p.out.fileDone(o.Path, int64(o.Stored), true)
}

// commit proves the backup complete, lets the target write the last files, and writes backup_manifest.
func (p *packer) commit() error {
	if p.start == nil {
		return errors.New("no backup start record: pgbb-xlog's stream is missing")
	}
	if p.end == nil {
		return cliapp.WithHint(errors.New("no backup end record: the backup did not finish"), "see pgbb-xlog's messages for why")
	}
	if p.trailer == nil {
		return errors.New("the work list's trailer never arrived: the list or the fetch job that read its end failed")
	}
	n := *p.trailer
	var missing []uint64
	for i := uint64(1); i <= n; i++ {
		if st := p.items[i]; st == nil || !st.done {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d work items never arrived (first: %d): a fetch job failed", len(missing), n, missing[0])
	}
	for i, st := range p.items {
		if i > n || !st.done {
			return fmt.Errorf("item %d is not in the work list of %d items", i, n)
		}
	}
	for path, fp := range p.files {
		if !fp.done {
			return fmt.Errorf("%s: some of its ranges never arrived", path)
		}
	}
	if p.control == nil {
		return errors.New("global/pg_control never arrived")
	}
	info, _ := controlfile.Parse(p.control)
	if info.SystemID != p.start.SystemID {
		return errors.New("pg_control belongs to another cluster")
	}
	if p.end.StopTimeline != p.start.Timeline {
		return errors.New("the timeline changed during the backup")
	}
	if p.end.StopLSN <= p.start.StartLSN {
		return errors.New("stop LSN is not after start LSN")
	}
	segSize := uint64(p.start.WALSegmentSize)
	first := wal.SegmentOf(wal.LSN(p.start.StartLSN), p.start.Timeline, segSize)
	last := wal.SegmentOf(wal.LSN(p.end.StopLSN-1), p.start.Timeline, segSize)
	for no := first.No; no <= last.No; no++ {
		seg := wal.Segment{Timeline: p.start.Timeline, No: no, Size: segSize}
		if ws := p.walFiles[seg.Name()]; ws == nil || !ws.complete {
			return fmt.Errorf("WAL segment %s is missing: the WAL from %s to %s is not complete", seg.Name(), wal.LSN(p.start.StartLSN), wal.LSN(p.end.StopLSN))
		}
	}
	for name, ws := range p.walFiles {
		if !ws.complete {
			return fmt.Errorf("WAL segment %s is incomplete", name)
		}
	}
	entries, err := p.out.commit(p.control, p.end)
	if err != nil {
		return err
	}
	if len(p.badPages) > 0 {
		return p.reportBadPages()
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	body := manifest.Build(p.major.ManifestVersion, p.start.SystemID, entries,
		[]manifest.WALRange{{Timeline: p.start.Timeline, Start: p.start.StartLSN, End: p.end.StopLSN}})
	if err := p.disk.writeWhole(p.dest, "backup_manifest", body, 0o600|(os.FileMode(p.start.DirMode)&0o040)); err != nil {
		return err
	}
	p.o.Log.Info("backup complete: %d files, WAL %s to %s", len(entries), wal.LSN(p.start.StartLSN), wal.LSN(p.end.StopLSN))
	return nil
}

// reportBadPages lists the files and blocks that failed checksum verification, with a total.
func (p *packer) reportBadPages() error {
	paths := make([]string, 0, len(p.badPages))
	total := 0
	for path, blocks := range p.badPages {
		paths = append(paths, path)
		total += len(blocks)
	}
	sort.Strings(paths)
	for _, path := range paths {
		blocks := p.badPages[path]
		sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
		list := make([]string, 0, len(blocks))
		for i, b := range blocks {
			if i == 20 {
				list = append(list, fmt.Sprintf("and %d more", len(blocks)-20))
				break
			}
			list = append(list, strconv.FormatUint(b, 10))
		}
		p.o.Log.Warn("checksum verification failed in file %q, blocks %s", path, strings.Join(list, ", "))
	}
	return &cliapp.Error{Code: cliapp.ExitBadPage, Err: fmt.Errorf("%w: %d pages in %d files; the backup in %s is kept, without backup_manifest", errBadPages, total, len(paths), p.dest),
		Hint: "the source cluster has corrupt pages: check it (pg_amcheck, pg_checksums on a stopped copy); to take a backup anyway, pass --no-verify-checksums to pgbb-fetch"}
}

// disk makes files durable, or not with --no-sync.
type disk struct{ noSync bool }

func (d disk) syncFile(f *os.File) error {
	if d.noSync {
		return nil
	}
	return f.Sync()
}

func (d disk) syncDir(dir string) error {
	if d.noSync {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// writeWhole writes dir/name under a temporary name, syncs it, renames it into place and syncs dir.
func (d disk) writeWhole(dir, name string, data []byte, mode os.FileMode) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, mode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := d.syncFile(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	return d.syncDir(dir)
}
