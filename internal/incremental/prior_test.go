package incremental

import (
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
