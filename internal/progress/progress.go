// Package progress reports how far a backup is (docs/toolbox.md, section 4): the total from the work
// list, which pgbb-list leaves in a file before the copy starts, against the bytes pgbb-pack has proved,
// rendered for a terminal (redrawn in place), for a log (a line every 10 s) or as JSON lines.
package progress

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// WriteTotal leaves the work list's total (its items and bytes) in path, whole or not at all (a
// temporary name, then a rename).
func WriteTotal(path string, items, bytes int64) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", items, bytes), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ReadTotal reads what WriteTotal left; ok is false while there is nothing yet.
func ReadTotal(path string) (items, bytes int64, ok bool, err error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return 0, 0, false, fmt.Errorf("%s: not a work list total", path)
	}
	if items, err = strconv.ParseInt(f[0], 10, 64); err == nil {
		bytes, err = strconv.ParseInt(f[1], 10, 64)
	}
	if err != nil || items < 0 || bytes < 0 {
		return 0, 0, false, fmt.Errorf("%s: not a work list total", path)
	}
	return items, bytes, true, nil
}

// Mode is how progress is shown: Text (a terminal, or a line every 10 s) or JSON.
type Mode int

const (
	Off Mode = iota
	Text
	JSON
)

// ParseMode reads --progress's value: "" or "text" is Text, "json" is JSON.
func ParseMode(s string) (Mode, error) {
	switch s {
	case "", "text":
		return Text, nil
	case "json":
		return JSON, nil
	}
	return Off, fmt.Errorf("--progress wants text or json, not %q", s)
}

// Sample is what the meter reads at each tick.
type Sample struct {
	Done     int64             // bytes of the work list proved so far
	Counters map[string]uint64 // the run's counters (fetched, reused, ...), for JSON
}

// Meter renders samples until Stop.
type Meter struct {
	w        io.Writer
	mode     Mode
	tty      bool
	every    time.Duration
	total    string // the total file
	sample   func() Sample
	start    time.Time
	stop     chan struct{}
	wg       sync.WaitGroup
	lastDone int64
	lastAt   time.Time
	rate     float64
}

// Start begins rendering to w: on a terminal every second, redrawn in place; otherwise every 10 s a
// line; JSON every 2 s. totalFile is where pgbb-list leaves the total.
func Start(w io.Writer, mode Mode, tty bool, totalFile string, sample func() Sample) *Meter {
	m := &Meter{w: w, mode: mode, tty: tty, total: totalFile, sample: sample, start: time.Now(), stop: make(chan struct{})}
	m.lastAt = m.start
	switch {
	case mode == JSON:
		m.every = 2 * time.Second
	case tty:
		m.every = time.Second
	default:
		m.every = 10 * time.Second
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		t := time.NewTicker(m.every)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
				m.render("copy", false)
			}
		}
	}()
	return m
}

// Stop ends the meter with a last report: phase "done" when ok, else "failed".
func (m *Meter) Stop(ok bool) {
	close(m.stop)
	m.wg.Wait()
	phase := "done"
	if !ok {
		phase = "failed"
	}
	m.render(phase, true)
}

func (m *Meter) render(phase string, last bool) {
	s := m.sample()
	_, total, known, _ := ReadTotal(m.total)
	now := time.Now()
	if dt := now.Sub(m.lastAt).Seconds(); dt > 0 {
		r := float64(s.Done-m.lastDone) / dt
		if m.rate == 0 {
			m.rate = r
		} else {
			m.rate = 0.7*m.rate + 0.3*r // smoothed over the last few ticks
		}
	}
	m.lastDone, m.lastAt = s.Done, now
	if last && phase == "done" && known {
		s.Done = max(s.Done, total) // what shrank during the copy is done too
	}
	eta := -1.0
	if known && m.rate > 0 && total >= s.Done {
		eta = float64(total-s.Done) / m.rate
	}
	if m.mode == JSON {
		obj := map[string]any{"phase": phase, "bytes_done": s.Done, "rate": int64(m.rate), "elapsed": now.Sub(m.start).Seconds()}
		if known {
			obj["bytes_total"] = total
		}
		if eta >= 0 && !last {
			obj["eta"] = eta
		}
		for k, v := range s.Counters {
			obj[k] = v
		}
		b, _ := json.Marshal(obj)
		fmt.Fprintf(m.w, "%s\n", b)
		return
	}
	line := size(s.Done)
	if known {
		pct := 100.0
		if total > 0 {
			pct = min(100, 100*float64(s.Done)/float64(total))
		}
		line = fmt.Sprintf("%s of %s (%.0f%%)", size(s.Done), size(total), pct)
	}
	line += fmt.Sprintf(", %s/s", size(int64(m.rate)))
	if eta >= 0 && !last {
		line += fmt.Sprintf(", ETA %s", (time.Duration(eta) * time.Second).Round(time.Second))
	}
	if last {
		line += fmt.Sprintf(", %s in %s", phase, now.Sub(m.start).Round(100*time.Millisecond))
	}
	if m.tty {
		end := ""
		if last {
			end = "\n"
		}
		fmt.Fprintf(m.w, "\r\x1b[Kpgbb-pack: progress: %s%s", line, end)
		return
	}
	fmt.Fprintf(m.w, "pgbb-pack: progress: %s\n", line)
}

// size renders bytes as pg_basebackup does its kB, with larger units.
func size(n int64) string {
	switch {
	case n >= 10<<30:
		return fmt.Sprintf("%.1f GB", float64(n)/(1<<30))
	case n >= 10<<20:
		return fmt.Sprintf("%.0f MB", float64(n)/(1<<20))
	default:
		return fmt.Sprintf("%d kB", n>>10)
	}
}
