package listing

import (
	"fmt"
	"time"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/wal"
	"github.com/pgbb/pgbb/internal/worklist"
)

// planner decides per listed file how an incremental backup copies it (docs/incremental.md).
type planner struct {
	table     *incremental.Table
	inPrior   map[string]bool
	segBlocks uint32
	// counters, per file kind (relation main fork and init fork, FSM, VM, other)
	whole, incr           [4]int
	sent, skipped, wholeB [4]int64
}

// summaryWait is how long the summarizer may make no progress before the backup gives up (the server
// waits six 10 s cycles, WaitForWalSummarization in walsummarizer.c).
const summaryWait = 60 * time.Second

// prepareIncremental checks the prior manifest against this server and backup, waits for the WAL
// summaries to reach this backup's start, and merges them (PrepareForIncrementalBackup,
// basebackup_incremental.c).
func (l *lister) prepareIncremental(m *manifest.Manifest, systemID uint64) (*planner, error) {
	ctx, conn := l.ctx, l.conn
	if err := conn.CheckSummaries(ctx); err != nil {
		return nil, err
	}
	id, err := backupid.Parse(l.opt.BackupID)
	if err != nil {
		return nil, err
	}
	var history []wal.TimelineSwitch
	if id.Timeline > 1 {
		path := "pg_wal/" + wal.HistoryFileName(id.Timeline)
		data, missing, err := conn.ReadFile(ctx, nil, path, 0, 1<<24)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", path, err)
		}
		if missing {
			return nil, fmt.Errorf("the backup starts on timeline %d but the server has no %s", id.Timeline, path)
		}
		if history, err = wal.ParseHistory(data); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	start := wal.LSN(id.StartLSN)
	prior, err := incremental.CheckPrior(m, systemID, id.Timeline, history, start)
	if err != nil {
		return nil, cliapp.WithHint(err, "give the manifest of a backup of this cluster taken before this one, on this server's timeline history")
	}
	if err := l.waitSummarized(start); err != nil {
		return nil, err
	}
	have, err := conn.WALSummaries(ctx)
	if err != nil {
		return nil, err
	}
	sel, err := prior.Select(have)
	if err != nil {
		return nil, cliapp.WithHint(err, "summaries are removed after wal_summary_keep_time: take a full backup to start a new chain")
	}
	p := &planner{table: incremental.NewTable(), inPrior: map[string]bool{}}
	for _, s := range sel {
		if err := conn.AddSummary(ctx, s, p.table); err != nil {
			return nil, fmt.Errorf("read WAL summary %d %s-%s: %w", s.TLI, s.Start, s.End, err)
		}
	}
	if p.segBlocks, err = conn.SegmentBlocks(ctx); err != nil {
		return nil, err
	}
	for _, e := range m.Files {
		p.inPrior[e.Path] = true
	}
	l.opt.Log.Info("incremental from %s on timeline %d: %d WAL summaries merged", prior.Start, prior.StartTLI, len(sel))
	return p, nil
}

// waitSummarized waits until the WAL summarizer has summarized the WAL up to start, and gives up after
// summaryWait without progress, as the server does.
func (l *lister) waitSummarized(start wal.LSN) error {
	var pending wal.LSN
	last := time.Now()
	warned := last
	for {
		st, err := l.conn.WALSummarizerState(l.ctx)
		if err != nil {
			return err
		}
		if st.SummarizedLSN >= start {
			return nil
		}
		now := time.Now()
		if st.Pending != pending {
			pending, last = st.Pending, now
		}
		if now.Sub(last) > summaryWait {
			return cliapp.WithHint(fmt.Errorf("WAL summarization is not progressing: summarized through %s, this backup starts at %s, and the summarizer read nothing for %s",
				st.SummarizedLSN, start, summaryWait), "check that the WAL summarizer runs (summarize_wal = on, pg_get_wal_summarizer_state()) and see the server's log")
		}
		if now.Sub(warned) >= 10*time.Second {
			l.opt.Log.Warn("still waiting for WAL summarization through %s after %s (summarized through %s)", start, now.Sub(warned).Round(time.Second), st.SummarizedLSN)
			warned = now
		}
		select {
		case <-l.ctx.Done():
			return l.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// plan returns the items of one listed file: itself in full, or an INCREMENTAL file's header and runs of
// at most split bytes each.
func (p *planner) plan(path string, size, split int64) []worklist.Item {
	k := incremental.FileKind(path)
	full := []worklist.Item{{Kind: worklist.File, Path: path, Length: size}}
	spc, db, name, ok := incremental.Locate(path)
	if !ok {
		p.whole[k]++
		p.wholeB[k] += size
		return full
	}
	i := len(path) - len(name)
	m := p.table.Decide(incremental.File{Tablespace: spc, Database: db, Name: name, Size: size,
		InPrior: p.inPrior[path] || p.inPrior[path[:i]+incremental.Prefix+name]}, p.segBlocks)
	runs := blockRuns(m.Header.Blocks)
	if m.Full || len(worklist.FormatRuns(runs)) > worklist.MaxRunList {
		p.whole[k]++
		p.wholeB[k] += size
		return full
	}
	p.incr[k]++
	n := len(m.Header.Blocks)
	p.sent[k] += int64(n) * incremental.BlockSize
	p.skipped[k] += size - int64(n)*incremental.BlockSize
	items := []worklist.Item{{Kind: worklist.Header, Path: path, Trunc: m.Header.TruncBlocks, Runs: runs}}
	dst := int64(incremental.HeaderSize(n))
	maxBlocks := uint32(max(split/incremental.BlockSize, 1))
	for _, r := range runs {
		for b := r.First; b < r.First+r.Count; b += maxBlocks {
			c := min(maxBlocks, r.First+r.Count-b)
			items = append(items, worklist.Item{Kind: worklist.MoreRun, Path: path, Offset: int64(b) * incremental.BlockSize,
				Length: int64(c) * incremental.BlockSize, Dst: dst})
			dst += int64(c) * incremental.BlockSize
		}
	}
	if len(items) > 1 {
		items[len(items)-1].Kind = worklist.LastRun
	}
	return items
}

// blockRuns returns ascending block numbers as runs of consecutive blocks.
func blockRuns(blocks []uint32) []worklist.Run {
	var out []worklist.Run
	for _, b := range blocks {
		if n := len(out); n > 0 && out[n-1].First+out[n-1].Count == b {
			out[n-1].Count++
			continue
		}
		out = append(out, worklist.Run{First: b, Count: 1})
	}
	return out
}

// report says what the incremental backup sends and what it takes from the prior backups.
func (p *planner) report(log *cliapp.Logger) {
	var sent, skipped, whole int64
	for k := range incremental.KindNames {
		sent, skipped, whole = sent+p.sent[k], skipped+p.skipped[k], whole+p.wholeB[k]
		log.Info("incremental: %s files: %d whole (%d bytes), %d incremental (%d blocks sent, %d blocks taken from the prior backups)",
			incremental.KindNames[k], p.whole[k], p.wholeB[k], p.incr[k], p.sent[k]/incremental.BlockSize, p.skipped[k]/incremental.BlockSize)
	}
	log.Note("incremental: %d bytes of changed blocks and %d bytes of whole files to send; %d bytes taken from the prior backups", sent, whole, skipped)
}

// planned replaces the listed files' items with the plan's.
func (l *lister) planned(p *planner, split int64) {
	var out []worklist.Item
	for _, it := range l.items {
		if it.Kind != worklist.File {
			out = append(out, it)
			continue
		}
		out = append(out, p.plan(it.Path, it.Length, split)...)
	}
	l.items = out
}
