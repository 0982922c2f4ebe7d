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
