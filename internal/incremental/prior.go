package incremental

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/wal"
)

// ReadPrior reads and parses the prior backup's manifest given to --incremental: a backup_manifest file,
// or a backup directory holding one. (The one place this package reads a file.)
func ReadPrior(path string) (*manifest.Manifest, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		path = filepath.Join(path, "backup_manifest")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, cliapp.WithHint(fmt.Errorf("read the prior backup's manifest: %w", err),
			"give --incremental the backup_manifest of the prior backup of the chain (or its directory)")
	}
	m, err := manifest.Parse(b)
	if err != nil {
		return nil, cliapp.WithHint(fmt.Errorf("%s: %w", path, err), "the prior backup's manifest is damaged or is not a backup_manifest")
	}
	return m, nil
}

// Start returns the prior backup's start as the INCREMENTAL FROM lines give it: the start of its earliest
// WAL range (PrepareForIncrementalBackup sets istartpoint and istarttli from it).
func Start(m *manifest.Manifest) (Prior, error) {
	if len(m.WALRanges) == 0 {
		return Prior{}, errors.New("manifest contains no required WAL ranges")
	}
	r := m.WALRanges[0]
	for _, w := range m.WALRanges[1:] {
		if w.Start < r.Start {
			r = w
		}
	}
	return Prior{SystemID: m.SystemID, StartTLI: r.Timeline, Start: wal.LSN(r.Start)}, nil
}

// Span is a range of WAL on one timeline whose summaries an incremental backup merges.
type Span struct {
	TLI        uint32
	Start, End wal.LSN
}

// Prior is what an incremental backup takes from its prior backup's manifest: the prior's start (the
// label's INCREMENTAL FROM lines) and the WAL whose summaries say what changed since.
type Prior struct {
	SystemID uint64 // the prior's System-Identifier (set by Start)
	StartTLI uint32
	Start    wal.LSN
	Spans    []Span // newest timeline first, as the server walks them
}

// timeline is one entry of a server's timeline history: the WAL of TLI runs from Begin to End (End 0:
// the current timeline, without end).
type timeline struct {
	tli        uint32
	begin, end wal.LSN
}

// historyOf returns the timelines of current, newest first (readTimeLineHistory, timeline.c).
func historyOf(current uint32, history []wal.TimelineSwitch) []timeline {
	out := []timeline{{tli: current}}
	if n := len(history); n > 0 {
		out[0].begin = history[n-1].SwitchLSN
	}
	for i := len(history) - 1; i >= 0; i-- {
		t := timeline{tli: history[i].Parent, end: history[i].SwitchLSN}
		if i > 0 {
			t.begin = history[i-1].SwitchLSN
		}
		out = append(out, t)
	}
	return out
}

