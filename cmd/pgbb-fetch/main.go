// Command pgbb-fetch copies work items from the server and writes them as a chunk stream
// (docs/chunk-stream.md).
package main

import (
	"os"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/fetch"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/urfave/cli/v2"
)

func main() {
	log := &cliapp.Logger{Prog: "pgbb-fetch", W: os.Stderr}
	cliapp.Main(&cli.App{
		Name:      "pgbb-fetch",
		Usage:     "copy work items with pg_read_binary_file into a chunk stream",
		ArgsUsage: "[WORK-LIST-LINE…]",
		Description: "Reads work-list lines from stdin, or takes them as arguments (for xargs), and copies each item on\n" +
			"one connection. The connection string comes from --dsn or PGBB_DSN (set by pgbb-xlog), else from\n" +
			"PG* variables. Vanished and shrunk files are normal during a backup. Under pgbb-xlog the stream goes to\n" +
			"the sink named by PGBB_SINK: pgbb-pack's socket (pgbb-pack --sink), or pgbb-xlog's own when PGBB_SINK was\n" +
			"unset for pgbb-xlog; so parallel jobs need no output grouping. -o - writes stdout instead.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dsn", Usage: "connection string (default: $PGBB_DSN, then PG* variables)"},
			&cli.StringFlag{Name: "backup-id", EnvVars: []string{"PGBB_BACKUP_ID"}, Usage: "the running backup's id (set by pgbb-xlog)"},
			&cli.StringFlag{Name: "compress", Value: "none", Usage: "chunk compression: " + compress.CodecNames},
			&cli.IntFlag{Name: "compress-level", Usage: "the codec's level (default: its fastest): " + compress.LevelsHelp},
			&cli.IntFlag{Name: "chunk-size", Value: fetch.DefaultChunkSize, Usage: "bytes per read"},
			&cli.StringFlag{Name: "sink", EnvVars: []string{"PGBB_SINK"}, Usage: "send the stream to the sink at PATH when no -o or -O is given: pgbb-pack's --sink socket, or pgbb-xlog's own (pgbb-xlog sets PGBB_SINK for its child)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to FILE (whole or not at all), or to stdout with -o -; the default is the sink, else stdout"},
			&cli.StringFlag{Name: "output-dir", Aliases: []string{"O"}, Usage: "write the stream to a new uniquely named .stream file in DIR"},
			&cli.BoolFlag{Name: "no-verify-checksums", Usage: "do not verify page checksums (verified by default when the cluster has them)"},
			&cli.IntFlag{Name: "retries", Value: fetch.DefaultRetries, Usage: "reconnect this many times in a row after the connection dropped (0: never)"},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, EnvVars: []string{"PGBB_VERBOSE"}, Usage: "say each retry, and the job's counters at its end"},
		},
		Action: func(c *cli.Context) error {
			log.Verbose = c.Bool("verbose")
			return fetch.Run(c.Context, fetch.Options{
				DSN:               cliapp.DSN(c.String("dsn"), server.Password),
				BackupID:          c.String("backup-id"),
				Compress:          c.String("compress"),
				Level:             c.Int("compress-level"),
				ChunkSize:         c.Int("chunk-size"),
				Output:            c.String("output"),
				OutputDir:         c.String("output-dir"),
				Sink:              c.String("sink"),
				Items:             c.Args().Slice(),
				NoVerifyChecksums: c.Bool("no-verify-checksums"),
				Retries:           c.Int("retries"),
				Log:               log,
			}, os.Stdin, os.Stdout)
		},
	})
}
