package pack

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/directwrite"
	"github.com/pgbb/pgbb/internal/sink"
)

// A reference backup (--reference OLD, docs/incremental.md section 5): the checks of OLD before anything
// in DEST changes, and its read-only descriptors for the jobs' offer.

// reference is a checked reference backup.
type reference struct {
	dir      string
	systemID uint64
	// tablespaces are OLD's tablespace directories by oid, its pg_tblspc/<oid> links resolved
	tablespaces map[uint32]string
}

// referenceConflicts refuses the options --reference cannot go with.
func referenceConflicts(o Options) error {
	switch {
	case o.Format == Tar:
		return cliapp.Usage("take the new backup in plain format, or leave out --reference", "--reference with -F tar: the jobs copy the equal pages from OLD into a plain DEST")
	case o.Resume:
		return cliapp.Usage("leave out --reference: --resume compares with what DEST holds", "--reference and --resume together")
	case o.Incremental != nil:
		return cliapp.Usage("choose one: --incremental (a PostgreSQL incremental backup) or --reference (a complete backup that sends only what changed)", "--reference and --incremental together")
	case o.NoDirect:
		return cliapp.Usage("leave out --no-direct-write", "--reference needs jobs that write into DEST themselves: only they read OLD")
	}
	return nil
}

// CheckReference checks that old is a complete plain backup that a new backup into dest (and the
// tablespace directories maps names) may read without either tree reaching into the other. It changes
// nothing (pgbb-pack --check --reference runs it alone).
func CheckReference(old, dest string, maps map[string]string) (*reference, error) {
	return checkReference(old, dest, maps, false)
}

// checkReference is CheckReference; an incremental old is refused unless anyBackup (the prior of an
// incremental backup, whose whole files serve and whose INCREMENTAL files match nothing).
func checkReference(old, dest string, maps map[string]string, anyBackup bool) (*reference, error) {
	fi, err := os.Stat(old)
	if err != nil {
		return nil, cliapp.Usage("give the directory of a complete plain backup of this cluster", "--reference %s: %v", old, err)
	}
	if !fi.IsDir() {
		return nil, cliapp.Usage("give the directory of a complete plain backup of this cluster", "--reference %s is not a directory", old)
	}
	if _, err := os.Stat(filepath.Join(old, "backup_manifest")); err != nil {
		return nil, cliapp.Usage("give the directory of a complete plain backup (it holds backup_manifest; a tar set cannot serve)", "--reference %s is not a complete plain backup: %v", old, err)
	}
	b, err := os.ReadFile(filepath.Join(old, controlfile.Path))
	if err != nil {
		return nil, cliapp.Usage("give the directory of a complete plain backup of this cluster", "--reference %s has no readable %s: %v", old, controlfile.Path, err)
	}
	ci, err := controlfile.Parse(b)
	if err != nil {
		return nil, cliapp.Usage("give the directory of an intact plain backup; check it with pgbb-pack --verify", "--reference %s: %s: %v", old, controlfile.Path, err)
	}
	if label, err := os.ReadFile(filepath.Join(old, "backup_label")); err == nil && !anyBackup && bytes.Contains(label, []byte("\nINCREMENTAL FROM LSN:")) {
		return nil, cliapp.Usage("give a full backup, or the output of pg_combinebackup", "--reference %s is an incremental backup: its relation files are not whole", old)
	}
	r := &reference{dir: resolved(old), systemID: ci.SystemID, tablespaces: map[uint32]string{}}
	dirs := []string{r.dir}
	ents, err := os.ReadDir(filepath.Join(r.dir, "pg_tblspc"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		oid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		dir := resolved(filepath.Join(r.dir, "pg_tblspc", e.Name()))
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return nil, cliapp.Usage("restore OLD's tablespace directories where its pg_tblspc links point, or take a new full backup",
				"--reference %s: tablespace %d (pg_tblspc/%s) is not a directory", old, oid, e.Name())
		}
		r.tablespaces[uint32(oid)] = dir
		dirs = append(dirs, dir)
	}
	news := []string{resolvedParent(dest)}
	for _, nw := range maps {
		news = append(news, resolvedParent(nw))
	}
	for _, d := range dirs {
		for _, n := range news {
			if within(n, d) || within(d, n) {
				return nil, cliapp.Usage("write the new backup to a directory outside OLD, and OLD outside it", "--reference %s and the new backup's directory %s overlap", d, n)
			}
		}
	}
	return r, nil
}

// resolvedParent is dir with its links resolved, for a dir that may not exist yet (its parent's links
// are resolved then).
func resolvedParent(dir string) string {
	dir, _ = filepath.Abs(dir)
	if r, err := filepath.EvalSymlinks(dir); err == nil {
		return r
	}
	return filepath.Join(resolvedParent(filepath.Dir(dir)), filepath.Base(dir))
}

// within reports whether path is dir or beneath it.
func within(path, dir string) bool {
	return path == dir || strings.HasPrefix(path, strings.TrimSuffix(dir, "/")+"/")
}

// offer adds the reference's read-only descriptors to a direct-write offer.
func (r *reference) offer(o *sink.Offer) error {
	if len(o.Tablespaces)+len(r.tablespaces) > sink.MaxOfferTablespaces {
		return cliapp.Usage("take this backup without --reference", "--reference: %d tablespaces here and %d in OLD, at most %d in all", len(o.Tablespaces), len(r.tablespaces), sink.MaxOfferTablespaces)
	}
	var err error
	if o.Old, err = directwrite.OpenDir(r.dir); err != nil {
		return fmt.Errorf("open the reference: %w", err)
	}
	o.OldTablespaces = map[uint32]*os.File{}
	for oid, dir := range r.tablespaces {
		f, err := directwrite.OpenDir(dir)
		if err != nil {
			return fmt.Errorf("open the reference's tablespace %d: %w", oid, err)
		}
		o.OldTablespaces[oid] = f
	}
	o.Reference = true
	return nil
}
