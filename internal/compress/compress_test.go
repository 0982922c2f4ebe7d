package compress

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

func TestXZRoundTripAndLengthCheck(t *testing.T) {
	raw := bytes.Repeat([]byte("pgbb page "), 10000)
	c, err := XZ(nil, raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) >= len(raw)/10 {
		t.Fatalf("compressed to %d of %d bytes", len(c), len(raw))
	}
	got, err := UnXZ(c, len(raw))
	if err != nil || !bytes.Equal(got, raw) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := UnXZ(c, len(raw)-1); err == nil {
		t.Fatal("longer content accepted")
	}
	if _, err := UnXZ(c, len(raw)+1); err == nil {
		t.Fatal("shorter content accepted")
	}
	c[len(c)/2] ^= 0xff
	if _, err := UnXZ(c, len(raw)); err == nil {
		t.Fatal("damaged stream accepted")
	}
}

// xzStreams compresses each piece into its own stream and concatenates them, as a .tar.xz is written.
func xzStreams(t *testing.T, pieces ...[]byte) []byte {
	t.Helper()
	var out []byte
	for _, p := range pieces {
		var err error
		if out, err = XZ(out, p); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func TestXZReaderReadsConcatenatedStreams(t *testing.T) {
	a := bytes.Repeat([]byte("first stream "), 5000)
	b := []byte("second")
	c := bytes.Repeat([]byte{0, 1, 2, 3}, 70000)
	data := xzStreams(t, a, b, nil, c)
	// stream padding (multiples of four zero bytes) may sit between streams
	oneLen := len(xzStreams(t, a))
	padded := append(append(append([]byte{}, data[:oneLen]...), 0, 0, 0, 0), data[oneLen:]...)
	want := append(append(append([]byte{}, a...), b...), c...)
	for name, in := range map[string]io.Reader{
		"plain":        bytes.NewReader(data),
		"padded":       bytes.NewReader(padded),
		"byte by byte": iotest.OneByteReader(bytes.NewReader(padded)),
		"half reads":   iotest.HalfReader(bytes.NewReader(padded)),
	} {
		r, err := NewXZReader(in)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s: %d bytes, %v", name, len(got), err)
		}
	}
}

// Every cut that is not at a stream boundary, and every flipped byte, must show as an error, whether the
// file gives whole reads or short ones.
func TestXZReaderReportsDamageAndTruncation(t *testing.T) {
	testArchiveDamage(t, chunkstream.CodecXZ, xzStreams, false)
}

// testArchiveDamage cuts an archive of two pieces (as concat makes it, in codec) at every offset and flips
// every byte, read whole and in short reads through NewArchiveReader: a cut anywhere but between the
// pieces (and, with emptyOK, at 0) and all but a few flips must fail with the codec's prefix, and no flip
// may change the content silently.
func testArchiveDamage(t *testing.T, codec byte, concat func(*testing.T, ...[]byte) []byte, emptyOK bool) {
	for name, wrap := range map[string]func(io.Reader) io.Reader{
		"whole reads": func(r io.Reader) io.Reader { return r },
		"short reads": iotest.HalfReader,
	} {
		t.Run(name, func(t *testing.T) { testArchiveDamageReads(t, codec, concat, emptyOK, wrap) })
	}
}

func testArchiveDamageReads(t *testing.T, codec byte, concat func(*testing.T, ...[]byte) []byte, emptyOK bool, wrap func(io.Reader) io.Reader) {
	a := bytes.Repeat([]byte("pgbb page "), 300)
	b := []byte("tail piece of the archive")
	data := concat(t, a, b)
	boundary := len(concat(t, a))
	prefix := CodecName(codec) + ": "
	readAll := func(in []byte) ([]byte, error) {
		r, err := NewArchiveReader(codec, wrap(bytes.NewReader(in)))
		if err != nil {
			return nil, err
		}
		defer r.Close()
		return io.ReadAll(r)
	}
	for cut := 0; cut < len(data); cut++ {
		got, err := readAll(data[:cut])
		if cut == boundary || (cut == 0 && emptyOK) {
			if err != nil || (cut == boundary && !bytes.Equal(got, a)) {
				t.Fatalf("cut between pieces (%d): %v", cut, err)
			}
			continue
		}
		if err == nil {
			t.Fatalf("cut at %d of %d bytes read without error", cut, len(data))
		}
		if !strings.HasPrefix(err.Error(), prefix) {
			t.Fatalf("cut at %d: error %q lacks the %q prefix", cut, err, prefix)
		}
	}
	// The xz library does not check the compressed size in an LZMA2 chunk header against what the chunk's
	// data used, so a flip there can leave the content whole; it must never change the content silently.
	want := append(bytes.Clone(a), b...)
	harmless := 0
	for i := 0; i < len(data); i++ {
		d := bytes.Clone(data)
		d[i] ^= 0x55
		got, err := readAll(d)
		if err == nil && !bytes.Equal(got, want) {
			t.Fatalf("flip at %d of %d gave different content without error", i, len(data))
		}
		if err == nil {
			t.Logf("flip at %d of %d left the content whole", i, len(data))
			harmless++
		}
	}
	if harmless > 4 {
		t.Fatalf("%d of %d flips went unnoticed", harmless, len(data))
	}
	if _, err := readAll(append(bytes.Clone(data), 'x')); err == nil {
		t.Fatal("garbage after the last piece accepted")
	}
	if codec == chunkstream.CodecXZ {
		if _, err := readAll(append(bytes.Clone(data), 0, 0)); err == nil {
			t.Fatal("padding that is not a multiple of four bytes accepted")
		}
	}
}
