package server

import (
	"bytes"
	"fmt"
	"testing"
)

// A range longer than ReadSize is read in calls of ReadSize and handed on whole. The first call that comes
// back short or NULL ends the range: a later call's bytes (the file grew again) would land at the wrong
// place. A range is missing only when its first call is.
func TestLongRangesAreJoined(t *testing.T) {
	const rs = ReadSize
	fill := func(n int, b byte) []byte { return bytes.Repeat([]byte{b}, n) }
	type result struct {
		data []byte
		gone bool
	}
	for _, tc := range []struct {
		name    string
		length  int64
		results []result // what each call returns
		want    []byte
		missing bool
	}{
		{"whole", 3 * rs, []result{{fill(rs, 1), false}, {fill(rs, 2), false}, {fill(rs, 3), false}},
			append(append(fill(rs, 1), fill(rs, 2)...), fill(rs, 3)...), false},
		{"not a multiple", rs + 100, []result{{fill(rs, 1), false}, {fill(100, 2), false}}, append(fill(rs, 1), fill(100, 2)...), false},
		{"shrank, then grew", 3 * rs, []result{{fill(rs, 1), false}, {fill(10, 2), false}, {fill(rs, 3), false}},
			append(fill(rs, 1), fill(10, 2)...), false},
		{"ends at a boundary", 3 * rs, []result{{fill(rs, 1), false}, {nil, false}, {fill(rs, 3), false}}, fill(rs, 1), false},
		{"vanished", 2 * rs, []result{{fill(rs, 1), false}, {nil, true}}, fill(rs, 1), false},
		{"missing", 2 * rs, []result{{nil, true}, {fill(rs, 2), false}}, nil, true},
		{"short", 100, []result{{fill(40, 1), false}}, fill(40, 1), false},
		{"empty", 0, []result{{nil, false}}, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// the range under test between two others, so that the state of one range cannot leak into the next
			ranges := []Range{{Path: "a", Length: 2 * rs}, {Path: "b", Offset: 8192, Length: tc.length}, {Path: "c", Length: 10}}
			reads, of := splitReads(ranges)
			var results []result
			results = append(results, result{fill(rs, 7), false}, result{fill(rs, 8), false})
			results = append(results, tc.results...)
			results = append(results, result{fill(10, 9), false})
			if len(reads) != len(results) {
				t.Fatalf("%d reads for %d results", len(reads), len(results))
			}
			for j, r := range reads {
				if r.Length > ReadSize || (of[j] == 1 && r.Offset != 8192+int64(j-2)*ReadSize) {
					t.Errorf("read %d: %+v", j, r)
				}
			}
			var got []string
			fn := joinReads(reads, of, func(i int, data []byte, missing bool) error {
				switch i {
				case 0:
					if !bytes.Equal(data, append(fill(rs, 7), fill(rs, 8)...)) || missing {
						t.Errorf("range a: %d bytes, missing %v", len(data), missing)
					}
				case 1:
					if !bytes.Equal(data, tc.want) || missing != tc.missing {
						t.Errorf("range b: %d bytes, missing %v; want %d bytes, missing %v", len(data), missing, len(tc.want), tc.missing)
					}
				case 2:
					if !bytes.Equal(data, fill(10, 9)) || missing {
						t.Errorf("range c: %q, missing %v", data, missing)
					}
				}
				got = append(got, fmt.Sprint(i))
				return nil
			})
			for j, r := range results {
				if err := fn(j, r.data, r.gone); err != nil {
					t.Fatal(err)
				}
			}
			if fmt.Sprint(got) != "[0 1 2]" {
				t.Errorf("fn called for ranges %v, want each once in order", got)
			}
		})
	}
}
