// Package pack assembles chunk streams (docs/chunk-stream.md) into a plain data directory, proves the backup
// complete, and writes backup_manifest last as the commit marker (invariant 10).
//
// Contract: Run reads its inputs one after another, each holding one or more complete streams. The stream of
// pgbb-xlog (records X … E) must be read before or interleaved with the fetchers' streams, as the pipeline
// delivers it; X must arrive before any data record. Run writes only inside DEST and the mapped tablespace
// directories, never through a link it did not create, and on failure removes what it wrote unless
// NoClean is set.
package pack

import (
	"errors"
	"fmt"
	"github.com/pgbb/pgbb/internal/crc32c"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/wal"
	"github.com/pgbb/pgbb/internal/worklist"
)

// Options for Run.
type Options struct {
	Dest     string
	Force    bool              // empty a non-empty Dest first
	Mappings map[string]string // tablespace location on the server -> directory here (-T OLD=NEW)
	NoClean  bool              // keep what was written when the run fails
	Inputs   []string          // files, directories (their *.stream files, read when reached) or "-"
	Log      *cliapp.Logger
}

// ParseMapping parses one -T OLD=NEW argument; "\=" stands for a literal "=" as in pg_basebackup.
func ParseMapping(s string) (string, string, error) {
	var old, cur strings.Builder
	cur.Grow(len(s))
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

type fileState struct {
	tablespace bool
}

type itemState struct {
	chunkBytes uint64
	done       bool
}

type walState struct {
	seg      wal.Segment
	bytes    uint64
	complete bool
}

type packer struct {
	o         Options
	dest      string
	createdD  bool
	start     *chunkstream.BackupStart
	end       *chunkstream.BackupEnd
	trailer   *uint64
	magic     uint16
	dirMode   os.FileMode
	fileMode  os.FileMode
	dirs      map[string]bool // directories created by pack, relative to dest
	links     map[string]string
	files     map[string]bool // files written (not pg_wal, not pg_control)
	items     map[uint64]*itemState
	walFiles  map[string]*walState
	history   map[string]bool
	control   []byte
	producers map[uint64]string // producer id -> backup id
	tsTargets []string          // tablespace directories pack filled
	buf       []byte
}

// Run assembles the backup. It returns nil only after backup_manifest is durably in place.
func Run(o Options, stdin io.Reader) (err error) {
	if o.Dest == "" {
		return cliapp.Usage("give the target with -D DIR", "no target directory")
	}
	dest, err := filepath.Abs(o.Dest)
	if err != nil {
		return err
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
	syscall.Umask(0)
	p := &packer{o: o, dest: dest, dirs: map[string]bool{}, links: map[string]string{}, files: map[string]bool{},
		items: map[uint64]*itemState{}, walFiles: map[string]*walState{}, history: map[string]bool{}, producers: map[uint64]string{},
		dirMode: 0o700, fileMode: 0o600}
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
		if err != nil && !o.NoClean {
			p.clean()
		}
	}()
	for _, in := range o.Inputs {
		if err := p.readInput(in, stdin); err != nil {
			return err
		}
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

// clean removes what this run wrote: Dest's contents (Dest itself if pack created it) and the contents of
// the tablespace directories it filled. Both were empty or absent at the start.
func (p *packer) clean() {
	for _, t := range p.tsTargets {
		emptyDir(t)
	}
	if p.createdD {
		os.RemoveAll(p.dest)
	} else {
		emptyDir(p.dest)
	}
}

func (p *packer) readInput(in string, stdin io.Reader) error {
	if in == "-" {
		return p.readStream(stdin, "stdin")
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
		return p.readStream(f, in)
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

func (p *packer) readStream(r io.Reader, name string) error {
	rd := chunkstream.NewReader(r, name)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := p.record(rec); err != nil {
			return fmt.Errorf("%s: record %d of producer %016x: %w", name, rec.Num, rec.Producer, err)
		}
	}
}

func (p *packer) record(rec *chunkstream.Record) error {
	if rec.Type == chunkstream.TypeBegin {
		if _, seen := p.producers[rec.Producer]; seen {
			return errors.New("a producer's stream appears twice")
		}
		_, id, err := rec.Begin()
		if err != nil {
			return err
		}
		if p.start != nil && id != p.start.BackupID {
			return fmt.Errorf("stream of backup %s mixed into backup %s", id, p.start.BackupID)
		}
		p.producers[rec.Producer] = id
		return nil
	}
	if rec.Type == chunkstream.TypeEnd {
		return nil
	}
	if rec.Type == chunkstream.TypeBackupStart {
		return p.backupStart(rec)
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
		if err := p.mkdirs(path); err != nil {
			return err
		}
		return p.itemDone(item)
	case chunkstream.TypeLink:
		item, path, err := rec.ItemPath()
		if err != nil {
			return err
		}
		if _, ok := p.links[path]; !ok {
			return fmt.Errorf("link %q is not a tablespace of this backup", path)
		}
		return p.itemDone(item)
	case chunkstream.TypeChunk:
		return p.chunk(rec)
	case chunkstream.TypeOutcome:
		return p.outcome(rec)
	case chunkstream.TypeTrailer:
		n, id, err := rec.Trailer()
		if err != nil {
			return err
		}
		if id != p.start.BackupID {
			return fmt.Errorf("work list of backup %s in backup %s", id, p.start.BackupID)
		}
		if p.trailer != nil && *p.trailer != n {
			return errors.New("two work-list trailers with different counts")
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
	if p.magic, err = wal.PageMagic(int(s.ServerVersion)); err != nil {
		return err
	}
	if !wal.ValidSegmentSize(uint64(s.WALSegmentSize)) {
		return fmt.Errorf("bad WAL segment size %d", s.WALSegmentSize)
	}
	switch s.DirMode {
	case 0o700:
	case 0o750:
		p.dirMode, p.fileMode = 0o750, 0o640
	default:
		return fmt.Errorf("unexpected data directory mode %04o", s.DirMode)
	}
	p.start = &s
	if err := os.Chmod(p.dest, p.dirMode); err != nil {
		return err
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
	// Tablespace links are made now, before any file under them can arrive.
	for _, t := range s.Tablespaces {
		if t.Location == "" || !filepath.IsAbs(t.Location) {
			return fmt.Errorf("tablespace %d has location %q: only tablespaces outside the data directory are supported", t.OID, t.Location)
		}
		target := filepath.Clean(t.Location)
		if m, ok := p.o.Mappings[target]; ok {
			target = m
		} else if err := CheckDest(target, false); err != nil {
			return cliapp.WithHint(fmt.Errorf("tablespace %d: %w", t.OID, err),
				fmt.Sprintf("map it to a new directory with -T %s=NEWDIR", t.Location))
		}
		if err := os.MkdirAll(target, p.dirMode); err != nil {
			return err
		}
		if err := os.Chmod(target, p.dirMode); err != nil {
			return err
		}
		p.tsTargets = append(p.tsTargets, target)
		if err := p.mkdirs("pg_tblspc"); err != nil {
			return err
		}
		link := "pg_tblspc/" + strconv.FormatUint(uint64(t.OID), 10)
		if err := os.Symlink(target, filepath.Join(p.dest, link)); err != nil {
			return err
		}
		p.links[link] = target
	}
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
	if strings.HasPrefix(path, "pg_wal/") && path != "pg_wal/archive_status" {
		return fmt.Errorf("work item writes %q inside pg_wal", path)
	}
	if strings.HasPrefix(path, "pg_tblspc/") {
		parts := strings.SplitN(path, "/", 3)
		if _, ok := p.links[parts[0]+"/"+parts[1]]; !ok {
			return fmt.Errorf("%q is not inside a tablespace of this backup", path)
		}
	}
	return nil
}

// mkdirs creates path's directories inside dest, one component at a time. An existing component must be one
// pack created (or a tablespace link it made), so nothing is written through a foreign link.
func (p *packer) mkdirs(path string) error {
	parts := strings.Split(path, "/")
	for i := range parts {
		sub := strings.Join(parts[:i+1], "/")
		if p.dirs[sub] {
			continue
		}
		if _, ok := p.links[sub]; ok {
			if i == len(parts)-1 {
				return fmt.Errorf("%q is a tablespace link, not a directory", sub)
			}
			continue
		}
		full := filepath.Join(p.dest, sub)
		if err := os.Mkdir(full, p.dirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", sub, err)
		}
		p.dirs[sub] = true
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
	raw := c.Data
	if c.Codec == chunkstream.CodecXZ {
		if raw, err = compress.UnXZ(c.Data, int(c.RawLen)); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	if crc32c.Checksum(raw) != c.RawCRC {
		return fmt.Errorf("%s at offset %d: chunk checksum mismatch", c.Path, c.Offset)
	}
	if c.Offset > 1<<40 {
		return fmt.Errorf("%s: offset %d out of range", c.Path, c.Offset)
	}
	if c.Item == 0 {
		return p.xlogChunk(c, raw)
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
	st.chunkBytes += uint64(len(raw))
	if dir := filepath.Dir(c.Path); dir != "." {
		if err := p.mkdirs(dir); err != nil {
			return err
		}
	}
	if err := p.writeAt(c.Path, int64(c.Offset), raw); err != nil {
		return err
	}
	p.files[c.Path] = true
	return nil
}

// writeAt writes into a regular file inside dest without following a final symlink.
func (p *packer) writeAt(path string, off int64, data []byte) error {
	f, err := os.OpenFile(filepath.Join(p.dest, path), os.O_WRONLY|os.O_CREATE|syscall.O_NOFOLLOW, p.fileMode)
	if err != nil {
		return err
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		f.Close()
		return fmt.Errorf("%s is not a regular file", path)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

func (p *packer) xlogChunk(c chunkstream.Chunk, raw []byte) error {
	if c.Path == controlfile.Path {
		if c.Offset != 0 {
			return errors.New("pg_control chunk not at offset 0")
		}
		if _, err := controlfile.Parse(raw); err != nil {
			return err
		}
		if p.control != nil {
			return errors.New("pg_control arrived twice")
		}
		p.control = append([]byte(nil), raw...)
		return nil
	}
	m := walPath.FindStringSubmatch(c.Path)
	if m == nil {
		return fmt.Errorf("item 0 on %q, which is not WAL or pg_control", c.Path)
	}
	if err := p.mkdirs("pg_wal"); err != nil && !p.dirs["pg_wal"] {
		return err
	}
	name := m[1]
	if wal.IsHistoryFileName(name) {
		if c.Offset != 0 || p.history[name] {
			return fmt.Errorf("history file %s in more than one piece", name)
		}
		p.history[name] = true
		return p.writeAt(c.Path, 0, raw)
	}
	segSize := uint64(p.start.WALSegmentSize)
	seg, err := wal.ParseSegmentName(name, segSize)
	if err != nil {
		return err
	}
	ws := p.walFiles[name]
	if ws == nil {
		ws = &walState{seg: seg}
		p.walFiles[name] = ws
	}
	if ws.complete || c.Offset != ws.bytes || c.Offset+uint64(len(raw)) > segSize {
		return fmt.Errorf("WAL segment %s: piece at offset %d out of order", name, c.Offset)
	}
	if err := wal.CheckPages(raw, c.Offset, wal.Expect{Magic: p.magic, SystemID: p.start.SystemID, Segment: seg}); err != nil {
		return err
	}
	ws.bytes += uint64(len(raw))
	return p.writeAt(c.Path, int64(c.Offset), raw)
}

func (p *packer) outcome(rec *chunkstream.Record) error {
	o, err := rec.Outcome()
	if err != nil {
		return err
	}
	if o.Item == 0 {
		if ws := p.walFiles[strings.TrimPrefix(o.Path, "pg_wal/")]; ws != nil {
			if ws.complete || o.Stored != uint64(p.start.WALSegmentSize) || ws.bytes != o.Stored {
				return fmt.Errorf("WAL segment %s: %d of %d bytes arrived", o.Path, ws.bytes, p.start.WALSegmentSize)
			}
			ws.complete = true
		}
		return nil
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
	if o.Status == chunkstream.Vanished && o.Stored != 0 {
		return fmt.Errorf("item %d: vanished with bytes", o.Item)
	}
	if o.Status == chunkstream.Stored && o.Stored == 0 {
		// the file existed but gave no bytes for this range (an empty file, or one that shrank): it must
		// exist in the backup
		if dir := filepath.Dir(o.Path); dir != "." {
			if err := p.mkdirs(dir); err != nil {
				return err
			}
		}
		if err := p.writeAt(o.Path, 0, nil); err != nil {
			return err
		}
		p.files[o.Path] = true
	}
	st.done = true
	return nil
}

// commit proves the backup complete, writes backup_label, syncs everything and writes backup_manifest.
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
	if err := p.mkdirs("global"); err != nil && !p.dirs["global"] {
		return err
	}
	if err := p.writeAt(controlfile.Path, 0, p.control); err != nil {
		return err
	}
	p.files[controlfile.Path] = true
	// backup_label exactly as pg_backup_stop returned it (invariant 4). In plain format the tablespace links
	// are already made and tablespace_map is not written, as pg_basebackup -Fp does: the map names the
	// source's locations and recovery would re-point the links there.
	if err := p.writeWhole("backup_label", p.end.BackupLabel); err != nil {
		return err
	}
	p.files["backup_label"] = true
	for _, d := range []string{"pg_wal", "pg_wal/archive_status"} {
		if !p.dirs[d] {
			if err := p.mkdirs(d); err != nil {
				return err
			}
		}
	}
	var entries []manifest.File
	paths := make([]string, 0, len(p.files))
	for f := range p.files {
		paths = append(paths, f)
	}
	sort.Strings(paths)
	for _, f := range paths {
		mf, err := p.syncAndSum(f)
		if err != nil {
			return err
		}
		entries = append(entries, mf)
	}
	for name := range p.walFiles {
		if _, err := p.syncAndSum("pg_wal/" + name); err != nil {
			return err
		}
	}
	for name := range p.history {
		if _, err := p.syncAndSum("pg_wal/" + name); err != nil {
			return err
		}
	}
	for d := range p.dirs {
		if err := syncDir(filepath.Join(p.dest, d)); err != nil {
			return err
		}
	}
	for _, t := range p.tsTargets {
		if err := syncDir(t); err != nil {
			return err
		}
	}
	body := manifest.Build(manifest.Version(int(p.start.ServerVersion)), p.start.SystemID, entries,
		[]manifest.WALRange{{Timeline: p.start.Timeline, Start: p.start.StartLSN, End: p.end.StopLSN}})
	if err := p.writeWhole("backup_manifest", body); err != nil {
		return err
	}
	p.o.Log.Info("backup complete: %d files, WAL %s to %s", len(entries), wal.LSN(p.start.StartLSN), wal.LSN(p.end.StopLSN))
	return nil
}

// writeWhole writes a file at the top of dest under a temporary name, syncs it and renames it into place.
func (p *packer) writeWhole(name string, data []byte) error {
	tmp := filepath.Join(p.dest, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, p.fileMode)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(p.dest, name)); err != nil {
		return err
	}
	return syncDir(p.dest)
}

// syncAndSum reads a written file back for its CRC32C and size (the bytes actually stored, invariant 6) and
// fsyncs it.
func (p *packer) syncAndSum(path string) (manifest.File, error) {
	f, err := os.OpenFile(filepath.Join(p.dest, path), os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return manifest.File{}, err
	}
	defer f.Close()
	if p.buf == nil {
		p.buf = make([]byte, 1<<20)
	}
	var crc uint32
	var size int64
	for {
		n, err := f.Read(p.buf)
		crc = crc32c.Update(crc, p.buf[:n])
		size += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return manifest.File{}, err
		}
	}
	if err := f.Sync(); err != nil {
		return manifest.File{}, fmt.Errorf("fsync %s: %w", path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return manifest.File{}, err
	}
	return manifest.File{Path: path, Size: size, Modified: fi.ModTime().Truncate(time.Second), CRC32C: crc}, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
