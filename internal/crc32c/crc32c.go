// Package crc32c is the one home of CRC-32C (Castagnoli), the checksum PostgreSQL uses for WAL, pg_control
// and backup manifests, and pgbb for chunk-stream records. It imports only the standard library.
package crc32c

import "hash/crc32"

var table = crc32.MakeTable(crc32.Castagnoli)

// Checksum returns the CRC-32C of b.
func Checksum(b []byte) uint32 { return crc32.Checksum(b, table) }

// Update returns the CRC-32C of the bytes whose CRC is crc followed by b.
func Update(crc uint32, b []byte) uint32 { return crc32.Update(crc, table, b) }

// poly is the reflected Castagnoli polynomial.
const poly = 0x82F63B78

// Combine returns the CRC-32C of A followed by B, given crcA = Checksum(A), crcB = Checksum(B) and lenB =
// len(B), without the bytes. This lets pgbb-pack compute a file's checksum from the checksums its fetchers
// sent for each chunk. The method is zlib's crc32_combine: apply lenB zero bytes to crcA by squaring the
// one-zero-bit operator over GF(2), then add crcB.
func Combine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA
	}
	var odd, even [32]uint32
	// operator for one zero bit
	odd[0] = poly
	row := uint32(1)
	for i := 1; i < 32; i++ {
		odd[i] = row
		row <<= 1
	}
	square(&even, &odd) // two zero bits
	square(&odd, &even) // four zero bits
	n := lenB
	for {
		square(&even, &odd) // first pass: one zero byte
		if n&1 != 0 {
			crcA = times(&even, crcA)
		}
		n >>= 1
		if n == 0 {
			break
		}
		square(&odd, &even)
		if n&1 != 0 {
			crcA = times(&odd, crcA)
		}
		n >>= 1
		if n == 0 {
			break
		}
	}
	return crcA ^ crcB
}

func times(mat *[32]uint32, vec uint32) uint32 {
	var sum uint32
	for i := 0; vec != 0; i++ {
		if vec&1 != 0 {
			sum ^= mat[i]
		}
		vec >>= 1
	}
	return sum
}

func square(dst, mat *[32]uint32) {
	for n := 0; n < 32; n++ {
		dst[n] = times(mat, mat[n])
	}
}
