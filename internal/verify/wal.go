package verify

import (
	"encoding/binary"
	"io"
	"regexp"

	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/wal"
)

// maxRangeSegments bounds the segments one WAL range may ask for, so that a range that makes no sense
// (spanning terabytes) is reported instead of listed segment by segment.
const maxRangeSegments = 1 << 20

// walReadSize is how much of a segment is read and checked at a time.
const walReadSize = 1 << 20

var (
	segmentName       = regexp.MustCompile(`^[0-9A-F]{24}$`)
	backupHistoryName = regexp.MustCompile(`^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$`)
)

// walChecker checks the files of pg_wal (a plain backup's directory or pg_wal.tar's members) and, at the
// end, that every segment of the manifest's WAL ranges was among them.
//
// The segment size is the size of the first segment found, which must be a valid wal_segment_size. The
// page magic and, for a version 1 manifest, the system identifier come from the first page of the first
// segment found; a version 2 manifest's System-Identifier is what every segment must carry.
type walChecker struct {
	v         *verifier
	segSize   uint64
	magic     uint16
	haveMagic bool
	sysID     uint64
	haveSysID bool
	found     map[string]bool // segment names seen, whatever their state
}

// file checks one file of pg_wal whose content r yields (read only as far as needed). It reports what it
// finds and returns only an error reading r.
func (c *walChecker) file(name string, size int64, r io.Reader) error {
	path := "pg_wal/" + name
	switch {
	case wal.IsHistoryFileName(name) || backupHistoryName.MatchString(name):
		return nil
	case !segmentName.MatchString(name):
		c.v.report(path, "not a WAL segment or history file")
		return nil
	}
	if c.segSize == 0 {
		if size < 0 || !wal.ValidSegmentSize(uint64(size)) {
			c.v.report(path, "size %d is not a WAL segment size (a power of two from 1 MB to 1 GB)", size)
			return nil
		}
		c.segSize = uint64(size)
	}
	seg, err := wal.ParseSegmentName(name, c.segSize)
	if err != nil {
		c.v.report(path, "%v", err)
		return nil
	}
	c.found[name] = true
	if uint64(size) != c.segSize {
		c.v.report(path, "size %d, the first segment's is %d", size, c.segSize)
		return nil
	}
	buf := make([]byte, walReadSize)
	for off := uint64(0); off < c.segSize; off += walReadSize {
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		if off == 0 && !c.haveMagic {
			c.firstPage(path, buf)
		}
		if err := wal.CheckPages(buf, off, wal.Expect{Magic: c.magic, SystemID: c.sysID, Segment: seg}); err != nil {
			c.v.report(path, "%v", err)
			return nil
		}
	}
	return nil
}

// firstPage takes the page magic and, unless the manifest gave it, the system identifier from the long
// header of the first segment found.
func (c *walChecker) firstPage(path string, page []byte) {
	c.magic, c.haveMagic = binary.LittleEndian.Uint16(page[0:]), true
	if !c.haveSysID {
		c.sysID, c.haveSysID = binary.LittleEndian.Uint64(page[24:]), true
	}
	if _, err := pgversion.ForPageMagic(c.magic); err != nil {
		c.v.report(path, "%v", err)
	}
}

// finish reports the segments of the WAL ranges that were not found; missing says why.
func (c *walChecker) finish(missing string) {
	ranges := c.v.m.WALRanges
	if len(ranges) == 0 {
		c.v.report(ManifestName, "no WAL ranges: the backup's WAL cannot be checked")
		return
	}
	if c.segSize == 0 {
		c.v.report("pg_wal", "no WAL segment found (%s); the backup needs the WAL from %s to %s", missing,
			wal.LSN(ranges[0].Start), wal.LSN(ranges[len(ranges)-1].End))
		return
	}
	for _, r := range ranges {
		first := wal.SegmentOf(wal.LSN(r.Start), r.Timeline, c.segSize)
		last := first
		if r.End > r.Start {
			last = wal.SegmentOf(wal.LSN(r.End-1), r.Timeline, c.segSize)
		}
		if last.No-first.No >= maxRangeSegments {
			c.v.report(ManifestName, "WAL range from %s to %s spans more than %d segments", wal.LSN(r.Start), wal.LSN(r.End), maxRangeSegments)
			continue
		}
		for no := first.No; no <= last.No; no++ {
			name := wal.Segment{Timeline: r.Timeline, No: no, Size: c.segSize}.Name()
			if !c.found[name] {
				c.v.report("pg_wal/"+name, "%s", missing)
			}
		}
	}
}
