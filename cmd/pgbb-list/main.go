// Command pgbb-list writes the work list of a running backup: what to copy from the data directory and
// tablespaces, with PostgreSQL's exclusion rules (docs/worklist.md).
package main

import (
	"os"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/listing"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/urfave/cli/v2"
)

func main() {
	log := &cliapp.Logger{Prog: "pgbb-list", W: os.Stderr}
	cliapp.Main(&cli.App{
		Name:      "pgbb-list",
		Usage:     "write the work list of the running backup",
		ArgsUsage: "[DSN]",
		Description: "Lists the data directory and tablespaces over SQL after pgbb-xlog started the backup (it reads\n" +
			"PGBB_BACKUP_ID and PGBB_DSN from the environment pgbb-xlog gives its child). The DSN is a libpq\n" +
			"conninfo string or URI; PG* variables and ~/.pgpass apply.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "inspect", Usage: "list without a backup in progress (the list cannot be used to back up)"},
			&cli.Int64Flag{Name: "split-size", Usage: "largest byte range of one work item (default 32 MiB, or chosen from --jobs)"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "how many fetch jobs will share the list: cut files so each gets about 8 items' worth"},
			&cli.IntFlag{Name: "groups", Usage: "the fan-out cuts the list into N runs of ceil(lines/N) consecutive lines (xargs -n, parallel -N): arrange the items so that the runs carry about equal bytes"},
			&cli.StringFlag{Name: "backup-id", EnvVars: []string{"PGBB_BACKUP_ID"}, Usage: "the running backup's id (set by pgbb-xlog)"},
			&cli.StringFlag{Name: "incremental", Aliases: []string{"i"}, Usage: "list an incremental backup against the prior backup whose backup_manifest (or directory) this is (PostgreSQL 17 and later, summarize_wal = on)"},
			&cli.StringFlag{Name: "total-file", EnvVars: []string{"PGBB_PROGRESS_TOTAL"}, Usage: "also leave the list's total (items and bytes) in FILE, for pgbb-pack --progress"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "report every skipped entry and why, on stderr"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 1 {
				return cliapp.Usage("give at most one DSN; quote it if it holds spaces", "too many arguments")
			}
			log.Verbose = c.Bool("verbose")
			return listing.Run(c.Context, listing.Options{
				DSN:       cliapp.DSN(c.Args().First(), server.Password),
				BackupID:  c.String("backup-id"),
				Inspect:   c.Bool("inspect"),
				SplitSize: c.Int64("split-size"),
				Jobs:      c.Int("jobs"),
				Groups:    c.Int("groups"),
				Log:       log,

				Incremental: c.String("incremental"),
				TotalFile:   c.String("total-file"),
			}, os.Stdout)
		},
	})
}
