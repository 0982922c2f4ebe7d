package walarchive

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/wal"
)

const segSize = 1 << 20

func seg(tli uint32, no uint64) wal.Segment { return wal.Segment{Timeline: tli, No: no, Size: segSize} }

func write(t *testing.T, d *Dir, s wal.Segment) {
	t.Helper()
	p, err := d.Create(s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Write(bytes.Repeat([]byte{byte(s.No)}, segSize)); err != nil {
		t.Fatal(err)
	}
	if err := p.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestSegmentsAreWholeOrAbsent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	d, err := Open(path, segSize)
	if err != nil {
		t.Fatal(err)
	}
	write(t, d, seg(1, 1))
	// the segment being written is kept as a partial until it is whole
	if err := d.WritePartial(seg(1, 2), 0, bytes.Repeat([]byte{2}, 8192)); err != nil {
		t.Fatal(err)
	}
	if err := d.WritePartial(seg(1, 2), 8192, bytes.Repeat([]byte{2}, 8192)); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(path, seg(1, 2).Name()+PartialSuffix))
	if len(b) != segSize || b[16383] != 2 || b[16384] != 0 {
		t.Fatalf("partial: %d bytes, want a segment's, the written pages then zeros", len(b))
	}
	if err := d.WritePartial(seg(1, 2), segSize-10, make([]byte, 20)); err == nil {
		t.Fatal("a partial write past the segment's end was taken")
	}
	// an interrupted writer: a temporary file, never renamed
	p, err := d.Create(seg(1, 2))
	if err != nil {
		t.Fatal(err)
	}
	p.Write(make([]byte, 4096))
	if err := p.Commit(); err == nil || !strings.Contains(err.Error(), "4096 bytes written") {
		t.Fatalf("a short segment committed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(path, seg(1, 2).Name())); !os.IsNotExist(err) {
		t.Fatalf("a short segment has its name: %v", err)
	}
	p, _ = d.Create(seg(1, 2))
	p.Write(make([]byte, 4096)) // and the process dies here
	d.Close()
	if d, err = Open(path, segSize); err != nil {
		t.Fatal(err)
	}
	if err := d.RemoveInterrupted(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(path, "."+seg(1, 2).Name()+".tmp")); !os.IsNotExist(err) {
		t.Fatalf("RemoveInterrupted left the interrupted writer's file: %v", err)
	}
	s, err := d.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if last, ok := s.Last(); !ok || last != seg(1, 1) || len(s.Partials) != 1 || s.Partials[0] != seg(1, 2) {
		t.Fatalf("after the interruption: %+v", s)
	}
	// completing the segment removes its partial
	write(t, d, seg(1, 2))
	if _, err := os.Stat(filepath.Join(path, seg(1, 2).Name()+PartialSuffix)); !os.IsNotExist(err) {
		t.Fatalf("the partial of a complete segment is left: %v", err)
	}
	if s, _ = d.Scan(); len(s.Segments) != 2 || len(s.Partials) != 0 {
		t.Fatalf("after completion: %+v", s)
	}
}

func TestScanFindsGapsAndTimelines(t *testing.T) {
	path := t.TempDir()
	d, err := Open(path, segSize)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []wal.Segment{seg(1, 3), seg(1, 4), seg(1, 5), seg(2, 5), seg(2, 6)} {
		write(t, d, s)
	}
	if err := d.WriteHistory(2, []byte("1\t0/5000100\tno recovery target specified\n")); err != nil {
		t.Fatal(err)
	}
	s, err := d.Scan()
	if err != nil {
		t.Fatal(err)
	}
	if last, _ := s.Last(); last != seg(2, 6) {
		t.Fatalf("last %v, want timeline 2's segment 6", last)
	}
	if _, gap := s.Gap(); gap {
		t.Fatalf("a timeline switch read as a gap: %+v", s.Segments)
	}
	if len(s.Timelines) != 1 || s.Timelines[0] != 2 {
		t.Fatalf("timelines %v", s.Timelines)
	}
	write(t, d, seg(2, 9))
	s, _ = d.Scan()
	if no, gap := s.Gap(); !gap || no != 7 {
		t.Fatalf("gap at %d (%v), want 7", no, gap)
	}
	// a segment of the wrong size, and a file that is no WAL, are refused
	os.WriteFile(filepath.Join(path, seg(2, 10).Name()), []byte("short"), 0o600)
	if _, err := d.Scan(); err == nil {
		t.Fatal("a short segment under a segment's name was taken")
	}
	os.Remove(filepath.Join(path, seg(2, 10).Name()))
	d.Close()
	os.WriteFile(filepath.Join(path, "notes.txt"), nil, 0o600)
	if _, err := Open(path, segSize); err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Fatalf("a directory with a foreign file: %v", err)
	}
	if _, err := Open(t.TempDir(), 3<<20); err == nil {
		t.Fatal("a segment size that is not a power of two was taken")
	}
}

func TestOpenLocksAndChecksBeforeChanging(t *testing.T) {
	path := t.TempDir()
	d, err := Open(path, segSize)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, segSize); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("a second Open of a held directory: %v", err)
	}
	d.Close()
	// a foreign file: refused, and the interrupted writer's file beside it is not touched
	tmp := filepath.Join(path, "."+seg(1, 4).Name()+".tmp")
	os.WriteFile(tmp, nil, 0o600)
	os.WriteFile(filepath.Join(path, "notes.txt"), nil, 0o600)
	if _, err := Open(path, segSize); err == nil {
		t.Fatal("a directory with a foreign file was taken")
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("a refused Open changed the directory: %v", err)
	}
}
