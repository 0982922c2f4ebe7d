// Package controlfile reads the few fields pgbb needs from global/pg_control and checks its CRC. It imports
// only the standard library.
//
// The layout mirrors ControlFileData in PostgreSQL's src/include/catalog/pg_control.h: system_identifier
// (uint64) at offset 0, pg_control_version (uint32) at 8, catalog_version_no (uint32) at 12, and the CRC32C
// of all bytes before the crc field stored in the crc field. The file is PG_CONTROL_FILE_SIZE (8192) bytes.
package controlfile

import (
	"encoding/binary"
	"fmt"

	"github.com/pgbb/pgbb/internal/crc32c"
)

// FileSize is PG_CONTROL_FILE_SIZE.
const FileSize = 8192

// Path is the control file's path in the data directory.
const Path = "global/pg_control"

// crcOffset gives offsetof(ControlFileData, crc) on 64-bit little-endian builds per pg_control_version.
// 1300 is the version of PostgreSQL 13 to 16 (measured on a 15 cluster: the CRC of the first 288 bytes is
// stored at 288).
//
// 1700 (PostgreSQL 17) and 1800 (18) come from the struct layout in their pg_control.h (18 adds
// default_char_signedness before the nonce); they are not yet checked against real files.
var crcOffset = map[uint32]int{
	1300: 288,
	1700: 288,
	1800: 292,
}

// Info is what pgbb reads from pg_control.
type Info struct {
	SystemID       uint64
	ControlVersion uint32
	CatalogVersion uint32
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
	}
	off, ok := crcOffset[in.ControlVersion]
	if !ok {
		return in, fmt.Errorf("pg_control version %d is not supported", in.ControlVersion)
	}
	want := binary.LittleEndian.Uint32(b[off:])
	if got := crc32c.Checksum(b[:off]); got != want {
		return in, fmt.Errorf("pg_control CRC mismatch (computed %08x, stored %08x)", got, want)
	}
	return in, nil
}
