package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/pgbb/pgbb/internal/cliapp"

	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/wal"
)

// The WAL summaries of PostgreSQL 17 and later (summarize_wal = on), read over SQL for incremental
// backups (docs/incremental.md). The three functions are in src/backend/backup/walsummaryfuncs.c; PUBLIC
// may execute them.

// SummarizerState is pg_get_wal_summarizer_state(): how far the summaries reach, and how far the
// summarizer has read (the wait of WaitForWalSummarization, walsummarizer.c, watches PendingLSN).
type SummarizerState struct {
	TLI                    uint32
	SummarizedLSN, Pending wal.LSN
	Running                bool // summarizer_pid is not null
}

// WALSummarizerState returns the summarizer's state.
func (c *Conn) WALSummarizerState(ctx context.Context) (SummarizerState, error) {
	var st SummarizerState
	var tli int64
	var sum, pend string
	var pid *int32
	err := c.pg.QueryRow(ctx, "SELECT summarized_tli, summarized_lsn::text, pending_lsn::text, summarizer_pid FROM pg_get_wal_summarizer_state()").
		Scan(&tli, &sum, &pend, &pid)
	if err != nil {
		return st, err
	}
	st.TLI, st.Running = uint32(tli), pid != nil
	if st.SummarizedLSN, err = wal.ParseLSN(sum); err != nil {
		return st, err
	}
	st.Pending, err = wal.ParseLSN(pend)
	return st, err
}

// WALSummaries returns the summaries the server holds, in ascending order of timeline and start.
func (c *Conn) WALSummaries(ctx context.Context) ([]incremental.Summary, error) {
	rows, err := c.pg.Query(ctx, "SELECT tli, start_lsn::text, end_lsn::text FROM pg_available_wal_summaries() ORDER BY tli, start_lsn")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []incremental.Summary
	for rows.Next() {
		var tli int64
		var s, e string
		if err := rows.Scan(&tli, &s, &e); err != nil {
			return nil, err
		}
		sm := incremental.Summary{TLI: uint32(tli)}
		if sm.Start, err = wal.ParseLSN(s); err != nil {
			return nil, err
		}
		if sm.End, err = wal.ParseLSN(e); err != nil {
			return nil, err
		}
		out = append(out, sm)
	}
	return out, rows.Err()
}

// AddSummary merges one summary's contents into t: each fork's limit block before its blocks, as the
// server merges them (PrepareForIncrementalBackup, basebackup_incremental.c). Callers merge the summaries
// in ascending LSN order.
func (c *Conn) AddSummary(ctx context.Context, s incremental.Summary, t *incremental.Table) error {
	// limit rows first within the summary: the function returns a fork's limit before its blocks, and
	// ordering on is_limit_block keeps that whatever the plan
	rows, err := c.pg.Query(ctx, `SELECT relfilenode, reltablespace, reldatabase, relforknumber, relblocknumber, is_limit_block
FROM pg_wal_summary_contents($1, $2::pg_lsn, $3::pg_lsn) ORDER BY is_limit_block DESC`, int64(s.TLI), s.Start.String(), s.End.String())
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var rel, spc, db uint32
		var fork int16
		var blk int64
		var limit bool
		if err := rows.Scan(&rel, &spc, &db, &fork, &blk, &limit); err != nil {
			return err
		}
		if blk < 0 || blk > 0xFFFFFFFF {
			return fmt.Errorf("WAL summary %d %s-%s: block number %d out of range", s.TLI, s.Start, s.End, blk)
		}
		k := incremental.Key{Tablespace: spc, Database: db, Number: rel, Fork: int(fork)}
		if limit {
			t.SetLimit(k, uint32(blk))
		} else {
			t.Mark(k, uint32(blk))
		}
	}
	return rows.Err()
}

// SegmentBlocks returns the relation segment size in blocks (RELSEG_SIZE, the segment_size setting) and
// checks that blocks are 8192 bytes, the only size pgbb reads incrementally.
func (c *Conn) SegmentBlocks(ctx context.Context) (uint32, error) {
	var seg, blk int64
	// pg_settings gives segment_size in blocks (SHOW gives it with a unit, "1GB")
	err := c.pg.QueryRow(ctx, "SELECT setting::bigint, current_setting('block_size')::bigint FROM pg_settings WHERE name = 'segment_size'").Scan(&seg, &blk)
	if err != nil {
		return 0, err
	}
	if blk != 8192 || seg <= 0 || seg > 1<<31 {
		return 0, fmt.Errorf("block size %d and segment size %d blocks: pgbb reads incrementally only 8192-byte blocks", blk, seg)
	}
	return uint32(seg), nil
}

// CheckSummaries refuses, with a hint, a server that cannot take an incremental backup: before 17, or with
// summarize_wal off (PrepareForIncrementalBackup, basebackup_incremental.c, needs the summaries).
func (c *Conn) CheckSummaries(ctx context.Context) error {
	if c.Major.ManifestVersion < 2 {
		return cliapp.WithHint(fmt.Errorf("incremental backups need PostgreSQL 17 or later; this server is %d", c.Major.Major),
			"take a full backup with --reference OLD instead: a complete backup that sends only the changed pages, on every major")
	}
	on, err := c.Show(ctx, "summarize_wal")
	if err != nil {
		return err
	}
	if on != "on" {
		return cliapp.WithHint(errors.New("incremental backups require summarize_wal to be enabled"),
			"ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); then take a full backup to start the chain")
	}
	return nil
}
