package compress

import (
	"fmt"
	"io"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

// Codecs are the chunk stream's codec bytes (docs/chunk-stream.md): chunkstream.CodecNone, CodecXZ and
// CodecZstd. This file is the one home of their names, their levels and chunk compression; pgbb-fetch and
// pgbb-xlog parse their --compress and --compress-level flags here, and pgbb-pack and --verify read chunks
// and archives through it.

// codecInfo is what a codec's name and levels are.
type codecInfo struct {
	name               string
	minLevel, maxLevel int
	defaultLevel       int
	levelHelp          string // what each level is, for a hint
}

var codecs = map[byte]codecInfo{
	chunkstream.CodecNone: {name: "none"},
	chunkstream.CodecXZ: {name: "xz", minLevel: xzMinLevel, maxLevel: xzMaxLevel, defaultLevel: xzDefaultLevel,
		levelHelp: "xz: 1 (fastest, the default), 2 or 3 (1 and 4 MiB dictionaries, about the same size)"},
	chunkstream.CodecZstd: {name: "zstd", minLevel: zstdMinLevel, maxLevel: zstdMaxLevel, defaultLevel: zstdDefaultLevel,
		levelHelp: zstdLevelHelp},
}

// CodecNames lists the names ParseCodec takes, for help texts.
const CodecNames = "none, xz or zstd"

// ParseCodec returns the codec of a --compress name: "none" (or ""), "xz" or "zstd".
func ParseCodec(name string) (byte, error) {
	if name == "" {
		return chunkstream.CodecNone, nil
	}
	for c, ci := range codecs {
		if ci.name == name {
			return c, nil
		}
	}
	return 0, fmt.Errorf("unknown compression %q (want %s)", name, CodecNames)
}

// CodecName returns the --compress name of a codec, or "codec N" for a byte that is none.
func CodecName(codec byte) string {
	if ci, ok := codecs[codec]; ok {
		return ci.name
	}
	return fmt.Sprintf("codec %d", codec)
}

// ParseLevel checks a --compress-level n for codec and returns the level to use: 0 means the codec's
// default. Codec none has no levels and takes only 0.
func ParseLevel(codec byte, n int) (int, error) {
	ci, ok := codecs[codec]
	if !ok {
		return 0, fmt.Errorf("unknown codec %d", codec)
	}
	if n == 0 {
		return ci.defaultLevel, nil
	}
	if codec == chunkstream.CodecNone {
		return 0, fmt.Errorf("a compression level (%d) without compression", n)
	}
	if n < ci.minLevel || n > ci.maxLevel {
		return 0, fmt.Errorf("%s compression level %d is not between %d and %d", ci.name, n, ci.minLevel, ci.maxLevel)
	}
	return n, nil
}

// LevelsHelp says what the levels of every codec are, for help texts.
var LevelsHelp = codecs[chunkstream.CodecXZ].levelHelp + "; " + codecs[chunkstream.CodecZstd].levelHelp

// LevelHelp says what the levels of codec are, for a hint.
func LevelHelp(codec byte) string {
	if ci := codecs[codec]; ci.levelHelp != "" {
		return ci.levelHelp
	}
	return "give a level only with --compress xz or zstd"
}

// ChunkCompressor compresses chunks into one xz stream or one zstd frame each, at one level. It keeps its
// encoder between calls, so memory stays flat: make one per goroutine, it is not safe for concurrent use.
type ChunkCompressor struct {
	codec byte
	level int
	zstd  *zstdEncoder
}

// NewChunkCompressor returns a compressor for codec at level (checked with ParseLevel first; 0 is the
// default). For codec none, Compress returns raw itself.
func NewChunkCompressor(codec byte, level int) (*ChunkCompressor, error) {
	level, err := ParseLevel(codec, level)
	if err != nil {
		return nil, err
	}
	cc := &ChunkCompressor{codec: codec, level: level}
	if codec == chunkstream.CodecZstd {
		if cc.zstd, err = newZstdEncoder(level); err != nil {
			return nil, err
		}
	}
	return cc, nil
}

// Codec returns the codec the compressor writes.
func (cc *ChunkCompressor) Codec() byte { return cc.codec }

// Compress appends to dst[:0]'s array the compressed form of raw, as a chunk's data of the compressor's
// codec, and returns it; pass the last result back as dst to reuse its memory. For codec none it returns
// raw.
func (cc *ChunkCompressor) Compress(dst, raw []byte) ([]byte, error) {
	switch cc.codec {
	case chunkstream.CodecXZ:
		return XZLevel(dst[:0], raw, cc.level)
	case chunkstream.CodecZstd:
		return cc.zstd.encode(dst[:0], raw), nil
	}
	return raw, nil
}

// Decompress returns the content of a chunk's data of codec, which must be exactly rawLen bytes. For
// codec none it returns data. The caller checks the content's CRC.
func Decompress(codec byte, data []byte, rawLen int) ([]byte, error) {
	switch codec {
	case chunkstream.CodecNone:
		if len(data) != rawLen {
			return nil, fmt.Errorf("%d bytes, %d announced", len(data), rawLen)
		}
		return data, nil
	case chunkstream.CodecXZ:
		return UnXZ(data, rawLen)
	case chunkstream.CodecZstd:
		return unZstd(data, rawLen)
	}
	return nil, fmt.Errorf("unknown codec %d", codec)
}

// Stored appends to dst raw as one xz stream or zstd frame of codec that holds it without compression
// (XZStored, ZstdStored): for the few hundred bytes of a tar header, padding or archive end, which an
// encoder would spend more CPU on than they are worth.
func Stored(codec byte, dst, raw []byte) ([]byte, error) {
	switch codec {
	case chunkstream.CodecXZ:
		return XZStored(dst, raw), nil
	case chunkstream.CodecZstd:
		return ZstdStored(dst, raw), nil
	}
	return nil, fmt.Errorf("no stored form for codec %s", CodecName(codec))
}

// NewArchiveReader returns a reader of the decompressed concatenation of the complete xz streams or zstd
// frames of codec in r, as an archive of pgbb's tar format holds (NewXZReader, NewZstdReader). Damage, and a
// cut anywhere but between two streams or frames, make Read return an error other than io.EOF whose text
// starts with "xz: " or "zstd: "; a cut between two is the caller's to see (a tar archive's end marker).
// Close releases the decoder; the caller closes r.
func NewArchiveReader(codec byte, r io.Reader) (io.ReadCloser, error) {
	switch codec {
	case chunkstream.CodecXZ:
		xr, err := NewXZReader(r)
		if err != nil {
			return nil, err
		}
		return io.NopCloser(xr), nil
	case chunkstream.CodecZstd:
		return NewZstdReader(r)
	}
	return nil, fmt.Errorf("no archive reader for codec %s", CodecName(codec))
}
