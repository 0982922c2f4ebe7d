package pack

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/resume"
)

// Keeping a failed plain DEST and resuming it (docs/resume.md): the state file, what a resume removes
// before the jobs start, and the sweep at commit that removes what this run did not prove.

// CheckResume returns the state of an incomplete plain backup in dest and the -T mappings maps merged with
// the state's, or a usage error (exit 2) that says why dest cannot be resumed in format (plain, "p" or "")
// with force and maps. It changes nothing.
func CheckResume(format string, force bool, dest string, maps map[string]string) (resume.State, map[string]string, error) {
	if format != "" && format != "p" && format != Plain {
		return resume.State{}, nil, cliapp.Usage("resume works on plain backups only; take the tar backup again", "--resume with -F tar: a tar set cannot be resumed")
	}
	if force {
		return resume.State{}, nil, cliapp.Usage("leave out --force: --resume keeps what DEST holds", "--resume and --force together")
	}
	st, err := checkResumable(dest)
	if err != nil {
		return st, nil, err
	}
	merged, err := resumeMappings(st, maps)
	return st, merged, err
}

// checkResumable returns the state file of dest, or the usage error that says why dest is not an
// incomplete pgbb backup.
func checkResumable(dest string) (resume.State, error) {
	fi, err := os.Stat(dest)
	if errors.Is(err, os.ErrNotExist) {
		return resume.State{}, cliapp.Usage("give the DEST of the run to resume, or leave out --resume", "%s does not exist: nothing to resume", dest)
	}
	if err != nil {
		return resume.State{}, err
	}
	if !fi.IsDir() {
		return resume.State{}, cliapp.Usage("give the DEST of the run to resume", "%s is not a directory", dest)
	}
	if _, err := os.Lstat(filepath.Join(dest, "backup_manifest")); err == nil {
		return resume.State{}, cliapp.Usage("it needs no resume: check it with pgbb-pack --verify, or take a new backup into another directory",
			"%s holds a complete backup (it has a backup_manifest)", dest)
	}
	st, err := resume.Read(dest)
	if errors.Is(err, resume.ErrNoState) {
		return resume.State{}, cliapp.Usage("only the DEST of a failed or killed plain pgbb run can be resumed (it holds "+resume.StateName+")",
			"%s is not an incomplete pgbb backup: it has no %s", dest, resume.StateName)
	}
	if err != nil {
		return resume.State{}, cliapp.Usage("the state file is damaged: take a new backup into another directory", "%v", err)
	}
	return st, nil
}

// resumeMappings merges the state's tablespace directories into the -T mappings (a tablespace kept at its
// own location maps to itself); a -T that names another directory for a tablespace of the state is
// refused.
func resumeMappings(st resume.State, maps map[string]string) (map[string]string, error) {
	out := map[string]string{}
	for k, v := range maps {
		out[k] = v
	}
	for _, t := range st.Tablespaces {
		loc := filepath.Clean(t.Location)
		if m, ok := out[loc]; ok && filepath.Clean(m) != filepath.Clean(t.Directory) {
			return nil, cliapp.Usage("leave out -T on --resume, or give the mapping of the first run",
				"tablespace %s was copied to %s, -T says %s", t.Location, t.Directory, m)
		}
		out[loc] = t.Directory
	}
	return out, nil
}

// checkResumeStart refuses, before anything in DEST changes, a backup of another cluster or major than the
// one DEST holds.
func (p *packer) checkResumeStart(s *chunkstream.BackupStart) error {
	st := p.resumeState
	id, _ := st.SystemIdentifier()
	if id != s.SystemID {
		return cliapp.Usage("resume a DEST with a backup of the cluster it came from, or take a new backup into another directory",
			"%s holds a backup of system %d, the server is system %d", p.dest, id, s.SystemID)
	}
	if st.ServerVersion/10000 != int(s.ServerVersion)/10000 {
		return cliapp.Usage("take a new backup into another directory", "%s holds a backup of PostgreSQL %d, the server runs %d",
			p.dest, st.ServerVersion/10000, s.ServerVersion/10000)
	}
	return nil
}

// writeState writes the state file durably, before any job may write into DEST.
func (p *packer) writeState(s *chunkstream.BackupStart) error {
	st := resume.State{SystemID: strconv.FormatUint(s.SystemID, 10), ServerVersion: int(s.ServerVersion), Format: Plain,
		BackupID: s.BackupID, Runs: p.resumeState.Runs + 1}
	for _, t := range s.Tablespaces {
		dir := filepath.Clean(t.Location)
		if m, ok := p.o.Mappings[dir]; ok {
			dir = m
		}
		st.Tablespaces = append(st.Tablespaces, resume.Tablespace{OID: t.OID, Location: t.Location, Directory: dir})
	}
	os.Remove(filepath.Join(p.dest, resume.StateName+".tmp"))
	if err := p.disk.writeWhole(p.dest, resume.StateName, resume.Encode(st), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", resume.StateName, err)
	}
	p.stateWritten = true
	return nil
}

// removeState removes the state file durably, just before backup_manifest is written.
func (p *packer) removeState() error {
	if !p.stateWritten {
		return nil
	}
	if err := os.Remove(filepath.Join(p.dest, resume.StateName)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return p.disk.syncDir(p.dest)
}

// neverReused are the files of a kept DEST a resume removes before anything else: the new session writes
// its own (invariants 3, 4 and 5).
var neverReused = []string{controlfile.Path, "backup_label", "tablespace_map", "backup_manifest.tmp"}

// prepareResume removes from a kept DEST what a resume never reuses: pg_control, backup_label,
// tablespace_map and every file below pg_wal (directories stay).
func (t *plainTarget) prepareResume() error {
	for _, name := range neverReused {
		if err := os.Remove(filepath.Join(t.dest, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	wal := filepath.Join(t.dest, "pg_wal")
	err := filepath.WalkDir(wal, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type()&fs.ModeSymlink != 0 || !d.IsDir() {
			return os.Remove(path)
		}
		return nil
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}

// sweep removes from DEST and the tablespace directories every file, link and directory this run did not
// write or prove: files of tables dropped since the first run, anything the new work list does not hold,
// leftovers of a killed run. It runs at commit, after every item was proved.
func (t *plainTarget) sweep(keep map[string]bool) (removed int, err error) {
	walk := func(root, prefix string) error {
		return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path == root {
				return nil
			}
			rel := prefix + filepath.ToSlash(strings.TrimPrefix(path, root+string(filepath.Separator)))
			switch {
			case keep[rel]:
				return nil
			case d.Type()&fs.ModeSymlink != 0:
				if _, ok := t.links[rel]; ok {
					return nil
				}
			case d.IsDir():
				if t.dirs[rel] {
					return nil
				}
				removed++
				if err := os.RemoveAll(path); err != nil {
					return err
				}
				return fs.SkipDir
			case t.files[rel]:
				return nil
			}
			removed++
			return os.Remove(path)
		})
	}
	if err := walk(t.dest, ""); err != nil {
		return removed, err
	}
	for link, target := range t.links {
		if err := walk(target, link+"/"); err != nil {
			return removed, err
		}
	}
	return removed, nil
}

// keep leaves a failed run's DEST for --resume: files closed, and what would let it start as a cluster or
// pass for complete removed (docs/resume.md, "Keeping DEST").
func (t *plainTarget) keep() {
	for p, f := range t.open {
		f.Close()
		delete(t.open, p)
	}
	for _, name := range neverReused {
		os.Remove(filepath.Join(t.dest, name))
	}
}
