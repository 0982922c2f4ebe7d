// Package pack assembles chunk streams (docs/chunk-stream.md) into a backup — a plain data directory or a
// tar.xz set — proves the backup complete, and writes backup_manifest last as the commit marker
// (invariant 10).
//
// Contract: Run reads its inputs one after another, each holding one or more complete streams. The stream of
// pgbb-xlog (records X … E) must be read before or interleaved with the fetchers' streams, as the pipeline
// delivers it; X must arrive before any data record. Run writes only inside DEST and the mapped tablespace
// directories, never through a link it did not create, and on failure removes what it wrote unless NoClean
// is set.
//
// One file per job: pack.go runs a backup (options, DEST, the sink, the order of inputs); records.go reads
// the inputs and dispatches their records; ledger.go checks every record and tracks every item, file range
// and WAL segment (the one proof that ranges tile a file); commit.go proves the backup complete and orders
// the last writes, manifest last; target.go states what a format (plain.go, tar.go) is asked to store, and
// disk.go how files are made durable.
package pack

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/pgbb/pgbb/internal/sink"
	"github.com/pgbb/pgbb/internal/tarlayout"

	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/pgversion"
	"github.com/pgbb/pgbb/internal/progress"
	"github.com/pgbb/pgbb/internal/resume"
)

// Formats.
const (
	Plain = "plain"
	Tar   = "tar"
)

// Options for Run.
type Options struct {
	Dest     string
	Format   string            // Plain (default) or Tar
	Compress string            // tar only: the chunks' codec, "xz" (default) or "zstd", which names the archives
	Force    bool              // empty a non-empty Dest first
	Mappings map[string]string // tablespace location on the server -> directory here (-T OLD=NEW), plain only
	NoClean  bool              // keep what was written when the run fails
	NoSync   bool              // do not fsync (pg_basebackup --no-sync): faster, not safe against a crash of this host
	Inputs   []string          // files, directories (their *.stream files, read when reached) or "-"
	Sink     string            // a Unix socket to create and take fetch streams on while the inputs are read
	// NoDirect keeps the data of plain backups on the stream path: jobs on the sink are not offered to
	// write into DEST themselves (docs/direct-write.md).
	NoDirect bool
	// Resume completes the kept DEST of an earlier plain run (docs/resume.md): DEST must hold the state
	// file and no backup_manifest; the jobs on the sink compare its bytes with the server's.
	Resume bool
	// NoKeep removes what a failed plain run wrote, as a tar run does; by default it is kept for --resume
	// once the backup had started.
	NoKeep bool
	// Incremental, when set, is the prior backup's start: the backup is incremental, and backup_label
	// gets its INCREMENTAL FROM lines (docs/incremental.md, section 4).
	Incremental *incremental.Prior
	// Progress shows how far the run is on stderr (docs/toolbox.md, section 4), against the work list's
	// total that pgbb-list leaves in ProgressTotal.
	Progress      progress.Mode
	ProgressTotal string
	// RecoveryConf, when set, is what -R appends to postgresql.auto.conf (recoveryconf.AutoConfLines),
	// with standby.signal beside it: the copy starts as a standby (docs/toolbox.md, section 2). Plain only.
	RecoveryConf string
	// PriorDir is the directory of the Incremental prior, when it is here: its files serve as a reference
	// (Reference) for what the incremental sends.
	PriorDir string
	// Reference names a complete plain backup of the same cluster: the jobs take the pages equal to the
	// server's from it instead of fetching them (docs/incremental.md, section 5). It is only read.
	Reference string
	Log       *cliapp.Logger
}

