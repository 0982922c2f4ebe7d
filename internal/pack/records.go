package pack

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/sink"
	"github.com/pgbb/pgbb/internal/wal"
)

// Record dispatch: inputs are read stream by stream, each record checked for framing, CRC and numbering
// outside the lock (chunkstream), then handed to the ledger under it.

func (p *packer) readInput(in string, stdin io.Reader) error {
	if in == "-" {
		return p.readStream(stdin, "stdin", false, false)
	}
	fi, err := os.Stat(in)
	if err != nil {
		return err
	}
	if !fi.IsDir() {
		f, err := os.Open(in)
		if err != nil {
			return err
		}
		defer f.Close()
		return p.readStream(f, in, false, false)
	}
	ents, err := os.ReadDir(in)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			return fmt.Errorf("%s: unfinished stream file %s (its writer did not finish)", in, e.Name())
		}
		if !strings.HasSuffix(e.Name(), ".stream") || !e.Type().IsRegular() {
			continue
		}
		if err := p.readInput(filepath.Join(in, e.Name()), nil); err != nil {
			return err
		}
	}
	return nil
}

// readStream reads one input into the ledger. Records are checked (framing, CRC, numbering) outside the
// ledger's lock, so the streams of a sink are decoded in parallel. A stream from the sink may hold only
// fetch records.
func (p *packer) readStream(r io.Reader, name string, fromSink, direct bool) error {
	rd := chunkstream.NewReader(r, name)
	for {
		rec, err := rd.Next()
		if err == io.EOF {
			return nil
		}
		if errors.Is(err, chunkstream.ErrCut) {
			return err // cut short: its writer died, a fault a resume recovers from
		}
		if err != nil {
			return refused(err) // damaged or not a stream at all
		}
		p.mu.Lock()
		select {
		case <-p.quit:
			p.mu.Unlock()
			return errors.New("stopped")
		default:
		}
		if fromSink && rec.Type == chunkstream.TypeBegin {
			if producer, _, err := rec.Begin(); err == nil && producer == "pgbb-xlog" {
				err = errors.New("pgbb-xlog's stream on the sink: it belongs on pgbb-pack's input")
				p.mu.Unlock()
				return fmt.Errorf("%s: %w", name, err)
			}
		}
		err = p.record(rec, direct)
		p.mu.Unlock()
		if err != nil {
			return refused(fmt.Errorf("%s: record %d of producer %016x: %w", name, rec.Num, rec.Producer, err))
		}
	}
}

// refusedInput marks a failure on input pgbb does not write: a damaged or tampered stream, a record the
// ledger refuses. Such a run removes what it wrote, whatever the format (docs/resume.md, "Keeping DEST").
type refusedInput struct{ err error }

func (r refusedInput) Error() string { return r.err.Error() }
func (r refusedInput) Unwrap() error { return r.err }

func refused(err error) error { return refusedInput{err} }

func (p *packer) record(rec *chunkstream.Record, direct bool) error {
	switch rec.Type {
	case chunkstream.TypeBegin:
		if _, seen := p.producers[rec.Producer]; seen {
			return errors.New("a producer's stream appears twice")
		}
		name, id, err := rec.Begin()
		if err != nil {
			return err
		}
		p.xlogProds[rec.Producer] = name == "pgbb-xlog"
		if p.start != nil && id != p.start.BackupID {
			return fmt.Errorf("stream of backup %s mixed into backup %s", id, p.start.BackupID)
		}
		p.producers[rec.Producer] = id
		return nil
	case chunkstream.TypeEnd:
		return nil
	case chunkstream.TypeBackupStart:
		if !p.xlogProds[rec.Producer] {
			return errors.New("backup start record from a producer that is not pgbb-xlog")
		}
		return p.backupStart(rec)
	case chunkstream.TypeBackupEnd:
		if !p.xlogProds[rec.Producer] {
			return errors.New("backup end record from a producer that is not pgbb-xlog")
		}
	}
	if p.start == nil {
		return errors.New("data before the backup start record: read pgbb-xlog's stream first")
	}
	if p.producers[rec.Producer] != p.start.BackupID {
		return fmt.Errorf("stream of backup %s mixed into backup %s", p.producers[rec.Producer], p.start.BackupID)
	}
	switch rec.Type {
	case chunkstream.TypeDir:
		item, path, err := rec.ItemPath()
		if err != nil {
			return err
		}
		if err := p.checkItemPath(item, path); err != nil {
			return err
		}
		if p.links[path] {
			return fmt.Errorf("%q is a tablespace link, not a directory", path)
		}
		if err := p.out.dir(path); err != nil {
			return err
		}
		return p.itemDone(item)
	case chunkstream.TypeLink:
		item, path, err := rec.ItemPath()
		if err != nil {
			return err
		}
		if !p.links[path] {
			return fmt.Errorf("link %q is not a tablespace of this backup", path)
		}
		return p.itemDone(item)
	case chunkstream.TypeChunk:
		return p.chunk(rec)
	case chunkstream.TypeWritten:
		if !direct {
			return errors.New("a written range on an input that was offered no direct writes")
		}
		return p.written(rec)
	case chunkstream.TypeOutcome:
		return p.outcome(rec)
	case chunkstream.TypeBadPage:
		item, blk, path, err := rec.BadPage()
		if err != nil {
			return err
		}
		if err := p.checkItemPath(item, path); err != nil {
			return err
		}
		p.badPages[path] = append(p.badPages[path], blk)
		return nil
	case chunkstream.TypeStats:
		st, err := rec.Stats()
		if err != nil {
			return err
		}
		p.addStats(st)
		return nil
	case chunkstream.TypeTrailer:
		n, id, err := rec.Trailer()
		if err != nil {
			return err
		}
		if id != p.start.BackupID {
			return fmt.Errorf("work list of backup %s in backup %s", id, p.start.BackupID)
		}
		if p.trailer != nil {
			return errors.New("work-list trailer appears twice")
		}
		p.trailer = &n
		return nil
	case chunkstream.TypeBackupEnd:
		if p.end != nil {
			return errors.New("second backup end record")
		}
		e, err := rec.BackupEnd()
		if err != nil {
			return err
		}
		p.end = &e
		return nil
	}
	return fmt.Errorf("unexpected record type %q", rec.Type)
}

