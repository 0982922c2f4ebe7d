// Package compress turns chunk bytes into one xz stream or one zstd frame and back, and reads archives made
// of many of them. It is the only package that imports the xz and zstd libraries; codec.go holds the codecs'
// names and levels.
package compress

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"strings"

	"github.com/ulikunitz/xz"
)

// Compression levels: the LZMA2 dictionary size, with the hash-table matcher (the library's binary-tree
// matcher took minutes on a 4 MiB chunk of pgbench_accounts). Measured on this machine on 4 MiB chunks of a
// pgbench heap and its primary key index (docs/BENCHMARKS.md): 256 KiB compresses 8.7 MB/s (index) and
// 25.8 MB/s (heap), 1 MiB 7.5 and 23.1, 4 MiB 6.5 and 22.6, to within 2% of the same size. Chunks are a few
// MiB, so a larger dictionary finds little more; level 1 is the default.
const (
	xzMinLevel     = 1
	xzMaxLevel     = 3
	xzDefaultLevel = 1
)

var dictSizes = [xzMaxLevel + 1]int{0, 256 << 10, 1 << 20, 4 << 20}

// DictSize is the largest dictionary any level uses; readers accept up to it.
const DictSize = 4 << 20

// XZ compresses raw into one complete xz stream at the default level, appending to dst.
func XZ(dst, raw []byte) ([]byte, error) { return XZLevel(dst, raw, xzDefaultLevel) }

// XZLevel compresses raw into one complete xz stream at level (1 to 3), appending to dst.
func XZLevel(dst, raw []byte, level int) ([]byte, error) {
	if level < xzMinLevel || level > xzMaxLevel {
		return nil, fmt.Errorf("xz: compression level %d is not between %d and %d", level, xzMinLevel, xzMaxLevel)
	}
	buf := bytes.NewBuffer(dst)
	cfg := xz.WriterConfig{DictCap: dictSizes[level], CheckSum: xz.CRC32}
	w, err := cfg.NewWriter(buf)
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(raw); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// UnXZ decompresses one xz stream that must yield exactly wantLen bytes.
func UnXZ(data []byte, wantLen int) ([]byte, error) {
	cfg := xz.ReaderConfig{SingleStream: true, DictCap: DictSize}
	r, err := cfg.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	out := make([]byte, wantLen)
	if _, err := io.ReadFull(r, out); err != nil {
		return nil, fmt.Errorf("xz: %w", err)
	}
	var one [1]byte
	if n, _ := r.Read(one[:]); n != 0 {
		return nil, fmt.Errorf("xz: more data than the %d bytes announced", wantLen)
	}
	return out, nil
}

// NewXZReader returns a reader of the decompressed concatenation of the complete xz streams in r (stream
// padding between them allowed), as a .tar.xz of pgbb's tar format holds. It reads the first stream's
// header before it returns. Every block's check is verified; a damaged stream, or one cut anywhere but
// between two streams, makes Read return an error other than io.EOF (a cut inside a stream wraps
// io.ErrUnexpectedEOF). A cut exactly between two streams cannot be seen here: the caller must know where
// its content ends (a tar archive's end marker). The caller closes r.
func NewXZReader(r io.Reader) (io.Reader, error) {
	cfg := xz.ReaderConfig{SingleStream: false, DictCap: DictSize}
	xr, err := cfg.NewReader(&footerEndReader{r: r})
	if err != nil {
		return nil, xzError(err)
	}
	return &xzReader{r: xr}, nil
}

// xzReader prefixes the library's errors, some of which do not say they come from xz (unexpected EOF).
type xzReader struct{ r io.Reader }

func (x *xzReader) Read(p []byte) (int, error) {
	n, err := x.r.Read(p)
	if err != nil && err != io.EOF {
		err = xzError(err)
	}
	return n, err
}

func xzError(err error) error {
	if strings.HasPrefix(err.Error(), "xz: ") {
		return err
	}
	return fmt.Errorf("xz: %w", err)
}

// footerLen is the size of an xz stream footer: CRC32 of the next six bytes, backward size, stream flags,
// magic "YZ".
const footerLen = 12

// footerEndReader turns an end of input into io.ErrUnexpectedEOF unless it comes where a stream may end.
// The xz library (v0.5.17) takes an end of input where a block header starts, or inside one, for the end of
// the stream (its readBlockHeader returns io.EOF from a short io.CopyN), and would let such a cut or damaged
// archive read as complete. So the end is accepted only as the library meets it after a stream it parsed
// whole: it reads the footer with io.ReadFull of 12 bytes (so the read that gives the footer's last byte
// asks for no more), perhaps stream padding, and then asks for the 4 first bytes of a next stream header.
// Any other end, or an end after bytes that are not a valid footer, is a cut. TestXZReaderReportsDamageAndTruncation cuts and flips every byte to keep this honest.
type footerEndReader struct {
	r        io.Reader
	last     [footerLen]byte // the last bytes read before any trailing zero bytes, right-aligned
	filled   int             // how many bytes of last are real
	zeros    int             // zero bytes read after last's final byte
	exactEnd bool            // the read that gave last's final byte filled its request
}

func (f *footerEndReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 && err == io.EOF {
		err = nil // keep the end for a read of its own, as the checks below expect
	}
	// padding is zero bytes and a footer ends in 'Z', so the footer is what precedes the trailing zeros
	if k := lastNonZero(p[:n]); k >= 0 {
		var zeros [footerLen]byte
		f.push(zeros[:min(f.zeros, footerLen)])
		f.push(p[:k+1])
		f.zeros = n - 1 - k
		f.exactEnd = k == len(p)-1
	} else {
		f.zeros += n
	}
	if err == io.EOF && !(len(p) == 4 && f.exactEnd && f.endsWithFooter()) {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// push appends b to the window of the last footerLen bytes.
func (f *footerEndReader) push(b []byte) {
	if len(b) >= footerLen {
		copy(f.last[:], b[len(b)-footerLen:])
		f.filled = footerLen
		return
	}
	copy(f.last[:], f.last[len(b):])
	copy(f.last[footerLen-len(b):], b)
	f.filled = min(footerLen, f.filled+len(b))
}

func (f *footerEndReader) endsWithFooter() bool {
	b := f.last[:]
	return f.filled == footerLen && b[10] == 'Y' && b[11] == 'Z' &&
		crc32.ChecksumIEEE(b[4:10]) == binary.LittleEndian.Uint32(b[0:4])
}

func lastNonZero(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] != 0 {
			return i
		}
	}
	return -1
}
