// Package testhook lets the end-to-end tests stop a pipeline at a named point to change the database there.
// It does nothing unless PGBB_TEST_HOOKS names a directory: then Pause(point) creates <dir>/<point>.reached
// and waits until <dir>/<point>.release exists (at most ten minutes). It imports only the standard library.
//
// Points: "fetch" (every pgbb-fetch, before its first item: the list is made, nothing is copied yet) and
// "stop" (pgbb-xlog, after the base copy ended, before pg_control is read and the backup is stopped).
// PauseIfHeld's points stop the pipeline only when the test asked for them with <dir>/<point>.hold, so that
// a new point does not stop the tests that do not know it: "fetch-connected" (every pgbb-fetch, once its
// first connection is open, before its first query).
package testhook

import (
	"os"
	"path/filepath"
	"time"
)

// Pause blocks at point while the test holds it; see the package comment.
func Pause(point string) {
	dir := os.Getenv("PGBB_TEST_HOOKS")
	if dir == "" {
		return
	}
	os.WriteFile(filepath.Join(dir, point+".reached"), nil, 0o644)
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(filepath.Join(dir, point+".release")); err == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PauseIfHeld is Pause at a point that only the tests that create <dir>/<point>.hold stop at.
func PauseIfHeld(point string) {
	dir := os.Getenv("PGBB_TEST_HOOKS")
	if dir == "" {
		return
	}
	if _, err := os.Stat(filepath.Join(dir, point+".hold")); err == nil {
		Pause(point)
	}
}
