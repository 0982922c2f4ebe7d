package compress

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

// zstd levels, --compress-level 1 to 4: the library's four speeds. Measured on this machine, one core,
// 1 MiB chunks (the fetch jobs' default) of a pgbench scale 50 cluster's pgbench_accounts heap and its
// primary key index (docs/BENCHMARKS.md, `go test -bench ChunkCompress ./internal/compress`); see
// zstdLevelHelp for the figures the default was chosen by.
const (
	zstdMinLevel     = 1
	zstdMaxLevel     = 4
	zstdDefaultLevel = 1
	zstdLevelHelp    = "zstd: 1 (fastest, the default), 2 (default speed of zstd), 3 (better), 4 (best; slow)"
)

var zstdSpeeds = [zstdMaxLevel + 1]zstd.EncoderLevel{0, zstd.SpeedFastest, zstd.SpeedDefault, zstd.SpeedBetterCompression, zstd.SpeedBestCompression}

// zstdWindow bounds the window of the frames pgbb writes, and so the memory of each encoder: a chunk is at
// most chunkstream.MaxChunk (16 MiB) raw, and most are 1 MiB (fetch) or 4 MiB (WAL); EncodeAll writes a
// single-segment frame (window = content) for a chunk up to it.
const zstdWindow = 4 << 20

// zstdEncoder compresses whole chunks, each into one frame with a content checksum.
type zstdEncoder struct{ enc *zstd.Encoder }

func newZstdEncoder(level int) (*zstdEncoder, error) {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstdSpeeds[level]), zstd.WithEncoderConcurrency(1),
		zstd.WithWindowSize(zstdWindow), zstd.WithEncoderCRC(true), zstd.WithZeroFrames(true))
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	return &zstdEncoder{enc: enc}, nil
}

func (z *zstdEncoder) encode(dst, raw []byte) []byte { return z.enc.EncodeAll(raw, dst) }

// ZstdLevel compresses raw into one zstd frame at level (1 to 4), appending to dst. It makes an encoder
// for the call: a caller with many chunks keeps a ChunkCompressor instead.
func ZstdLevel(dst, raw []byte, level int) ([]byte, error) {
	if level < zstdMinLevel || level > zstdMaxLevel {
		return nil, fmt.Errorf("zstd: compression level %d is not between %d and %d", level, zstdMinLevel, zstdMaxLevel)
	}
	z, err := newZstdEncoder(level)
	if err != nil {
		return nil, err
	}
	defer z.enc.Close()
	return z.encode(dst, raw), nil
}

// chunkDecoder decodes chunk data, shared by the goroutines of a process (DecodeAll is safe for concurrent
// use; each call takes one of its decoders). Its windows and outputs are bounded by the largest chunk.
var chunkDecoder = sync.OnceValues(func() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(min(runtime.GOMAXPROCS(0), 4)),
		zstd.WithDecoderMaxWindow(chunkstream.MaxChunk), zstd.WithDecoderMaxMemory(chunkstream.MaxChunk))
})

// unZstd decompresses chunk data that must be one complete zstd frame yielding exactly wantLen bytes.
func unZstd(data []byte, wantLen int) ([]byte, error) {
	n, err := zstdFrameLen(data)
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if n != len(data) {
		return nil, fmt.Errorf("zstd: %d bytes after the frame", len(data)-n)
	}
	dec, err := chunkDecoder()
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	out, err := dec.DecodeAll(data, make([]byte, 0, wantLen))
	if err != nil {
		return nil, zstdError(err)
	}
	if len(out) != wantLen {
		return nil, fmt.Errorf("zstd: %d bytes, %d announced", len(out), wantLen)
	}
	return out, nil
}

// zstdFrameLen returns the length of the zstd frame at the start of b, from its header and block headers
// (RFC 8878, sections 3.1.1.1 to 3.1.1.2), without decoding it: the frame is complete as far as lengths go.
func zstdFrameLen(b []byte) (int, error) {
	if len(b) < 5 || binary.LittleEndian.Uint32(b) != zstdMagic {
		return 0, errors.New("not a zstd frame")
	}
	fhd := b[4]
	fcsFlag, single, checksum, dictFlag := fhd>>6, fhd&0x20 != 0, fhd&0x04 != 0, fhd&0x03
	if fhd&0x08 != 0 {
		return 0, errors.New("reserved bit set in the frame header")
	}
	p := 5
	if !single {
		p++ // Window_Descriptor
	}
	p += [4]int{0, 1, 2, 4}[dictFlag]
	p += [4]int{0, 2, 4, 8}[fcsFlag]
	if single && fcsFlag == 0 {
		p++
	}
	for {
		if p+3 > len(b) {
			return 0, errors.New("frame cut short")
		}
		bh := uint32(b[p]) | uint32(b[p+1])<<8 | uint32(b[p+2])<<16
		p += 3
		size := int(bh >> 3)
		switch (bh >> 1) & 3 {
		case 1: // RLE_Block: one byte, repeated
			size = 1
		case 3:
			return 0, errors.New("reserved block type")
		}
		if p+size > len(b) {
			return 0, errors.New("frame cut short")
		}
		p += size
		if bh&1 != 0 {
			break
		}
	}
	if checksum {
		p += 4
		if p > len(b) {
			return 0, errors.New("frame cut short")
		}
	}
	return p, nil
}

// NewZstdReader returns a reader of the decompressed concatenation of the complete zstd frames in r (a
// .tar.zst of pgbb's tar format; skippable frames are allowed), every content checksum verified. A damaged
// frame, or one cut short, makes Read return an error other than io.EOF starting "zstd: "; a cut between
// two frames cannot be seen here (see NewArchiveReader). Close releases the decoder; the caller closes r.
func NewZstdReader(r io.Reader) (io.ReadCloser, error) {
	// one goroutine, in step with the reader; a window as large as any stock zstd writes below --long
	d, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderLowmem(true), zstd.WithDecoderMaxWindow(128<<20))
	if err != nil {
		return nil, zstdError(err)
	}
	return &zstdReader{d: d}, nil
}

type zstdReader struct{ d *zstd.Decoder }

func (z *zstdReader) Read(p []byte) (int, error) {
	n, err := z.d.Read(p)
	if err != nil && err != io.EOF {
		err = zstdError(err)
	}
	return n, err
}

func (z *zstdReader) Close() error {
	z.d.Close()
	return nil
}

// zstdError prefixes the library's errors, some of which do not say they come from zstd (unexpected EOF).
func zstdError(err error) error {
	if strings.HasPrefix(err.Error(), "zstd: ") {
		return err
	}
	return fmt.Errorf("zstd: %w", err)
}
