// Package fetch copies work items from the server with pg_read_binary_file and writes them as a chunk
// stream (docs/chunk-stream.md).
package fetch

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/pgbb/pgbb/internal/crc32c"
	"github.com/pgbb/pgbb/internal/sink"

	"github.com/pgbb/pgbb/internal/backupid"
	"github.com/pgbb/pgbb/internal/chunkstream"
	"github.com/pgbb/pgbb/internal/cliapp"
	"github.com/pgbb/pgbb/internal/compress"
	"github.com/pgbb/pgbb/internal/datadir"
	"github.com/pgbb/pgbb/internal/directwrite"
	"github.com/pgbb/pgbb/internal/incremental"
	"github.com/pgbb/pgbb/internal/pagecheck"
	"github.com/pgbb/pgbb/internal/server"
	"github.com/pgbb/pgbb/internal/testhook"
	"github.com/pgbb/pgbb/internal/timeline"
	"github.com/pgbb/pgbb/internal/worklist"
)

// DefaultChunkSize is the bytes asked for per pg_read_binary_file call, one chunk of the stream each.
const DefaultChunkSize = 1 << 20

// Options for Run.
type Options struct {
	DSN       string
	BackupID  string   // PGBB_BACKUP_ID; required
	Compress  string   // codec name for compress.ParseCodec: "none" (or ""), "xz" or "zstd"
	Level     int      // the codec's level (compress.ParseLevel); 0 means its default
	ChunkSize int      // bytes per read, at most chunkstream.MaxChunk
	Output    string   // "" or "-" for stdout, else a file written whole (temp name, fsync, rename)
	OutputDir string   // write to a new uniquely named *.stream file in this directory
	Sink      string   // the sink socket (PGBB_SINK: pgbb-pack --sink, or pgbb-xlog's own): the stream goes there when no output is given
	Items     []string // work-list lines given as arguments; stdin is read when empty
	// NoVerifyChecksums turns off page checksum verification (on by default when the cluster has data
	// checksums).
	NoVerifyChecksums bool
	// Retries bounds the reconnections in a row, without progress between them, after a dropped connection
	// (docs/resume.md, "Retry"); 0 means none (pgbb-fetch's default is DefaultRetries).
	Retries int
	Log     *cliapp.Logger
}

// DefaultRetries is how many times in a row a job reconnects after its connection dropped.
const DefaultRetries = 5

var tablespaceLinkPath = regexp.MustCompile(`^pg_tblspc/[0-9]+$`)

