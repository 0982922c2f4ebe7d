package incremental

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/wal"
)

func TestCheckPrior(t *testing.T) {
	const id = 7312345678901234567
	m := func(rs ...manifest.WALRange) *manifest.Manifest {
		return &manifest.Manifest{Version: 2, SystemID: id, WALRanges: rs}
	}
	one := []wal.TimelineSwitch(nil)
	two := []wal.TimelineSwitch{{Parent: 1, SwitchLSN: 0x5000000}}
	p, err := CheckPrior(m(manifest.WALRange{Timeline: 1, Start: 0x1000028, End: 0x2000100}), id, 1, one, 0x3000028)
	if err != nil || p.StartTLI != 1 || p.Start != 0x1000028 || !slices.Equal(p.Spans, []Span{{1, 0x1000028, 0x3000028}}) {
		t.Fatalf("one timeline: %+v %v", p, err)
	}
	// the prior on timeline 1, this backup on 2 after a promotion: both timelines' summaries, newest first
	p, err = CheckPrior(m(manifest.WALRange{Timeline: 1, Start: 0x1000028, End: 0x4000000}), id, 2, two, 0x6000028)
	if err != nil || !slices.Equal(p.Spans, []Span{{2, 0x5000000, 0x6000028}, {1, 0x1000028, 0x5000000}}) {
		t.Fatalf("two timelines: %+v %v", p, err)
	}
	// the prior itself crossed the switch
	p, err = CheckPrior(m(manifest.WALRange{Timeline: 1, Start: 0x1000028, End: 0x5000000}, manifest.WALRange{Timeline: 2, Start: 0x5000000, End: 0x5800000}), id, 2, two, 0x6000028)
	if err != nil || p.StartTLI != 1 || p.Start != 0x1000028 {
		t.Fatalf("prior across the switch: %+v %v", p, err)
	}
	for name, c := range map[string]struct {
		m     *manifest.Manifest
		cur   uint32
		h     []wal.TimelineSwitch
		start wal.LSN
		want  string
	}{
		"version 1":        {&manifest.Manifest{Version: 1, WALRanges: []manifest.WALRange{{Timeline: 1, Start: 1, End: 2}}}, 1, one, 0x3000000, "version 1"},
		"another system":   {&manifest.Manifest{Version: 2, SystemID: 1, WALRanges: []manifest.WALRange{{Timeline: 1, Start: 1, End: 2}}}, 1, one, 0x3000000, "system identifier"},
		"no WAL":           {m(), 1, one, 0x3000000, "no required WAL"},
		"unknown timeline": {m(manifest.WALRange{Timeline: 3, Start: 1, End: 2}), 2, two, 0x6000000, "not in this server's history"},
		"prior after this": {m(manifest.WALRange{Timeline: 1, Start: 0x1000000, End: 0x4000000}), 1, one, 0x3000000, "but this backup starts at"},
		"non-final end":    {m(manifest.WALRange{Timeline: 1, Start: 0x1000000, End: 0x4800000}, manifest.WALRange{Timeline: 2, Start: 0x5000000, End: 0x5800000}), 2, two, 0x6000000, "non-final timeline"},
		"continuation":     {m(manifest.WALRange{Timeline: 1, Start: 0x1000000, End: 0x5000000}, manifest.WALRange{Timeline: 2, Start: 0x5100000, End: 0x5800000}), 2, two, 0x6000000, "continuation timeline"},
	} {
		if _, err := CheckPrior(c.m, id, c.cur, c.h, c.start); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", name, err, c.want)
		}
	}
}

func TestLabel(t *testing.T) {
	server := []byte("START WAL LOCATION: 0/3000028 (file 000000010000000000000003)\nCHECKPOINT LOCATION: 0/3000080\nBACKUP METHOD: streamed\nBACKUP FROM: primary\nSTART TIME: 2026-12-03 09:00:00 UTC\nLABEL: pgbb\nSTART TIMELINE: 1\n")
	p := Prior{StartTLI: 1, Start: 0x1000028}
	got, err := p.Label(server)
	want := string(server) + "INCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\n"
	if err != nil || string(got) != want {
		t.Fatalf("label:\n%s\n%v\nwant\n%s", got, err, want)
	}
	if _, err := p.Label(server[:len(server)-1]); err == nil {
		t.Error("a label without its last newline accepted")
	}
	if _, err := p.Label(got); err == nil {
		t.Error("a label that has the lines already accepted")
	}
}

func TestSelectSummaries(t *testing.T) {
	p := Prior{Spans: []Span{{TLI: 2, Start: 0x5000, End: 0x9000}, {TLI: 1, Start: 0x1000, End: 0x5000}}}
	have := []Summary{
		{1, 0x100, 0x1000}, // before the span: not taken
		{1, 0x3000, 0x5000},
		{1, 0x1000, 0x3000},
		{2, 0x7000, 0x9500}, // reaches past this start: taken whole
		{2, 0x5000, 0x7000},
		{3, 0x9000, 0xA000}, // another timeline
	}
	got, err := p.Select(have)
	if err != nil {
		t.Fatal(err)
	}
	want := []Summary{{1, 0x1000, 0x3000}, {1, 0x3000, 0x5000}, {2, 0x5000, 0x7000}, {2, 0x7000, 0x9500}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	// a hole, and a span whose end no summary reaches yet
	for _, h := range [][]Summary{
		{{1, 0x1000, 0x2000}, {1, 0x3000, 0x5000}, {2, 0x5000, 0x9000}},
		{{1, 0x1000, 0x5000}, {2, 0x5000, 0x8000}},
	} {
		if _, err := p.Select(h); err == nil || !strings.Contains(err.Error(), "incomplete") {
			t.Errorf("%v: %v, want an incomplete error", h, err)
		}
	}
}

func TestLocate(t *testing.T) {
	for _, c := range []struct {
		path    string
		spc, db uint32
		name    string
		ok      bool
	}{
		{"base/5/16384.1", 1663, 5, "16384.1", true},
		{"global/1262", 1664, 0, "1262", true},
		{"pg_tblspc/16390/PG_18_202506291/5/16391_vm", 16390, 5, "16391_vm", true},
		{"base/pgsql_tmp/x", 0, 0, "", false},
		{"pg_wal/000000010000000000000001", 0, 0, "", false},
		{"pg_tblspc/16390/PG_18_202506291/pgsql_tmp/x", 0, 0, "", false},
		{"PG_VERSION", 0, 0, "", false},
	} {
		spc, db, name, ok := Locate(c.path)
		if ok != c.ok || (ok && (spc != c.spc || db != c.db || name != c.name)) {
			t.Errorf("Locate(%q) = %d %d %q %v", c.path, spc, db, name, ok)
		}
	}
}
