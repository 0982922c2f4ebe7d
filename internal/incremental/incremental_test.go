package incremental

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"
)

const seg = 131072 // blocks of a 1 GiB segment

func TestHeaderLayout(t *testing.T) {
	if HeaderSize(0) != 12 || FileSize(0) != 12 {
		t.Fatalf("empty header %d, file %d: want 12 and 12", HeaderSize(0), FileSize(0))
	}
	if HeaderSize(1) != BlockSize || HeaderSize(2045) != BlockSize || HeaderSize(2046) != 2*BlockSize {
		t.Fatalf("padding: %d %d %d", HeaderSize(1), HeaderSize(2045), HeaderSize(2046))
	}
	h := Header{Blocks: []uint32{0, 7, 4096}, TruncBlocks: 5000}
	b := h.Encode()
	if len(b) != BlockSize {
		t.Fatalf("header of 3 blocks is %d bytes", len(b))
	}
	// magic, count, truncation length, the blocks: in that order
	want := []uint32{Magic, 3, 5000, 0, 7, 4096}
	for i, w := range want {
		if got := binary.NativeEndian.Uint32(b[4*i:]); got != w {
			t.Fatalf("word %d is %d, want %d", i, got, w)
		}
	}
	if !bytes.Equal(b[24:], make([]byte, BlockSize-24)) {
		t.Fatal("padding is not zeros")
	}
	back, size, err := ParseHeader(append(b, make([]byte, 3*BlockSize)...), seg)
	if err != nil || size != BlockSize || !slices.Equal(back.Blocks, h.Blocks) || back.TruncBlocks != 5000 {
		t.Fatalf("parse: %+v %d %v", back, size, err)
	}
}

func TestParseHeaderRefuses(t *testing.T) {
	good := Header{Blocks: []uint32{1, 2}, TruncBlocks: 3}.Encode()
	cases := map[string]func([]byte){
		"magic":            func(b []byte) { b[0] ^= 1 },
		"count over a seg": func(b []byte) { binary.NativeEndian.PutUint32(b[4:], seg+1) },
		"trunc over a seg": func(b []byte) { binary.NativeEndian.PutUint32(b[8:], seg+1) },
		"not ascending":    func(b []byte) { binary.NativeEndian.PutUint32(b[16:], 1) },
		"block past seg":   func(b []byte) { binary.NativeEndian.PutUint32(b[16:], seg) },
		"padding":          func(b []byte) { b[100] = 1 },
	}
	for name, damage := range cases {
		b := bytes.Clone(good)
		damage(b)
		if _, _, err := ParseHeader(b, seg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, _, err := ParseHeader(good[:20], seg); err == nil {
		t.Error("cut header accepted")
	}
}

func TestParseRelFile(t *testing.T) {
	for name, want := range map[string]RelFile{
		"16384": {16384, MainFork, 0}, "16384.2": {16384, MainFork, 2}, "16384_fsm": {16384, FSMFork, 0},
		"16384_vm.1": {16384, VMFork, 1}, "16384_init": {16384, InitFork, 0},
	} {
		if got, ok := ParseRelFile(name); !ok || got != want {
			t.Errorf("%s: %+v %v, want %+v", name, got, ok, want)
		}
	}
	for _, name := range []string{"t3_16384", "016384", "16384.0", "16384.01", "16384_xx", "PG_VERSION", "INCREMENTAL.16384", "pg_filenode.map", "", "4294967296"} {
		if _, ok := ParseRelFile(name); ok {
			t.Errorf("%q parsed as a relation file", name)
		}
	}
}

func TestDecide(t *testing.T) {
	k := func(n uint32, fork int) Key { return Key{0, 5, n, fork} }
	tb := NewTable()
	for b := uint32(0); b < 10; b++ {
		tb.Mark(k(100, MainFork), b*10) // 0, 10, ..., 90
	}
	tb.Mark(k(101, MainFork), seg+3) // in segment 1
	for b := uint32(0); b < 95; b++ {
		tb.Mark(k(102, MainFork), b) // 95 of 100 blocks: over 90%
	}
	tb.SetLimit(k(103, MainFork), 0) // truncated to nothing, then written again
	tb.Mark(k(103, MainFork), 1)
	tb.Mark(k(104, MainFork), 50)
	tb.SetLimit(k(104, MainFork), 20) // block 50 was removed by the truncation
	tb.Mark(k(104, MainFork), 2)
	tb.SetLimit(k(105, MainFork), 300) // truncated at 300, file now 100 blocks: reconstruct 300
	tb.Mark(k(106, VMFork), 0)
	f := func(name string, blocks int64) File {
		return File{Database: 5, Name: name, Size: blocks * BlockSize, InPrior: true}
	}
	cases := []struct {
		file  File
		full  bool
		want  []uint32
		trunc uint32
	}{
		{f("100", 100), false, []uint32{0, 10, 20, 30, 40, 50, 60, 70, 80, 90}, 100},
		{f("101", 100), false, nil, 100},           // segment 0 has no change
		{f("101.1", 100), false, []uint32{3}, 100}, // relative to segment 1
		{f("102", 100), true, nil, 0},
		{f("103", 100), true, nil, 0}, // limit 0 at or below the segment's first block
		{f("104", 100), false, []uint32{2}, 100},
		{f("105", 100), false, nil, 300},
		{f("106_vm", 4), true, nil, 0},                             // pgbb: every VM in full
		{f("107_fsm", 3), true, nil, 0},                            // FSM in full
		{f("200", 7), false, nil, 7},                               // unchanged: no blocks, its length
		{f("201", 0), true, nil, 0},                                // empty and unchanged: full
		{File{Database: 5, Name: "300", Size: 8192}, true, nil, 0}, // not in the prior
		{File{Database: 5, Name: "301", Size: 100}, true, nil, 0},  // odd size
		{f("PG_VERSION", 1), true, nil, 0},
		{f("t3_400", 2), true, nil, 0},
	}
	for _, c := range cases {
		m := tb.Decide(c.file, seg)
		if m.Full != c.full || (!c.full && (!slices.Equal(m.Header.Blocks, c.want) || m.Header.TruncBlocks != c.trunc)) {
			t.Errorf("%s: %+v, want full %v blocks %v trunc %d", c.file.Name, m, c.full, c.want, c.trunc)
		}
	}
	// a database created or dropped since the prior: everything of it in full
	tb.SetLimit(Key{0, 5, 0, MainFork}, 0)
	if m := tb.Decide(f("200", 7), seg); !m.Full {
		t.Errorf("file of a database created since the prior: %+v, want full", m)
	}
	// the truncation length is capped at the segment
	tb2 := NewTable()
	tb2.SetLimit(k(500, MainFork), 3*seg)
	if m := tb2.Decide(f("500.1", 10), seg); m.Full || m.Header.TruncBlocks != seg {
		t.Errorf("cap: %+v, want truncation %d", m, seg)
	}
}
