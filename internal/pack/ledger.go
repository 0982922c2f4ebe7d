package pack

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/wal"
	"github.com/pgbb/pgbb/internal/worklist"
)

// The ledger: every record is checked here, under the packer's lock, before the target stores it. It tracks
// each work item (its chunks follow each other from its offset under one path, and its outcome names
// exactly the bytes that came), each data file (its ranges tile it from 0 through a final one; this is the
// one place that proves it) and each WAL segment, and keeps the CRC32C of every range, combined from its
// chunks' checksums, so that a file's manifest checksum needs no second pass over its bytes.

// fileProgress collects the outcomes of one data file's ranges.
type fileProgress struct {
	ranges map[uint64]rangeDone // by offset
	done   bool
}

// rangeDone is one item's outcome and the CRC32C of the bytes it stored.
type rangeDone struct {
	chunkstream.Outcome
	crc uint32
}

// itemState follows one work item: its chunks must carry one path and follow each other from the item's
// offset, and its outcome must name that path and cover exactly the bytes that came.
type itemState struct {
	chunkBytes uint64
	path       string
	start      uint64 // offset of the first chunk
	next       uint64 // offset the next chunk must have
	crc        uint32 // CRC32C of the chunks so far
	done       bool
}

type walState struct {
	bytes    uint64
	crc      uint32
	complete bool
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
	if err := datadir.CheckWorkItemPath(path, p.walDirs); err != nil {
		return err
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
	if c.Item == 0 {
		if err := checkOffset(c.Path, c.Offset, c.RawLen); err != nil {
			return err
		}
		if !p.xlogProds[rec.Producer] {
			return fmt.Errorf("%s: item 0 from a producer that is not pgbb-xlog", c.Path)
		}
		return p.xlogChunk(&c)
	}
	if err := p.itemRange("chunk", c.Item, c.Path, c.Offset, c.RawLen, c.RawCRC); err != nil {
		return err
	}
	return p.out.chunk(&c)
}

// written takes a W record: a range a job wrote into DEST itself, checked as a chunk of the same bytes.
func (p *packer) written(rec *chunkstream.Record) error {
	w, err := rec.Written()
	if err != nil {
		return err
	}
	if err := p.itemRange("written range", w.Item, w.Path, w.Offset, w.Length, w.CRC); err != nil {
		return err
	}
	return p.out.written(&w)
}

func checkOffset(path string, off uint64, n uint32) error {
	if off > 1<<40 || off+uint64(n) > 1<<40 {
		return fmt.Errorf("%s: offset %d out of range", path, off)
	}
	return nil
}

// itemRange checks the next piece of a work item, a chunk's or a written range's (what), and adds it to
// the item: pieces follow each other from the item's offset under one path, before its outcome.
func (p *packer) itemRange(what string, item uint64, path string, off uint64, n, crc uint32) error {
	if err := checkOffset(path, off, n); err != nil {
		return err
	}
	if err := p.checkItemPath(item, path); err != nil {
		return err
	}
	st := p.items[item]
	if st == nil {
		st = &itemState{}
		p.items[item] = st
	}
	if st.done {
		return fmt.Errorf("%s of item %d after its outcome", what, item)
	}
	if fp := p.files[path]; fp != nil && fp.done {
		return fmt.Errorf("%s of %s after the file was complete", what, path)
	}
	if st.path == "" {
		st.path, st.start, st.next = path, off, off
	}
	if path != st.path {
		return fmt.Errorf("item %d: %s for %s after pieces for %s", item, what, path, st.path)
	}
	if off != st.next {
		return fmt.Errorf("item %d (%s): %s at offset %d where %d was due", item, path, what, off, st.next)
	}
	st.next += uint64(n)
	st.chunkBytes += uint64(n)
	st.crc = crc32c.Combine(st.crc, crc, int64(n))
	p.proved.Add(int64(n))
	return nil
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
		p.historyCRC[name] = c.RawCRC
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
	ws.crc = crc32c.Combine(ws.crc, c.RawCRC, int64(c.RawLen))
	return p.out.chunk(c)
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
		fp = &fileProgress{ranges: map[uint64]rangeDone{}}
		p.files[o.Path] = fp
	}
	if fp.done {
		return fmt.Errorf("range of %s after the file was complete", o.Path)
	}
	if _, dup := fp.ranges[o.Offset]; dup {
		return fmt.Errorf("two ranges of %s at offset %d", o.Path, o.Offset)
	}
	fp.ranges[o.Offset] = rangeDone{Outcome: o, crc: st.crc}
	return p.fileMaybeDone(o.Path, fp)
}

// fileMaybeDone hands a file to the target once its ranges are contiguous from 0 through a final one, with
// its size and CRC32C. The file ends at the first range that came back short (it shrank while copied; WAL
// replay restores the rest, invariant 6) and is absent when its first range found it gone.
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
		return p.out.fileDone(path, fileSum{}, false)
	}
	var sum fileSum
	for _, off := range offsets {
		r := fp.ranges[off]
		sum.size = int64(off + r.Stored)
		sum.crc = crc32c.Combine(sum.crc, r.crc, int64(r.Stored))
		if r.Stored < r.Length {
			break
		}
	}
	return p.out.fileDone(path, sum, true)
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
		return p.out.fileDone(o.Path, fileSum{size: int64(o.Stored), crc: p.historyCRC[m[1]]}, true)
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
	return p.out.fileDone(o.Path, fileSum{size: int64(o.Stored), crc: ws.crc}, true)
}