// ParseMapping parses one -T OLD=NEW argument; "\=" stands for a literal "=" as in pg_basebackup.
func ParseMapping(s string) (string, string, error) {
	var old, cur strings.Builder
	seen := false
	for i := 0; i < len(s); i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && s[i+1] == '=':
			cur.WriteByte('=')
			i++
		case s[i] == '=':
			if seen {
				return "", "", fmt.Errorf("multiple \"=\" signs in tablespace mapping %q", s)
			}
			seen = true
			old.WriteString(cur.String())
			cur.Reset()
		default:
			cur.WriteByte(s[i])
		}
	}
	if !seen || old.Len() == 0 || cur.Len() == 0 {
		return "", "", fmt.Errorf("invalid tablespace mapping %q: want OLDDIR=NEWDIR", s)
	}
	o, n := filepath.Clean(old.String()), filepath.Clean(cur.String())
	if !filepath.IsAbs(o) || !filepath.IsAbs(n) {
		return "", "", fmt.Errorf("tablespace mapping %q: both directories must be absolute paths", s)
	}
	return o, n, nil
}

// CheckDest returns an error unless dir is absent or an empty directory (or force is set).
func CheckDest(dir string, force bool) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if len(ents) > 0 && !force {
		return cliapp.Usage("choose an empty or new directory, or pass --force to empty it first", "directory %q exists and is not empty", dir)
	}
	return nil
}

type packer struct {
	mu      sync.Mutex    // the ledger and the target take one record at a time
	started chan struct{} // closed once the backup start record is in
	quit    chan struct{} // closed (under mu) when the run ends: streams still being read are refused
	o       Options
	disk
	dest       string
	createdD   bool
	out        target
	start      *chunkstream.BackupStart
	end        *chunkstream.BackupEnd
	trailer    *uint64
	magic      uint16
	major      pgversion.Major // the source server's row of the version table
	walDirs    []string        // its empty directories below pg_wal, which work items may make
	items      map[uint64]*itemState
	files      map[string]*fileProgress
	links      map[string]bool
	walFiles   map[string]*walState
	history    map[string]bool
	offer      sink.Offer   // what jobs on the sink are offered; Direct when they write into DEST
	ref        *reference   // the reference backup (Options.Reference), checked
	proved     atomic.Int64 // bytes of work items proved so far (the progress meter reads it)
	historyCRC map[string]uint32
	control    []byte
	producers  map[uint64]string   // producer id -> backup id
	xlogProds  map[uint64]bool     // producers named pgbb-xlog
	badPages   map[string][]uint64 // path -> blocks that failed their checksum
	stats      chunkstream.Stats   // the jobs' S records, summed
	// resumeState is the state file of the DEST being resumed (Options.Resume); stateWritten says this
	// run wrote its own, so that a failure keeps DEST for a resume
	resumeState  resume.State
	stateWritten bool
}

// errBadPages ends a run whose copy is complete but holds pages that failed checksum verification: the
// backup is kept (as pg_basebackup keeps it) but gets no backup_manifest, so it never passes for good.
var errBadPages = errors.New("page checksum failures")

