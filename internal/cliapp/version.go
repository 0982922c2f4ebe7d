package cliapp

import (
	"fmt"
	"runtime/debug"

	"github.com/urfave/cli/v2"
)

// Release is pgbb's release (docs/toolbox.md, section 1).
const Release = "0.1.0-dev"

// VersionLine is what --version prints for prog: the name, (pgbb), the release and, when the toolchain
// recorded it, the source revision ("-dirty" for a tree with changes), as PostgreSQL's tools print
// "pg_basebackup (PostgreSQL) 18.3".
func VersionLine(prog string) string {
	line := fmt.Sprintf("%s (pgbb) %s", prog, Release)
	if rev := revision(); rev != "" {
		line += " (" + rev + ")"
	}
	return line
}

// builtRevision is set by make build (-ldflags -X), for toolchains that stamp no vcs.revision
// (GOFLAGS=-buildvcs=false).
var builtRevision string

// revision is the source revision: make build's, else the vcs.revision the Go toolchain stamped into the
// binary, shortened to 12 hex digits.
func revision() string {
	if builtRevision != "" {
		return builtRevision
	}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	rev, dirty := "", false
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" && dirty {
		rev += "-dirty"
	}
	return rev
}

// setVersion gives app a --version flag (no short form: -v is --verbose in every pgbb program) that
// prints VersionLine on stdout.
func setVersion(app *cli.App) {
	app.Version = Release
	cli.VersionFlag = &cli.BoolFlag{Name: "version", Usage: "print the version and exit"}
	cli.VersionPrinter = func(c *cli.Context) { fmt.Fprintln(c.App.Writer, VersionLine(c.App.Name)) }
}
