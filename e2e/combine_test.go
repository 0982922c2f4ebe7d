package e2e

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/pgbb/pgbb/internal/incremental"
)

// combine writes into out the data directory that a chain of plain backups (oldest first: a full, then
// incrementals) restores to, as pg_combinebackup does (src/bin/pg_combinebackup/reconstruct.c): every file
// of the latest backup, each INCREMENTAL.<name> reconstructed from the chain (the prior's file cut or
// extended to the truncation length, then the listed blocks laid over it), backup_label without its
// INCREMENTAL FROM lines, and no backup_manifest. Tablespaces go to new directories made under tsRoot,
// linked from out/pg_tblspc. It is the test's stand-in where no stock pg_combinebackup reads the major
// (17 here); on 18 the tests use the stock one.
func combine(t *testing.T, out, tsRoot string, chain ...string) {
	t.Helper()
	latest := chain[len(chain)-1]
	// the tree of the latest backup, tablespace links followed
	err := filepath.WalkDir(latest, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(latest, p)
		dst := filepath.Join(out, rel)
		if oid, ok := strings.CutPrefix(rel, "pg_tblspc/"); ok && !strings.Contains(oid, "/") && d.Type()&fs.ModeSymlink != 0 {
			target, err := filepath.EvalSymlinks(p)
			if err != nil {
				return err
			}
			dir := filepath.Join(tsRoot, oid)
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return err
			}
			if err := os.Symlink(dir, dst); err != nil {
				return err
			}
			return copyTree(target, dir, func(relInTs string) string { return filepath.Join(rel, relInTs) }, chain)
		}
		return combineEntry(p, dst, rel, d, chain)
	})
	if err != nil {
		t.Fatalf("combine: %v", err)
	}
}

// copyTree combines the tree below src (a tablespace directory of the latest backup) into dst; relOf
// gives a file's path in the data directory.
func copyTree(src, dst string, relOf func(string) string, chain []string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		r, _ := filepath.Rel(src, p)
		if r == "." {
			return nil
		}
		return combineEntry(p, filepath.Join(dst, r), relOf(r), d, chain)
	})
}

func combineEntry(p, dst, rel string, d fs.DirEntry, chain []string) error {
	switch {
	case d.IsDir():
		return os.MkdirAll(dst, 0o700)
	case rel == "backup_manifest":
		return nil
	case rel == "backup_label":
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		var keep []string
		for _, l := range strings.SplitAfter(string(b), "\n") {
			if !strings.HasPrefix(l, "INCREMENTAL FROM ") {
				keep = append(keep, l)
			}
		}
		return os.WriteFile(dst, []byte(strings.Join(keep, "")), 0o600)
	}
	name := filepath.Base(rel)
	if rest, ok := strings.CutPrefix(name, "INCREMENTAL."); ok {
		rel = filepath.Join(filepath.Dir(rel), rest)
		dst = filepath.Join(filepath.Dir(dst), rest)
	}
	b, err := reconstruct(rel, chain)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o600)
}

// path of a data-directory file in a backup, its tablespace links followed.
func inBackup(backup, rel string) string { return filepath.Join(backup, rel) }

// reconstruct returns the bytes of the data-directory file rel as the chain's latest backup restores it.
func reconstruct(rel string, chain []string) ([]byte, error) {
	backup := chain[len(chain)-1]
	if b, err := os.ReadFile(inBackup(backup, rel)); err == nil {
		return b, nil // whole in this backup
	}
	inc := filepath.Join(filepath.Dir(rel), "INCREMENTAL."+filepath.Base(rel))
	b, err := os.ReadFile(inBackup(backup, inc))
	if err != nil {
		return nil, fmt.Errorf("%s: neither whole nor incremental in %s", rel, backup)
	}
	h, size, err := incremental.ParseHeader(b, 131072)
	if err != nil {
		return nil, fmt.Errorf("%s in %s: %v", inc, backup, err)
	}
	if len(chain) == 1 {
		return nil, fmt.Errorf("%s in %s: an incremental file in the oldest backup", inc, backup)
	}
	var base []byte
	if h.TruncBlocks > 0 {
		if base, err = reconstruct(rel, chain[:len(chain)-1]); err != nil {
			return nil, err
		}
	}
	const blk = 8192
	length := int(h.TruncBlocks)
	for _, n := range h.Blocks {
		length = max(length, int(n)+1)
	}
	outb := make([]byte, length*blk)
	copy(outb, base[:min(len(base), int(h.TruncBlocks)*blk)])
	data := b[size:]
	if len(data) != len(h.Blocks)*blk {
		return nil, fmt.Errorf("%s in %s: %d bytes of blocks for %d blocks", inc, backup, len(data), len(h.Blocks))
	}
	for i, n := range h.Blocks {
		copy(outb[int(n)*blk:], data[i*blk:(i+1)*blk])
	}
	return outb, nil
}

// dataFiles lists the regular files of a data directory (tablespace links followed) with their SHA-256,
// by path, leaving out backup_manifest: two combiners' outputs compare equal by it.
func dataFiles(t *testing.T, dir string) string {
	t.Helper()
	var lines []string
	var walk func(root, prefix string)
	walk = func(root, prefix string) {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			rel = filepath.Join(prefix, rel)
			switch {
			case d.Type()&fs.ModeSymlink != 0:
				target, err := filepath.EvalSymlinks(p)
				if err != nil {
					return err
				}
				walk(target, rel)
			case d.Type().IsRegular() && rel != "backup_manifest":
				b, err := os.ReadFile(p)
				if err != nil {
					return err
				}
				lines = append(lines, fmt.Sprintf("%s %d %x", rel, len(b), sha256.Sum256(b)))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	walk(dir, "")
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}
