package cliapp

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// --debug (docs/toolbox.md, section 3): every SQL statement a program sends, on stderr, secrets
// redacted. PGBB_DEBUG=1 in the environment turns it on too, so the jobs a runner starts inherit it.

var (
	debugMu   sync.Mutex
	debugProg string
	debugOn   bool
	debugW    io.Writer = os.Stderr
)

// DebugOn reports whether --debug (or PGBB_DEBUG=1) is in effect.
func DebugOn() bool {
	debugMu.Lock()
	defer debugMu.Unlock()
	return debugOn
}

// Debug prints a "prog: debug: …" line when --debug is in effect, secrets redacted, in one write.
func Debug(format string, a ...any) {
	debugMu.Lock()
	defer debugMu.Unlock()
	if debugOn {
		fmt.Fprintf(debugW, "%s: debug: %s\n", debugProg, Redact(fmt.Sprintf(format, a...)))
	}
}

// setDebug gives app a --debug flag and turns debugging on before the action when it is set, or when the
// environment says PGBB_DEBUG=1.
func setDebug(app *cli.App) {
	app.Flags = append(app.Flags, &cli.BoolFlag{Name: "debug", Usage: "print every SQL statement sent, secrets redacted, on stderr (PGBB_DEBUG=1 does the same)"})
	before := app.Before
	app.Before = func(c *cli.Context) error {
		debugMu.Lock()
		debugProg, debugOn = app.Name, c.Bool("debug") || os.Getenv("PGBB_DEBUG") == "1"
		debugMu.Unlock()
		if before != nil {
			return before(c)
		}
		return nil
	}
}

// DebugValue renders a statement argument for the debug log: a long array as its length with its first
// and last elements.
func DebugValue(v any) string {
	s := fmt.Sprintf("%v", v)
	switch x := v.(type) {
	case []string:
		if len(x) > 4 {
			s = fmt.Sprintf("[%d values: %q … %q]", len(x), x[0], x[len(x)-1])
		}
	case []int64:
		if len(x) > 4 {
			s = fmt.Sprintf("[%d values: %d … %d]", len(x), x[0], x[len(x)-1])
		}
	case []byte:
		s = fmt.Sprintf("%d bytes", len(x))
	}
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return strings.ReplaceAll(s, "\n", " ")
}
