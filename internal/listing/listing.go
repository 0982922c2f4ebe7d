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
	"strings"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/server"
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
	SplitSize int64
	Log       *cliapp.Logger // skipped entries are reported with their reason when Log.Verbose
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
	} else if !worklist.ValidBackupID(o.BackupID) {
		return cliapp.Usage("PGBB_BACKUP_ID must be the value pgbb-xlog set", "bad backup id %q", o.BackupID)
	}
	if o.SplitSize <= 0 {
		o.SplitSize = DefaultSplitSize
	}
	conn, err := server.Connect(ctx, o.DSN, "pgbb-list", false)
	if err != nil {
		return cliapp.WithHint(fmt.Errorf("connect: %w", err), "check the connection string, PG* variables and that the server is running")
	}
	defer conn.Close()
	// pg_control's catalog version names the tablespace directories
	_, info, err := conn.ReadControlFile(ctx)
	if err != nil {
		return privilegeHint(err, "pg_read_binary_file(text, bigint, bigint, boolean)")
	}
	l := &lister{ctx: ctx, conn: conn, opt: o, rules: datadir.NewRules(conn.Version/10000, info.CatalogVersion)}
	if err := l.walk(""); err != nil {
		return err
	}
	// Fan-outs hand consecutive lines to one job (parallel --pipe -N, xargs -n). In walk order the ranges of
	// a big relation sit together and land in one or two jobs; shuffled, every group of lines carries about
	// the same bytes. The shuffle is seeded by the backup id, so a list can be made again identically.
	seed := fnv.New64a()
	seed.Write([]byte(o.BackupID))
	r := rand.New(rand.NewPCG(seed.Sum64(), 0x70676262))
	r.Shuffle(len(l.items), func(i, j int) { l.items[i], l.items[j] = l.items[j], l.items[i] })
	out := bufio.NewWriterSize(w, 64<<10)
	for i, it := range l.items {
		it.Seq = uint64(i + 1)
		fmt.Fprintln(out, worklist.FormatItem(it))
	}
	fmt.Fprintln(out, worklist.FormatTrailer(worklist.Trailer{Count: uint64(len(l.items)), BackupID: o.BackupID}))
	return out.Flush()
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
				l.emit(worklist.Dir, "pg_wal/archive_status", 0, 0)
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
			for off := int64(0); off < e.Size; off += l.opt.SplitSize {
				kind := worklist.Part
				if off+l.opt.SplitSize >= e.Size {
					kind = worklist.File
				}
				l.emit(kind, path, off, min(l.opt.SplitSize, e.Size-off))
			}
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
