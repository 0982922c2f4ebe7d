package listing

import (
	"math/rand/v2"
	"testing"

	"github.com/pgbb/pgbb/internal/worklist"
)

func TestGroupLinesEvensTheRuns(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	// a list like scale 10's: 80 ranges of 2 MB among 1000 small files
	var items []worklist.Item
	for i := 0; i < 1000; i++ {
		items = append(items, worklist.Item{Kind: worklist.File, Length: int64(r.IntN(16)) * 8192})
	}
	for i := 0; i < 80; i++ {
		items = append(items, worklist.Item{Kind: worklist.Part, Length: 2 << 20})
	}
	r.Shuffle(len(items), func(i, j int) { items[i], items[j] = items[j], items[i] })
	for _, groups := range []int{2, 6, 24, 1081, 5000} {
		out := groupLines(append([]worklist.Item(nil), items...), groups)
		if len(out) != len(items) {
			t.Fatalf("groups %d: %d items out of %d", groups, len(out), len(items))
		}
		lines := len(items) + 1
		per := (lines + groups - 1) / groups
		var lo, hi, total int64 = 1 << 62, 0, 0
		for start := 0; start < len(out); start += per {
			var b int64
			for _, it := range out[start:min(start+per, len(out))] {
				b += it.Length
			}
			total += b
			if start+per < lines { // the last run may be short
				lo, hi = min(lo, b), max(hi, b)
			}
		}
		var want int64
		for _, it := range items {
			want += it.Length
		}
		if total != want {
			t.Fatalf("groups %d: %d bytes out of %d", groups, total, want)
		}
		if groups <= len(items) && hi-lo > 2<<20 {
			t.Errorf("groups %d (runs of %d lines): runs from %d to %d bytes, more than one range apart", groups, per, lo, hi)
		}
		t.Logf("groups %d: runs of %d lines carry %d to %d bytes", groups, per, lo, hi)
	}
}
