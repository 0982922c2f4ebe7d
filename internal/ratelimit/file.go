package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"
)

// Poll is how often a rate file is read.
const Poll = 250 * time.Millisecond

// ReadFile reads the rate in path. present is false when there is no such file.
func ReadFile(path string) (rate int64, present bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	r, err := Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return 0, true, fmt.Errorf("%s: %w", path, err)
	}
	return r, true, nil
}

// Follow reads path every Poll until ctx ends and sets b's rate when the file's content changes. say gets
// each change, warn each bad value or a file gone; the rate in force then stays.
func Follow(ctx context.Context, path string, b *Bucket, say, warn func(format string, a ...any)) {
	// the first look parses whatever is there: a change made before it is not missed, and a rate equal to
	// the bucket's is not said
	var last []byte
	_, err := os.Stat(path)
	gone := err != nil // missing at start is no warning: --max-rate holds until the file appears
	t := time.NewTicker(Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, err := os.ReadFile(path)
		if err != nil {
			if !gone {
				warn("rate file %s: %v; the rate stays %s", path, err, Format(b.Rate()))
				gone = true
			}
			continue
		}
		if gone || last == nil || string(cur) != string(last) {
			gone = false
			last = cur
			r, err := Parse(strings.TrimSpace(string(cur)))
			if err != nil {
				warn("rate file %s: %v; the rate stays %s", path, err, Format(b.Rate()))
				continue
			}
			if r != b.Rate() {
				b.SetRate(r)
				say("max rate now %s (from %s)", Format(r), path)
			}
		}
	}
}

// Limit is a run's limit as its command line gives it: a rate (bytes per second, 0: unlimited) and a file
// that may change it while the run goes on.
type Limit struct {
	Rate int64
	File string
}

// ParseLimit reads --max-rate and --max-rate-file. A file that exists must hold a valid rate, which then
// holds from the start; a missing one leaves rate in force until it appears.
func ParseLimit(rate, file string) (Limit, error) {
	var l Limit
	if rate != "" {
		r, err := Parse(rate)
		if err != nil {
			return l, err
		}
		l.Rate = r
	}
	if file != "" {
		l.File = file
		r, present, err := ReadFile(file)
		if err != nil {
			return l, &FileError{Err: err}
		}
		if present {
			l.Rate = r
		}
	}
	return l, nil
}

// FileError is ParseLimit's error about --max-rate-file's content, which needs another hint than a bad
// --max-rate.
type FileError struct{ Err error }

func (e *FileError) Error() string { return "--max-rate-file " + e.Err.Error() }
func (e *FileError) Unwrap() error { return e.Err }

// Active says whether the run is limited now or may be later.
func (l Limit) Active() bool { return l.Rate > 0 || l.File != "" }

// Start makes the run's bucket, shares it with this process's children (Share) and follows the file until
// ctx ends. Close the result when the run ends.
func (l Limit) Start(ctx context.Context, say, warn func(format string, a ...any)) (*Shared, error) {
	s, err := Share(NewBucket(l.Rate))
	if err != nil {
		return nil, err
	}
	if l.File != "" {
		go Follow(ctx, l.File, s.Bucket, say, warn)
	}
	return s, nil
}