// Run assembles the backup. It returns nil only after backup_manifest is durably in place.
func Run(o Options, stdin io.Reader) (err error) {
	if o.Dest == "" {
		return cliapp.Usage("give the target with -D DIR", "no target directory")
	}
	dest, err := filepath.Abs(o.Dest)
	if err != nil {
		return err
	}
	var layout tarlayout.Layout
	switch o.Format {
	case "", "p", Plain:
		o.Format = Plain
		if o.Compress != "" {
			return cliapp.Usage("leave out --compress: a plain backup takes chunks of any codec and stores them uncompressed", "--compress applies to the tar format only")
		}
	case "t", Tar:
		o.Format = Tar
		if len(o.Mappings) > 0 {
			return cliapp.Usage("in tar format, tablespaces are archives <oid>.tar.xz (or .tar.zst); relocate them when extracting by editing tablespace_map", "-T applies to the plain format only")
		}
		if layout, err = tarLayout(o.Compress); err != nil {
			return err
		}
	default:
		return cliapp.Usage("use -F plain or -F tar", "unknown format %q", o.Format)
	}
	var st resume.State
	if o.Resume && o.Incremental != nil {
		return cliapp.Usage("take the incremental backup again into an empty DEST (it sends only the changed blocks)", "an incremental backup cannot be resumed")
	}
	var ref *reference
	if o.Reference != "" {
		// before DEST is prepared: --force must not empty OLD, nor a job write into it
		if err := referenceConflicts(o); err != nil {
			return err
		}
		if o.Sink == "" {
			return cliapp.Usage("run the jobs on the sink (--sink), as pgbb-basebackup does", "--reference needs jobs that write into DEST themselves: only they read OLD")
		}
		if ref, err = CheckReference(o.Reference, dest, o.Mappings); err != nil {
			return err
		}
	} else if o.Incremental != nil && o.PriorDir != "" && !o.NoDirect && o.Sink != "" {
		// the prior's own files serve as a reference for the blocks and files sent (docs/incremental.md,
		// section 5): only what differs from them crosses the wire
		if ref, err = checkReference(o.PriorDir, dest, o.Mappings, true); err != nil {
			o.Log.Info("the prior backup's files are not compared, every changed block is fetched whole: %v", err)
			ref, err = nil, nil
		}
	}
	if o.Resume {
		if st, o.Mappings, err = CheckResume(o.Format, o.Force, dest, o.Mappings); err != nil {
			return err
		}
		if o.NoDirect {
			// only a job that writes into DEST can read back what DEST holds (docs/resume.md)
			o.Log.Warn("--resume with --no-direct-write reuses nothing: every range is fetched again (leave out --no-direct-write to reuse what %s holds)", dest)
		}
	} else {
		if err := CheckDest(dest, o.Force); err != nil {
			return err
		}
		for old, nw := range o.Mappings {
			if err := CheckDest(nw, false); err != nil {
				return cliapp.Usage("tablespace directories must be new or empty", "tablespace mapping %s=%s: %v", old, nw, err)
			}
		}
	}
	if len(o.Inputs) == 0 {
		o.Inputs = []string{"-"}
	}
	p := &packer{o: o, dest: dest, items: map[uint64]*itemState{}, files: map[string]*fileProgress{}, links: map[string]bool{},
		walFiles: map[string]*walState{}, history: map[string]bool{}, historyCRC: map[string]uint32{}, producers: map[uint64]string{}, badPages: map[string][]uint64{},
		xlogProds: map[uint64]bool{}, started: make(chan struct{}), quit: make(chan struct{}), resumeState: st, ref: ref}
	if o.Progress != progress.Off {
		m := progress.Start(os.Stderr, o.Progress, cliapp.IsTerminal(os.Stderr), o.ProgressTotal, p.progressSample)
		defer func() { m.Stop(err == nil) }()
	}
	// The sink listens first, before DEST is prepared (emptying a large DEST with --force takes time, and
	// jobs wait only so long for the socket), and under the caller's umask until its own chmod to 0600.
	var k *sink.Sink
	if o.Sink != "" {
		if k, err = sink.Listen(o.Sink, func(c net.Conn, n int) error {
			// a job may connect before pgbb-xlog's backup start record has been read
			select {
			case <-p.started:
			case <-p.quit:
				return nil
			}
			select {
			case <-p.quit:
				return nil // the run has failed: no descriptors for a job that came late
			default:
			}
			direct, err := p.sendOffer(c)
			if err != nil {
				return err
			}
			// an error here makes the sink wait until the job has closed its end (sink.start), so that a
			// job writing into DEST has stopped before DEST is cleaned
			return p.readStream(c, fmt.Sprintf("sink stream %d", n), true, direct)
		}); err != nil {
			return err
		}
		defer os.Remove(o.Sink)
	}
	// stopSink ends every sink stream and waits for them; it runs before any clean-up, so that no stream
	// still writes.
	stopSink := func() {
		if k == nil {
			return
		}
		p.mu.Lock()
		close(p.quit)
		p.mu.Unlock()
		k.Stop()
		k = nil
	}
	// the offer's descriptors are closed after the sink has stopped (defers run last first)
	defer func() { p.offer.Close() }()
	defer stopSink()
	syscall.Umask(0)
	if o.Format == Tar {
		tt := &tarTarget{dest: dest, log: o.Log, disk: disk{noSync: o.NoSync}, layout: layout}
		if o.RecoveryConf != "" {
			tt.recoveryConf = []byte(o.RecoveryConf)
		}
		p.out = tt
	} else {
		p.out = &plainTarget{dest: dest, mappings: o.Mappings, disk: disk{noSync: o.NoSync}, resume: o.Resume}
	}
	p.disk = disk{noSync: o.NoSync}
	if _, err := os.Stat(dest); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dest, 0o700); err != nil {
			return err
		}
		p.createdD = true
	} else if o.Force && !o.Resume {
		if err := emptyDir(dest); err != nil {
			return fmt.Errorf("empty %s: %w", dest, err)
		}
	}
	defer func() {
		if err == nil || o.NoClean || errors.Is(err, errBadPages) {
			return
		}
		stopSink()
		switch pt, _ := p.out.(*plainTarget); {
		case p.stateWritten && !o.NoKeep && pt != nil && (o.Resume || !errors.As(err, new(refusedInput))):
			// a plain run that got past its start keeps what it copied for --resume (docs/resume.md); a
			// resume keeps DEST whatever its input did: the earlier runs' bytes are not this input's to
			// lose, and a next resume proves every byte again
			pt.keep()
			o.Log.Warn("%s is kept without backup_manifest (%s marks it incomplete): run again with --resume to complete it, or remove it", dest, resume.StateName)
		case o.Resume && !p.stateWritten:
			// refused before this run changed anything: DEST stays as the earlier run left it
		default:
			p.out.clean()
			if p.createdD {
				os.RemoveAll(dest)
			} else {
				emptyDir(dest)
			}
		}
	}()
	readInputs := func() error {
		for _, in := range o.Inputs {
			if err := p.readInput(in, stdin); err != nil {
				return err
			}
		}
		return nil
	}
	if k == nil {
		if err := readInputs(); err != nil {
			return err
		}
		return p.commit()
	}
	// A failing stream on the sink (a full disk, say) is the cause of what follows: its job dies, the base
	// copy fails and pgbb-xlog's stream is cut. Report it, without waiting for the inputs to end.
	inputs := make(chan error, 1)
	go func() { inputs <- readInputs() }()
	select {
	case err = <-inputs:
	case <-k.Failed():
	}
	if kerr := k.Err(); kerr != nil {
		return kerr
	}
	if err != nil {
		return err
	}
	p.mu.Lock()
	started := p.start != nil
	p.mu.Unlock()
	if !started {
		// sink streams would wait for it for ever
		return errors.New("the inputs ended without pgbb-xlog's backup start record")
	}
	if err := k.Finish(); err != nil {
		return err
	}
	return p.commit()
}

