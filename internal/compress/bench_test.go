package compress

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/chunkstream"
)

// BenchmarkChunkCompress measures each codec and level on real relation files, one goroutine, in 1 MiB
// chunks (pgbb-fetch's default), as a fetch job compresses them: MB/s of raw input per core and the ratio
// compressed/raw. Give the files in PGBB_BENCH_FILES (colon-separated; each is sampled up to 64 MiB, evenly
// spread), for example a pgbench table's heap and its primary key:
//
//	PGBB_BENCH_FILES=$PGDATA/base/5/16396:$PGDATA/base/5/16404 go test -run - -bench ChunkCompress -benchtime 1x ./internal/compress
func BenchmarkChunkCompress(b *testing.B) {
	files := os.Getenv("PGBB_BENCH_FILES")
	if files == "" {
		b.Skip("set PGBB_BENCH_FILES to relation files to measure")
	}
	for _, path := range strings.Split(files, ":") {
		chunks := sampleChunks(b, path, 1<<20, 64)
		for _, codec := range []byte{chunkstream.CodecZstd, chunkstream.CodecXZ} {
			ci := codecs[codec]
			for level := ci.minLevel; level <= ci.maxLevel; level++ {
				name := fmt.Sprintf("%s/%s-%d", filepath.Base(path), ci.name, level)
				b.Run(name, func(b *testing.B) {
					cc, err := NewChunkCompressor(codec, level)
					if err != nil {
						b.Fatal(err)
					}
					var raw, out int64
					var buf []byte
					for b.Loop() {
						raw, out = 0, 0
						for _, c := range chunks {
							if buf, err = cc.Compress(buf, c); err != nil {
								b.Fatal(err)
							}
							raw += int64(len(c))
							out += int64(len(buf))
						}
					}
					b.SetBytes(raw)
					b.ReportMetric(float64(out)/float64(raw), "ratio")
				})
			}
		}
	}
}

// sampleChunks reads up to n chunks of size bytes spread evenly over the file at path.
func sampleChunks(b *testing.B, path string, size, n int) [][]byte {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		b.Fatal(err)
	}
	total := int(fi.Size()) / size
	step := max(1, total/n)
	var chunks [][]byte
	for i := 0; i < total && len(chunks) < n; i += step {
		c := make([]byte, size)
		if _, err := f.ReadAt(c, int64(i)*int64(size)); err != nil {
			b.Fatal(err)
		}
		chunks = append(chunks, c)
	}
	return chunks
}
