// Package listing walks a live data directory over SQL and writes the work list (docs/worklist.md) of a
// backup, applying the rules of package datadir.
package listing

import (
	"bufio"
	"context"
	"fmt"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"path"
	"strings"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/progress"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/pgbb/pgbb/internal/worklist"
)

// InspectID is the backup id an inspect-only list carries; pgbb-pack refuses it.
const InspectID = "inspect-only"

// DefaultSplitSize is the largest byte range one item covers; bigger files become several items so that
// parallel fetchers share them.
const DefaultSplitSize = 32 << 20

// Options for Run.
type Options struct {
	DSN       string
	BackupID  string // PGBB_BACKUP_ID of the running backup; required unless Inspect
	Inspect   bool   // list without a backup in progress (the list cannot be used for a backup)
	SplitSize int64  // 0: DefaultSplitSize, or from Jobs
	// Jobs, when SplitSize is 0, is how many fetch jobs will share the list: files are then cut so the
	// list holds about 8 items' worth per job (from 1 MiB to DefaultSplitSize per item), which keeps the
	// jobs' shares even when the data is small against the jobs' count, as on a slow link with many jobs.
	Jobs int
	// Groups, when more than 1, is how many runs of consecutive lines the fan-out cuts the list into (runs
	// of ceil(lines/Groups) lines): the items are then arranged so that the runs carry about equal bytes.
	Groups int
	Log    *cliapp.Logger // skipped entries are reported with their reason when Log.Verbose
	// Incremental is the prior backup's backup_manifest (or its directory): the list is then that of an
	// incremental backup, PostgreSQL 17 and later (docs/incremental.md).
	Incremental string
	// TotalFile, when set, receives the list's total (progress.WriteTotal) once the list is written.
	TotalFile string
}

// Run lists the data directory and tablespaces and writes the work list to w. It refuses to run without a
// backup id unless Inspect is set, because a file created between a listing and the backup's start would be
// missing from the backup (invariant 1).
func Run(ctx context.Context, o Options, w io.Writer) error {
	if o.BackupID == "" && !o.Inspect {
		return cliapp.Usage("run pgbb-list as the child of pgbb-xlog (pgbb-xlog -- sh -c 'pgbb-list | …'), which sets PGBB_BACKUP_ID, or pass --inspect to only look",
			"no backup in progress: PGBB_BACKUP_ID is not set")
	}
	if o.Inspect {
		o.BackupID = InspectID
	} else if !backupid.Valid(o.BackupID) {
		return cliapp.Usage("PGBB_BACKUP_ID must be the value pgbb-xlog set", "bad backup id %q", o.BackupID)
	}
	if o.SplitSize < 0 || o.SplitSize%8192 != 0 {
		return cliapp.Usage("give a multiple of 8192 (the page size)", "bad split size %d", o.SplitSize)
	}
	var prior *manifest.Manifest
	if o.Incremental != "" {
		if o.Inspect {
			return cliapp.Usage("give --incremental to a backup's listing", "--incremental and --inspect together")
		}
		var err error
		if prior, err = incremental.ReadPrior(o.Incremental); err != nil {
			return err
		}
	}
	conn, err := server.Connect(ctx, o.DSN, "pgbb-list", false)
	if err != nil {
		return server.ConnectFailed(err, "")
	}
	defer conn.Close()
	// pg_control's catalog version names the tablespace directories
	_, info, err := conn.ReadControlFile(ctx)
	if err != nil {
		return privilegeHint(err, "pg_read_binary_file(text, bigint, bigint, boolean)")
	}
	statsDir := ""
	if conn.Major.StatsTempDirSetting {
		// basebackup.c empties it when it is inside the data directory; an absolute setting is compared
		// with data_directory where the role may read it
		if statsDir, err = conn.Show(ctx, "stats_temp_directory"); err != nil {
			return err
		}
		if strings.HasPrefix(statsDir, "/") {
			dataDir, err := conn.Show(ctx, "data_directory")
			if rel, ok := strings.CutPrefix(statsDir, strings.TrimSuffix(dataDir, "/")+"/"); err == nil && ok {
				statsDir = rel
			} else {
				statsDir = ""
			}
		}
		if statsDir != "" {
			if statsDir = path.Clean(statsDir); statsDir == "." || strings.HasPrefix(statsDir, "../") {
				statsDir = ""
			}
		}
	}
	l := &lister{ctx: ctx, conn: conn, opt: o, rules: datadir.NewRules(conn.Major, info.CatalogVersion, statsDir)}
	var plan *planner
	if prior != nil {
		// the summaries are read before the walk: every file the walk sees exists after this backup's
		// start, and the summaries reach that start
		if plan, err = l.prepareIncremental(prior, info.SystemID); err != nil {
			return err
		}
	}
	if err := l.walk(""); err != nil {
		return err
	}
	if plan != nil {
		l.planned(plan, DefaultSplitSize)
		plan.report(o.Log)
	}
	l.split(o.SplitSize, o.Jobs)
	// Fan-outs hand consecutive lines to one job (parallel --pipe -N, xargs -n). In walk order the ranges of
	// a big relation sit together and land in one or two jobs; shuffled, every group of lines carries about
	// the same bytes. The shuffle is seeded by the backup id, so a list can be made again identically.
	seed := fnv.New64a()
	seed.Write([]byte(o.BackupID))
	r := rand.New(rand.NewPCG(seed.Sum64(), 0x70676262))
	r.Shuffle(len(l.items), func(i, j int) { l.items[i], l.items[j] = l.items[j], l.items[i] })
	l.items = groupLines(l.items, o.Groups)
	out := bufio.NewWriterSize(w, 64<<10)
	for i, it := range l.items {
		it.Seq = uint64(i + 1)
		fmt.Fprintln(out, worklist.FormatItem(it))
	}
	fmt.Fprintln(out, worklist.FormatTrailer(worklist.Trailer{Count: uint64(len(l.items)), BackupID: o.BackupID}))
	if err := out.Flush(); err != nil {
		return err
	}
	timeline.Mark("work list of %d items written", len(l.items))
	if o.TotalFile != "" {
		var bytes int64
		for _, it := range l.items {
			bytes += it.Length
		}
		return progress.WriteTotal(o.TotalFile, int64(len(l.items)), bytes)
	}
	return nil
}

