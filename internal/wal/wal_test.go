package wal

import (
	"encoding/binary"
	"strings"
	"testing"
)

func TestSegmentNameRoundTrip(t *testing.T) {
	for _, size := range []uint64{1 << 20, 16 << 20, 1 << 30} {
		for _, lsn := range []LSN{0x3000028, 0x1_0000_0000, 0x2_FF00_0000} {
			s := SegmentOf(lsn, 3, size)
			got, err := ParseSegmentName(s.Name(), size)
			if err != nil || got != s {
				t.Fatalf("size %d lsn %s: %v %v != %v", size, lsn, err, got, s)
			}
		}
	}
	if n := SegmentOf(0x3000028, 1, 16<<20).Name(); n != "000000010000000000000003" {
		t.Fatalf("name %s", n)
	}
	if n := SegmentOf(0x1_0000_0000, 1, 16<<20).Name(); n != "000000010000000100000000" {
		t.Fatalf("name %s", n)
	}
}

func TestParseLSN(t *testing.T) {
	l, err := ParseLSN("16/B374D848")
	if err != nil || l != 0x16B374D848 || l.String() != "16/B374D848" {
		t.Fatalf("%v %v", l, err)
	}
	for _, bad := range []string{"", "1", "x/1", "1/", "0/00001"} {
		if _, err := ParseLSN(bad); err == nil {
			t.Errorf("ParseLSN(%q) accepted", bad)
		}
	}
}

func fakeSegment(seg Segment, sysid uint64, magic uint16) []byte {
	buf := make([]byte, 4*PageSize)
	for p := 0; p < len(buf); p += PageSize {
		binary.LittleEndian.PutUint16(buf[p:], magic)
		info := uint16(0)
		if p == 0 {
			info = flagLongHeader
			binary.LittleEndian.PutUint64(buf[24:], sysid)
			binary.LittleEndian.PutUint32(buf[32:], uint32(seg.Size))
			binary.LittleEndian.PutUint32(buf[36:], PageSize)
		}
		binary.LittleEndian.PutUint16(buf[p+2:], info)
		binary.LittleEndian.PutUint32(buf[p+4:], seg.Timeline)
		binary.LittleEndian.PutUint64(buf[p+8:], uint64(seg.Start())+uint64(p))
	}
	return buf
}

func TestCheckPagesRejectsRecycledAndForeignSegments(t *testing.T) {
	seg := Segment{Timeline: 1, No: 5, Size: 16 << 20}
	e := Expect{Magic: 0xD110, SystemID: 42, Segment: seg}
	if err := CheckPages(fakeSegment(seg, 42, 0xD110), 0, e); err != nil {
		t.Fatal(err)
	}
	cases := map[string]func([]byte){
		"page address": func(b []byte) { binary.LittleEndian.PutUint64(b[PageSize+8:], 4<<24) },
		"bad magic":    func(b []byte) { binary.LittleEndian.PutUint16(b[2*PageSize:], 0xD106) },
		"system":       func(b []byte) { binary.LittleEndian.PutUint64(b[24:], 43) },
		"timeline":     func(b []byte) { binary.LittleEndian.PutUint32(b[PageSize+4:], 2) },
		"long header":  func(b []byte) { binary.LittleEndian.PutUint16(b[2:], 0) },
	}
	for name, damage := range cases {
		b := fakeSegment(seg, 42, 0xD110)
		damage(b)
		err := CheckPages(b, 0, e)
		if err == nil || !strings.Contains(err.Error(), strings.Fields(name)[0]) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	// a piece later in the segment is checked against its own offset
	b := fakeSegment(seg, 42, 0xD110)
	if err := CheckPages(b[PageSize:], PageSize, e); err != nil {
		t.Fatal(err)
	}
	if err := CheckPages(b[PageSize:], 2*PageSize, e); err == nil {
		t.Fatal("misplaced piece accepted")
	}
}

func TestCheckPagesAcceptsZeroTailAfterSwitch(t *testing.T) {
	seg := Segment{Timeline: 1, No: 5, Size: 16 << 20}
	e := Expect{Magic: 0xD110, SystemID: 42, Segment: seg}
	b := fakeSegment(seg, 42, 0xD110)
	clear(b[2*PageSize:])
	if err := CheckPages(b, 0, e); err != nil {
		t.Fatal(err)
	}
	clear(b[:PageSize])
	if err := CheckPages(b, 0, e); err == nil {
		t.Fatal("zero first page accepted")
	}
}

// A history file as a server on timeline 3 holds it (timeline.c writes "parent\tswitchpoint\treason").
func TestTimelineOfFollowsTheHistory(t *testing.T) {
	hist, err := ParseHistory([]byte("1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tbefore 2000-01-01 00:00:00+00\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		lsn  LSN
		want uint32
	}{{0x1000000, 1}, {0x3000157, 1}, {0x3000158, 2}, {0x4ffffff, 2}, {0x5000000, 3}, {0x9000000, 3}} {
		if got := TimelineOf(c.lsn, 3, hist); got != c.want {
			t.Errorf("TimelineOf(%s) = %d, want %d", c.lsn, got, c.want)
		}
	}
	if got := TimelineOf(0x1000000, 1, nil); got != 1 {
		t.Errorf("timeline 1 without history: %d", got)
	}
	if HistoryFileName(10) != "0000000A.history" {
		t.Errorf("history file name %s", HistoryFileName(10))
	}
	for _, bad := range []string{"x\t0/1\n", "1\n", "1\tzz\n", "2\t0/5\n1\t0/6\n", "1\t0/6\n2\t0/5\n", "0\t0/1\n"} {
		if _, err := ParseHistory([]byte(bad)); err == nil {
			t.Errorf("ParseHistory(%q) accepted", bad)
		}
	}
}
