package crc32c

import (
	"math/rand"
	"testing"
)

func TestCombineEqualsChecksumOfConcatenation(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	for _, sizes := range [][2]int{{0, 0}, {0, 5}, {5, 0}, {1, 1}, {8192, 8192}, {3, 1 << 20}, {1 << 20, 7}, {12345, 67891}} {
		a := make([]byte, sizes[0])
		b := make([]byte, sizes[1])
		r.Read(a)
		r.Read(b)
		want := Checksum(append(append([]byte{}, a...), b...))
		if got := Combine(Checksum(a), Checksum(b), int64(len(b))); got != want {
			t.Errorf("sizes %v: Combine %08x, want %08x", sizes, got, want)
		}
	}
	// PostgreSQL's manifest CRC of "15\n" (PG_VERSION), as pg_basebackup wrote it: 8a744722 little-endian
	if got := Checksum([]byte("15\n")); got != 0x2247748a {
		t.Fatalf("CRC32C(\"15\\n\") = %08x", got)
	}
}

// combineByMatrix is zlib's older crc32_combine (squaring the zero-bit operator), an independent
// computation to check Combine against at lengths up to 2^40, past the wrap of its power table.
func combineByMatrix(crcA, crcB uint32, lenB int64) uint32 {
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

func TestCombineAgreesWithMatrixMethod(t *testing.T) {
	lens := []int64{1, 2, 3, 7, 8, 1000, 8192, 1 << 20, 1<<29 + 1, 1 << 30, 1<<31 + 12345, 1 << 32, 1<<33 + 7, 1 << 40}
	for i, n := range lens {
		a := uint32(0x9E3779B9 * uint32(i+1))
		b := uint32(0x7F4A7C15 ^ uint32(i))
		if got, want := Combine(a, b, n), combineByMatrix(a, b, n); got != want {
			t.Errorf("Combine(%08x, %08x, %d) = %08x, matrix method %08x", a, b, n, got, want)
		}
	}
}
