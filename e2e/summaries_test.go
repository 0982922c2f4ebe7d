package e2e

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/pgtest"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/wal"
)

// Issue 14, first piece: the WAL summaries of PostgreSQL 18 read over SQL by a role without privileges
// give what the server's own incremental backup would use. Blocks updated after a point are marked; a
// TRUNCATE sets a limit; a CREATE DATABASE sends its whole directory in full; an untouched table goes
// incremental with no blocks (docs/incremental.md, section 2).
func TestWALSummariesOverSQL(t *testing.T) {
	bin, err := pgtest.MajorBinDir(18)
	if err != nil {
		t.Fatal(err)
	}
	c := pgtest.New(t, pgtest.Options{BinDir: bin, Conf: []string{"summarize_wal = on"}})
	c.Psql(t, "postgres", `CREATE TABLE hot AS SELECT g, md5(g::text) AS v FROM generate_series(1, 20000) g;
CREATE TABLE cold AS SELECT g FROM generate_series(1, 20000) g;
CREATE TABLE cut AS SELECT g FROM generate_series(1, 20000) g;
CREATE ROLE reader LOGIN;
VACUUM (FREEZE) hot, cold, cut;
CHECKPOINT`) // hint bits and freezing before the point: 18 has data checksums on, so setting them later is WAL-logged
	from := c.Psql(t, "postgres", "SELECT pg_current_wal_lsn()")
	// the last page of hot, and nothing else of it
	c.Psql(t, "postgres", "UPDATE hot SET v = 'x' WHERE g = 20000")
	c.Psql(t, "postgres", "TRUNCATE cut")
	c.Psql(t, "postgres", "CREATE DATABASE fresh")
	to := c.Psql(t, "postgres", "SELECT pg_current_wal_lsn()")
	// the summarizer ends a summary at a checkpoint's redo point, as the start of a backup makes one
	c.Psql(t, "postgres", "CHECKPOINT")
	start, _ := wal.ParseLSN(from)
	end, _ := wal.ParseLSN(to)

	ctx := context.Background()
	conn, err := server.Connect(ctx, strings.Replace(c.DSN(), "user=postgres", "user=reader", 1), "pgbb-test", false)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	deadline := time.Now().Add(60 * time.Second)
	for {
		st, err := conn.WALSummarizerState(ctx)
		if err != nil {
			t.Fatalf("pg_get_wal_summarizer_state as a plain role: %v", err)
		}
		if !st.Running {
			t.Fatal("the WAL summarizer is not running with summarize_wal = on")
		}
		if st.SummarizedLSN >= end {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("summaries reach %s, want %s", st.SummarizedLSN, end)
		}
		time.Sleep(100 * time.Millisecond)
	}
	sums, err := conn.WALSummaries(ctx)
	if err != nil {
		t.Fatal(err)
	}
	table := incremental.NewTable()
	n := 0
	for _, s := range sums {
		if s.End > start && s.Start < end {
			if err := conn.AddSummary(ctx, s, table); err != nil {
				t.Fatal(err)
			}
			n++
		}
	}
	if n == 0 {
		t.Fatalf("no summary covers %s to %s: %v", start, end, sums)
	}
	db, _ := strconv.ParseUint(c.Psql(t, "postgres", "SELECT oid FROM pg_database WHERE datname = 'postgres'"), 10, 32)
	fresh, _ := strconv.ParseUint(c.Psql(t, "postgres", "SELECT oid FROM pg_database WHERE datname = 'fresh'"), 10, 32)
	file := func(dbOID uint64, rel string) incremental.File {
		path := c.Psql(t, "postgres", "SELECT pg_relation_filepath('"+rel+"')")
		size, _ := strconv.ParseInt(c.Psql(t, "postgres", "SELECT pg_relation_size('"+rel+"')"), 10, 64)
		return incremental.File{Tablespace: 1663, Database: uint32(dbOID), Name: filepath.Base(path), Size: size, InPrior: true}
	}
	hot := file(db, "hot")
	m := table.Decide(hot, 131072)
	lastBlock := uint32(hot.Size/incremental.BlockSize) - 1
	if m.Full || len(m.Header.Blocks) == 0 || len(m.Header.Blocks) > 3 || m.Header.Blocks[len(m.Header.Blocks)-1] != lastBlock ||
		m.Header.TruncBlocks != lastBlock+1 {
		t.Fatalf("hot: %+v, want incremental with its last block or blocks, truncation %d", m, lastBlock+1)
	}
	t.Logf("hot: %d of %d blocks changed: %v", len(m.Header.Blocks), lastBlock+1, m.Header.Blocks)
	if m := table.Decide(file(db, "cold"), 131072); m.Full || len(m.Header.Blocks) != 0 {
		t.Errorf("cold: %+v, want incremental with no blocks", m)
	}
	// TRUNCATE gives the table a new relfilenode: the new file is not in any prior (full); the summary
	// holds the new file's limit 0 from its creation
	if m := table.Decide(file(db, "cut"), 131072); !m.Full {
		t.Errorf("cut: %+v, want full (a new relfilenode)", m)
	}
	f := file(db, "cold")
	f.Database = uint32(fresh)
	if m := table.Decide(f, 131072); !m.Full {
		t.Errorf("a file of the database created since: %+v, want full", m)
	}
}
