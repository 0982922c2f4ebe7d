// Package cliapp is the command-line support shared by the four pgbb commands: error and hint printing in
// the "pgbb-x: error: …" form, exit codes, secrets kept out of messages, and stdout checks. It is the only
// package besides cmd/ that imports urfave/cli.
package cliapp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"unsafe"

	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/urfave/cli/v2"
)

// Exit codes, documented in the README's EXIT STATUS table.
const (
	ExitOK      = 0 // success; for pgbb-pack and pgbb-xlog: the backup is complete and restorable
	ExitFailure = 1 // the run failed; no backup_manifest was written
	ExitUsage   = 2 // bad flags, arguments or input format, reported before any work
	ExitBadPage = 3 // pgbb-pack: the copy is complete but pages failed checksum verification; kept, no manifest
)

// Error carries an exit code and an optional hint for the user.
type Error struct {
	Code int
	Err  error
	Hint string
	// Consequence marks a failure caused by another part of the pipeline failing first (the sink closed,
	// the reader of stdout went away, a signal from the parent): Main prints it as "prog: stopped: …", so
	// that the cause, printed by the part that failed first as "prog: error: …", stands out.
	Consequence bool
	// Own marks a failure this program found before any signal reached it: Main prints it as "prog:
	// error: …" even when SIGINT or SIGTERM arrives while the program stops its parts (see Own).
	Own bool
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Usage returns a usage error (exit 2) with a hint.
func Usage(hint, format string, a ...any) error {
	return &Error{Code: ExitUsage, Err: fmt.Errorf(format, a...), Hint: hint}
}

// WithHint attaches a hint to err, replacing any hint it carries; the exit code stays err's (1 unless err
// already carries one).
func WithHint(err error, hint string) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Code: e.Code, Err: err, Hint: hint, Consequence: e.Consequence, Own: e.Own}
	}
	return &Error{Code: ExitFailure, Err: err, Hint: hint}
}

// Consequence marks err as caused by a failure elsewhere in the pipeline (exit 1): see Error.Consequence.
func Consequence(err error) error {
	if err == nil {
		return nil
	}
	return &Error{Code: ExitFailure, Err: err, Consequence: true}
}

// Own marks err as found by this program before any signal (exit 1 unless err carries a code): a signal
// that comes while the program then stops what it started does not make it "stopped". pgbb-xlog, whose
// session died, stops its base copy; a job's stream is cut, pgbb-pack fails on it, and the script sends
// pgbb-xlog SIGTERM: the session's death is still the run's cause.
func Own(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return &Error{Code: e.Code, Err: err, Hint: e.Hint, Consequence: e.Consequence, Own: true}
	}
	return &Error{Code: ExitFailure, Err: err, Own: true}
}

// IsConsequence reports whether err was marked by Consequence.
func IsConsequence(err error) bool {
	var e *Error
	return errors.As(err, &e) && e.Consequence
}

var (
	secretsMu sync.Mutex
	secrets   []string
)

// AddSecret registers a string (a password) that must never be printed.
func AddSecret(s string) {
	if len(s) < 1 {
		return
	}
	secretsMu.Lock()
	secrets = append(secrets, s)
	secretsMu.Unlock()
}

// Redact replaces registered secrets in s.
func Redact(s string) string {
	secretsMu.Lock()
	defer secretsMu.Unlock()
	for _, p := range secrets {
		s = strings.ReplaceAll(s, p, "********")
	}
	return s
}

// Logger prints "prog: level: msg" lines to stderr, secrets redacted. It is safe for concurrent use.
type Logger struct {
	Prog string
	W    io.Writer
	mu   sync.Mutex
	// Verbose enables Info.
	Verbose bool
}

func (l *Logger) print(level, format string, a ...any) {
	msg := Redact(fmt.Sprintf(format, a...))
	l.mu.Lock()
	fmt.Fprintf(l.W, "%s: %s: %s\n", l.Prog, level, msg)
	l.mu.Unlock()
}

