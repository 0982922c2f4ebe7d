// Package wal holds LSN and WAL-segment arithmetic and the WAL page header check. It imports only the
// standard library.
//
// The layouts mirror PostgreSQL's src/include/access/xlog_internal.h (XLogPageHeaderData,
// XLogLongPageHeaderData, XLogFileName) and the checks mirror XLogReaderValidatePageHeader in
// src/backend/access/transam/xlogreader.c. WAL files are in the server's byte order; pgbb supports
// little-endian servers (x86_64, aarch64) and says so when it meets anything else.
package wal

import (
	"encoding/binary"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// LSN is a WAL location (XLogRecPtr).
type LSN uint64

// String formats the LSN as PostgreSQL does, %X/%X.
func (l LSN) String() string { return fmt.Sprintf("%X/%X", uint32(l>>32), uint32(l)) }

// ParseLSN parses the %X/%X form.
func ParseLSN(s string) (LSN, error) {
	var hi, lo uint32
	if n, err := fmt.Sscanf(s, "%X/%X", &hi, &lo); err != nil || n != 2 || fmt.Sprintf("%X/%X", hi, lo) != s {
		return 0, fmt.Errorf("bad LSN %q", s)
	}
	return LSN(uint64(hi)<<32 | uint64(lo)), nil
}

// PageSize is XLOG_BLCKSZ; pgbb supports only the default 8192.
const PageSize = 8192

// Segment identifies a WAL segment of a given size.
type Segment struct {
	Timeline uint32
	No       uint64 // XLogSegNo
	Size     uint64 // wal_segment_size in bytes
}

// ValidSegmentSize reports whether n is a power of two between 1 MB and 1 GB (IsValidWalSegSize).
func ValidSegmentSize(n uint64) bool {
	return n >= 1<<20 && n <= 1<<30 && n&(n-1) == 0
}

// SegmentOf returns the segment holding byte lsn (XLByteToSeg).
func SegmentOf(lsn LSN, tli uint32, size uint64) Segment {
	return Segment{Timeline: tli, No: uint64(lsn) / size, Size: size}
}

// Start is the LSN of the segment's first byte.
func (s Segment) Start() LSN { return LSN(s.No * s.Size) }

// End is the LSN just after the segment's last byte.
func (s Segment) End() LSN { return LSN((s.No + 1) * s.Size) }

// Name is the segment's file name in pg_wal (XLogFileName).
func (s Segment) Name() string {
	perID := 0x100000000 / s.Size
	return fmt.Sprintf("%08X%08X%08X", s.Timeline, uint32(s.No/perID), uint32(s.No%perID))
}

var segmentNamePattern = regexp.MustCompile(`^[0-9A-F]{24}$`)
var historyNamePattern = regexp.MustCompile(`^[0-9A-F]{8}\.history$`)

// ParseSegmentName parses a segment file name for the given segment size.
func ParseSegmentName(name string, size uint64) (Segment, error) {
	if !segmentNamePattern.MatchString(name) {
		return Segment{}, fmt.Errorf("%q is not a WAL segment name", name)
	}
	tli, _ := strconv.ParseUint(name[0:8], 16, 32)
	hi, _ := strconv.ParseUint(name[8:16], 16, 32)
	lo, _ := strconv.ParseUint(name[16:24], 16, 32)
	perID := 0x100000000 / size
	if lo >= perID {
		return Segment{}, fmt.Errorf("%q is not a WAL segment name for %d-byte segments", name, size)
	}
	return Segment{Timeline: uint32(tli), No: hi*perID + lo, Size: size}, nil
}

// IsHistoryFileName reports whether name is a timeline history file (TLI.history).
func IsHistoryFileName(name string) bool { return historyNamePattern.MatchString(name) }

// Page header flags (xlp_info).
const (
	flagLongHeader = 0x0002
	allFlags       = 0x000F
)

// Expect is what every page of a copied segment must show.
type Expect struct {
	Magic    uint16
	SystemID uint64
	Segment  Segment
}

// CheckPages checks the page headers of buf, which holds the segment's bytes starting at byte offset off
// (a multiple of PageSize; len(buf) a multiple of PageSize). Each page must carry the magic, a known flag
// set, a timeline not after the segment's, and its own address; the first page of the segment must have
// a long header naming the system identifier, segment size and page size. A recycled segment shows old
// page addresses and fails here.
//
// All-zero pages are accepted after the first page: they are the rest of a segment closed by an
// XLOG_SWITCH record, which the server writes as zeros (seen on PostgreSQL 15 after pg_switch_wal and
// pg_backup_stop). Callers copy a segment only once the server's flush position has passed its end, so
// zero pages cannot be WAL still being written.
func CheckPages(buf []byte, off uint64, e Expect) error {
	if off%PageSize != 0 || len(buf)%PageSize != 0 {
		return fmt.Errorf("segment %s: piece at offset %d of %d bytes is not page-aligned", e.Segment.Name(), off, len(buf))
	}
	for p := 0; p < len(buf); p += PageSize {
		page := buf[p : p+PageSize]
		at := off + uint64(p)
		if at != 0 && allZero(page) {
			continue
		}
		magic := binary.LittleEndian.Uint16(page[0:])
		info := binary.LittleEndian.Uint16(page[2:])
		tli := binary.LittleEndian.Uint32(page[4:])
		addr := binary.LittleEndian.Uint64(page[8:])
		where := func() string { return fmt.Sprintf("segment %s, page at offset %d", e.Segment.Name(), at) }
		if magic != e.Magic {
			if magic == e.Magic>>8|e.Magic<<8 {
				return fmt.Errorf("%s: big-endian WAL is not supported", where())
			}
			return fmt.Errorf("%s: bad magic 0x%04X (want 0x%04X)", where(), magic, e.Magic)
		}
		if info&^allFlags != 0 {
			return fmt.Errorf("%s: unknown flags 0x%04X", where(), info)
		}
		if want := uint64(e.Segment.Start()) + at; addr != want {
			return fmt.Errorf("%s: page address %s, want %s (an old or recycled segment)", where(), LSN(addr), LSN(want))
		}
		if tli == 0 || tli > e.Segment.Timeline {
			return fmt.Errorf("%s: timeline %d, segment is on timeline %d", where(), tli, e.Segment.Timeline)
		}
		if at == 0 {
			if info&flagLongHeader == 0 {
				return fmt.Errorf("%s: first page lacks the long header", where())
			}
			sysid := binary.LittleEndian.Uint64(page[24:])
			segSize := binary.LittleEndian.Uint32(page[32:])
			blcksz := binary.LittleEndian.Uint32(page[36:])
			if sysid != e.SystemID {
				return fmt.Errorf("%s: system identifier %d, want %d (WAL of another cluster)", where(), sysid, e.SystemID)
			}
			if uint64(segSize) != e.Segment.Size || blcksz != PageSize {
				return fmt.Errorf("%s: segment size %d and page size %d, want %d and %d", where(), segSize, blcksz, e.Segment.Size, PageSize)
			}
		} else if info&flagLongHeader != 0 {
			return fmt.Errorf("%s: long header on a page that is not the first", where())
		}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// HistoryFileName is the name of timeline tli's history file in pg_wal (TLHistoryFileName).
func HistoryFileName(tli uint32) string { return fmt.Sprintf("%08X.history", tli) }

// TimelineSwitch is one line of a timeline history file: WAL before SwitchLSN belongs to Parent (or to an
// ancestor of it), timeline.c's TimeLineHistoryEntry.
type TimelineSwitch struct {
	Parent    uint32
	SwitchLSN LSN
}

// ParseHistory parses a timeline history file (timeline.c, readTimeLineHistory): lines "parentTLI
// switchpoint reason", blank lines and lines starting with '#' ignored. The parents must increase, as
// must the switch points.
func ParseHistory(data []byte) ([]TimelineSwitch, error) {
	var out []TimelineSwitch
	for i, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			return nil, fmt.Errorf("timeline history line %d: want a timeline and a switch point", i+1)
		}
		tli, err := strconv.ParseUint(f[0], 10, 32)
		if err != nil || tli == 0 {
			return nil, fmt.Errorf("timeline history line %d: bad timeline %q", i+1, f[0])
		}
		lsn, err := ParseLSN(f[1])
		if err != nil {
			return nil, fmt.Errorf("timeline history line %d: %w", i+1, err)
		}
		if n := len(out); n > 0 && (uint32(tli) <= out[n-1].Parent || lsn < out[n-1].SwitchLSN) {
			return nil, fmt.Errorf("timeline history line %d: timelines and switch points must increase", i+1)
		}
		out = append(out, TimelineSwitch{Parent: uint32(tli), SwitchLSN: lsn})
	}
	return out, nil
}

// TimelineOf returns the timeline that WAL at lsn belongs to, seen from timeline current whose history
// is given (nil for timeline 1): the first parent whose switch point is after lsn, else current
// (timeline.c, tliOfPointInHistory).
func TimelineOf(lsn LSN, current uint32, history []TimelineSwitch) uint32 {
	for _, h := range history {
		if lsn < h.SwitchLSN {
			return h.Parent
		}
	}
	return current
}