func (p *packer) backupStart(rec *chunkstream.Record) error {
	if p.start != nil {
		return errors.New("second backup start record: streams of two backups are mixed")
	}
	s, err := rec.BackupStart()
	if err != nil {
		return err
	}
	if p.producers[rec.Producer] != s.BackupID {
		return errors.New("backup start record of another backup")
	}
	for prod, id := range p.producers {
		if id != s.BackupID {
			return fmt.Errorf("stream %016x of backup %s mixed into backup %s", prod, id, s.BackupID)
		}
	}
	if !backupid.Valid(s.BackupID) {
		return fmt.Errorf("bad backup id %q", s.BackupID)
	}
	if p.major, err = pgversion.ForServer(int(s.ServerVersion)); err != nil {
		return err
	}
	p.magic, p.walDirs = p.major.WALPageMagic, p.major.WALDirPaths()
	if !wal.ValidSegmentSize(uint64(s.WALSegmentSize)) {
		return fmt.Errorf("bad WAL segment size %d", s.WALSegmentSize)
	}
	dirMode, fileMode := os.FileMode(0o700), os.FileMode(0o600)
	switch s.DirMode {
	case 0o700:
	case 0o750:
		dirMode, fileMode = 0o750, 0o640
	default:
		return fmt.Errorf("unexpected data directory mode %04o", s.DirMode)
	}
	for _, t := range s.Tablespaces {
		if t.Location == "" || !filepath.IsAbs(t.Location) {
			return fmt.Errorf("tablespace %d has location %q: only tablespaces outside the data directory are supported", t.OID, t.Location)
		}
		p.links["pg_tblspc/"+strconv.FormatUint(uint64(t.OID), 10)] = true
	}
	for old := range p.o.Mappings {
		if p.o.Resume && p.resumeState.HasLocation(old) {
			continue // a tablespace of the first run, which may have been dropped since
		}
		found := false
		for _, t := range s.Tablespaces {
			found = found || filepath.Clean(t.Location) == old
		}
		if !found {
			return cliapp.Usage("check -T OLD: it must be a tablespace location on the server", "tablespace mapping for %s matches no tablespace", old)
		}
	}
	if in := p.o.Incremental; in != nil && (in.SystemID != s.SystemID || uint64(in.Start) >= s.StartLSN) {
		// pgbb-list checked the prior against the server (CheckPrior); this checks that pgbb-pack was
		// given a prior of the same cluster, from before this backup, before anything in DEST changes
		return cliapp.Usage("give pgbb-pack the --incremental that pgbb-list was given",
			"--incremental names a backup of system %d starting at %s, but this backup is of system %d and starts at %s",
			in.SystemID, in.Start, s.SystemID, wal.LSN(s.StartLSN))
	}
	if p.ref != nil && p.ref.systemID != s.SystemID {
		return cliapp.Usage("give --reference a backup of this cluster", "--reference %s is a backup of system %d, this backup is of system %d", p.o.Reference, p.ref.systemID, s.SystemID)
	}
	pt, plain := p.out.(*plainTarget)
	if p.o.Resume {
		// refused before anything in DEST changes
		if err := p.checkResumeStart(&s); err != nil {
			return err
		}
		if err := pt.prepareResume(); err != nil {
			return err
		}
	}
	p.start = &s
	if err := p.out.begin(&s, p.major, dirMode, fileMode); err != nil {
		return err
	}
	if plain {
		// before any job is offered DEST: a DEST that holds data holds the state file
		if err := p.writeState(&s); err != nil {
			return err
		}
	}
	if plain && !p.o.NoDirect && p.o.Sink != "" && len(s.Tablespaces) <= sink.MaxOfferTablespaces {
		if p.offer, err = pt.directOffer(); errors.Is(err, errNoOpenat2) {
			// an old kernel or a seccomp profile: the jobs stream their data here, as before
			p.o.Log.Info("jobs stream their data to pgbb-pack: %v", err)
			err = nil
		}
		if err != nil {
			return err
		}
		p.offer.Resume = p.o.Resume && p.offer.Direct
	}
	if p.ref != nil && !p.offer.Direct {
		if p.o.Reference != "" {
			return cliapp.Usage("take this backup without --reference", "--reference needs jobs that write into DEST themselves, and this run offers none (no openat2, or more than %d tablespaces)", sink.MaxOfferTablespaces)
		}
		p.ref = nil // an incremental's prior: its blocks are fetched whole
	}
	if p.ref != nil {
		if err := p.ref.offer(&p.offer); err != nil {
			return err
		}
	}
	close(p.started)
	return nil
}
