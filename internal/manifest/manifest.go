// Package manifest writes backup_manifest files in the format of PostgreSQL's
// src/backend/backup/backup_manifest.c, version 1 (servers 13 to 16) and version 2 (17 and later, with
// System-Identifier), which stock pg_verifybackup reads. It imports only the standard library.
package manifest

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"
	"unicode/utf8"
)

// File is one entry of the Files array.
type File struct {
	Path     string // relative to the data directory, '/'-separated, raw bytes
	Size     int64
	Modified time.Time
	CRC32C   uint32
}

// WALRange is one entry of the WAL-Ranges array.
type WALRange struct {
	Timeline uint32
	Start    uint64
	End      uint64
}

// Build returns the complete manifest. systemID is written only for version 2. Files are written in the
// order given.
func Build(version int, systemID uint64, files []File, ranges []WALRange) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "{ \"PostgreSQL-Backup-Manifest-Version\": %d,\n", version)
	if version >= 2 {
		fmt.Fprintf(&b, "\"System-Identifier\": %d,\n", systemID)
	}
	b.WriteString("\"Files\": [")
	for i, f := range files {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n{ ")
		if utf8.ValidString(f.Path) {
			b.WriteString("\"Path\": ")
			writeJSONString(&b, f.Path)
		} else {
			// backup_manifest.c: a path that is not valid UTF-8 is hex-encoded as Encoded-Path
			fmt.Fprintf(&b, "\"Encoded-Path\": \"%s\"", hex.EncodeToString([]byte(f.Path)))
		}
		var sum [4]byte
		// checksum_helper.c copies the pg_crc32c into the output with memcpy: host (little-endian) order
		binary.LittleEndian.PutUint32(sum[:], f.CRC32C)
		fmt.Fprintf(&b, ", \"Size\": %d, \"Last-Modified\": \"%s\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"%s\" }",
			f.Size, f.Modified.UTC().Format("2006-01-02 15:04:05")+" GMT", hex.EncodeToString(sum[:]))
	}
	b.WriteString("\n],\n\"WAL-Ranges\": [")
	for i, r := range ranges {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n{ \"Timeline\": %d, \"Start-LSN\": \"%X/%X\", \"End-LSN\": \"%X/%X\" }",
			r.Timeline, uint32(r.Start>>32), uint32(r.Start), uint32(r.End>>32), uint32(r.End))
	}
	b.WriteString("\n],\n")
	// The checksum covers everything before the "Manifest-Checksum" line (parse_manifest.c).
	sum := sha256.Sum256(b.Bytes())
	fmt.Fprintf(&b, "\"Manifest-Checksum\": \"%s\"}\n", hex.EncodeToString(sum[:]))
	return b.Bytes()
}

// writeJSONString escapes as PostgreSQL's escape_json does: quote, backslash and control characters.
func writeJSONString(b *bytes.Buffer, s string) {
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		default:
			if c < 0x20 {
				fmt.Fprintf(b, `\u%04x`, c)
			} else {
				b.WriteByte(c)
			}
		}
	}
	b.WriteByte('"')
}
