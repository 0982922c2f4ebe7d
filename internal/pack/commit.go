package pack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/controlfile"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/manifest"
	"github.com/pgbb/pgbb/internal/recoveryconf"
	"github.com/pgbb/pgbb/internal/resume"
	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/pgbb/pgbb/internal/wal"
)

// The completeness proof and the commit: the one place that orders the last writes of a backup.

// commit proves the backup complete, then has the target write the last files in the only order pgbb
// writes them: pg_control after every other data file (invariant 5), then backup_label and tablespace_map
// (invariant 4), then everything durable, and then, last, backup_manifest, the commit marker
// (invariant 10).
func (p *packer) commit() error {
	timeline.Mark("commit")
	defer timeline.Mark("committed")
	if p.start == nil {
		return errors.New("no backup start record: pgbb-xlog's stream is missing")
	}
	if p.end == nil {
		return cliapp.WithHint(errors.New("no backup end record: the backup did not finish"), "see pgbb-xlog's messages for why")
	}
	if p.trailer == nil {
		return errors.New("the work list's trailer never arrived: the list or the fetch job that read its end failed")
	}
	n := *p.trailer
	var missing []uint64
	for i := uint64(1); i <= n; i++ {
		if st := p.items[i]; st == nil || !st.done {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%d of %d work items never arrived (first: %d): a fetch job failed", len(missing), n, missing[0])
	}
	for i, st := range p.items {
		if i > n || !st.done {
			return refused(fmt.Errorf("item %d is not in the work list of %d items", i, n))
		}
	}
	for path, fp := range p.files {
		if !fp.done {
			return fmt.Errorf("%s: some of its ranges never arrived", path)
		}
	}
	if p.control == nil {
		return errors.New("global/pg_control never arrived")
	}
	info, _ := controlfile.Parse(p.control)
	if info.SystemID != p.start.SystemID {
		return refused(errors.New("pg_control belongs to another cluster"))
	}
	if p.end.StopTimeline != p.start.Timeline {
		return errors.New("the timeline changed during the backup")
	}
	if p.end.StopLSN <= p.start.StartLSN {
		return refused(errors.New("stop LSN is not after start LSN"))
	}
	segSize := uint64(p.start.WALSegmentSize)
	first := wal.SegmentOf(wal.LSN(p.start.StartLSN), p.start.Timeline, segSize)
	last := wal.SegmentOf(wal.LSN(p.end.StopLSN-1), p.start.Timeline, segSize)
	for no := first.No; no <= last.No; no++ {
		seg := wal.Segment{Timeline: p.start.Timeline, No: no, Size: segSize}
		if ws := p.walFiles[seg.Name()]; ws == nil || !ws.complete {
			return fmt.Errorf("WAL segment %s is missing: the WAL from %s to %s is not complete", seg.Name(), wal.LSN(p.start.StartLSN), wal.LSN(p.end.StopLSN))
		}
	}
	for name, ws := range p.walFiles {
		if !ws.complete {
			return fmt.Errorf("WAL segment %s is incomplete", name)
		}
	}
	if pt, ok := p.out.(*plainTarget); ok && p.o.Resume {
		// what the earlier run left and this one did not prove goes (docs/resume.md)
		removed, err := pt.sweep(map[string]bool{resume.StateName: true})
		if err != nil {
			return fmt.Errorf("remove what this run did not prove: %w", err)
		}
		p.o.Log.Info("resume: removed %d files and directories of the earlier run that this backup does not hold", removed)
	}
	if err := p.out.writeControl(p.control); err != nil {
		return err
	}
	if in := p.o.Incremental; in != nil {
		label, err := p.o.Incremental.Label(p.end.BackupLabel)
		if err != nil {
			return err
		}
		p.end.BackupLabel = label
	}
	if err := p.out.writeLabel(p.end); err != nil {
		return err
	}
	entries, err := p.out.finish()
	if err != nil {
		return err
	}
	if len(p.badPages) > 0 {
		return p.reportBadPages()
	}
	if p.o.RecoveryConf != "" && p.o.Format != Tar { // the tar target wrote them into base.tar
		if err := p.writeRecoveryConf(); err != nil {
			return err
		}
	}
	// the state file goes just before the manifest: a DEST holds one or the other (docs/resume.md)
	if err := p.removeState(); err != nil {
		return err
	}
	sort.Slice(entries, func(i, j int) bool { return entries[i].Path < entries[j].Path })
	body := manifest.Build(p.major.ManifestVersion, p.start.SystemID, entries,
		[]manifest.WALRange{{Timeline: p.start.Timeline, Start: p.start.StartLSN, End: p.end.StopLSN}})
	if err := p.disk.writeWhole(p.dest, "backup_manifest", body, 0o600|(os.FileMode(p.start.DirMode)&0o040)); err != nil {
		return err
	}
	reused := "reused %d bytes after a digest match"
	switch {
	case p.ref != nil && p.o.Reference == "":
		reused = "took %d bytes from the prior backup after a digest match"
	case p.ref != nil:
		reused = "took %d bytes from the reference after a digest match"
	}
	summary := fmt.Sprintf("backup complete: %d files, WAL %s to %s; fetched %d bytes, "+reused+", %d ranges re-fetched after a mismatch, %d retries",
		len(entries), wal.LSN(p.start.StartLSN), wal.LSN(p.end.StopLSN), p.stats.Fetched, p.stats.Reused, p.stats.Refetched, p.stats.Retries)
	if p.stats.Reused > 0 {
		// what came from where, per file kind (docs/incremental.md, section 6)
		var kinds []string
		for k, name := range incremental.KindNames {
			kinds = append(kinds, fmt.Sprintf("%s %d/%d", name, p.stats.FetchedKind[k], p.stats.ReusedKind[k]))
		}
		summary += "; bytes fetched/kept by file kind: " + strings.Join(kinds, ", ")
	}
	if p.o.Resume || p.ref != nil || p.stats.Retries > 0 {
		p.o.Log.Note("%s", summary) // what a resume or a retry did is worth saying without -v
	} else {
		p.o.Log.Info("%s", summary)
	}
	return nil
}

// reportBadPages lists the files and blocks that failed checksum verification, with a total.
func (p *packer) reportBadPages() error {
	paths := make([]string, 0, len(p.badPages))
	total := 0
	for path, blocks := range p.badPages {
		paths = append(paths, path)
		total += len(blocks)
	}
	sort.Strings(paths)
	for _, path := range paths {
		blocks := p.badPages[path]
		sort.Slice(blocks, func(i, j int) bool { return blocks[i] < blocks[j] })
		list := make([]string, 0, len(blocks))
		for i, b := range blocks {
			if i == 20 {
				list = append(list, fmt.Sprintf("and %d more", len(blocks)-20))
				break
			}
			list = append(list, strconv.FormatUint(b, 10))
		}
		p.o.Log.Warn("checksum verification failed in file %q, blocks %s", path, strings.Join(list, ", "))
	}
	return &cliapp.Error{Code: cliapp.ExitBadPage, Err: fmt.Errorf("%w: %d pages in %d files; the backup in %s is kept, without backup_manifest", errBadPages, total, len(paths), p.dest),
		Hint: "the source cluster has corrupt pages: check it (pg_amcheck, pg_checksums on a stopped copy); to take a backup anyway, pass --no-verify-checksums to pgbb-fetch"}
}

// writeRecoveryConf makes the plain copy a standby of its source, as pg_basebackup -R does: the
// primary_conninfo lines appended to postgresql.auto.conf, and an empty standby.signal. Both are on
// pg_verifybackup's ignore list, so the manifest keeps the server's postgresql.auto.conf.
func (p *packer) writeRecoveryConf() error {
	mode := 0o600 | (os.FileMode(p.start.DirMode) & 0o040)
	auto, err := os.ReadFile(filepath.Join(p.dest, recoveryconf.AutoConf))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(auto) > 0 && auto[len(auto)-1] != '\n' {
		auto = append(auto, '\n')
	}
	if err := p.disk.writeWhole(p.dest, recoveryconf.AutoConf, append(auto, p.o.RecoveryConf...), mode); err != nil {
		return fmt.Errorf("write postgresql.auto.conf: %w", err)
	}
	if err := p.disk.writeWhole(p.dest, recoveryconf.StandbySignal, nil, mode); err != nil {
		return fmt.Errorf("write standby.signal: %w", err)
	}
	p.o.Log.Info("-R: standby.signal written, primary_conninfo appended to postgresql.auto.conf")
	return nil
}
