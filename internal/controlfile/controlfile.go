// Package controlfile reads the few fields pgbb needs from global/pg_control and checks its CRC. It imports
// only the standard library.
//
// The layout mirrors ControlFileData in PostgreSQL's src/include/catalog/pg_control.h: system_identifier
// (uint64) at offset 0, pg_control_version (uint32) at 8, catalog_version_no (uint32) at 12, and the CRC32C
// of all bytes before the crc field stored in the crc field, whose offset per pg_control version is in
// internal/pgversion. The file is PG_CONTROL_FILE_SIZE (8192) bytes.
package controlfile

import (
	"encoding/binary"
	"fmt"

	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/pgversion"
)

// FileSize is PG_CONTROL_FILE_SIZE.
const FileSize = 8192

// Path is the control file's path in the data directory.
const Path = "global/pg_control"

// Info is what pgbb reads from pg_control.
type Info struct {
	SystemID       uint64
	ControlVersion uint32
	CatalogVersion uint32
	// CheckpointRedo and CheckpointTimeline are checkPointCopy.redo and checkPointCopy.ThisTimeLineID of
	// the latest checkpoint (on a standby, restartpoint): a CheckPoint struct at offset 40 whose first
	// fields, an XLogRecPtr and a TimeLineID, sit at 40 and 48 in every supported major.
	CheckpointRedo     uint64
	CheckpointTimeline uint32
}

// Parse checks the size, version and CRC of a pg_control image. A torn read (the server rewriting the file
// while it is read) shows as a CRC mismatch; callers re-read.
func Parse(b []byte) (Info, error) {
	if len(b) != FileSize {
		return Info{}, fmt.Errorf("pg_control is %d bytes, want %d", len(b), FileSize)
	}
	in := Info{
		SystemID:       binary.LittleEndian.Uint64(b[0:]),
		ControlVersion: binary.LittleEndian.Uint32(b[8:]),
		CatalogVersion: binary.LittleEndian.Uint32(b[12:]),
		// system_identifier, pg_control_version, catalog_version_no, state and padding, time, checkPoint
		CheckpointRedo:     binary.LittleEndian.Uint64(b[40:]),
		CheckpointTimeline: binary.LittleEndian.Uint32(b[48:]),
	}
	off, err := pgversion.ControlCRCOffset(in.ControlVersion)
	if err != nil {
		return in, err
	}
	want := binary.LittleEndian.Uint32(b[off:])
	if got := crc32c.Checksum(b[:off]); got != want {
		return in, fmt.Errorf("pg_control CRC mismatch (computed %08x, stored %08x)", got, want)
	}
	return in, nil
}