// Run validates the options, connects, and copies every item read from stdin (or o.Items) to the output.
// A vanished file is reported as such and a shrunk one with the bytes it still had: both are normal
// during a backup (WAL replay restores them). Any other error stops the run; the stream then lacks its end
// record and pgbb-pack refuses it.
func Run(ctx context.Context, o Options, stdin io.Reader, stdout *os.File) (err error) {
	if o.BackupID == "" {
		return cliapp.Usage("run pgbb-fetch under pgbb-xlog, which sets PGBB_BACKUP_ID, or pass --backup-id", "no backup id: PGBB_BACKUP_ID is not set")
	}
	if !backupid.Valid(o.BackupID) {
		return cliapp.Usage("use the value pgbb-xlog set in PGBB_BACKUP_ID", "bad backup id %q", o.BackupID)
	}
	codec, err := compress.ParseCodec(o.Compress)
	if err != nil {
		return cliapp.Usage("use --compress "+compress.CodecNames, "%v", err)
	}
	comp, err := compress.NewChunkCompressor(codec, o.Level)
	if err != nil {
		return cliapp.Usage(compress.LevelHelp(codec), "%v", err)
	}
	if o.ChunkSize == 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.ChunkSize < 8192 || o.ChunkSize > chunkstream.MaxChunk || o.ChunkSize%8192 != 0 {
		return cliapp.Usage("give a multiple of 8192 between 8192 and 16777216", "bad chunk size %d", o.ChunkSize)
	}
	if o.Output != "" && o.Output != "-" && o.OutputDir != "" {
		return cliapp.Usage("give either -o FILE or -O DIR", "both -o and -O given")
	}
	var items []worklist.Line
	for i, a := range o.Items {
		l, err := worklist.ParseLine(a)
		if err != nil {
			return cliapp.Usage("arguments are work-list lines, as pgbb-list writes them", "argument %d: %v", i+1, err)
		}
		if l.Item != nil || l.Trailer != nil {
			items = append(items, l)
		}
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	out, commit, abort, closed, offer, err := openOutput(ctx, o, stdout)
	if err != nil {
		return err
	}
	timeline.Mark("output open (offer: direct %v)", offer.Direct)
	var direct *directwrite.Writer
	if offer.Direct {
		// the job writes its ranges into the target (docs/direct-write.md), with the source's modes exactly
		defer offer.Close()
		syscall.Umask(0)
		direct = directwrite.New(offer.Dest, offer.Tablespaces, offer.DirMode, offer.NoSync)
		defer direct.Close()
	}
	var old *directwrite.Reader
	if offer.Reference && direct != nil {
		// pages equal to the reference backup's are taken from it (docs/incremental.md, section 5)
		old = directwrite.NewReader(offer.Old, offer.OldTablespaces)
		defer old.Close()
	}
	// A sink that ends (pgbb-pack failed, or stopped every stream after another part failed) ends this job
	// at once, even in a connect or a query that writes nothing for a while.
	go func() {
		select {
		case <-closed:
			cancel(errSinkEnded)
		case <-ctx.Done():
		}
	}()
	defer func() {
		if err != nil {
			if o.Sink != "" && sinkEnded(ctx, err) {
				err = cliapp.Consequence(errSinkEnded)
			}
			abort()
		}
	}()
	conn, checksums, connectRetries, err := firstConnect(ctx, o)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(out, 256<<10)
	sw, err := chunkstream.NewWriter(bw, "pgbb-fetch", o.BackupID)
	if err != nil {
		conn.Close()
		return err
	}
	var verifyFrom uint64
	if !o.NoVerifyChecksums {
		if checksums {
			id, err := backupid.Parse(o.BackupID)
			if err != nil {
				return err
			}
			verifyFrom = id.StartLSN
		}
	}
	testhook.Pause("fetch")
	f := &fetcher{ctx: ctx, conn: conn, dsn: o.DSN, sw: sw, direct: direct, codec: codec, comp: comp, chunk: o.ChunkSize, backupID: o.BackupID,
		verifyFrom: verifyFrom, log: o.Log, retries: max(o.Retries, 0), resume: offer.Resume && direct != nil, old: old}
	f.stats.Retries = connectRetries
	defer f.closeConns()
	lines := make(chan lineOrErr, 4096)
	go func() {
		defer close(lines)
		if len(o.Items) > 0 {
			for _, l := range items {
				lines <- lineOrErr{line: l}
			}
			return
		}
		rd := worklist.NewReader(stdin, "stdin")
		for {
			l, err := rd.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				lines <- lineOrErr{err: &cliapp.Error{Code: cliapp.ExitUsage, Err: err}}
				return
			}
			if l.Item != nil || l.Trailer != nil {
				lines <- lineOrErr{line: l}
			}
		}
	}()
	if err := f.run(lines); err != nil {
		return err
	}
	o.Log.Info("fetched %d bytes, reused %d bytes after a digest match, %d ranges re-fetched after a mismatch, %d retries",
		f.stats.Fetched, f.stats.Reused, f.stats.Refetched, f.stats.Retries)
	if err := sw.WriteStats(f.stats); err != nil {
		return err
	}
	if f.badPages > 0 {
		o.Log.Warn("%d pages failed checksum verification; pgbb-pack will keep the backup without backup_manifest and exit 3", f.badPages)
	}
	if direct != nil {
		if err := direct.Close(); err != nil {
			return err
		}
	}
	if err := sw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	return commit()
}

const connectHint = "every fetch job takes a connection: run fewer jobs (pgbb-basebackup -j), raise max_connections, or close idle connections"

// errSinkEnded is why a job stops when its sink connection ends before its stream does.
var errSinkEnded = errors.New("the sink ended this stream: pgbb-pack (or pgbb-xlog) failed or stopped, and says why")

