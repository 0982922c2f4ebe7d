// Package pagecheck verifies PostgreSQL data page checksums. It imports only the standard library.
//
// The algorithm mirrors src/include/storage/checksum_impl.h (pg_checksum_page): 32 interleaved FNV-1a-like
// sums over the page read as little-endian 32-bit words, with pd_checksum taken as zero, two extra rounds of
// zeros, the sums folded by XOR, the block number mixed in, reduced modulo 65535 plus one. The page header
// layout is PageHeaderData of src/include/storage/bufpage.h: pd_lsn (two uint32, high then low) at 0,
// pd_checksum (uint16) at 8, pd_upper (uint16) at 14. The rules of which pages are checked mirror
// basebackup.c's: new pages (pd_upper = 0) are skipped, and so are pages whose LSN is at or after the
// backup's start, because WAL replay rewrites them.
package pagecheck

import "encoding/binary"

// PageSize is BLCKSZ; pgbb supports only the default 8192.
const PageSize = 8192

// BlocksPerSegment is RELSEG_SIZE for the default 1 GB segment size.
const BlocksPerSegment = 131072

const nSums = 32
const fnvPrime = 16777619

var baseOffsets = [nSums]uint32{
	0x5B1F36E9, 0xB8525960, 0x02AB50AA, 0x1DE66D2A,
	0x79FF467A, 0x9BB9F8A3, 0x217E7CD2, 0x83E13D2C,
	0xF8D4474F, 0xE39EB970, 0x42C6AE16, 0x993216FA,
	0x7B093B5D, 0x98DAFF3C, 0xF718902A, 0x0B1C9CDB,
	0xE58F764B, 0x187636BC, 0x5D7B3BB1, 0xE73DE7DE,
	0x92BEC979, 0xCCA6C0B2, 0x304A0979, 0x85AA43D4,
	0x783125BB, 0x6CA8EAA2, 0xE407EAC6, 0x4B5CFC3E,
	0x9FBF8C76, 0x15CA20BE, 0xF2CA9FD3, 0x959BD756,
}

// Checksum computes the checksum page should carry as block blkno of its relation.
func Checksum(page []byte, blkno uint32) uint16 {
	p := (*[PageSize]byte)(page[:PageSize])
	sums := baseOffsets
	// row 0 holds pd_checksum, which counts as zero
	var row0 [4 * nSums]byte
	copy(row0[:], p[:4*nSums])
	row0[8], row0[9] = 0, 0
	mixRow(&sums, &row0)
	for i := 1; i < PageSize/(4*nSums); i++ {
		mixRow(&sums, (*[4 * nSums]byte)(p[i*4*nSums:]))
	}
	for i := 0; i < 2; i++ {
		for j := range sums {
			t := sums[j]
			sums[j] = t*fnvPrime ^ (t >> 17)
		}
	}
	var r uint32
	for _, s := range sums {
		r ^= s
	}
	r ^= blkno
	// modulo 65535, plus one: never zero (checked against pages of a PostgreSQL 15 cluster, testdata/)
	return uint16(r%65535) + 1
}

// mixRow folds one row of 32 words into the 32 sums (CHECKSUM_COMP of checksum_impl.h). The sizes are
// fixed so the compiler drops the bounds checks; the 32 sums are independent, which the CPU overlaps.
func mixRow(sums *[nSums]uint32, row *[4 * nSums]byte) {
	for j := 0; j < nSums; j += 4 {
		t0 := sums[j] ^ binary.LittleEndian.Uint32(row[4*j:])
		t1 := sums[j+1] ^ binary.LittleEndian.Uint32(row[4*j+4:])
		t2 := sums[j+2] ^ binary.LittleEndian.Uint32(row[4*j+8:])
		t3 := sums[j+3] ^ binary.LittleEndian.Uint32(row[4*j+12:])
		sums[j] = t0*fnvPrime ^ (t0 >> 17)
		sums[j+1] = t1*fnvPrime ^ (t1 >> 17)
		sums[j+2] = t2*fnvPrime ^ (t2 >> 17)
		sums[j+3] = t3*fnvPrime ^ (t3 >> 17)
	}
}

// LSN returns pd_lsn.
func LSN(page []byte) uint64 {
	return uint64(binary.LittleEndian.Uint32(page[0:]))<<32 | uint64(binary.LittleEndian.Uint32(page[4:]))
}

// IsNew reports PageIsNew: pd_upper is zero.
func IsNew(page []byte) bool { return binary.LittleEndian.Uint16(page[14:]) == 0 }

// Stored returns pd_checksum.
func Stored(page []byte) uint16 { return binary.LittleEndian.Uint16(page[8:]) }

// NeedsCheck reports whether a page is checked: not new, and last written before the backup started.
func NeedsCheck(page []byte, backupStart uint64) bool {
	return !IsNew(page) && LSN(page) < backupStart
}

// Valid reports whether a page that NeedsCheck carries the right checksum for block blkno.
func Valid(page []byte, blkno uint32) bool { return Stored(page) == Checksum(page, blkno) }