// Warn prints a warning.
func (l *Logger) Warn(format string, a ...any) { l.print("warning", format, a...) }

// Hint prints a hint.
func (l *Logger) Hint(format string, a ...any) { l.print("hint", format, a...) }

// Note prints an informational message whether or not Verbose is set (a summary worth reading).
func (l *Logger) Note(format string, a ...any) { l.print("info", format, a...) }

// Info prints a progress message when Verbose is set.
func (l *Logger) Info(format string, a ...any) {
	if l.Verbose {
		l.print("info", format, a...)
	}
}

// Main runs app and exits with the right code. Only Main exits.
func Main(app *cli.App) {
	prog := app.Name
	timeline.Start(prog)
	app.HideHelpCommand = true
	setVersion(app)
	setDebug(app)
	app.OnUsageError = func(c *cli.Context, err error, isSubcommand bool) error {
		return Usage("run '"+prog+" --help' for usage", "%v", err)
	}
	app.ExitErrHandler = func(*cli.Context, error) {}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	stopProfile := startProfile(prog)
	err := app.RunContext(ctx, os.Args)
	stopProfile()
	interrupted := ctx.Err() != nil
	stop()
	if err == nil {
		timeline.Mark("exit 0")
		os.Exit(ExitOK)
	}
	code := ExitFailure
	var e *Error
	hint := ""
	level := "error"
	if errors.As(err, &e) {
		code = e.Code
		hint = e.Hint
		if e.Consequence {
			level = "stopped"
		}
	}
	if interrupted && (e == nil || !e.Own) {
		// SIGINT or SIGTERM: from the user, or from a part of the pipeline that failed and says why; a
		// hint given to what the signal cut short (a statement cancelled) would point the wrong way
		if errors.Is(err, context.Canceled) {
			err, hint = errors.New("interrupted"), ""
		} else if e == nil {
			err = fmt.Errorf("interrupted: %w", err)
		}
		level = "stopped"
	}
	msg := fmt.Sprintf("%s: %s: %s\n", prog, level, Redact(err.Error()))
	if hint != "" {
		msg += fmt.Sprintf("%s: hint: %s\n", prog, Redact(hint))
	}
	// one write: the error and its hint stay adjacent when many processes share stderr
	io.WriteString(os.Stderr, msg)
	timeline.Mark("exit %d", code)
	os.Exit(code)
}

// startProfile writes a CPU profile to $PGBB_CPUPROFILE.<prog>.<pid> when that variable is set (for the
// benchmarks: a profile, not a guess).
func startProfile(prog string) func() {
	base := os.Getenv("PGBB_CPUPROFILE")
	if base == "" {
		return func() {}
	}
	f, err := os.Create(fmt.Sprintf("%s.%s.%d", base, prog, os.Getpid()))
	if err != nil {
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return func() {}
	}
	return func() { pprof.StopCPUProfile(); f.Close() }
}

// DSN returns the connection string: the argument if given, else $PGBB_DSN, else "" (libpq defaults and PG*
// variables). It registers the DSN's password as a secret.
func DSN(arg string, password func(string) string) string {
	dsn := arg
	if dsn == "" {
		dsn = os.Getenv("PGBB_DSN")
	}
	AddSecret(password(dsn))
	AddSecret(os.Getenv("PGPASSWORD"))
	return dsn
}

// IsTerminal reports whether f is a terminal (it answers TCGETS).
func IsTerminal(f *os.File) bool {
	var t syscall.Termios
	_, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&t)))
	return e == 0
}

// RefuseTerminal returns a usage error when f is a terminal: binary streams do not go to screens.
func RefuseTerminal(f *os.File, what string) error {
	// /dev/null, another character device, is no terminal and is a fine sink
	if IsTerminal(f) {
		return Usage("redirect it to a file or pipe it into pgbb-pack", "refusing to write %s to a terminal", what)
	}
	return nil
}
