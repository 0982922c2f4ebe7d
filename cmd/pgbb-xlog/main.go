// Command pgbb-xlog holds a backup session: it starts the backup, runs the base copy, copies the WAL, and
// stops the backup, writing one chunk stream (docs/chunk-stream.md).
package main

import (
	"errors"
	"os"
	"time"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/continuous"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/ratelimit"
	"github.com/pgbb/pgbb/internal/recoveryconf"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/session"
	"github.com/urfave/cli/v2"
)

func main() {
	log := &cliapp.Logger{Prog: "pgbb-xlog", W: os.Stderr}
	cliapp.Main(&cli.App{
		Name:      "pgbb-xlog",
		Usage:     "hold a backup session and copy its WAL",
		ArgsUsage: "[DSN] [-- CMD ARGS…]",
		Description: "Starts a non-exclusive backup, runs CMD with PGBB_BACKUP_ID and PGBB_DSN in its environment and\n" +
			"forwards CMD's chunk stream on stdout, interleaved with the WAL. CMD's fetch jobs send their streams\n" +
			"to the sink in PGBB_SINK: pgbb-pack's (pgbb-pack --sink PATH, PGBB_SINK=PATH for pgbb-xlog), or, when\n" +
			"PGBB_SINK is unset, a socket of pgbb-xlog's own whose streams it forwards. When CMD exits 0: copies\n" +
			"global/pg_control, calls pg_backup_stop and copies the remaining WAL. Without CMD it prints\n" +
			"PGBB_BACKUP_ID on stderr and runs until a line \"stop\" on stdin (finish the backup) or SIGINT or\n" +
			"SIGTERM (abandon it). The DSN may also come from PGBB_DSN, which keeps a password off command lines.\n" +
			"With --check it only checks that a backup can run, and exits. With --continuous DIR it takes no backup\n" +
			"and copies the WAL into DIR in a loop, holding what it has not copied with the slot --slot.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "checkpoint", Aliases: []string{"c"}, Value: "fast", Usage: "fast or spread"},
			&cli.StringFlag{Name: "label", Aliases: []string{"l"}, Value: "pgbb base backup", Usage: "backup label"},
			&cli.DurationFlag{Name: "delay", Aliases: []string{"D"}, Value: 1e9, Usage: "pause between WAL copy rounds: in a backup each round checks that the session is alive (at most 30s); with --continuous, any positive pause"},
			&cli.StringFlag{Name: "compress", Value: "none", Usage: "WAL chunk compression: " + compress.CodecNames},
			&cli.IntFlag{Name: "compress-level", Usage: "the codec's level (default: its fastest): " + compress.LevelsHelp},
			&cli.BoolFlag{Name: "no-slot", Usage: "do not create the temporary replication slot"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "report progress on stderr"},
			&cli.BoolFlag{Name: "check", Usage: "only check that a backup can run (the grants, free connections for the session and --jobs) and exit: 0 when it can, 2 when not"},
			&cli.BoolFlag{Name: "check-no-password", Usage: "only check that neither the DSN nor PGPASSWORD gives a password, touching no server, and exit: 0 when none does, 2 when one does (jobs on other hosts get the DSN on ssh's command line: their passwords belong in each host's ~/.pgpass)"},
			&cli.IntFlag{Name: "jobs", Aliases: []string{"j"}, Usage: "with --check: the fetch jobs that will run at once, each on its own connection"},
			&cli.StringFlag{Name: "max-rate", Aliases: []string{"r"}, Usage: "limit what the run reads from the server, over all its connections and children, to RATE (kB/s, or with a suffix k or M, as pg_basebackup; 0: unlimited)"},
			&cli.StringFlag{Name: "max-rate-file", Usage: "follow the rate in FILE while the run goes on: read every 250ms, a new value applies at once (write it whole, through a rename)"},
			&cli.StringFlag{Name: "continuous", Usage: "take no backup: copy every completed WAL segment into `DIR` until SIGINT or SIGTERM, for restore_command (docs/continuous-wal.md)"},
			&cli.StringFlag{Name: "slot", Aliases: []string{"S"}, Usage: "with --continuous: the `NAME` of the permanent physical replication slot that holds the WAL not copied yet"},
			&cli.BoolFlag{Name: "create-slot", Usage: "with --continuous: create the slot when it does not exist"},
			&cli.StringFlag{Name: "incremental", Usage: "with --check: the run is incremental against this prior backup (its backup_manifest or directory): check that the server takes incremental backups of its cluster"},
		},
		Action: func(c *cli.Context) error {
			dsn, child, err := splitArgs(c.Args().Slice(), os.Args[1:])
			if err != nil {
				return err
			}
			fast := false
			switch c.String("checkpoint") {
			case "fast":
				fast = true
			case "spread":
			default:
				return cliapp.Usage("use -c fast or -c spread", "invalid checkpoint argument %q", c.String("checkpoint"))
			}
			log.Verbose = c.Bool("verbose")
			limit, err := ratelimit.ParseLimit(c.String("max-rate"), c.String("max-rate-file"))
			var fe *ratelimit.FileError
			switch {
			case errors.As(err, &fe):
				return cliapp.Usage("write one rate into the file, as --max-rate takes it: 32 to 1048576 kB/s, as 500k or 10M; 0 for no limit (write it whole, through a rename)", "%v", err)
			case err != nil:
				return cliapp.Usage("give --max-rate as pg_basebackup takes it: 32 to 1048576 kB/s, as 500k or 10M; 0 for no limit", "%v", err)
			}
			if dir := c.String("continuous"); dir != "" {
				switch {
				case len(child) > 0 || c.Bool("check"):
					return cliapp.Usage("pgbb-xlog --continuous DIR --slot NAME [DSN]", "--continuous takes no backup: it runs no command and no --check")
				case c.String("slot") == "":
					return cliapp.Usage("name the slot that holds the WAL not copied yet: --slot NAME (with --create-slot to make it)", "--continuous needs --slot")
				case c.Duration("delay") <= 0:
					return cliapp.Usage("give a pause between rounds such as 1s", "bad --delay %s", c.Duration("delay"))
				}
			} else if c.String("slot") != "" || c.Bool("create-slot") {
				return cliapp.Usage("a backup's own slot is temporary and made by pgbb-xlog; --slot is for --continuous", "--slot and --create-slot need --continuous")
			}
			if c.Bool("check-no-password") {
				if len(child) > 0 || c.Bool("check") || c.String("continuous") != "" {
					return cliapp.Usage("pgbb-xlog --check-no-password [DSN]", "--check-no-password runs nothing else")
				}
				where, err := recoveryconf.PasswordGiven(cliapp.DSN(dsn, server.Password), os.Environ())
				if err != nil {
					return cliapp.Usage("give a libpq connection string (key=value ...) or a postgresql:// URI", "%v", err)
				}
				if where != "" {
					return cliapp.Usage("leave the password out of the DSN and PGPASSWORD, and put it in ~/.pgpass (or the file PGPASSFILE names) on every host that runs jobs",
						"%s gives a password, which the jobs on other hosts would get on ssh's command line", where)
				}
				return nil
			}
			if c.Bool("check") {
				if len(child) > 0 {
					return cliapp.Usage("pgbb-xlog --check [--jobs N] [DSN]", "--check runs no command")
				}
				if c.Int("jobs") < 0 {
					return cliapp.Usage("give the number of fetch jobs that will run at once", "bad --jobs %d", c.Int("jobs"))
				}
				var prior *manifest.Manifest
				if path := c.String("incremental"); path != "" {
					if prior, err = incremental.ReadPrior(path); err != nil {
						return err
					}
				}
				return session.Check(c.Context, session.CheckOptions{DSN: cliapp.DSN(dsn, server.Password), Jobs: c.Int("jobs"), Prior: prior, Log: log})
			}
			var shared *ratelimit.Shared
			if limit.Active() {
				if shared, err = limit.Start(c.Context, log.Note, log.Warn); err != nil {
					return err
				}
				defer shared.Close()
				server.SetLimiter(shared)
				msg := "max rate " + ratelimit.Format(limit.Rate)
				if limit.File != "" {
					msg += ", following " + limit.File
				}
				log.Info("%s", msg)
			}
			start := time.Now()
			if dir := c.String("continuous"); dir != "" {
				err = continuous.Run(c.Context, continuous.Options{DSN: cliapp.DSN(dsn, server.Password), Dir: dir,
					Slot: c.String("slot"), CreateSlot: c.Bool("create-slot"), Delay: c.Duration("delay"), Log: log})
			} else {
				err = session.Run(c.Context, session.Options{
					DSN:      cliapp.DSN(dsn, server.Password),
					Label:    c.String("label"),
					Fast:     fast,
					Delay:    c.Duration("delay"),
					Compress: c.String("compress"),
					Level:    c.Int("compress-level"),
					NoSlot:   c.Bool("no-slot"),
					Child:    child,
					Log:      log,
				}, os.Stdin, os.Stdout)
			}
			if shared != nil {
				secs := time.Since(start).Seconds()
				log.Info("max rate: the run read %d bytes from the server in %.1f s (%s), the limit %s at the end",
					shared.Paid(), secs, ratelimit.Format(int64(float64(shared.Paid())/secs)), ratelimit.Format(shared.Rate()))
			}
			return err
		},
	})
}

// splitArgs separates the optional DSN from the command after "--". The flag parser consumes a "--" that
// directly follows the flags, so raw (the whole command line) tells whether one was given.
func splitArgs(args, raw []string) (dsn string, child []string, err error) {
	for i, a := range args {
		if a == "--" {
			if i > 1 {
				return "", nil, cliapp.Usage("pgbb-xlog [flags] [DSN] -- CMD ARGS…", "too many arguments before --")
			}
			if i == 1 {
				dsn = args[0]
			}
			return dsn, args[i+1:], nil
		}
	}
	for _, a := range raw {
		if a == "--" {
			return "", args, nil
		}
	}
	if len(args) > 1 {
		return "", nil, cliapp.Usage("separate the command with --: pgbb-xlog [DSN] -- CMD ARGS…", "too many arguments")
	}
	if len(args) == 1 {
		dsn = args[0]
	}
	return dsn, nil, nil
}
