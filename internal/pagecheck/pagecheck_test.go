package pagecheck

import (
	"os"
	"testing"
)

// testdata/pg_class-blocks-0-1 holds the first two blocks of pg_class from a PostgreSQL 15 cluster made with
// initdb -k on this machine.
func TestChecksumMatchesServerPages(t *testing.T) {
	b, err := os.ReadFile("testdata/pg_class-blocks-0-1")
	if err != nil {
		t.Fatal(err)
	}
	for blk := 0; blk < 2; blk++ {
		page := b[blk*PageSize : (blk+1)*PageSize]
		if IsNew(page) {
			t.Fatalf("block %d is new", blk)
		}
		if !Valid(page, uint32(blk)) {
			t.Fatalf("block %d: stored %04x, computed %04x", blk, Stored(page), Checksum(page, uint32(blk)))
		}
		if Valid(page, uint32(blk)+1) {
			t.Fatalf("block %d validates as another block number", blk)
		}
		damaged := append([]byte(nil), page...)
		damaged[4000] ^= 0x10
		if Valid(damaged, uint32(blk)) {
			t.Fatalf("block %d: damage not detected", blk)
		}
	}
	page := b[:PageSize]
	if !NeedsCheck(page, LSN(page)+1) || NeedsCheck(page, LSN(page)) {
		t.Fatal("pages written at or after the backup start must be skipped, earlier ones checked")
	}
	if NeedsCheck(make([]byte, PageSize), 1<<40) {
		t.Fatal("a new page must be skipped")
	}
}

func BenchmarkChecksum(b *testing.B) {
	page := make([]byte, PageSize)
	for i := range page {
		page[i] = byte(i * 7)
	}
	b.SetBytes(PageSize)
	for i := 0; i < b.N; i++ {
		Checksum(page, uint32(i))
	}
}
