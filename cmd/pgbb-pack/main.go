// Command pgbb-pack assembles chunk streams into a plain data directory and writes backup_manifest last.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/pack"
	"github.com/pgbb/pgbb/internal/progress"
	"github.com/pgbb/pgbb/internal/recoveryconf"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/verify"
	"github.com/urfave/cli/v2"
)

func main() {
	log := &cliapp.Logger{Prog: "pgbb-pack", W: os.Stderr}
	cliapp.Main(&cli.App{
		Name:      "pgbb-pack",
		Usage:     "assemble chunk streams into a backup",
		ArgsUsage: "[INPUT…]",
		Description: "Reads stdin, or each INPUT in turn: a stream file, \"-\" for stdin, or a directory whose *.stream\n" +
			"files are read when it is reached. Validates every record, writes the data directory, proves every\n" +
			"work item and the WAL from start to stop arrived, and writes backup_manifest last. Exit 0 means the\n" +
			"backup is complete; on failure what was written is removed (see --no-clean).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "pgdata", Aliases: []string{"D"}, Usage: "target directory (new or empty)"},
			&cli.StringFlag{Name: "verify", Usage: "check the backup in DIR (plain, tar.xz or tar.zst) against its backup_manifest, WAL included, without extracting; write nothing"},
			&cli.StringSliceFlag{Name: "tablespace-mapping", Aliases: []string{"T"}, Usage: "relocate the tablespace in OLDDIR to NEWDIR"},
			&cli.BoolFlag{Name: "force", Usage: "empty a non-empty target directory first"},
			&cli.BoolFlag{Name: "no-direct-write", Usage: "plain format: have the jobs on the sink stream their data here instead of writing it into DEST themselves (docs/direct-write.md)"},
			&cli.BoolFlag{Name: "no-sync", Aliases: []string{"N"}, Usage: "do not fsync the output (as pg_basebackup --no-sync): faster, but a crash of this host can leave a backup that looks complete and is not"},
			&cli.StringFlag{Name: "sink", Usage: "also take fetch streams on a new Unix socket at PATH (give pgbb-xlog the same path in PGBB_SINK)"},
			&cli.BoolFlag{Name: "no-clean", Usage: "keep what was written when the backup fails, whatever the format and however early"},
			&cli.BoolFlag{Name: "resume", Usage: "plain format: complete the DEST of a failed or killed run (it holds .pgbb-incomplete), reusing the bytes the server's digests prove (docs/resume.md)"},
			&cli.BoolFlag{Name: "no-keep", Usage: "plain format: remove what a failed run wrote (by default it is kept for --resume once the backup had started)"},
			&cli.StringFlag{Name: "incremental", Usage: "the backup is incremental against the prior backup whose backup_manifest (or directory) this is: backup_label gets its INCREMENTAL FROM lines (give pgbb-list the same)"},
			&cli.StringFlag{Name: "reference", Usage: "plain format: take the pages equal to the server's from OLD, a complete plain backup of this cluster, instead of fetching them; DEST is a complete backup of its own and OLD is only read (docs/incremental.md)"},
			&cli.BoolFlag{Name: "write-recovery-conf", Aliases: []string{"R"}, Usage: "plain format: make the copy a streaming standby of the source, as pg_basebackup -R: standby.signal, and primary_conninfo (from --dsn or PGBB_DSN, without the password) appended to postgresql.auto.conf"},
			&cli.BoolFlag{Name: "write-recovery-conf-password", Usage: "with -R: put the connection's password into primary_conninfo too"},
			&cli.StringFlag{Name: "dsn", Usage: "with -R: the connection string of the backup (default: PGBB_DSN), for primary_conninfo"},
			&cli.StringFlag{Name: "progress", Usage: "show how far the backup is on stderr: text (redrawn on a terminal, a line every 10 s otherwise) or json (a JSON object per line, the last one says done)"},
			&cli.StringFlag{Name: "progress-total", Usage: "with --progress: the file where pgbb-list --total-file leaves the work list's total"},
			&cli.BoolFlag{Name: "check", Usage: "with --resume: only check that DEST can be resumed; with --reference: only check OLD against DEST; change nothing"},
			&cli.StringFlag{Name: "format", Aliases: []string{"F"}, Value: "plain", Usage: "output format: plain (a data directory) or tar (base.tar.xz, <oid>.tar.xz, pg_wal.tar.xz, or .tar.zst with --compress zstd; needs chunks of that codec)"},
			&cli.StringFlag{Name: "compress", Usage: "with -F tar: the codec the chunks were compressed with, xz (default) or zstd; a tar set is all one codec"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "report progress on stderr"},
		},
		Action: func(c *cli.Context) error {
			if dir := c.String("verify"); dir != "" {
				if c.IsSet("pgdata") || c.NArg() > 0 {
					return cliapp.Usage("run --verify DIR alone", "--verify takes no -D and no inputs")
				}
				problems, err := verify.Verify(dir, os.Stderr)
				if err != nil {
					return err
				}
				if problems > 0 {
					return fmt.Errorf("%d problems found in %s", problems, dir)
				}
				fmt.Fprintf(os.Stderr, "pgbb-pack: backup in %s verified\n", dir)
				return nil
			}
			if !c.IsSet("pgdata") {
				return cliapp.Usage("give the target with -D DIR", "no target directory")
			}
			maps := map[string]string{}
			for _, m := range c.StringSlice("tablespace-mapping") {
				old, nw, err := pack.ParseMapping(m)
				if err != nil {
					return cliapp.Usage("write -T OLDDIR=NEWDIR with absolute paths", "%v", err)
				}
				maps[old] = nw
			}
			if c.Bool("check") {
				switch {
				case c.Bool("resume"):
					_, _, err := pack.CheckResume(c.String("format"), c.Bool("force"), c.String("pgdata"), maps)
					return err
				case c.String("reference") != "":
					_, err := pack.CheckReference(c.String("reference"), c.String("pgdata"), maps)
					return err
				}
				return cliapp.Usage("give --check with --resume or --reference", "--check checks a DEST to resume, or a reference")
			}
			log.Verbose = c.Bool("verbose")
			var prior *incremental.Prior
			priorDir := ""
			if path := c.String("incremental"); path != "" {
				priorDir = path
				if st, err := os.Stat(path); err == nil && !st.IsDir() {
					priorDir = filepath.Dir(path)
				}
				m, err := incremental.ReadPrior(path)
				if err != nil {
					return err
				}
				p, err := incremental.Start(m)
				if err != nil {
					return cliapp.WithHint(fmt.Errorf("%s: %w", path, err), "give the manifest of a backup of PostgreSQL 17 or later")
				}
				prior = &p
			}
			recovery := ""
			if c.Bool("write-recovery-conf") {
				dsn := cliapp.DSN(c.String("dsn"), server.Password)
				host, port, user, err := server.Resolve(dsn)
				if err != nil {
					return cliapp.Usage("give -R the backup's connection string with --dsn or PGBB_DSN", "-R: %v", err)
				}
				ci, err := recoveryconf.PrimaryConninfo(dsn, os.Environ(), recoveryconf.Resolved{Host: host, Port: port, User: user}, c.Bool("write-recovery-conf-password"))
				if err != nil {
					return cliapp.Usage("give -R the backup's connection string with --dsn or PGBB_DSN", "-R: %v", err)
				}
				recovery = recoveryconf.AutoConfLines(ci)
			} else if c.Bool("write-recovery-conf-password") {
				return cliapp.Usage("give it with -R", "--write-recovery-conf-password without -R")
			}
			mode := progress.Off
			if c.IsSet("progress") {
				var err error
				if mode, err = progress.ParseMode(c.String("progress")); err != nil {
					return cliapp.Usage("give --progress text or --progress json", "%v", err)
				}
			}
			return pack.Run(pack.Options{
				Progress:      mode,
				ProgressTotal: c.String("progress-total"),
				RecoveryConf:  recovery,
				Incremental:   prior,
				PriorDir:      priorDir,
				Reference:     c.String("reference"),
				Dest:          c.String("pgdata"),
				Format:        c.String("format"),
				Force:         c.Bool("force"),
				Mappings:      maps,
				NoClean:       c.Bool("no-clean"),
				NoSync:        c.Bool("no-sync"),
				Compress:      c.String("compress"),
				NoDirect:      c.Bool("no-direct-write"),
				Resume:        c.Bool("resume"),
				NoKeep:        c.Bool("no-keep"),
				Sink:          c.String("sink"),
				Inputs:        c.Args().Slice(),
				Log:           log,
			}, os.Stdin)
		},
	})
}
