// Package timeline writes the moments of a run, for the benchmarks' timeline of one backup (issue 17):
// when $PGBB_TIMELINE names a file, every program of the run appends a line per event to it,
//
//	<unix seconds, µs> <prog>[<pid>] <event>
//
// in one write each (O_APPEND), so lines of concurrent processes do not mix. Unset, Mark costs nothing.
// bench/timeline.sh renders the file.
package timeline

import (
	"fmt"
	"os"
	"sync"
	"time"
)

// Env names the file the events go to.
const Env = "PGBB_TIMELINE"

var (
	mu   sync.Mutex
	f    *os.File
	prog string
)

// Start opens the file named by PGBB_TIMELINE, if any, and marks the program's start.
func Start(name string) {
	path := os.Getenv(Env)
	if path == "" {
		return
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: warning: %s=%s: %v\n", name, Env, path, err)
		return
	}
	mu.Lock()
	f, prog = file, name
	mu.Unlock()
	Mark("start")
}

// On says whether events are being written.
func On() bool {
	mu.Lock()
	defer mu.Unlock()
	return f != nil
}

// Mark writes one event.
func Mark(format string, a ...any) {
	mu.Lock()
	defer mu.Unlock()
	if f == nil {
		return
	}
	now := time.Now()
	fmt.Fprintf(f, "%d.%06d %s[%d] %s\n", now.Unix(), now.Nanosecond()/1000, prog, os.Getpid(), fmt.Sprintf(format, a...))
}
