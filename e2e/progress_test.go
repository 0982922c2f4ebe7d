package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Issue 15, -P/--progress (docs/toolbox.md, section 4). The run is held at the test hooks: before any job
// copies (the total must already be known) and after the copy (all of it proved), so the JSON lines show
// both moments; the last says done with every byte of the total. -P's text ends with a 100% line.
func TestProgress(t *testing.T) {
	s := newSource(t, 5)
	hooks := t.TempDir()
	os.Chmod(hooks, 0o777)
	hold := func(point string) {
		deadline := time.Now().Add(2 * time.Minute)
		for {
			if _, err := os.Stat(filepath.Join(hooks, point+".reached")); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(2500 * time.Millisecond) // a JSON line every 2 s
		os.WriteFile(filepath.Join(hooks, point+".release"), nil, 0o644)
	}
	go func() { hold("fetch"); hold("stop") }()
	dest, tsNew := s.c.TempDir(t), s.c.TempDir(t)
	r := run(t, 5*time.Minute, env("PGBB_TEST_HOOKS="+hooks), script, "--progress=json", "-j", "2", "-T", s.tsDir+"="+tsNew, s.c.DSN(), dest)
	if r.code != 0 {
		t.Fatalf("--progress=json: exit %d\n%s", r.code, r.stderr)
	}
	type line struct {
		Phase   string  `json:"phase"`
		Done    int64   `json:"bytes_done"`
		Total   *int64  `json:"bytes_total"`
		Rate    int64   `json:"rate"`
		ETA     float64 `json:"eta"`
		Fetched *uint64 `json:"fetched"`
	}
	var lines []line
	for _, l := range strings.Split(r.stderr, "\n") {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("not JSON: %q: %v", l, err)
		}
		lines = append(lines, x)
	}
	if len(lines) < 3 {
		t.Fatalf("%d progress lines, want one at each hold and a last:\n%s", len(lines), r.stderr)
	}
	last := lines[len(lines)-1]
	if last.Phase != "done" || last.Total == nil || *last.Total <= 0 || last.Done != *last.Total || last.Fetched == nil || *last.Fetched == 0 {
		t.Fatalf("last progress line %+v: want phase done with every byte of a known total, and the counters", last)
	}
	total := *last.Total
	sawStart, sawEnd := false, false
	prev := int64(-1)
	for _, l := range lines[:len(lines)-1] {
		if l.Phase != "copy" || l.Total == nil || *l.Total != total {
			t.Fatalf("progress line %+v: want phase copy with the total %d known", l, total)
		}
		if l.Done < prev {
			t.Fatalf("bytes_done went back from %d to %d", prev, l.Done)
		}
		prev = l.Done
		sawStart = sawStart || l.Done == 0
		sawEnd = sawEnd || l.Done >= total*9/10
	}
	if !sawStart || !sawEnd {
		t.Fatalf("no line before the copy (total known, nothing done: %v) or after it (%v):\n%s", sawStart, sawEnd, r.stderr)
	}
	t.Logf("%d progress lines, total %d bytes", len(lines), total)
	s.verifyPlain(t, dest)

	dest2, tsNew2 := s.c.TempDir(t), s.c.TempDir(t)
	r = run(t, 5*time.Minute, env(), script, "-P", "-j", "2", "-T", s.tsDir+"="+tsNew2, s.c.DSN(), dest2)
	if r.code != 0 || !strings.Contains(r.stderr, "pgbb-pack: progress: ") || !strings.Contains(r.stderr, "(100%)") || !strings.Contains(r.stderr, "done in") {
		t.Fatalf("-P: exit %d, want a last progress line at 100%%:\n%s", r.code, r.stderr)
	}
	t.Logf("-P: %s", lastLines(r.stderr, 1))
}