// sendOffer tells a job on the sink, once the backup has started, whether it writes into DEST itself; it
// reports whether the job was offered that.
func (p *packer) sendOffer(c net.Conn) (bool, error) {
	p.mu.Lock()
	o := p.offer
	if o.DirMode == 0 && p.start != nil {
		o.DirMode = p.start.DirMode
	}
	p.mu.Unlock()
	if err := sink.SendOffer(c, o); err != nil {
		// a job that has already closed its end sent its whole stream without waiting for an offer: read
		// it as a stream (W records in it are refused)
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) {
			return false, nil
		}
		return false, err
	}
	return o.Direct, nil
}

// progressSample is what the progress meter shows: the bytes proved, and the counters so far.
func (p *packer) progressSample() progress.Sample {
	p.mu.Lock()
	st := p.stats
	p.mu.Unlock()
	return progress.Sample{Done: p.proved.Load(), Counters: map[string]uint64{"fetched": st.Fetched, "reused": st.Reused, "refetched": st.Refetched, "retries": st.Retries}}
}

// addStats adds a job's S record to the run's counters.
func (p *packer) addStats(s chunkstream.Stats) {
	p.stats.Fetched += s.Fetched
	p.stats.Reused += s.Reused
	p.stats.Refetched += s.Refetched
	p.stats.Retries += s.Retries
	for k := range s.FetchedKind {
		p.stats.FetchedKind[k] += s.FetchedKind[k]
		p.stats.ReusedKind[k] += s.ReusedKind[k]
	}
}