// sinkEnded reports whether err comes from the sink's end of the connection: it was closed, or reset.
func sinkEnded(ctx context.Context, err error) bool {
	return context.Cause(ctx) == errSinkEnded || errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

type fetcher struct {
	ctx      context.Context
	conn     *server.Conn
	dsn      string
	reread   *server.Conn // a second connection for re-reading pages, opened when first needed
	sw       *chunkstream.Writer
	direct   *directwrite.Writer // writes ranges into the target itself, when the sink offered it
	codec    byte
	comp     *compress.ChunkCompressor // one encoder for the job's life: memory stays flat
	chunk    int
	backupID string
	buf      []byte
	zbuf     []byte
	// verifyFrom is the backup's start LSN when page checksums are verified, else 0
	verifyFrom uint64
	badPages   int
	log        *cliapp.Logger
	retries    int                 // reconnections in a row without progress before the job gives up
	progress   uint64              // pieces proved so far: a try that made progress resets the count
	stats      chunkstream.Stats   // what the S record says at the end
	resume     bool                // compare the target's bytes with the server's before fetching (docs/resume.md)
	old        *directwrite.Reader // the reference backup, whose pages equal to the server's are taken (docs/incremental.md, section 5)
}

// verifyPages checks the page checksums of data read from path at off, as basebackup.c does: a page that
// fails is read again alone (the server may have been writing it) and the fresh copy replaces it in data;
// a page that fails twice is reported in a K record after the chunk.
// It returns the indexes of the pages it replaced in data.
func (f *fetcher) verifyPages(item uint64, path string, off int64, data []byte) (bad []uint64, replaced []int, err error) {
	if f.verifyFrom == 0 || off%pagecheck.PageSize != 0 || !datadir.HasPageChecksums(path) {
		return nil, nil, nil
	}
	base := datadir.SegmentNumber(path[strings.LastIndexByte(path, '/')+1:]) * pagecheck.BlocksPerSegment
	for p := 0; p+pagecheck.PageSize <= len(data); p += pagecheck.PageSize {
		page := data[p : p+pagecheck.PageSize]
		blk := base + uint64(off+int64(p))/pagecheck.PageSize
		if !pagecheck.NeedsCheck(page, f.verifyFrom) || pagecheck.Valid(page, uint32(blk)) {
			continue
		}
		if f.reread == nil {
			// the main connection is busy streaming the batch
			if f.reread, err = server.Connect(f.ctx, f.dsn, "pgbb-fetch", false); err != nil {
				return nil, nil, fmt.Errorf("connect to re-read %s block %d: %w", path, blk, err)
			}
		}
		again, missing, err := f.reread.ReadFile(f.ctx, nil, path, off+int64(p), pagecheck.PageSize)
		if err != nil {
			return nil, nil, fmt.Errorf("re-read %s block %d: %w", path, blk, err)
		}
		if !missing && len(again) == pagecheck.PageSize {
			copy(page, again)
			replaced = append(replaced, p/pagecheck.PageSize)
			if !pagecheck.NeedsCheck(page, f.verifyFrom) || pagecheck.Valid(page, uint32(blk)) {
				continue
			}
		} else {
			continue // the file shrank or vanished: WAL replay decides
		}
		f.badPages++
		f.log.Warn("checksum verification failed in file %q, block %d: calculated %04X but expected %04X", path, blk, pagecheck.Checksum(page, uint32(blk)), pagecheck.Stored(page))
		bad = append(bad, blk)
	}
	return bad, replaced, nil
}

type lineOrErr struct {
	line worklist.Line
	err  error
}

// Batch limits: a batch is one statement (server.ReadRanges). Large enough that the round trip between
// statements is small against the time to send a batch, small enough to keep the work list moving.
const (
	batchBytes  = 32 << 20
	batchPieces = 4096
)

// lineWait is how long a batch waits for one more work-list line. Lines handed over by GNU parallel or
// xargs arrive within microseconds of each other; without the wait the first batch would often hold one
// item, and every statement boundary leaves the link idle for a round trip.
const lineWait = 2 * time.Millisecond

// run handles work-list lines as they come: directories, links and the trailer at once, file ranges in
// batches of the lines that arrive without a pause (at least one), so a slow producer of lines is never
// waited for long.
func (f *fetcher) run(lines <-chan lineOrErr) error {
	var batch []*worklist.Item
	var bytes int64
	for {
		le, ok := <-lines
		for ok {
			if le.err != nil {
				return le.err
			}
			if it := le.line.Item; it != nil && it.Incremental() && f.resume {
				return cliapp.Usage("take the incremental backup again into an empty DEST", "item %d: an incremental backup cannot be resumed", it.Seq)
			}
			if it := le.line.Item; it != nil && (it.Kind == worklist.File || it.Kind == worklist.Part || it.Kind == worklist.MoreRun || it.Kind == worklist.LastRun) {
				batch = append(batch, it)
				bytes += it.Length
			} else if err := f.other(le.line); err != nil {
				return err
			}
			if bytes >= batchBytes || len(batch) >= batchPieces {
				break
			}
			select {
			case le, ok = <-lines:
				continue
			case <-time.After(lineWait):
			}
			break
		}
		if len(batch) > 0 {
			if err := f.batch(batch); err != nil {
				return err
			}
			batch, bytes = batch[:0], 0
		}
		if !ok {
			return nil
		}
	}
}

func (f *fetcher) other(l worklist.Line) error {
	if err := f.ctx.Err(); err != nil {
		return err // the sink ended the stream: nothing more is made in the target
	}
	if t := l.Trailer; t != nil {
		if t.BackupID != f.backupID {
			return fmt.Errorf("work list of backup %s, but this backup is %s", t.BackupID, f.backupID)
		}
		return f.sw.WriteTrailer(t.Count, t.BackupID)
	}
	it := l.Item
	switch it.Kind {
	case worklist.Dir:
		if f.direct != nil {
			if err := f.direct.Mkdir(it.Path); err != nil {
				return err
			}
		}
		return f.sw.WriteDir(it.Seq, it.Path)
	case worklist.Link:
		if !tablespaceLinkPath.MatchString(it.Path) {
			return fmt.Errorf("item %d: link %q is not pg_tblspc/<oid>", it.Seq, it.Path)
		}
		return f.sw.WriteLink(it.Seq, it.Path)
	case worklist.Header:
		return f.header(it)
	}
	return fmt.Errorf("item %d: unknown kind", it.Seq)
}

// header stores an INCREMENTAL file's header, made from its h item alone (docs/worklist.md, "Version 2"),
// as the item's one piece.
func (f *fetcher) header(it *worklist.Item) error {
	data := incremental.Header{Blocks: it.Blocks(), TruncBlocks: it.Trunc}.Encode()
	ic := &itemCopy{it: it, status: chunkstream.Stored}
	if err := f.store(ic, 0, data); err != nil {
		return err
	}
	ic.stored = int64(len(data))
	return f.outcome(ic)
}

// itemCopy follows one item through the pieces of a batch, and through the tries of a batch whose
// connection dropped.
type itemCopy struct {
	it      *worklist.Item
	stored  int64
	status  byte
	ended   bool // vanished or shrank: later pieces are ignored
	outcome bool // its O record is written: the item is done
}

// remaining is the range of an item that no piece has proved yet: from the item's offset plus what it
// stored (pieces are proved whole and in order).
func (ic *itemCopy) remaining() (off, length int64) {
	return ic.it.Offset + ic.stored, ic.it.Length - ic.stored
}

// batch copies items, in one statement per try. A connection that drops is opened again and the items go on
// from their first piece not yet proved (docs/resume.md, "Retry"): every record already written describes
// whole pieces, so nothing is half-kept. It gives up after f.retries tries in a row without progress.
func (f *fetcher) batch(items []*worklist.Item) error {
	timeline.Mark("batch of %d items", len(items))
	ics := make([]*itemCopy, len(items))
	for i, it := range items {
		ics[i] = &itemCopy{it: it, status: chunkstream.Stored}
	}
	tries := 0
	for {
		var pending []*itemCopy
		for _, ic := range ics {
			if !ic.outcome {
				pending = append(pending, ic)
			}
		}
		if len(pending) == 0 {
			return nil
		}
		before := f.progress
		err := f.connect()
		if err == nil {
			err = f.copyItems(pending)
		}
		if err == nil {
			return nil
		}
		if !server.Retryable(err) || f.ctx.Err() != nil {
			return f.readFailed(items[0].Path, err)
		}
		if f.progress != before {
			tries = 0
		}
		f.closeConns()
		if err := retryAfter(f.ctx, f.log, tries, f.retries, f.readFailed(items[0].Path, err)); err != nil {
			return err
		}
		tries++
		f.stats.Retries++
	}
}

// retryAfter waits before the next try, after tries retries in a row ended in cause (docs/resume.md,
// "Retry": 0.5 s, then twice as long each time), saying so with -v; it returns the error that ends the job
// instead when retries are used up or ctx ends.
func retryAfter(ctx context.Context, log *cliapp.Logger, tries, retries int, cause error) error {
	if tries >= retries {
		return cliapp.WithHint(fmt.Errorf("gave up after %d retries: %w", tries, cause),
			"the connection to the server kept dropping: see the server's log, and the network or pooler between")
	}
	wait := retryWait << tries
	log.Info("retry %d of %d in %s: %v", tries+1, retries, wait, cause)
	select {
	case <-time.After(wait):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// firstConnect opens the job's connection and asks whether the cluster has data checksums, under the same
// retry rule as a batch (docs/resume.md, "Retry") once the connection is open: a backend terminated in the
// job's first queries (an admin, a pooler, the server restarting) is a fault like any other, not the end of
// the run (the full suite's TestFetchJobsSurviveTerminatedConnections once terminated a job in its first
// query, and the run failed). It returns the connection, whether data checksums are on, and the retries it
// took.
func firstConnect(ctx context.Context, o Options) (*server.Conn, bool, uint64, error) {
	retries := max(o.Retries, 0)
	for tries := 0; ; tries++ {
		conn, err := server.Connect(ctx, o.DSN, "pgbb-fetch", false)
		if err == nil {
			if tries == 0 {
				testhook.PauseIfHeld("fetch-connected")
			}
			var on string
			if on, err = conn.Show(ctx, "data_checksums"); err == nil {
				return conn, on == "on", uint64(tries), nil
			}
			conn.Close()
		}
		// a connection that never opened (a bad or unreachable DSN, a refused password, a server with no
		// connection free) fails at once, with its hint, as any libpq client would: only the loss of the
		// job's open connection is retried here (a reconnect in batch retries a full server too, since the
		// terminated backend may still hold its slot)
		if !server.Retryable(err) || server.NeverOpened(err) || ctx.Err() != nil {
			return nil, false, 0, server.ConnectFailed(err, connectHint)
		}
		if err := retryAfter(ctx, o.Log, tries, retries, server.ConnectFailed(err, connectHint)); err != nil {
			return nil, false, 0, err
		}
	}
}

// retryWait is the wait before the first retry; each next one waits twice as long.
const retryWait = 500 * time.Millisecond

// connect opens the job's connection again after a retryable failure closed it.
func (f *fetcher) connect() error {
	if f.conn != nil {
		return nil
	}
	c, err := server.Connect(f.ctx, f.dsn, "pgbb-fetch", false)
	if err != nil {
		return server.ConnectFailed(err, connectHint)
	}
	f.conn = c
	return nil
}

// readFailed gives a read's error the hint it needs.
func (f *fetcher) readFailed(path string, err error) error {
	var ce *cliapp.Error
	if errors.As(err, &ce) {
		return err
	}
	if server.ErrorCode(err) == "42501" {
		return cliapp.WithHint(fmt.Errorf("read %s: %w", path, err), "GRANT EXECUTE ON FUNCTION pg_read_binary_file(text, bigint, bigint, boolean) TO the backup role")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return cliapp.WithHint(fmt.Errorf("read: the server closed the connection: %w", err), "the server was shut down, restarted or crashed: see its log")
	}
	return fmt.Errorf("read: %w", err)
}

// copyItems copies what the items still lack, in one statement: each item's remaining range is cut into
// pieces of f.chunk bytes (an empty file is one empty piece, whose NULL or empty result tells whether it
// still exists), and each piece becomes one chunk. A file that vanished or came back short ends its item
// there; WAL replay restores the rest (invariant 6).
func (f *fetcher) copyItems(ics []*itemCopy) error {
	var ranges []server.Range
	var owner []*itemCopy
	for _, ic := range ics {
		off, length := ic.remaining()
		if ic.ended || (length == 0 && ic.it.Length > 0) {
			if err := f.outcome(ic); err != nil {
				return err
			}
			continue
		}
		if length == 0 {
			ranges = append(ranges, server.Range{Path: ic.it.Path, Offset: off})
			owner = append(owner, ic)
		}
		for o := int64(0); o < length; o += int64(f.chunk) {
			ranges = append(ranges, server.Range{Path: ic.it.Path, Offset: off + o, Length: min(int64(f.chunk), length-o)})
			owner = append(owner, ic)
		}
	}
	if f.resume || f.old != nil {
		return f.compareRanges(ranges, owner)
	}
	return f.conn.ReadRanges(f.ctx, ranges, func(i int, data []byte, missing bool) error {
		ic, r := owner[i], ranges[i]
		if !ic.ended {
			f.fetched(r.Path, len(data))
			if err := f.piece(ic, r, data, missing, nil); err != nil {
				return err
			}
		}
		if i+1 == len(ranges) || owner[i+1] != ic {
			return f.outcome(ic)
		}
		return nil
	})
}

// fetched counts n bytes read from the server for path.
func (f *fetcher) fetched(path string, n int) {
	f.stats.Fetched += uint64(n)
	f.stats.FetchedKind[incremental.FileKind(path)] += uint64(n)
}

// reused counts n bytes of path proved equal to the server's, not fetched.
func (f *fetcher) reused(path string, n int) {
	f.stats.Reused += uint64(n)
	f.stats.ReusedKind[incremental.FileKind(path)] += uint64(n)
}

// outcome writes an item's O record, once.
func (f *fetcher) outcome(ic *itemCopy) error {
	it := ic.it
	off, length := it.StoredRange()
	if err := f.sw.WriteOutcome(chunkstream.Outcome{Item: it.Seq, Status: ic.status, Offset: uint64(off), Length: uint64(length),
		Final: it.Final(), Stored: uint64(ic.stored), Path: it.StoredPath()}); err != nil {
		return err
	}
	ic.outcome = true
	if f.direct != nil {
		// its bytes are written: the file's fsync starts now, during the copy (docs/direct-write.md)
		return f.direct.Finished(it.StoredPath())
	}
	return nil
}

// piece stores the bytes read for one piece of an item.
// dirty, when not nil, says per page of data which pages differ from what the target already holds
// (resume): only those are written; nil means all of them.
func (f *fetcher) piece(ic *itemCopy, r server.Range, data []byte, missing bool, dirty []bool) error {
	it := ic.it
	if int64(len(data)) > r.Length {
		return fmt.Errorf("read %s: server returned %d bytes for %d asked", it.Path, len(data), r.Length)
	}
	if missing && !it.Incremental() {
		if ic.stored == 0 {
			ic.status = chunkstream.Vanished
		}
		ic.ended = true
		return nil
	}
	var bad []uint64
	if len(data) > 0 {
		var replaced []int
		var err error
		bad, replaced, err = f.verifyPages(it.Seq, it.Path, r.Offset, data)
		if err != nil {
			return err
		}
		if dirty != nil {
			for _, p := range replaced {
				dirty[p] = true // a page read again goes into the target whatever it held
			}
		}
	}
	if it.Incremental() && int64(len(data)) < r.Length {
		// the relation shrank or went away: the run keeps its place, with zeros for what is missing, as
		// the server's sendFile does (basebackup.c); replay applies the truncation (invariant 6)
		data = append(data, make([]byte, r.Length-int64(len(data)))...)
	}
	if len(data) > 0 {
		// an incremental run's bytes go at their destination in the INCREMENTAL file
		if err := f.storeDirty(ic, r.Offset-it.Offset+ic.storedStart(), data, dirty); err != nil {
			return err
		}
		for _, blk := range bad {
			if err := f.sw.WriteBadPage(it.Seq, blk, it.StoredPath()); err != nil {
				return err
			}
		}
		ic.stored += int64(len(data))
	}
	f.progress++
	if int64(len(data)) < r.Length {
		ic.ended = true // the file shrank while being read
	}
	return nil
}

// storedStart is where the item's range starts in its stored file.
func (ic *itemCopy) storedStart() int64 {
	off, _ := ic.it.StoredRange()
	return off
}

// store stores bytes of an item at off of its stored file.
func (f *fetcher) store(ic *itemCopy, off int64, data []byte) error {
	return f.storeDirty(ic, off, data, nil)
}

// storeDirty stores data at off of the item's stored file: written into the target with a W record that
// proves it, or as a chunk on the stream. dirty, when not nil, names the pages to write (resume).
func (f *fetcher) storeDirty(ic *itemCopy, off int64, data []byte, dirty []bool) error {
	it, path := ic.it, ic.it.StoredPath()
	c := chunkstream.Chunk{Item: it.Seq, Offset: uint64(off), RawLen: uint32(len(data)),
		RawCRC: crc32c.Checksum(data), Codec: f.codec, Path: path, Data: data}
	if f.direct != nil {
		// the bytes go into the target here; pgbb-pack gets what it needs to prove them
		if err := f.writeDirty(path, off, data, dirty); err != nil {
			return err
		}
		return f.sw.WriteWritten(chunkstream.Written{Item: it.Seq, Offset: c.Offset, Length: c.RawLen, CRC: c.RawCRC, Path: path})
	}
	if f.codec != chunkstream.CodecNone {
		var err error
		if f.zbuf, err = f.comp.Compress(f.zbuf, data); err != nil {
			return err
		}
		c.Data = f.zbuf
	}
	return f.sw.WriteChunk(c)
}

// writeDirty writes the pages of data that dirty marks (all of them when dirty is nil) at off, in runs.
func (f *fetcher) writeDirty(path string, off int64, data []byte, dirty []bool) error {
	if dirty == nil {
		return f.direct.WriteAt(path, off, data)
	}
	for _, run := range runs(dirty) {
		lo, hi := run[0]*pagecheck.PageSize, min(run[1]*pagecheck.PageSize, len(data))
		if lo >= hi {
			break
		}
		if err := f.direct.WriteAt(path, off+int64(lo), data[lo:hi]); err != nil {
			return err
		}
	}
	return nil
}

// runs returns the runs of true in marks as [first, end) index pairs, in order.
func runs(marks []bool) [][2]int {
	var out [][2]int
	for p := 0; p < len(marks); p++ {
		if !marks[p] {
			continue
		}
		q := p
		for q < len(marks) && marks[q] {
			q++
		}
		out = append(out, [2]int{p, q})
		p = q
	}
	return out
}

// closeConns closes the job's connections (after a retryable failure, they are opened again when needed).
func (f *fetcher) closeConns() {
	if f.conn != nil {
		f.conn.Close()
		f.conn = nil
	}
	if f.reread != nil {
		f.reread.Close()
		f.reread = nil
	}
}

// openOutput returns the writer, how to finish or abandon it, and a channel closed when a sink ends the
// connection (nil, never ready, for other outputs). A file output is written under a temporary name and
// renamed only on success.
func openOutput(ctx context.Context, o Options, stdout *os.File) (io.Writer, func() error, func(), <-chan struct{}, sink.Offer, error) {
	target := o.Output
	if o.OutputDir != "" {
		var r [6]byte
		if _, err := rand.Read(r[:]); err != nil {
			return nil, nil, nil, nil, sink.Offer{}, err
		}
		target = filepath.Join(o.OutputDir, fmt.Sprintf("fetch-%d-%s.stream", os.Getpid(), hex.EncodeToString(r[:])))
	}
	if target == "" && o.Sink != "" {
		c, err := sink.DialContext(ctx, o.Sink)
		if err != nil {
			if _, serr := os.Stat(filepath.Dir(o.Sink)); ctx.Err() != nil || serr != nil || errors.Is(err, syscall.ECONNREFUSED) {
				// the sink has ended (pgbb-basebackup removes its directory when the run fails), and says why
				return nil, nil, nil, nil, sink.Offer{}, cliapp.Consequence(fmt.Errorf("connect to the sink: %w", err))
			}
			return nil, nil, nil, nil, sink.Offer{}, cliapp.WithHint(fmt.Errorf("connect to the sink: %w", err), "run pgbb-fetch under the pgbb-xlog that set PGBB_SINK, or give -o - to write to stdout")
		}
		// the sink's reader says first whether this job writes into the target itself
		offer, err := sink.ReadOffer(ctx, c)
		if err != nil {
			c.Close()
			return nil, nil, nil, nil, sink.Offer{}, cliapp.Consequence(fmt.Errorf("connect to the sink: %w", err))
		}
		// an unfinished stream (abort) lacks its end record, and pgbb-xlog fails the backup
		return c, c.Close, func() { c.Close() }, sink.Closed(c), offer, nil
	}
	if target == "" || target == "-" {
		if err := cliapp.RefuseTerminal(stdout, "a chunk stream"); err != nil {
			return nil, nil, nil, nil, sink.Offer{}, err
		}
		return stdout, func() error { return nil }, func() {}, nil, sink.Offer{}, nil
	}
	tmp := target + ".tmp"
	if strings.HasSuffix(target, ".tmp") {
		return nil, nil, nil, nil, sink.Offer{}, cliapp.Usage("choose another name", "output name %q ends in .tmp, which pgbb uses for unfinished files", target)
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, nil, nil, nil, sink.Offer{}, err
	}
	commit := func() error {
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, target); err != nil {
			return err
		}
		d, err := os.Open(filepath.Dir(target))
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	abort := func() { f.Close(); os.Remove(tmp) }
	return f, commit, abort, nil, sink.Offer{}, nil
}
