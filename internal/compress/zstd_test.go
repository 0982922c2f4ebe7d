package compress

import (
	"bytes"
	"io"
	"math/rand"
	"os/exec"
	"testing"
	"testing/iotest"

	"github.com/klauspost/compress/zstd"
	"github.com/pgbb/pgbb/internal/chunkstream"
)

// Vectors of the xxHash reference implementation (XXH64, seed 0).
func TestXXH64MatchesReferenceVectors(t *testing.T) {
	for in, want := range map[string]uint64{
		"":    0xEF46DB3751D8E999,
		"a":   0xD24EC4F1A98C6E5B,
		"abc": 0x44BC2CF5AD770999,
		"Nobody inspects the spammish repetition": 0xFBCEA83C8A378BF1,
	} {
		if got := xxh64([]byte(in)); got != want {
			t.Errorf("xxh64(%q) = %#x, want %#x", in, got, want)
		}
	}
}

// stockZstd returns the zstd command; the tests need it (scripts/install-deps installs it), so that a
// machine without it fails rather than skips the check.
func stockZstd(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("zstd")
	if err != nil {
		t.Fatal("no zstd command: run scripts/install-deps (Debian: apt-get install zstd)")
	}
	return p
}

// Stored frames of every size class of Frame_Content_Size and of block counts read back with the
// library's decoder (which checks the content checksum), one by one and concatenated with encoder-made
// frames, and pass stock zstd -t and zstd -dc.
func TestZstdStoredReadsBackAndPassesZstd(t *testing.T) {
	r := rand.New(rand.NewSource(7))
	dec, err := zstd.NewReader(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	var all, want []byte
	for _, n := range []int{0, 1, 255, 256, 511, 512, 1024, 65535, 65791, 65792, 131072, 131073, 300000} {
		raw := make([]byte, n)
		r.Read(raw)
		s := ZstdStored(nil, raw)
		if l, err := zstdFrameLen(s); err != nil || l != len(s) {
			t.Fatalf("%d bytes: frame length %d of %d, %v", n, l, len(s), err)
		}
		got, err := dec.DecodeAll(s, nil)
		if err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		if got, err := unZstd(s, n); err != nil || !bytes.Equal(got, raw) {
			t.Fatalf("%d bytes through unZstd: %v", n, err)
		}
		var h zstd.Header
		if err := h.Decode(s); err != nil || !h.HasFCS || h.FrameContentSize != uint64(n) || !h.HasCheckSum || !h.SingleSegment {
			t.Fatalf("%d bytes: header %+v, %v", n, h, err)
		}
		// a flipped content byte fails the content checksum
		if n > 0 {
			bad := bytes.Clone(s)
			bad[len(bad)-5] ^= 1
			if _, err := dec.DecodeAll(bad, nil); err == nil {
				t.Fatalf("%d bytes: a flipped byte passed the checksum", n)
			}
		}
		all = append(all, s...)
		want = append(want, raw...)
	}
	z, err := ZstdLevel(nil, []byte("encoded"), 1)
	if err != nil {
		t.Fatal(err)
	}
	all = append(all, z...)
	want = append(want, "encoded"...)
	rd, err := NewZstdReader(bytes.NewReader(all))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	if got, err := io.ReadAll(rd); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("concatenation: %v", err)
	}
	stockAccepts(t, stockZstd(t), all, want)
}

// Chunk data must be one whole frame: a second frame or trailing bytes are refused, as is a cut frame.
func TestUnZstdWantsExactlyOneFrame(t *testing.T) {
	raw := bytes.Repeat([]byte("pgbb "), 5000)
	one, err := ZstdLevel(nil, raw, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unZstd(append(bytes.Clone(one), ZstdStored(nil, nil)...), len(raw)); err == nil {
		t.Fatal("two frames accepted")
	}
	if _, err := unZstd(append(bytes.Clone(one), 0), len(raw)); err == nil {
		t.Fatal("a trailing byte accepted")
	}
	for cut := 0; cut < len(one); cut++ {
		if _, err := unZstd(one[:cut], len(raw)); err == nil {
			t.Fatalf("cut at %d of %d accepted", cut, len(one))
		}
	}
}

// zstdFrames makes each piece a frame, alternately encoded and stored, and concatenates them, as a
// .tar.zst is written.
func zstdFrames(t *testing.T, pieces ...[]byte) []byte {
	t.Helper()
	var out []byte
	for i, p := range pieces {
		if i%2 == 1 {
			out = ZstdStored(out, p)
			continue
		}
		var err error
		if out, err = ZstdLevel(out, p, 1); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestZstdReaderReadsConcatenatedFrames(t *testing.T) {
	a := bytes.Repeat([]byte("first frame "), 5000)
	b := []byte("second")
	c := bytes.Repeat([]byte{0, 1, 2, 3}, 70000)
	data := zstdFrames(t, a, b, nil, c)
	want := append(append(append([]byte{}, a...), b...), c...)
	for name, in := range map[string]io.Reader{
		"plain":        bytes.NewReader(data),
		"byte by byte": iotest.OneByteReader(bytes.NewReader(data)),
		"half reads":   iotest.HalfReader(bytes.NewReader(data)),
	} {
		r, err := NewArchiveReader(2, in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}

// Every cut that is not at a frame boundary, and every flipped byte, must show as an error (or, for a
// flip, at least never as different content), whether the file gives whole reads or short ones. An empty
// file is no frame and no error: the tar end marker's check finds it.
func TestZstdReaderReportsDamageAndTruncation(t *testing.T) {
	testArchiveDamage(t, chunkstream.CodecZstd, zstdFrames, true)
}
