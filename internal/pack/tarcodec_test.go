package pack

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/verify"
)

// A tar set is all one codec: pgbb-pack concatenates the chunks' data into the archives, so a chunk of
// another codec (or none) than the set's is refused, with the codec it has, and nothing is left behind.
func TestPackTarRefusesChunksOfAnotherCodec(t *testing.T) {
	for _, tc := range []struct {
		name, format string
		xz, zstd     bool
		want         string
	}{
		{"zstd chunks in a tar.xz set", Tar, true, true, "compressed with zstd in a .tar.xz backup"},
		{"xz chunks in a tar.zst set", tarZstd, true, false, "compressed with xz in a .tar.zst backup"},
		{"uncompressed chunks in a tar.zst set", tarZstd, false, false, "an uncompressed chunk in a .tar.zst backup"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			spec := validSpec(e.tsLoc, tc.xz)
			spec.zstd = tc.zstd
			e.writeStream(t, spec.build(t))
			err := Run(e.options(tc.format), nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if _, serr := os.Lstat(filepath.Join(e.dest, "backup_manifest")); !errors.Is(serr, fs.ErrNotExist) {
				t.Errorf("backup_manifest left in DEST (%v)", serr)
			}
			if n := listDir(t, e.dest); len(n) != 0 {
				t.Errorf("DEST not cleaned after the failure: %v", n)
			}
		})
	}
}

func TestPackCompressIsForTarOnly(t *testing.T) {
	e := newEnv(t)
	o := e.options(Plain)
	o.Compress, o.Inputs = "zstd", nil
	if err := Run(o, panicReader{t}); err == nil || !strings.Contains(err.Error(), "--compress applies to the tar format only") {
		t.Fatalf("plain with --compress: %v", err)
	}
	for _, bad := range []string{"none", "gzip"} {
		o := e.options(Tar)
		o.Compress, o.Inputs = bad, nil
		if err := Run(o, panicReader{t}); err == nil || !strings.Contains(err.Error(), "-F tar takes no chunks of compression") {
			t.Fatalf("tar with --compress %s: %v", bad, err)
		}
	}
}

// The plain format takes chunks compressed in transit with either codec and stores them uncompressed.
func TestPackPlainTakesChunksOfEveryCodec(t *testing.T) {
	for _, zstd := range []bool{false, true} {
		e := newEnv(t)
		spec := validSpec(e.tsLoc, true)
		spec.zstd = zstd
		e.writeStream(t, spec.build(t))
		if err := Run(e.options(Plain), nil); err != nil {
			t.Fatalf("zstd %v: %v", zstd, err)
		}
		var report bytes.Buffer
		if n, err := verify.Verify(e.dest, &report); n != 0 || err != nil {
			t.Fatalf("zstd %v: verify: %d problems, %v\n%s", zstd, n, err, report.String())
		}
	}
}
