package pack

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pgbb/pgbb/internal/chunkstream"

	"github.com/pgbb/pgbb/internal/sink"
)

// runWithSink runs pack with pgbb-xlog's stream on a pipe and the fetcher's stream on the sink: first
// xlogBefore goes into the pipe, then the fetcher connects and writes all of fetch, then xlogAfter goes into
// the pipe, which is closed only when close is set (else pgbb-xlog's stream stays open, as when the base
// copy fails first). With xlogBefore empty the fetcher's records wait for the backup start record.
func runWithSink(t *testing.T, e *env, xlogBefore, fetch, xlogAfter []byte, close bool) error {
	t.Helper()
	o := e.options(Plain)
	o.Inputs = nil
	o.Sink = filepath.Join(t.TempDir(), "sink")
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	done := make(chan error, 1)
	go func() { done <- Run(o, pr) }()
	pw.Write(xlogBefore)
	c, err := sink.Dial(o.Sink)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(fetch); err != nil {
		t.Logf("sink write: %v", err)
	}
	c.Close()
	time.Sleep(100 * time.Millisecond) // the connection is accepted (and waits for the start record)
	// in a goroutine: a pgbb-pack that fails early stops reading its input, and the write would block
	// until the deferred close of the reading end
	go func() {
		pw.Write(xlogAfter)
		if close {
			pw.Close()
		}
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(30 * time.Second):
		t.Fatal("pgbb-pack did not finish")
		return nil
	}
}

// startRecords is the beginning of pgbb-xlog's stream through its backup start record.
func startRecords(t *testing.T, xlog []byte) []byte {
	t.Helper()
	rd := chunkstream.NewReader(bytes.NewReader(xlog), "xlog")
	n := 12 // the prelude
	for {
		rec, err := rd.Next()
		if err != nil {
			t.Fatal(err)
		}
		n += len(rec.Raw)
		if rec.Type == chunkstream.TypeBackupStart {
			return xlog[:n]
		}
	}
}

func TestPackTakesFetchStreamsOnTheSink(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	spec.split = true
	xlog := spec.build(t)
	if err := runWithSink(t, e, nil, spec.fetchStream, xlog, true); err != nil {
		t.Fatalf("valid streams refused: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dest, "backup_manifest")); err != nil {
		t.Fatal(err)
	}
	for _, it := range spec.items {
		if it.kind == 'f' && it.final && len(it.chunks) > 0 {
			b, err := os.ReadFile(filepath.Join(e.dest, it.path))
			if err != nil || len(b) == 0 {
				t.Fatalf("%s: %v (%d bytes)", it.path, err, len(b))
			}
		}
	}
}

// pgbb-xlog's stream (backup start and end, WAL, pg_control) may come only on pgbb-pack's input.
func TestPackRefusesXlogStreamOnTheSink(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	spec.split = true
	xlog := spec.build(t)
	err := runWithSink(t, e, nil, xlog, xlog, true)
	if err == nil || !strings.Contains(err.Error(), "belongs on pgbb-pack's input") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.dest, "backup_manifest")); err == nil {
		t.Fatal("backup_manifest written")
	}
}

// A damaged stream on the sink fails the run at once, with its own error, while pgbb-xlog's stream is
// still open: it is the cause, and the cut pgbb-xlog stream that follows would hide it.
func TestPackReportsSinkFailureFirst(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	spec.split = true
	xlog := spec.build(t)
	bad := append([]byte(nil), spec.fetchStream...)
	bad[len(bad)/2] ^= 0x40
	err := runWithSink(t, e, startRecords(t, xlog), bad, nil, false)
	if err == nil || !strings.Contains(err.Error(), "sink stream") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(e.dest); err == nil {
		if ents, _ := os.ReadDir(e.dest); len(ents) > 0 {
			t.Fatalf("DEST holds %d entries after the failure", len(ents))
		}
	}
}
