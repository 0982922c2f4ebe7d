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
// sent for each chunk, and a writer the checksum of a record from that of its data. The method is zlib's
// crc32_combine: multiply crcA by x^(8*lenB) modulo the polynomial, then add crcB.
func Combine(crcA, crcB uint32, lenB int64) uint32 {
	if lenB <= 0 {
		return crcA ^ crcB
	}
	return multModP(xPow8n(uint64(lenB)), crcA) ^ crcB
}

// x2n[k] is x^(2^k) modulo the polynomial, bit-reflected (x^0 is 1<<31). zlib wraps k at 32, which holds
// for its polynomial but not for Castagnoli's (the test checks lengths past 2^32), so the table covers every
// k an int64 length reaches.
var x2n = func() (t [67]uint32) {
	p := uint32(1) << 30 // x^1
	for k := range t {
		t[k] = p
		p = multModP(p, p)
	}
	return t
}()

// xPow8n is x^(8n) modulo the polynomial.
func xPow8n(n uint64) uint32 {
	p := uint32(1) << 31 // x^0
	for k := 3; n != 0; k, n = k+1, n>>1 {
		if n&1 != 0 {
			p = multModP(x2n[k], p)
		}
	}
	return p
}

// multModP multiplies a by b modulo the polynomial, both bit-reflected.
func multModP(a, b uint32) uint32 {
	var p uint32
	for m := uint32(1) << 31; m != 0; m >>= 1 {
		if a&m != 0 {
			p ^= b
			if a&(m-1) == 0 {
				break
			}
		}
		if b&1 != 0 {
			b = b>>1 ^ poly
		} else {
			b >>= 1
		}
	}
	return p
}
