package pack

import (
	"fmt"
	"os"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/pgversion"
)

// target stores what the ledger (ledger.go) validated, in one output format (plain.go, tar.go). Calls
// arrive in this order, one at a time:
//
//   - begin, once;
//   - dir, chunk and fileDone in any interleaving: every chunk of a path before that path's fileDone, which
//     comes once, after the ledger proved that the file's ranges tile it;
//   - then the commit steps, only from packer.commit (commit.go), which alone orders them: writeControl
//     (pg_control after every other data file, invariant 5), writeLabel (backup_label, and tablespace_map
//     where the format keeps it, exactly as pg_backup_stop returned them, invariant 4), finish (everything
//     durable, the manifest entries); pgbb-pack writes backup_manifest after finish returned;
//   - or clean, after any error.
type target interface {
	// begin prepares the output for a backup of a server of the given major; dirMode and fileMode are the
	// source cluster's.
	begin(s *chunkstream.BackupStart, major pgversion.Major, dirMode, fileMode os.FileMode) error
	// dir records a directory of the data directory (it may come more than once).
	dir(path string) error
	// chunk stores one piece of a file.
	chunk(c *chunkstream.Chunk) error
	// written records a piece of a file that a job wrote into the target itself (only where the target
	// offered it: plain format).
	written(w *chunkstream.Written) error
	// fileDone says the file at path is whole: sum.size bytes from offset 0 whose CRC32C is sum.crc, the
	// chunks at or after sum.size being left out (a range after one that came back short); or absent when
	// present is false.
	fileDone(path string, sum fileSum, present bool) error
	// writeControl stores global/pg_control.
	writeControl(control []byte) error
	// writeLabel stores backup_label, and tablespace_map where the format keeps it.
	writeLabel(end *chunkstream.BackupEnd) error
	// finish makes everything durable and returns the manifest entries of every file but WAL.
	finish() ([]manifest.File, error)
	// clean removes what the target wrote.
	clean()
}

// fileSum is a whole file's size and the CRC32C of its bytes.
type fileSum struct {
	size int64
	crc  uint32
}

// rawData returns a chunk's uncompressed bytes, checked against its CRC.
func rawData(c *chunkstream.Chunk) ([]byte, error) {
	raw := c.Data
	if c.Codec == chunkstream.CodecNone {
		return raw, nil // Record.Chunk checked RawCRC
	}
	var err error
	if raw, err = compress.Decompress(c.Codec, c.Data, int(c.RawLen)); err != nil {
		return nil, fmt.Errorf("%s: %w", c.Path, err)
	}
	if crc32c.Checksum(raw) != c.RawCRC {
		return nil, fmt.Errorf("%s at offset %d: chunk checksum mismatch", c.Path, c.Offset)
	}
	return raw, nil
}