func privilegeHint(err error, function string) error {
	if server.ErrorCode(err) == "42501" {
		return cliapp.WithHint(err, "GRANT EXECUTE ON FUNCTION "+function+" TO the backup role, or use a superuser")
	}
	return err
}

type lister struct {
	ctx   context.Context
	conn  *server.Conn
	opt   Options
	rules datadir.Rules
	items []worklist.Item
}

func (l *lister) emit(kind worklist.Kind, path string, off, length int64) {
	l.items = append(l.items, worklist.Item{Kind: kind, Offset: off, Length: length, Path: path})
}

// split cuts files into ranges of at most size bytes; size 0 means DefaultSplitSize, or one chosen for jobs.
func (l *lister) split(size int64, jobs int) {
	if size == 0 {
		size = DefaultSplitSize
		if jobs > 0 {
			var total int64
			for _, it := range l.items {
				total += it.Length
			}
			size = min(DefaultSplitSize, max(1<<20, total/int64(8*jobs)/(1<<20)*(1<<20)))
		}
	}
	var out []worklist.Item
	for _, it := range l.items {
		if it.Kind != worklist.File || it.Length <= size {
			out = append(out, it)
			continue
		}
		for off := int64(0); off < it.Length; off += size {
			kind := worklist.Part
			if off+size >= it.Length {
				kind = worklist.File
			}
			out = append(out, worklist.Item{Kind: kind, Path: it.Path, Offset: off, Length: min(size, it.Length-off)})
		}
	}
	l.items = out
}

func (l *lister) walk(dir string) error {
	entries, err := l.conn.ListDir(l.ctx, dir)
	if err != nil {
		return privilegeHint(fmt.Errorf("list %q: %w", dirName(dir), err), "pg_ls_dir(text, boolean, boolean) and pg_stat_file(text, boolean)")
	}
	siblings := make(map[string]bool, len(entries))
	for _, e := range entries {
		siblings[e.Name] = true
	}
	for _, e := range entries {
		if strings.ContainsRune(e.Name, '/') || e.Name == "." || e.Name == ".." || e.Name == "" {
			return fmt.Errorf("server returned an unusable file name %q in %q", e.Name, dirName(dir))
		}
		path := e.Name
		if dir != "" {
			path = dir + "/" + e.Name
		}
		decision, why := l.rules.Classify(dir, e.Name, e.IsDir, siblings)
		switch decision {
		case datadir.Skip:
			l.opt.Log.Info("skip %s: %s", path, why)
		case datadir.EmptyDir:
			if !e.IsDir {
				l.opt.Log.Info("skip %s: not a directory", path)
				continue
			}
			l.opt.Log.Info("empty %s: %s", path, why)
			l.emit(worklist.Dir, path, 0, 0)
			if path == "pg_wal" {
				for _, d := range l.rules.WALDirs() {
					l.emit(worklist.Dir, d, 0, 0)
				}
			}
		case datadir.TablespaceLink:
			l.emit(worklist.Link, path, 0, 0)
			if err := l.walk(path); err != nil {
				return err
			}
		case datadir.Copy:
			if e.IsDir {
				l.emit(worklist.Dir, path, 0, 0)
				if err := l.walk(path); err != nil {
					return err
				}
				continue
			}
			if e.Size == 0 {
				l.emit(worklist.File, path, 0, 0)
				continue
			}
			l.emit(worklist.File, path, 0, e.Size) // cut by split

		}
	}
	return nil
}

func dirName(dir string) string {
	if dir == "" {
		return "."
	}
	return dir
}
