package compress

import (
	"bytes"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

func TestParseCodecNamesEveryCodec(t *testing.T) {
	for _, tc := range []struct {
		name string
		want byte
	}{{"", chunkstream.CodecNone}, {"none", chunkstream.CodecNone}, {"xz", chunkstream.CodecXZ}, {"zstd", chunkstream.CodecZstd}} {
		got, err := ParseCodec(tc.name)
		if err != nil || got != tc.want {
			t.Errorf("ParseCodec(%q) = %d, %v; want %d", tc.name, got, err, tc.want)
		}
		if tc.name != "" && CodecName(got) != tc.name {
			t.Errorf("CodecName(%d) = %q, want %q", got, CodecName(got), tc.name)
		}
	}
	for _, bad := range []string{"gzip", "XZ", "zst", " xz", "lz4"} {
		if _, err := ParseCodec(bad); err == nil || !strings.Contains(err.Error(), CodecNames) {
			t.Errorf("ParseCodec(%q): %v", bad, err)
		}
	}
}

func TestParseLevelBoundsAndDefaults(t *testing.T) {
	for _, tc := range []struct {
		codec    byte
		in, want int
		ok       bool
	}{
		{chunkstream.CodecNone, 0, 0, true},
		{chunkstream.CodecNone, 1, 0, false}, // a level without compression is a mistake
		{chunkstream.CodecXZ, 0, xzDefaultLevel, true},
		{chunkstream.CodecXZ, 1, 1, true},
		{chunkstream.CodecXZ, 3, 3, true},
		{chunkstream.CodecXZ, 4, 0, false},
		{chunkstream.CodecXZ, -1, 0, false},
		{chunkstream.CodecZstd, 0, zstdDefaultLevel, true},
		{chunkstream.CodecZstd, 1, 1, true},
		{chunkstream.CodecZstd, 4, 4, true},
		{chunkstream.CodecZstd, 5, 0, false},
		{7, 0, 0, false},
	} {
		got, err := ParseLevel(tc.codec, tc.in)
		if (err == nil) != tc.ok || (tc.ok && got != tc.want) {
			t.Errorf("ParseLevel(%s, %d) = %d, %v; want %d (ok %v)", CodecName(tc.codec), tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// Every codec and level round-trips through a reused compressor, and Decompress checks the length.
func TestChunkCompressorRoundTripsEveryLevel(t *testing.T) {
	raws := [][]byte{bytes.Repeat([]byte("pgbb page "), 100000), {}, []byte("x"), pattern(3, 70000)}
	for _, codec := range []byte{chunkstream.CodecNone, chunkstream.CodecXZ, chunkstream.CodecZstd} {
		ci := codecs[codec]
		for level := ci.minLevel; level <= ci.maxLevel; level++ {
			cc, err := NewChunkCompressor(codec, level)
			if err != nil {
				t.Fatal(err)
			}
			if cc.Codec() != codec {
				t.Fatalf("codec %d", cc.Codec())
			}
			var buf []byte
			for _, raw := range raws {
				if buf, err = cc.Compress(buf, raw); err != nil {
					t.Fatalf("%s-%d: %v", ci.name, level, err)
				}
				got, err := Decompress(codec, buf, len(raw))
				if err != nil || !bytes.Equal(got, raw) {
					t.Fatalf("%s-%d, %d bytes: %v", ci.name, level, len(raw), err)
				}
				if len(raw) > 0 {
					if _, err := Decompress(codec, buf, len(raw)+1); err == nil {
						t.Fatalf("%s-%d: a longer content announced was accepted", ci.name, level)
					}
				}
			}
		}
	}
	if _, err := NewChunkCompressor(chunkstream.CodecZstd, 9); err == nil {
		t.Fatal("level 9 accepted")
	}
}

func pattern(seed byte, n int) []byte {
	b := make([]byte, n)
	x := uint32(seed) + 1
	for i := range b {
		x = x*1664525 + 1013904223
		b[i] = byte(x >> 24 & 0x0f) // compressible, not trivially
	}
	return b
}
