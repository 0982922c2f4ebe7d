package compress

import (
	"bytes"
	"io"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestXZStoredReadsBackAndPassesXZ(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	var all, want []byte
	for _, n := range []int{0, 1, 511, 512, 1024, 65535, 65536, 65537, 300000} {
		raw := make([]byte, n)
		r.Read(raw)
		s := XZStored(nil, raw)
		got, err := UnXZ(s, n)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		all = append(all, s...)
		want = append(want, raw...)
	}
	// concatenated with encoder-made streams, read by the multi-stream reader
	z, _ := XZ(nil, []byte("encoded"))
	all = append(all, z...)
	want = append(want, "encoded"...)
	rd, err := NewXZReader(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rd)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("concatenation: %v", err)
	}
	if xzPath, err := exec.LookPath("xz"); err == nil {
		stockAccepts(t, xzPath, all, want)
	}
}

// stockAccepts checks that the stock command at tool (xz or zstd) tests data as sound (-t) and
// decompresses it to want (-dc).
func stockAccepts(t *testing.T, tool string, data, want []byte) {
	t.Helper()
	f := filepath.Join(t.TempDir(), "archive")
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(tool, "-t", f).CombinedOutput(); err != nil {
		t.Fatalf("%s -t: %v %s", tool, err, out)
	}
	out, err := exec.Command(tool, "-dc", f).Output()
	if err != nil || !bytes.Equal(out, want) {
		t.Fatalf("%s -dc: %v", tool, err)
	}
}