// CheckPrior checks the prior backup's manifest against this server and this backup's start as the
// server does before an incremental backup (PrepareForIncrementalBackup, basebackup_incremental.c), and
// returns the prior's start and the WAL spans to summarize. m is the parsed manifest (its checksum already
// verified by manifest.Parse); current and history are this backup's start timeline and its history.
func CheckPrior(m *manifest.Manifest, systemID uint64, current uint32, history []wal.TimelineSwitch, start wal.LSN) (Prior, error) {
	if m.Version < 2 {
		return Prior{}, errors.New("backup manifest version 1 does not support incremental backup: take the prior backup with PostgreSQL 17 or later")
	}
	if m.SystemID != systemID {
		return Prior{}, fmt.Errorf("system identifier in backup manifest is %d, but database system identifier is %d", m.SystemID, systemID)
	}
	if len(m.WALRanges) == 0 {
		return Prior{}, errors.New("manifest contains no required WAL ranges")
	}
	tls := historyOf(current, history)
	pos := func(tli uint32) int {
		for i, t := range tls {
			if t.tli == tli {
				return i
			}
		}
		return -1
	}
	// the earliest and latest timelines of the manifest, by their place in this server's history
	earliest, latest := -1, len(tls)
	for _, r := range m.WALRanges {
		i := pos(r.Timeline)
		if i < 0 {
			return Prior{}, fmt.Errorf("timeline %d found in manifest, but not in this server's history", r.Timeline)
		}
		earliest, latest = max(earliest, i), min(latest, i)
	}
	var p Prior
	for _, r := range m.WALRanges {
		i := pos(r.Timeline)
		t := tls[i]
		rs, re := wal.LSN(r.Start), wal.LSN(r.End)
		if i == earliest {
			if rs < t.begin {
				return Prior{}, fmt.Errorf("manifest requires WAL from initial timeline %d starting at %s, but that timeline begins at %s", t.tli, rs, t.begin)
			}
			if p.Start == 0 || rs < p.Start {
				p.StartTLI, p.Start = t.tli, rs
			}
		} else if rs != t.begin {
			return Prior{}, fmt.Errorf("manifest requires WAL from continuation timeline %d starting at %s, but that timeline begins at %s", t.tli, rs, t.begin)
		}
		if i == latest {
			if re > start {
				return Prior{}, fmt.Errorf("manifest requires WAL from final timeline %d ending at %s, but this backup starts at %s", t.tli, re, start)
			}
		} else if re != t.end {
			return Prior{}, fmt.Errorf("manifest requires WAL from non-final timeline %d ending at %s, but this server switched timelines at %s", t.tli, re, t.end)
		}
	}
	for i := 0; i <= earliest; i++ {
		s := Span{TLI: tls[i].tli, Start: tls[i].begin, End: tls[i].end}
		if i == 0 {
			s.End = start
		}
		if i == earliest {
			s.Start = p.Start
		}
		p.Spans = append(p.Spans, s)
	}
	return p, nil
}

// Label returns backup_label as the server returned it with the two lines of an incremental backup
// appended, where the server's own incremental backups have them: after START TIMELINE, at the end
// (build_backup_content, xlogbackup.c). The server's bytes are kept as they are (invariant 4).
func (p Prior) Label(server []byte) ([]byte, error) {
	if len(server) == 0 || server[len(server)-1] != '\n' {
		return nil, errors.New("backup_label from the server does not end with a newline")
	}
	if containsLine(server, "INCREMENTAL FROM ") {
		return nil, errors.New("backup_label from the server already has INCREMENTAL FROM lines")
	}
	out := append([]byte(nil), server...)
	return fmt.Appendf(out, "INCREMENTAL FROM LSN: %s\nINCREMENTAL FROM TLI: %d\n", p.Start, p.StartTLI), nil
}

// containsLine reports whether a line of b starts with prefix.
func containsLine(b []byte, prefix string) bool {
	for _, l := range bytes.Split(b, []byte("\n")) {
		if bytes.HasPrefix(l, []byte(prefix)) {
			return true
		}
	}
	return false
}

// Summary is one WAL summary the server holds: the blocks modified by the WAL of [Start, End) on TLI.
type Summary struct {
	TLI        uint32
	Start, End wal.LSN
}

// Select returns the summaries to merge for the spans, in ascending LSN order (the order in which a
// truncation and later writes to the same fork must be merged), and an error naming the first stretch of
// WAL no summary covers (WalSummariesAreComplete, walsummary.c). A summary that overlaps a span is taken
// whole, as GetWalSummaries does.
func (p Prior) Select(have []Summary) ([]Summary, error) {
	var out []Summary
	for _, s := range p.Spans {
		var on []Summary
		for _, h := range have {
			if h.TLI == s.TLI && h.End > s.Start && h.Start < s.End {
				on = append(on, h)
			}
		}
		sort.Slice(on, func(i, j int) bool { return on[i].Start < on[j].Start })
		reached := s.Start
		for _, h := range on {
			if h.Start > reached {
				break
			}
			reached = max(reached, h.End)
		}
		if reached < s.End && s.End > s.Start {
			return nil, fmt.Errorf("WAL summaries are required on timeline %d from %s to %s, but the summaries for that timeline and LSN range are incomplete: none covers %s",
				s.TLI, s.Start, s.End, reached)
		}
		out = append(out, on...)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start < out[j].Start })
	return out, nil
}
