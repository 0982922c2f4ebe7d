package pack

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/pgbb/pgbb/internal/verify"
)

// The zeros that pad a WAL segment after the stop LSN are allocated, not written: the file holds the sent
// bytes, reads zeros after them, and has every block allocated (no hole a restored server could fail to
// write WAL into when the disk is full).
func TestWALZeroTailIsAllocated(t *testing.T) {
	e := newEnv(t)
	spec := validSpec(e.tsLoc, false)
	spec.walDamage = func(seg []byte) { clear(seg[segSize/2:]) }
	e.writeStream(t, spec.build(t))
	if err := Run(e.options(Plain), nil); err != nil {
		t.Fatalf("valid stream refused: %v", err)
	}
	path := filepath.Join(e.dest, "pg_wal", walSegName)
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := walSegment(t)
	clear(want[segSize/2:])
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes, not the %d sent", path, len(got), len(want))
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 < segSize {
		t.Fatalf("%s: %d bytes allocated of %d: the zero tail is a hole", path, st.Blocks*512, segSize)
	}
	var report bytes.Buffer
	if n, err := verify.Verify(e.dest, &report); n != 0 || err != nil {
		t.Fatalf("verify: %d problems, %v\n%s", n, err, report.String())
	}
}

func TestAllZero(t *testing.T) {
	for _, c := range []struct {
		b    []byte
		want bool
	}{{nil, false}, {make([]byte, 1), true}, {make([]byte, 8192), true}, {make([]byte, 3*8192+5), true},
		{append(make([]byte, 3*8192+4), 1), false}, {append([]byte{1}, make([]byte, 8192)...), false},
		{append(make([]byte, 8192), append([]byte{0, 2}, make([]byte, 8192)...)...), false}} {
		if got := allZero(c.b); got != c.want {
			t.Errorf("allZero(%d bytes, nonzero at %d) = %v", len(c.b), bytes.IndexFunc(c.b, func(r rune) bool { return r != 0 }), got)
		}
	}
}
